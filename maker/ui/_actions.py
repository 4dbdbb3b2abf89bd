"""What the UI does when actions are enabled: stop a run, resume it, fork it from a step.

Each makes the checks the command line makes, before anything is written or started, and says what went wrong in
the same words. Stop asks the run to stop at its next commit through the store (:func:`maker.runs.request_stop`), so
it works for a run in any process. Resume and fork start ``maker resume`` and ``maker fork`` in processes of their
own, which outlive the UI; their output goes to a log file beside the store, named on the run's page.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from maker.errors import UserError
from maker.runs import check_fork_step, check_resumable, new_run_id, request_stop
from maker.store import Store

__all__ = ["Actions", "Started"]


@dataclass(frozen=True, slots=True)
class Started:
    """A process the UI started for a run."""

    run_id: str
    what: str
    """``resume`` or ``fork``."""
    pid: int
    log: Path
    t: float


class Actions:
    """The actions over one store, and the processes they started (so a run's page can say how one ended)."""

    def __init__(self, store: str | os.PathLike[str], *, log_dir: str | os.PathLike[str] | None = None) -> None:
        self.store = os.fspath(store)
        self.log_dir = Path(log_dir) if log_dir is not None else Path(self.store + ".ui-logs")
        self._started: dict[str, tuple[Started, subprocess.Popen[bytes]]] = {}

    def stop(self, run_id: str) -> str:
        record = request_stop(self.store, run_id, source="maker ui")
        return f"asked run {run_id} (at step {record.steps:,}) to stop at its next commit"

    def resume(self, run_id: str) -> Started:
        with Store.open(self.store) as st:
            check_resumable(st.run(run_id))
        return self._start(run_id, "resume", ["resume", run_id])

    def fork(self, run_id: str, from_step: int, *, new_id: str | None = None) -> Started:
        with Store.open(self.store) as st:
            parent = st.run(run_id)
        check_fork_step(parent, from_step)
        fork_id = (new_id or "").strip() or new_run_id(parent.workflow)
        with Store.open(self.store) as st:
            if fork_id in {r.run_id for r in st.runs()}:
                raise UserError(f"a run named {fork_id} is in the store already; choose another name")
        return self._start(fork_id, "fork", ["fork", run_id, "--from-step", str(from_step), "--run-id", fork_id])

    def _start(self, run_id: str, what: str, args: list[str]) -> Started:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
        log = self.log_dir / f"{safe}.{what}.{time.strftime('%Y%m%d-%H%M%S')}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "maker", *args, "--store", self.store],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # it outlives the UI, and Ctrl-C in the UI's terminal does not reach it
            )
        started = Started(run_id, what, proc.pid, log, time.time())
        self._started[run_id] = (started, proc)
        return started

    def started(self, run_id: str) -> tuple[Started, int | None] | None:
        """The process the UI started for ``run_id`` and its exit status (None while it runs), if it started one."""
        got = self._started.get(run_id)
        if got is None:
            return None
        return got[0], got[1].poll()

    def log_tail(self, run_id: str, lines: int = 20) -> str:
        got = self._started.get(run_id)
        if got is None:
            return ""
        try:
            text = got[0].log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Reap the processes that ended (the others go on, on their own)."""
        for _, proc in self._started.values():
            proc.poll()

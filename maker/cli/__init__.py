"""The ``maker`` command line: the command group, and every command registered on it here, by name.

Each module holds one group of commands (``_run``: run, resume, runs, serve; ``_trace``: trace, replay, fork; ...);
what they share (options, ``--set``, printing, turning option keys into flags, error handling) is in ``_common``.
"""

from __future__ import annotations

from maker.cli._common import as_flags, main
from maker.cli._eval import eval_
from maker.cli._jobs import jobs, submit
from maker.cli._plan import calibrate, estimate
from maker.cli._run import resume, run, runs, serve, stop
from maker.cli._solve import solve
from maker.cli._trace import fork, replay, trace
from maker.cli._ui import ui
from maker.cli._workflows import workflows

__all__ = ["main", "as_flags"]

for _command in (
    workflows,
    run,
    resume,
    runs,
    stop,
    serve,
    solve,
    estimate,
    calibrate,
    eval_,
    trace,
    replay,
    fork,
    submit,
    jobs,
    ui,
):
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()

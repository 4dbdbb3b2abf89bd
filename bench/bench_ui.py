"""Benchmark: ``maker ui`` over big stores, and what an open UI costs a running run.

Three measurements, each through a real ``maker ui`` server (a child process on loopback) and, where a browser is
found, the system's Chromium driven by Playwright:

- **10,000 runs.** A store with a real evaluation of 4,000 Hanoi problems (``maker eval``, 3 to 5 disks) and 6,000
  more runs copied from those rows (their real records, renamed; every tenth a fork of the one before), so the runs
  page gathers 10,000 records into its list. Timed: the server's answer for the runs page and for the evaluation's
  page (4,000 problems, 200 a page), and in Chromium each page until it is loaded.
- **1,048,575 steps.** The 20-disk Hanoi run (``maker run hanoi --set disks=20``; ``--million PATH`` reuses a store
  that has one). Timed: the run page, its plots' data, and in Chromium the page until every plot is drawn; then
  the same over a copy of the store whose record has no points (a run recorded by an older maker, read from its
  steps), first look and second.
- **An open UI's cost.** ``maker run hanoi --set disks=18`` (262,143 steps), alternately with no UI and with the UI
  serving that run's page to Chromium (live: a look at the store every second, the page's panel and plots fetched
  at each change), three times each; steps per second of each, and the ratio open / closed.

    python bench/bench_ui.py [--million PATH] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _report import emit  # bench/ is on sys.path when a benchmark runs as a script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests._cli

from tests._cli import copy_store  # noqa: E402  (after the path above)

AGENT = "simulated:gpt-4.1-mini"
MAKER = [sys.executable, "-m", "maker"]


def _maker(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*MAKER, *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"maker {' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    return proc


class Server:
    def __init__(self, store: Path, tmp: Path) -> None:
        self.err = tmp / f"ui-{time.monotonic_ns()}.stderr"
        self.proc = subprocess.Popen(
            [*MAKER, "ui", "--store", str(store), "--port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.err, "wb"),  # noqa: SIM115 - the server's own file
        )
        end = time.monotonic() + 120
        while not (m := re.search(r"maker ui: (\S+)", self.err.read_text())):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise SystemExit(self.err.read_text())
            time.sleep(0.05)
        self.url = m.group(1).rstrip("/")
        while True:
            try:
                httpx.get(self.url + "/static/ui.css", timeout=10)
                break
            except httpx.TransportError:
                time.sleep(0.05)

    def get(self, path: str) -> float:
        t = time.perf_counter()
        r = httpx.get(self.url + path, timeout=300)
        r.raise_for_status()
        return time.perf_counter() - t

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _browser() -> Any:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    p = sync_playwright().start()
    return p, p.chromium.launch(executable_path=exe, args=["--no-sandbox"])


def _in_browser(browser: Any, url: str, ready: str) -> float:
    """Seconds from asking for ``url`` until ``ready`` (a JavaScript condition) holds, in a fresh page."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        t = time.perf_counter()
        page.goto(url, wait_until="load", timeout=300_000)
        page.wait_for_function(ready, timeout=300_000)
        return time.perf_counter() - t
    finally:
        page.close()


def _many_runs(tmp: Path) -> Path:
    db = tmp / "many.sqlite"
    data = tmp / "hanoi.jsonl"
    with data.open("w") as f:
        for i in range(4000):
            disks = 3 + i % 3
            pegs: list[list[int]] = [[], [], []]
            pegs[2 if disks % 2 == 0 else 1] = list(range(disks, 0, -1))
            f.write(json.dumps({"id": f"h{i:04d}", "question": str(disks), "answer": pegs}) + "\n")
    _maker(
        "eval",
        data,
        "--workflow",
        "hanoi",
        "--param",
        "disks",
        "--answer-key",
        "pegs",
        "--agent",
        AGENT,
        "--store",
        db,
        "--name",
        "big",
    )
    con = sqlite3.connect(db)
    cols = [r[1] for r in con.execute("PRAGMA table_info(runs)") if r[1] not in ("id", "run_id")]
    rows = con.execute(f"SELECT run_id, {', '.join(cols)} FROM runs ORDER BY id").fetchall()
    pi, ps = cols.index("parent_run_id"), cols.index("parent_step")
    copies = []
    for n in range(6000):
        run_id, *rest = rows[n % len(rows)]
        rest = list(rest)
        if n % 10 == 9:  # a fork of the copy before
            rest[pi], rest[ps] = f"copy-{n - 1:05d}", 2
        copies.append((f"copy-{n:05d}", *rest))
    con.executemany(f"INSERT INTO runs (run_id, {', '.join(cols)}) VALUES (?{', ?' * len(cols)})", copies)
    con.commit()
    con.close()
    return db


def bench_many(tmp: Path, browser: Any) -> dict[str, Any]:
    db = _many_runs(tmp)
    out: dict[str, Any] = {"runs": sqlite3.connect(db).execute("SELECT count(*) FROM runs").fetchone()[0]}
    ui = Server(db, tmp)
    try:
        ui.get("/")  # the first look opens the server's connection
        out["runs_page_server_s"] = round(min(ui.get("/") for _ in range(3)), 3)
        out["eval_page_server_s"] = round(min(ui.get("/eval?name=big") for _ in range(3)), 3)
        if browser is not None:
            out["runs_page_chromium_s"] = round(
                _in_browser(browser, ui.url + "/", "document.querySelector('table.runs')"), 3
            )
            out["eval_page_chromium_s"] = round(
                _in_browser(
                    browser, ui.url + "/eval?name=big", "document.querySelectorAll('table.eval tr').length > 200"
                ),
                3,
            )
    finally:
        ui.close()
    return out


_PLOTS_DRAWN = "document.getElementById('plots') && document.getElementById('plots').dataset.updated"


def bench_million(tmp: Path, browser: Any, million: Path | None) -> dict[str, Any]:
    if million is None:
        million = tmp / "million.sqlite"
        _maker("run", "hanoi", "--set", "disks=20", "--agent", AGENT, "--k", "3", "--store", million, "--run-id", "h20")
    con = sqlite3.connect(million)
    run_id, steps = con.execute("SELECT run_id, steps FROM runs ORDER BY steps DESC LIMIT 1").fetchone()
    con.close()
    out: dict[str, Any] = {"steps": steps}
    old = copy_store(million, tmp / "old.sqlite")
    dst = sqlite3.connect(old)
    dst.execute("UPDATE runs SET stats = json_remove(stats, '$.points')")
    dst.commit()
    dst.close()
    for name, store in (("points", million), ("no_points", old)):
        ui = Server(store, tmp)
        try:
            ui.get("/")
            if name == "points":
                out["run_page_server_s"] = round(min(ui.get(f"/run?id={run_id}") for _ in range(3)), 3)
                out["series_server_s"] = round(min(ui.get(f"/api/series?id={run_id}") for _ in range(3)), 3)
                if browser is not None:
                    out["run_page_chromium_s"] = round(
                        _in_browser(browser, f"{ui.url}/run?id={run_id}", _PLOTS_DRAWN), 3
                    )
            else:
                out["no_points_run_page_first_s"] = round(ui.get(f"/run?id={run_id}"), 3)
                out["no_points_series_first_s"] = round(ui.get(f"/api/series?id={run_id}"), 3)
                out["no_points_series_again_s"] = round(ui.get(f"/api/series?id={run_id}"), 3)
        finally:
            ui.close()
    return out


def _timed_run(tmp: Path, db: Path, run_id: str) -> float:
    """Start the 18-disk run; its steps per second, from its own summary."""
    proc = _maker("run", "hanoi", "--set", "disks=18", "--agent", AGENT, "--store", db, "--run-id", run_id, "--json")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return summary["steps"] / summary["wall_s"]


def bench_open_ui(tmp: Path, browser: Any) -> dict[str, Any]:
    db = tmp / "open.sqlite"
    _maker("run", "hanoi", "--set", "disks=3", "--agent", AGENT, "--store", db, "--run-id", "warm")
    closed, opened = [], []
    for i in range(3):
        closed.append(_timed_run(tmp, db, f"closed-{i}"))
        ui = Server(db, tmp)
        page = None
        try:
            run_id = f"open-{i}"
            proc = subprocess.Popen(
                [
                    *MAKER,
                    "run",
                    "hanoi",
                    "--set",
                    "disks=18",
                    "--agent",
                    AGENT,
                    "--store",
                    str(db),
                    "--run-id",
                    run_id,
                    "--json",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            if browser is not None:
                page = browser.new_page()
                while True:  # the run page, once the run is in the store (else the page says there is no such run)
                    page.goto(f"{ui.url}/run?id={run_id}")
                    if page.query_selector("#run-panel") or proc.poll() is not None:
                        break
                    time.sleep(0.1)
            out, _ = proc.communicate()
            summary = json.loads(out.strip().splitlines()[-1])
            opened.append(summary["steps"] / summary["wall_s"])
            if page is not None:
                opened_changes = int(page.evaluate("Number(document.body.dataset.changes || 0)"))
                print(f"open UI run {i}: the page took {opened_changes} live updates", file=sys.stderr)
        finally:
            if page is not None:
                page.close()
            ui.close()
    return {
        "closed_steps_per_s": [round(x) for x in closed],
        "open_steps_per_s": [round(x) for x in opened],
        "open_over_closed": round((sum(opened) / len(opened)) / (sum(closed) / len(closed)), 3),
        "browser": browser is not None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--million", type=Path, default=None, help="A store holding a 1,048,575-step run to reuse.")
    ap.add_argument("--only", choices=("many", "million", "open"), default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    got = _browser()
    browser = got[1] if got else None
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as d:
        tmp = Path(d)
        if args.only in (None, "many"):
            figures.update({f"many_{k}": v for k, v in bench_many(tmp, browser).items()})
        if args.only in (None, "million"):
            figures.update({f"million_{k}": v for k, v in bench_million(tmp, browser, args.million).items()})
        if args.only in (None, "open"):
            figures.update({f"open_{k}": v for k, v in bench_open_ui(tmp, browser).items()})
    if got:
        got[1].close()
        got[0].stop()
    figures["machine_cores"] = os.cpu_count()
    emit(figures, args.json)


if __name__ == "__main__":
    main()

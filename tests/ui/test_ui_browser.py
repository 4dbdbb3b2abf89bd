"""``maker ui`` in a real browser: the system's Chromium, driven by Playwright, over a real ``maker ui`` process and
real runs in a real store. Each test takes a screenshot of what it checks (kept in tests/artifacts/ with
``MAKER_KEEP_ARTIFACTS=1``).

Nothing here races the machine: a run that must be running is held at a known step (tests/fixtures/held.py) and
commits by count only, so the steps a page shows are known exactly; the tests wait for the page to show what the
store holds, with timeouts that only guard against a hang."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from maker.runs import check_resumable
from maker.store import Store
from maker.trace import step_records
from tests._cli import TIMEOUT, Started, has_committed, maker_env, ok, peek, run_maker, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Chromium is not installed (looked for chromium and chromium-browser on PATH)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")

AGENT = "simulated:gpt-4.1-mini"
WAIT_MS = 60_000
"""How long a page may take to show what the store holds: a guard against a hang on a loaded machine. (Predicates
run in the page are given as functions: an expression string is eval'd there, which the UI's CSP refuses.)"""
BY_COUNT = ["--commit-every", "50", "--commit-seconds", "1e9"]
"""Commits at every 50th step only: a run held at step 50 * N has committed exactly 50 * N steps."""
COUNT_SSE = """
window.__sse = 0;
const Native = window.EventSource;
window.EventSource = class extends Native {
  constructor(url, init) { super(url, init); this.addEventListener("change", () => { window.__sse += 1; }); }
};
"""
"""Counts the ``change`` events the page's own event source receives (the first says the state the page shows)."""


# -- the UI process and the browser ---------------------------------------------------------------------------------


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start ``maker ui --store STORE --port 0 ARGS`` and return the address it prints once it serves; it is
    stopped, and reaped, when the test ends."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(store: Path, *args: str) -> str:
        err = tmp_path / f"ui{len(procs)}.stderr"
        with open(err, "wb") as errf:
            proc = subprocess.Popen(
                [sys.executable, "-m", "maker", "ui", "--store", str(store), "--port", "0", "--poll", "0.2", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errf,
                env=maker_env(tmp_path),
            )
        procs.append(proc)
        found: list[str] = []

        def ready() -> bool:
            found[:] = re.findall(r"maker ui: (http://127\.0\.0\.1:\d+/)", err.read_text())
            return bool(found)

        wait_for(proc, ready, "maker ui printed its address", err, timeout=60)
        return found[0]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=TIMEOUT)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (its own cookies), whose event sources count what they receive (``window.__sse``)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    context.add_init_script(COUNT_SSE)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"the page's script failed: {errors}"


def screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    """A full-page screenshot, checked to be a PNG with something drawn on it."""
    from PIL import Image

    png = tmp_path / f"{name}.png"
    page.screenshot(path=str(png), full_page=True)
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, (name, len(data))
    with Image.open(png) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 24)
    assert colours is not None and len(colours) > 16, f"the screenshot {name} is blank"
    if os.environ.get("MAKER_KEEP_ARTIFACTS"):
        dest = Path(__file__).parents[1] / "artifacts" / f"ui-{name}.png"
        dest.parent.mkdir(exist_ok=True)
        shutil.copyfile(png, dest)
    return png


def text(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text()).strip()


def wait_text(page: Any, selector: str, expected: str, timeout_ms: float = WAIT_MS) -> None:
    """Wait until the element's text is ``expected`` (the page changes it on a live update)."""
    page.wait_for_function(
        "([sel, want]) => { const el = document.querySelector(sel); return el && el.textContent.trim() === want; }",
        arg=[selector, expected],
        timeout=timeout_ms,
    )


def runs_json(store: Path, tmp_path: Path) -> dict[str, dict[str, Any]]:
    listed = ok(run_maker("runs", "--store", store, "--json", tmp=tmp_path))
    return {r["run_id"]: r for r in json.loads(listed.stdout)}


# -- the tests -------------------------------------------------------------------------------------------------------


def test_run_page_updates_live_as_the_run_commits(
    tmp_path: Path, serve: Callable[..., str], page: Any, background: Callable[..., Started]
) -> None:
    """A page opened on a running run follows it: stopped, then resumed and committing further, without a reload."""
    store = tmp_path / "s.sqlite"
    args = ["run", "hanoi", "--set", "disks=10", "--agent", AGENT, "--run-id", "live", *BY_COUNT, "--store", store]
    run = background(*args, hold=100)
    wait_for(run.proc, lambda: run.held() and has_committed(store, "live", 100), "step 100 held", run.stderr)
    url = serve(store)

    page.goto(url + "run?id=live")
    assert text(page, "h1") == "live"
    assert text(page, "#f-status") == "running"
    assert text(page, "#f-steps") == "100 / 1,023"
    # the page has had the first event (the state it shows) from its event source, and drawn it: now change the run
    page.wait_for_function("() => window.__sse >= 1 && Number(document.body.dataset.changes) >= 1")

    run.proc.send_signal(signal.SIGINT)
    assert run.proc.wait(timeout=TIMEOUT) == 130, run.stderr.read_text()
    wait_text(page, "#f-status", "interrupted")
    assert text(page, "#f-steps") == "100 / 1,023"

    resumed = background("resume", "live", "--store", store, name="resume", hold=300)
    wait_for(
        resumed.proc, lambda: resumed.held() and has_committed(store, "live", 300), "step 300 held", resumed.stderr
    )
    wait_text(page, "#f-steps", "300 / 1,023")
    wait_text(page, "#f-status", "running")
    page.wait_for_function("() => Number(document.body.dataset.changes) >= 3")  # counted once a change is drawn
    assert page.url.endswith("run?id=live"), "the page was reloaded, not updated"
    # the progress bar is drawn at 300 of 1,023 steps (its width is set by the page's script: no inline styles)
    share = page.evaluate(
        "() => { const b = document.querySelector('#run-panel .bar'); "
        "return b.querySelector('span').getBoundingClientRect().width / b.getBoundingClientRect().width; }"
    )
    assert abs(share - 300 / 1023) < 0.02, share
    for chart in ("rounds", "calls", "cost"):
        page.wait_for_selector(f'[data-chart="{chart}"] canvas')
    # the plots were redrawn from the resumed run's points: the last is at its latest commit
    assert page.evaluate("async () => (await (await fetch('/api/series?id=live')).json()).step.at(-1)") == 300
    screenshot(page, tmp_path, "live")


def test_step_drill_down_shows_winner_tally_input_and_samples(
    tmp_path: Path, serve: Callable[..., str], page: Any
) -> None:
    store = tmp_path / "s.sqlite"
    args = ["run", "hanoi", "--set", "disks=4", "--agent", AGENT, "--detail", "samples", "--run-id", "d"]
    ok(run_maker(*args, "--store", store, tmp=tmp_path))
    url = serve(store)

    page.goto(url + "run?id=d")
    assert text(page, "#f-status") == "done"
    link = page.locator("#run-panel h2:text-is('Hardest steps') + table a").first
    n = int(link.inner_text())
    link.click()
    page.wait_for_url(re.compile(rf"/step\?run=d&n={n}$"))

    with Store.open(store) as st:
        (rec,) = step_records(st, st.run("d"), n, n + 1, samples=True)
    assert text(page, "h1") == f"Step {n}"
    assert text(page, "#winner") == json.dumps(rec["answer"], ensure_ascii=False)
    assert text(page, "#tally") == json.dumps(rec["votes"], ensure_ascii=False)
    assert rec["input"] and page.locator("#input").text_content() == rec["input"]
    rows = page.locator("table.samples tbody tr")
    assert rows.count() == rec["samples"] == len(rec["sample_detail"]) > 1
    for i, sample in enumerate(rec["sample_detail"]):
        assert rows.nth(i).locator("pre").text_content() == sample["text"]
    flagged = [s for s in rec["sample_detail"] if s["red_flag"]]
    assert page.locator("table.samples tr.flagged").count() == len(flagged)
    screenshot(page, tmp_path, "step")


def test_tree_node_opens_to_its_steps(tmp_path: Path, serve: Callable[..., str], page: Any) -> None:
    store = tmp_path / "s.sqlite"
    ok(run_maker("solve", "What is 12 * 34?", "--agent", AGENT, "--run-id", "t", "--store", store, tmp=tmp_path))
    url = serve(store)

    page.goto(url + "run?id=t")
    page.locator("a", has_text="task tree").click()
    page.wait_for_url(re.compile(r"/tree\?run=t$"))
    nodes = page.locator("details.node")
    assert nodes.count() == 3  # the task, split in two
    root = nodes.first
    assert root.get_attribute("open") is not None
    assert "What is 12 * 34?" in root.locator("summary").first.inner_text()
    assert "408" in root.locator("summary").first.inner_text()

    child = nodes.nth(1)
    summary = child.locator("summary").first
    assert "Multiply 12 by 3" in summary.inner_text()
    steps = child.locator("table").first
    assert child.get_attribute("open") is None and not steps.is_visible()
    summary.click()
    page.wait_for_function("() => document.querySelectorAll('details.node')[1].open")
    assert steps.is_visible()
    links = steps.locator("a")
    assert links.count() >= 1
    for i in range(links.count()):
        assert re.fullmatch(r"/step\?run=t&n=\d+", links.nth(i).get_attribute("href") or "")
    screenshot(page, tmp_path, "tree")


def test_stop_and_resume_from_the_page(
    tmp_path: Path, serve: Callable[..., str], page: Any, background: Callable[..., Started]
) -> None:
    store = tmp_path / "s.sqlite"
    args = ["run", "hanoi", "--set", "disks=6", "--agent", AGENT, "--run-id", "act", *BY_COUNT, "--store", store]
    run = background(*args, hold=50)
    wait_for(run.proc, lambda: run.held() and has_committed(store, "act", 50), "step 50 held", run.stderr)
    url = serve(store, "--actions")
    started_pids: list[int] = []
    try:
        page.goto(url + "run?id=act")
        assert text(page, "#f-status") == "running"
        assert page.locator("button#resume").count() == 0
        # Paused, the run cannot read the request before the page it leads to is following it (a page misses a
        # change made between its rendering and its first event: see test_a_change_before_the_page_listens_shows).
        run.proc.send_signal(signal.SIGSTOP)
        page.locator("button#stop").click()
        page.wait_for_url(re.compile(r"/run\?id=act&msg="))
        assert "asked run act (at step 50) to stop at its next commit" in text(page, "p.message")
        assert "stop asked (maker ui)" in text(page, "#run-panel")
        page.wait_for_function("() => window.__sse >= 1")
        run.proc.send_signal(signal.SIGCONT)

        # the held process reads the request while it waits, and stops at a commit; the page follows
        wait_text(page, "#f-status", "interrupted")
        assert run.proc.wait(timeout=TIMEOUT) == 130, run.stderr.read_text()
        row = runs_json(store, tmp_path)["act"]
        assert (row["status"], row["steps"]) == ("interrupted", 50)
        assert "stopped at step 50, as asked" in row["error"]
        with Store.open(store) as st:
            check_resumable(st.run("act"))  # raises if it could not be resumed
        screenshot(page, tmp_path, "stopped")

        page.reload()  # the actions offered follow the status the page was rendered with
        assert page.locator("button#stop").count() == 0
        page.locator("button#resume").click()
        page.wait_for_url(re.compile(r"/run\?id=act&msg="))
        message = text(page, "p.message")
        assert "started `maker resume act`" in message
        started_pids += [int(p) for p in re.findall(r"\(pid (\d+);", message)]
        assert len(started_pids) == 1, message
        # not held (the UI starts it), so it may finish at any moment: wait for the store, then look
        _until(lambda: _status(store, "act") == "done", "the resumed run done")
        page.reload()
        assert text(page, "#f-status") == "done"
        assert text(page, "#f-steps") == "63 / 63"
        assert re.search(r"resume started by this UI \(pid \d+\)", text(page, "#run-panel"))
        row = runs_json(store, tmp_path)["act"]
        assert (row["status"], row["steps"], row["solved"]) == ("done", 63, True)
        screenshot(page, tmp_path, "resumed")
    finally:
        for pid in started_pids:  # the UI starts its processes in sessions of their own: they outlive it
            _end(pid)


def test_text_from_the_store_is_shown_as_text(tmp_path: Path, serve: Callable[..., str], page: Any) -> None:
    """Run ids and task texts are the user's, kept verbatim: the pages show them as text, never as markup."""
    store = tmp_path / "s.sqlite"
    img = "<img src=x onerror=window.__pwned=1>"
    task = "<b>bold</b> What is 12 * 34?"
    ok(run_maker("run", "hanoi", "--set", "disks=2", "--agent", AGENT, "--run-id", img, "--store", store, tmp=tmp_path))
    ok(run_maker("solve", task, "--agent", AGENT, "--run-id", "e", "--store", store, tmp=tmp_path))
    url = serve(store)

    def no_markup() -> None:
        assert page.locator("main img").count() == 0
        assert page.locator("main b", has_text=re.compile(r"^bold$")).count() == 0
        assert page.evaluate("() => window.__pwned") is None

    page.goto(url)
    assert page.locator("#runs-table a", has_text=img).count() == 1
    no_markup()

    page.locator("#runs-table a", has_text=img).click()
    page.wait_for_url(re.compile(r"/run\?id="))
    assert text(page, "h1") == img
    assert page.title() == f"{img} · maker ui"
    no_markup()

    page.goto(url + "tree?run=e")
    assert task in page.locator("details.node summary").first.inner_text()
    no_markup()
    page.goto(url + "run?id=e")
    assert task in text(page, "main")
    no_markup()
    screenshot(page, tmp_path, "escaped")


def test_a_change_before_the_page_listens_shows(
    tmp_path: Path, serve: Callable[..., str], page: Any, background: Callable[..., Started]
) -> None:
    """The page is rendered while the run runs; the run stops before the page's event stream reaches the server.
    The stream's first event says so, and the page must show it (the run changes no more: no later event will)."""
    store = tmp_path / "s.sqlite"
    args = ["run", "hanoi", "--set", "disks=6", "--agent", AGENT, "--run-id", "r", *BY_COUNT, "--store", store]
    run = background(*args, hold=50)
    wait_for(run.proc, lambda: run.held() and has_committed(store, "r", 50), "step 50 held", run.stderr)
    url = serve(store)
    streams: list[Any] = []
    page.route("**/events?*", lambda route: streams.append(route))  # held back until the run has stopped

    page.goto(url + "run?id=r")
    assert text(page, "#f-status") == "running"
    run.proc.send_signal(signal.SIGINT)
    assert run.proc.wait(timeout=TIMEOUT) == 130, run.stderr.read_text()
    assert _status(store, "r") == "interrupted"
    _until(lambda: bool(streams) or page.wait_for_timeout(50), "the page opened its event stream")
    streams[0].continue_()
    page.wait_for_function("() => window.__sse >= 1")
    screenshot(page, tmp_path, "first-change")
    wait_text(page, "#f-status", "interrupted", timeout_ms=10_000)  # a page that shows it does so at once


def _status(store: Path, run_id: str) -> str | None:
    rows = peek(store, "SELECT status FROM runs WHERE run_id=?", (run_id,))
    return str(rows[0][0]) if rows else None


def _until(ready: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``ready()`` until it is true (a guard against a hang, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {timeout} s")
        time.sleep(0.02)


def _end(pid: int) -> None:
    """SIGKILL a ``maker resume`` the UI started, if it is still that process (waiting a little for it to end)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if b"resume" not in cmdline:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

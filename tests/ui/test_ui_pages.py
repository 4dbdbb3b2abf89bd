"""``maker ui``'s pages, data and safety, through Starlette's test client over real stores (the browser tests, in
Chromium, are in test_ui_browser.py; the live stream and the token over real HTTP are at the end, on a real server)."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from maker.store import Store
from maker.ui import UiSettings, create_app
from maker.ui._live import hardest, series
from tests._cli import copy_store, invoke, maker_env

AGENT = "simulated:gpt-4.1-mini"
LOCAL = "http://127.0.0.1:8765"


def _run(db: Path, *args: str) -> None:
    code, out = invoke(*args, "--store", str(db))
    assert code == 0, out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a finished run and a fork of it, a run with its samples, a small evaluation and a solve run."""
    db = tmp_path_factory.mktemp("ui") / "s.sqlite"
    _run(db, "run", "hanoi", "--set", "disks=9", "--agent", AGENT, "--run-id", "big", "--commit-every", "40")
    _run(db, "fork", "big", "--from-step", "100", "--run-id", "big-fork")
    _run(db, "run", "hanoi", "--set", "disks=4", "--agent", AGENT, "--run-id", "small", "--detail", "samples")
    data = db.parent / "data.jsonl"
    data.write_text(
        "".join(
            f'{{"id": "q{i}", "question": "What is {i + 12} * 34?", "answer": {(i + 12) * 34}}}\n' for i in range(3)
        )
    )
    _run(db, "eval", str(data), "--agent", AGENT, "--name", "ev")
    _run(db, "solve", "What is 123 * 45?", "--agent", AGENT, "--run-id", "tree")
    return db


@pytest.fixture()
def client(store: Path) -> TestClient:
    return TestClient(create_app(UiSettings(store=str(store))), base_url=LOCAL)


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_the_runs_page_nests_forks_and_groups_evaluations(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    text = _text(r.text)
    assert "big" in text and "small" in text and "tree" in text
    # the fork is a line under its parent, not a run of its own at the top
    rows = re.findall(r'<tr class="run [^"]*">.*?</tr>', r.text, re.S)
    fork = next(row for row in rows if 'href="/run?id=big-fork"' in row)
    assert "fork at 100" in _text(fork)
    assert r.text.index('href="/run?id=big"') < r.text.index('href="/run?id=big-fork"')
    # the evaluation's three runs are one line, with its score
    assert 'href="/eval?name=ev"' in r.text and "ev/q0" not in r.text
    line = _text(re.search(r'<tr class="evaluation">.*?</tr>', r.text, re.S).group(0))
    assert "3 problems" in line and "3 of 3 scored right" in line


def test_the_runs_page_filters_and_searches(client: TestClient) -> None:
    text = _text(client.get("/", params={"q": "tree"}).text)
    assert "tree" in text and "small" not in text
    text = _text(client.get("/", params={"q": "FORK"}).text)  # a fork found shows under its parent
    assert "big-fork" in text and "small" not in text
    assert "no runs match" in _text(client.get("/", params={"q": "nothing-like-this"}).text)
    assert "3 problems" in _text(client.get("/", params={"q": "ev"}).text)
    fragment = client.get("/fragment/runs", params={"status": "done"})
    assert fragment.status_code == 200 and "<html" not in fragment.text and "small" in fragment.text


def test_the_run_page_shows_the_run_and_its_plots(client: TestClient, store: Path) -> None:
    r = client.get("/run", params={"id": "big"})
    assert r.status_code == 200
    text = _text(r.text)
    assert "511 / 511" in text and "done" in text and "Hardest steps" in text
    assert "<form" not in r.text  # read-only: no actions offered
    with Store.open(store) as st:
        record = st.run("big")
        s = series(st, record)
        top = hardest(st, record)
        con = sqlite3.connect(store)
        want = con.execute(
            "SELECT step, rounds, samples FROM steps WHERE run=? ORDER BY rounds DESC, step LIMIT 10", (record.id,)
        ).fetchall()
        (rounds,) = con.execute("SELECT sum(rounds) FROM steps WHERE run=?", (record.id,)).fetchone()
    assert [t[1] for t in top] == [w[1] for w in want]  # the most rounds, read only where they can be
    assert s["step"][-1] == 511 and len(s["step"]) == 13  # a point every 40 steps, and the last
    steps = [0, *s["step"]]
    assert round(sum(m * (b - a) for m, a, b in zip(s["rounds_mean"], steps[:-1], steps[1:], strict=True))) == rounds
    assert s["cost"][-1] == pytest.approx(record.stats["cost"], abs=1e-5)
    assert client.get("/api/series", params={"id": "big"}).json() == s


def test_a_run_recorded_without_points_is_read_from_its_steps(store: Path, tmp_path: Path) -> None:
    """The same plots for a run whose record has no points (an older run), from one pass over its steps."""
    old = copy_store(store, tmp_path / "old.sqlite")
    dst = sqlite3.connect(old)
    dst.execute("UPDATE runs SET stats = json_remove(stats, '$.points')")
    dst.commit()
    dst.close()
    with Store.open(store) as st:
        new = series(st, st.run("big"))
    with Store.open(old) as st:
        record = st.run("big")
        s = series(st, record)
    assert s["step"][-1] == 511 and len(s["step"]) == 256  # 2 steps a bin
    assert s["cost"][-1] == pytest.approx(new["cost"][-1], abs=1e-5)
    assert sum(x for x in s["rounds_max"]) >= len(s["step"])
    c = TestClient(create_app(UiSettings(store=str(old))), base_url=LOCAL)
    assert c.get("/run", params={"id": "big"}).status_code == 200


def test_the_step_page_drills_down(client: TestClient) -> None:
    r = client.get("/step", params={"run": "small", "n": 3})
    assert r.status_code == 200
    text = _text(r.text)
    assert "Step 3" in text and "winner" in text and "tally" in text
    assert "Samples" in text and 'id="input"' in r.text  # kept with --detail samples
    assert client.get("/step", params={"run": "small", "n": 99}).status_code == 404
    assert "not kept" in _text(client.get("/step", params={"run": "big", "n": 3}).text)


def test_the_tree_and_the_evaluation(client: TestClient) -> None:
    r = client.get("/tree", params={"run": "tree"})
    assert r.status_code == 200 and '<details open class="node">' in r.text and "123 * 45" in _text(r.text)
    assert "task tree" in _text(client.get("/run", params={"id": "tree"}).text)
    e = client.get("/eval", params={"name": "ev"})
    text = _text(e.text)
    assert e.status_code == 200 and "accuracy 100.0%" in text and "ev/q1" in text and "408" in text
    wrong = _text(client.get("/eval", params={"name": "ev", "show": "wrong"}).text)
    assert "0 shown" in wrong and "ev/q1" not in wrong  # every problem was right
    assert client.get("/eval", params={"name": "nope"}).status_code == 404
    assert client.get("/run", params={"id": "nope"}).status_code == 404


def test_nothing_from_the_store_is_rendered_unescaped(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    with Store.create(db) as st:
        st.create_run(
            "evil",
            workflow="solve",
            workflow_ref="solve",
            workflow_version=1,
            params={"task": evil},
            config={"agents": [evil]},
            expected_steps=None,
            state_json="{}",
        )
    c = TestClient(create_app(UiSettings(store=str(db))), base_url=LOCAL)
    for page in (c.get("/"), c.get("/run", params={"id": "evil"}), c.get("/", params={"q": evil})):
        assert page.status_code == 200
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;" in page.text
    headers = c.get("/").headers
    assert "default-src 'self'" in headers["content-security-policy"]  # and no inline script could run anyway


def test_actions_need_to_be_enabled_and_a_fresh_form(store: Path) -> None:
    ro = TestClient(create_app(UiSettings(store=str(store))), base_url=LOCAL)
    r = ro.post("/action/stop", data={"run": "big"})
    assert r.status_code == 403 and "read-only" in r.text
    rw = TestClient(create_app(UiSettings(store=str(store), actions=True)), base_url=LOCAL)
    page = rw.get("/run", params={"id": "big-fork"}).text
    assert 'action="/action/fork"' in page and 'id="stop"' not in page  # done: fork, not stop or resume
    r = rw.post("/action/stop", data={"run": "big", "csrf": "forged"})
    assert r.status_code == 403 and "stale" in r.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = rw.post("/action/stop", data={"run": "big", "csrf": csrf})
    assert r.status_code == 409 and "run big is not running (done at step 511); nothing to stop" in r.text
    r = rw.post("/action/resume", data={"run": "big", "csrf": csrf})
    assert r.status_code == 409 and "already finished" in r.text
    r = rw.post("/action/fork", data={"run": "big", "csrf": csrf, "step": "9999"})
    assert r.status_code == 409 and "fork it from a step in 0..511" in r.text


def test_fork_and_resume_from_the_page(store: Path, tmp_path: Path) -> None:
    """The fork action starts ``maker fork`` in a process of its own; its run appears under the parent and ends."""
    db = copy_store(store, tmp_path / "s.sqlite")
    app = create_app(UiSettings(store=str(db), actions=True))
    c = TestClient(app, base_url=LOCAL)
    csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/run", params={"id": "small"}).text).group(1)
    r = c.post(
        "/action/fork", data={"run": "small", "csrf": csrf, "step": "5", "new_id": "small-5"}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/run?id=small-5")
    actions = app.state.ui.actions
    started, _ = actions.started("small-5")
    end = time.monotonic() + 120
    while actions.started("small-5")[1] is None:
        assert time.monotonic() < end, actions.log_tail("small-5")
        time.sleep(0.05)
    assert actions.started("small-5")[1] == 0, actions.log_tail("small-5")
    with Store.open(db) as st:
        fork = st.run("small-5")
    assert (fork.status, fork.parent_run_id, fork.parent_step, fork.steps) == ("done", "small", 5, 15)
    page = c.get("/run", params={"id": "small-5"}).text
    assert "forked from" in _text(page) and started.log.exists()


# -- a real server ---------------------------------------------------------------------------------


def _serve(store: Path, tmp: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    err = tmp / "ui.stderr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "maker", "ui", "--store", str(store), "--port", "0", "--poll", "0.1", *args],
        stdout=subprocess.DEVNULL,
        stderr=open(err, "wb"),  # noqa: SIM115 - the server's own file, read below
        stdin=subprocess.DEVNULL,
        env=maker_env(tmp),
    )
    end = time.monotonic() + 60
    while not (m := re.search(r"maker ui: (\S+)", err.read_text())):
        assert proc.poll() is None and time.monotonic() < end, err.read_text()
        time.sleep(0.05)
    address = m.group(1)
    while True:  # the socket is bound before the address is printed: wait for the app itself
        try:
            httpx.get(address.split("?")[0] + "static/ui.css", timeout=5)
            break
        except httpx.TransportError:
            assert proc.poll() is None and time.monotonic() < end, err.read_text()
            time.sleep(0.05)
    return proc, address


def test_on_loopback_other_host_names_are_refused(store: Path) -> None:
    """Without a token the UI answers only to loopback names: a page that points a name of its own at 127.0.0.1
    (DNS rebinding) gets nothing."""
    app = create_app(UiSettings(store=str(store), actions=True))
    for base in ("http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765"):
        assert TestClient(app, base_url=base).get("/").status_code == 200
    evil = TestClient(app, base_url="http://rebound.example:8765")
    assert evil.get("/").status_code == 403 and evil.get("/api/runs").status_code == 403
    assert evil.post("/action/stop", data={"run": "big"}).status_code == 403


def test_off_loopback_every_request_needs_the_token(store: Path, tmp_path: Path) -> None:
    proc, address = _serve(store, tmp_path, "--host", "0.0.0.0")
    try:
        token = re.search(r"\?token=(\S+)$", address).group(1)
        port = re.search(r":(\d+)/", address).group(1)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/").status_code == 401
        assert httpx.get(base + "/run?id=big").status_code == 401
        assert httpx.get(base + "/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(base + "/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        with httpx.Client(base_url=base) as c:  # a browser: the address once, then the cookie
            first = c.get(f"/run?id=big&token={token}")
            assert first.status_code == 303 and first.headers["location"] == "/run?id=big"
            assert c.get("/run?id=big").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_live_stream_tells_of_each_change(store: Path, tmp_path: Path) -> None:
    """``/events?run=`` sends a change when the run's record changes (here: a status written to the store)."""
    db = copy_store(store, tmp_path / "s.sqlite")
    proc, address = _serve(db, tmp_path)
    try:
        with httpx.stream("GET", address + "events?run=small", timeout=60) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = []
            for line in r.iter_lines():
                if line.startswith("data:"):
                    events.append(line)
                    if len(events) == 1:  # the first tells how the run stands; now change it
                        with Store.open(db, write=True) as st:
                            st.set_status(st.run("small").id, "interrupted", error="changed by the test")
                    else:
                        break
        assert '"done"' in events[0] and '"interrupted"' in events[1]
    finally:
        proc.terminate()
        proc.wait(timeout=30)

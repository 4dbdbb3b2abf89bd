"""The progress display: a live line on a terminal, JSON log lines otherwise."""

from __future__ import annotations

import io
import json

from rich.console import Console

from maker.cli._logging import ProgressDisplay, configure_logging
from maker.engine import Progress


def _reports() -> list[Progress]:
    return [
        Progress(
            run_id="r",
            steps=s,
            expected_steps=1000,
            calls=3 * s + 5,
            red_flags=2,
            errors=0,
            max_rounds=2,
            elapsed_s=s / 100,
            steps_per_s=100.0,
        )
        for s in (100, 500, 900)
    ]


def test_live_display_shows_rate_votes_red_flags_and_eta() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=200)
    with ProgressDisplay(live=True, console=console) as display:
        for report in _reports():
            display(report)
    out = buf.getvalue()
    assert "900/1,000 steps" in out
    assert "100/s" in out and "votes/step" in out and "red flags" in out
    assert "ETA 0:00:01" in out


def test_off_a_terminal_progress_is_json_logged(capsys) -> None:
    configure_logging(json_logs=True)
    display = ProgressDisplay(live=False, log_every_s=0.0)
    with display:
        for report in _reports():
            display(report)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["steps"] for line in lines] == [100, 500, 900]
    assert all(line["event"] == "progress" and line["run_id"] == "r" and "eta_s" in line for line in lines)
    assert lines[-1]["votes_per_step"] == round(2705 / 900, 4)


def test_the_live_line_shows_the_cost_and_a_wait_on_the_provider_while_no_step_comes(monkeypatch) -> None:
    """While a provider's rate limit holds the run, no step is committed and no report comes: the line still says
    what it waits on and for how long (refreshed every second from ``rate_limit_waits``)."""
    import re
    import time

    import maker.agents as agents
    from maker.agents import RateLimitWait

    wait = RateLimitWait(endpoint="http://127.0.0.1:9/v1 m", until=time.time() + 3600, reason="HTTP 429")
    monkeypatch.setattr(agents, "rate_limit_waits", lambda: [wait])
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=240)
    with ProgressDisplay(live=True, console=console) as display:
        display(_reports()[0].model_copy(update={"cost": 1.5, "tokens": 1000}))
        give_up = time.monotonic() + 120  # a guard against a hang, not a timing assertion
        while "waiting on the provider (HTTP 429" not in buf.getvalue():
            assert time.monotonic() < give_up, "the wait never showed on the line"
            time.sleep(0.05)
    out = buf.getvalue()
    assert "$1.5000" in out
    assert re.search(r"http://127\.0\.0\.1:9/v1 m\) 3[56]\d\d s", out)

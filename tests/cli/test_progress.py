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

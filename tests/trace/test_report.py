"""The HTML trace report: real runs in a real store, rendered and read back (and opened in Chromium when present)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from maker.errors import UserError
from maker.runs import start_run
from maker.store import Store
from maker.trace import TraceStats, render_report, step_records, trace_stats, write_report

AGENT = "simulated:p=0.9,spread=2,malformed=0.03,seed=3"
PLOTS = {"votes", "calls", "rounds", "red-flags", "time"}


def _run(tmp_path: Path, detail: str) -> Path:
    store = tmp_path / "s.sqlite"
    start_run("hanoi", {"disks": 7}, {"agents": [AGENT], "k": 3, "detail": detail}, store=store, run_id="r")
    return store


def _stats(store: Path) -> TraceStats:
    with Store.open(store) as st:
        return trace_stats(st, st.run("r"))


def _hardest(stats: TraceStats) -> set[int]:
    return {h.step for h in [*stats.hardest.most_rounds, *stats.hardest.most_disagreement]}


@pytest.fixture
def report(tmp_path: Path) -> tuple[Path, TraceStats, str]:
    store = _run(tmp_path, "samples")
    out = write_report(store, "r", tmp_path / "report.html")
    return out, _stats(store), out.read_text(encoding="utf-8")


def test_report_is_complete_and_self_contained(report: tuple[Path, TraceStats, str], tmp_path: Path) -> None:
    out, stats, page = report
    assert out == tmp_path / "report.html" and out.is_file()
    assert not list(tmp_path.glob(".report.html.*")), "the temp file of the atomic write was left behind"

    # five plots, each an inline SVG in its own figure with a caption
    figures = re.findall(r'<figure id="plot-([\w-]+)"><svg\b.*?</svg>\s*<figcaption>', page, re.S)
    assert set(figures) == PLOTS and len(figures) == 5
    assert page.count("<svg") == 5
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page

    # the stats table carries the run's own numbers
    assert f"{stats.calls_per_step:.4g} measured, {stats.calls_per_step_theory:.4g} theory" in page
    r = stats.rounds
    assert f"max {r.max} (step " in page and f'href="#step-{r.max_step}"' in page
    assert f"<th>p measured</th><td>{stats.p_measured:.4g}</td>" in page
    assert f"<th>tokens</th><td>{stats.tokens:,}</td>" in page
    assert f"{stats.red_flags.total} (" in page and "format: " in page
    agent = stats.per_agent[0]
    assert f"{agent.p_low:.4g} – {agent.p_high:.4g}" in page

    # every hardest step links to its own section, which shows the step's record and samples
    hardest = _hardest(stats)
    assert hardest
    for step in hardest:
        assert f'href="#step-{step}"' in page
        assert f'<section class="step" id="step-{step}">' in page
    with Store.open(tmp_path / "s.sqlite") as st:
        step = stats.rounds.max_step
        (rec,) = step_records(st, st.run("r"), step, step + 1, samples=True)
    section = page[page.index(f'id="step-{step}"') :]
    section = section[: section.index("</section>")]
    assert f"<h4>Samples ({len(rec['sample_detail'])})</h4>" in section
    assert section.count("<pre>") == 2 + len(rec["sample_detail"])  # answer, input, one per sample

    # nothing to fetch and nothing to run
    assert not re.search(r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"""url\(\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "<script" not in page.lower() and "@import" not in page


def test_sample_text_and_input_are_escaped(report: tuple[Path, TraceStats, str]) -> None:
    _, stats, _ = report
    step = min(_hardest(stats))
    rec = {
        "run_id": "r",
        "step": step,
        "digest": "d",
        "input": "<img src=x onerror=alert(2)>",
        "answer": {"a": "<b>"},
        "votes": [2, 1],
        "rounds": 2,
        "samples": 3,
        "tokens": 10,
        "red_flags": {"<i>why</i>": 1},
        "agent": "<em>agent</em>",
        "correct": None,
        "t_start": 0.0,
        "dur_s": 0.001,
        "speculation": {"accepted": True, "verdicts": [{"verifier": "<u>v</u>", "score": 9.0, "accept": True}]},
        "sample_detail": [
            {
                "idx": 0,
                "round": 0,
                "agent": "<em>agent</em>",
                "temperature": 0.0,
                "tokens": 5,
                "text": "<script>alert(1)</script>",
                "red_flag": None,
                "vote": {"a": "<b>"},
            }
        ],
    }
    page = render_report(stats, [rec])
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page and "<img" not in page
    for markup in ("<em>", "<u>", "<i>", "<b>"):
        assert markup not in page
    assert "draft accepted; &lt;u&gt;v&lt;/u&gt;: accept (score 9.0)" in page


def test_run_without_samples_still_renders(tmp_path: Path) -> None:
    store = _run(tmp_path, "summary")
    page = write_report(store, "r", tmp_path / "report.html").read_text(encoding="utf-8")
    stats = _stats(store)
    assert page.count("<svg") == 5
    assert "Samples were not recorded for this run" in page
    for step in _hardest(stats):
        assert f'id="step-{step}"' in page


def test_report_into_a_missing_directory_says_so(tmp_path: Path) -> None:
    store = _run(tmp_path, "summary")
    with pytest.raises(UserError, match="does not exist"):
        write_report(store, "r", tmp_path / "nope" / "report.html")


def test_report_opens_in_headless_chromium(report: tuple[Path, TraceStats, str], tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (looked for chromium and chromium-browser on PATH)")
    from PIL import Image

    out, _, _ = report
    png = tmp_path / "report.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={png}",
            "--window-size=1280,2400",
            out.resolve().as_uri(),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    assert png.is_file()
    with Image.open(png) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 24)
    assert colours is not None and len(colours) > 16, "the screenshot is blank"
    if os.environ.get("MAKER_KEEP_ARTIFACTS"):
        dest = Path(__file__).parents[1] / "artifacts" / "report.png"
        dest.parent.mkdir(exist_ok=True)
        shutil.copyfile(png, dest)

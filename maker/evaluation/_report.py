"""An evaluation as one self-contained HTML file (``maker eval ... --report out.html``).

Top to bottom: the figures (accuracy with its 95% interval, calls, tokens, steps, cost, time,
and the budget when it was reached), the settings, and one row per problem, failures first, each
with its cost, its run id and the command that shows the run's steps. Inline CSS, no JavaScript,
nothing fetched; every string from the data file or a model is HTML-escaped.
"""

from __future__ import annotations

import os
import shlex
from html import escape
from pathlib import Path
from typing import Any

from maker.evaluation._evaluate import EvalSummary, ProblemRow
from maker.trace.html import CSS, facts_table, money, num, table

__all__ = ["render_eval_report", "write_eval_report"]

_SHOWN = 60


def _cut(text: str | None) -> str:
    """Escaped text, cut to about 60 characters; the whole of it in the tooltip."""
    if text is None:
        return "–"
    if len(text) <= _SHOWN:
        return escape(text)
    return f'<span title="{escape(text)}">{escape(text[: _SHOWN - 3])}...</span>'


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _figures(s: EvalSummary) -> str:
    rate = f"{num(s.problems_per_s)} per second" if s.problems_per_s is not None else "none run now"
    per_call = f" ({s.backend_requests / s.backend_calls:.2f} requests per call)" if s.backend_calls else ""
    unfinished = f", unfinished {num(s.out_of_budget)}: budget reached" if s.out_of_budget else ""
    said = "estimated usage" if s.cost_estimated else "as billed"
    unknown = "" if s.cost is not None else "; a billed agent's price is unknown"
    rows = [
        ["problems", f"{num(s.problems)} (run now {num(s.ran)}, read back {num(s.reused)})"],
        ["correct", f"{num(s.correct)} (wrong {num(s.wrong)}, failed {num(s.failed)}{unfinished})"],
        [
            "accuracy",
            f"{_pct(s.accuracy)}, the mean score (95% interval {_pct(s.accuracy_low)} – {_pct(s.accuracy_high)})",
        ],
        ["calls per problem", f"mean {num(s.calls_mean)}, max {num(s.calls_max)}"],
        ["tokens per problem", f"mean {num(s.tokens_mean)}"],
        ["steps per problem", f"mean {num(s.steps_mean)}"],
        ["red flags", num(s.red_flags)],
        ["cost", f"{money(s.cost)} ({money(s.cost_mean)} per problem; {said}{unknown})"],
        ["wall time", f"{num(s.wall_s)} s; problems {rate}"],
        ["concurrency", num(s.settings.concurrency)],
        ["backend calls", f"{num(s.backend_calls)}{per_call}"],
    ]
    if s.budget_reached:
        rows.append(
            [
                "budget",
                f'<span class="flag">reached</span>: {escape(s.budget_reached)}; the problems under way stopped at '
                "a commit and the rest were not started (evaluate again under the same name with a larger budget)",
            ]
        )
    return facts_table(rows)


def _generated(how: dict[str, Any] | None) -> str:
    """How a generated data set was made (reasoning-gym: size, seed, configuration), after its name."""
    if not how:
        return ""
    shown = ", ".join(f"{k} {v}" for k, v in how.items() if k not in ("source", "name"))
    return escape(f" ({shown})")


def _settings(s: EvalSummary) -> str:
    st = s.settings
    options = {k: v for k, v in st.options.items() if v not in (None, [], {})}
    return facts_table(
        [
            ["name", escape(st.name)],
            ["data", escape(st.data) + _generated(st.generated) + (f" (first {st.limit})" if st.limit else "")],
            [
                "workflow",
                f"{escape(st.workflow)}, question as <code>{escape(st.param)}</code>, answer from "
                f"<code>{escape(st.answer_key)}</code>",
            ],
            ["scorer", escape(st.scorer)],
            ["parameters", escape(", ".join(f"{k}={v!r}" for k, v in st.params.items())) or "–"],
            ["agents", escape("; ".join(st.agents))],
            ["options", escape(", ".join(f"{k}={v}" for k, v in options.items()))],
            ["store", escape(st.store)],
        ]
    )


def _outcome(r: ProblemRow) -> str:
    if r.out_of_budget:
        return {"stopped": "stopped (budget)", "not started": "not started (budget)"}.get(
            r.status, "not resumed (budget)"
        )
    if r.correct:
        return "correct"
    return f'<span class="flag">{"WRONG" if r.status == "done" else "FAILED"}</span>'


def _problems(s: EvalSummary) -> str:
    store = shlex.quote(s.settings.store)
    rows = [
        [
            escape(r.id),
            _outcome(r),
            _cut(r.expected),
            _cut(r.got),
            "–" if r.score is None else f"{r.score:.3g}",
            num(r.steps),
            num(r.calls),
            num(r.tokens),
            num(r.red_flags),
            money(r.cost),
            num(r.wall_s),
            f'{escape(r.run_id)}<br><code class="muted">maker trace show {escape(shlex.quote(r.run_id))} '
            f"--store {escape(store)}</code>",
            _cut(r.error),
        ]
        for r in sorted(s.rows, key=lambda r: r.correct)
    ]  # stable: failures first, each group in data order
    return table(
        ["id", "outcome", "expected", "got", "score", "steps", "calls", "tokens", "red flags", "cost", "wall s", "run"]
        + ["error"],
        rows,
        {4, 5, 6, 7, 8, 9, 10},
    )


def render_eval_report(s: EvalSummary) -> str:
    title = escape(f"maker eval: {s.settings.name}")
    return "".join(
        [
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head><body>',
            f'<h1>{title}</h1><p class="muted">{escape(s.settings.workflow)} on {escape(s.settings.data)}: '
            f"{s.correct} of {s.problems} correct, scored by {escape(s.settings.scorer)}</p>",
            "<h2>Figures</h2>",
            _figures(s),
            "<h2>Settings</h2>",
            _settings(s),
            f"<h2>Problems ({len(s.failures)} not correct, listed first)</h2>",
            _problems(s),
            "</body></html>\n",
        ]
    )


def write_eval_report(s: EvalSummary, path: str | os.PathLike[str]) -> Path:
    """Render ``s`` to ``path`` (written whole, then moved into place); returns the path."""
    out = Path(path)
    tmp = out.with_name(out.name + ".partial")
    tmp.write_text(render_eval_report(s), encoding="utf-8")
    tmp.replace(out)
    return out

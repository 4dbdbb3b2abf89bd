"""A run's trace as one self-contained HTML file (``maker trace report RUN_ID -o report.html``).

The report holds, top to bottom: a statistics table (steps, errors, calls per step measured
against theory, measured p, valid rate, rounds, red flags by reason, time per step, tokens,
speculation acceptance when the run drafted, and every agent of the roster: a voting agent's p with
its 95% interval, the drafter's drafts, a verifier's verdicts); what the run
cost, when its steps recorded usage (the total, per step, a plot over the steps, each agent's
tokens, price and cost by role, and what speculative steps dropped cost); the branches, when the run went back
(``--backtracks``: each branch, where it went back from and to, why, the steps it abandoned); five plots
(votes per step, cumulative calls against the theoretical curve (for a speculative run, the speculation
estimate's, and plain voting's for scale), rounds, red flags and time per
step over the run); a table of the hardest steps (most rounds, most disagreement) linking to a
section per step with its record: answer, votes, red flags, speculation verdicts, the prompt
and every sample the run recorded.

Everything is inline (CSS, plots as SVG with text drawn as paths), so the file opens offline
and runs no JavaScript. Every string taken from the trace is HTML-escaped: prompts and sample
texts come from models and may contain markup.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maker.errors import UserError
from maker.trace.html import CSS, facts_table, money, num, table

if TYPE_CHECKING:
    from maker.trace._stats_model import (
        BranchStats,
        CostStats,
        RoundsStep,
        SpeculationStats,
        SpeculationTheory,
        SplitStep,
        TraceStats,
    )

__all__ = ["render_report", "write_report"]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.3g}%"


def _step_link(step: int, linked: set[int]) -> str:
    return f'<a href="#step-{step}">{step}</a>' if step in linked else str(step)


# -- plots -----------------------------------------------------------------------------------
def _figure(fid: str, caption: str, draw: Callable[[Any], None], *, integer: bool = True) -> str:
    """One plot, ``draw(axes)``, as an inline SVG figure with its caption (HTML already)."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure registry
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 3.4), layout="constrained")
    ax = fig.add_subplot()
    ax.yaxis.set_major_locator(MaxNLocator(integer=integer))
    draw(ax)
    ax.grid(alpha=0.3)
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML prolog and DOCTYPE: the SVG sits inside HTML
    return f'<figure id="plot-{fid}">{svg}<figcaption>{caption}</figcaption></figure>'


def _xlabel(stats: TraceStats) -> str:
    per = stats.series.steps_per_point
    return "step" if per == 1 else f"step (each point is {per} steps)"


def _plots(stats: TraceStats) -> str:
    series = stats.series
    x = series.step
    per = series.steps_per_point
    xlabel = _xlabel(stats)
    out = []

    def figure(fid: str, caption: str, draw: Callable[[Any], None]) -> None:
        out.append(_figure(fid, caption, draw, integer=fid != "time"))

    def votes(ax: Any) -> None:
        hist = {int(n): c for n, c in stats.samples_per_step.histogram.items()}
        ax.bar(list(hist), list(hist.values()), color="#3b6ea8", width=0.8)
        if hist and max(hist.values()) >= 100 * min(hist.values()):
            ax.set_yscale("log")
        ax.set_xlabel("samples (votes) drawn for the step")
        ax.set_ylabel("steps")

    spec = stats.speculation
    voting = stats.calls_per_step_voting_theory if spec is not None else None

    def calls(ax: Any) -> None:
        ax.plot(x, series.calls_cum, color="#3b6ea8", label="measured")
        if series.calls_theory_cum is not None:
            label = "speculation estimate" if stats.theory == "speculation" else "theory"
            ax.plot(x, series.calls_theory_cum, "--", color="#c2571a", label=label)
        if voting is not None:  # a speculative run: what plain voting would have taken, for scale
            first = stats.first_step
            ax.plot(x, [voting * (s - first + 1) for s in x], ":", color="#57606a", label="plain voting")
        ax.legend()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("calls so far")

    def rounds(ax: Any) -> None:
        if per == 1:  # one step per point: mean and max are the same line
            ax.plot(x, series.rounds_max, color="#3b6ea8")
        else:
            ax.plot(x, series.rounds_max, color="#c2571a", lw=0.8, label="max")
            ax.plot(x, series.rounds_mean, color="#3b6ea8", label="mean")
            ax.legend()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("voting rounds")

    def flags(ax: Any) -> None:
        ax.bar(x, series.red_flags, width=-0.9 * per, align="edge", color="#b42318")  # a bar spans its bin
        ax.set_xlabel(xlabel)
        ax.set_ylabel("red-flagged samples")

    def time(ax: Any) -> None:
        ax.plot(x, series.dur_mean_ms, color="#3b6ea8")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ms per step (mean)")

    figure("votes", "Samples drawn per step: most steps should stop at k; the tail is the hard steps.", votes)
    figure("calls", _calls_caption(stats), calls)
    figure("rounds", "Voting rounds per step over the run (mean and max per point).", rounds)
    figure("red-flags", "Red-flagged samples over the run.", flags)
    figure("time", "Mean wall time per step over the run.", time)
    return '<div class="plots">' + "".join(out) + "</div>"


def _calls_caption(stats: TraceStats) -> str:
    theory, spec = stats.calls_per_step_theory, stats.speculation
    if spec is None:
        said = (
            f"; dashed: theory at {num(theory)} calls per step"
            if theory is not None
            else "; no theoretical curve (p unknown)"
        )
        return "Cumulative model calls" + said
    said = (
        f"; dashed: the speculation estimate at the measured rates, {num(theory)} per step"
        if stats.theory == "speculation"
        else "; no speculation estimate (a rate it needs is unknown)"
    )
    if stats.calls_per_step_voting_theory is not None:
        said += f"; dotted: plain voting, {num(stats.calls_per_step_voting_theory)} per step"
    return "Cumulative samples (drafts and voting samples; verdicts are not counted)" + said


# -- cost ------------------------------------------------------------------------------------
_AGENT_COST_HEAD = ["agent", "role", "prompt tokens", "cached", "completion tokens", "price per M", "cost", "usage"]


def _cost_section(s: TraceStats, c: CostStats) -> str:
    """What the run cost: in total, per step, over the steps, by agent and role, and on speculative steps dropped."""
    said = (
        "estimated usage: some requests' tokens were counted here, as their server reported none or the model "
        "is local or simulated"
        if c.estimated
        else "usage as billed: the tokens the servers reported"
    )
    rows = [
        ["total", f"{money(c.total)} ({said})"],
        ["committed steps", f"{money(c.committed)} for {num(s.steps)} steps, {money(c.per_step)} per step"],
        ["speculative steps dropped", _wasted(s, c)],
        [
            "tokens",
            f"{num(c.prompt_tokens)} prompt ({num(c.cached_tokens)} cached), {num(c.completion_tokens)} completion",
        ],
    ]
    if len(c.by_role) > 1:
        rows.append(["by role (committed)", ", ".join(f"{escape(r)} {money(v)}" for r, v in c.by_role.items())])
    notes = []
    unpriced = [a.agent for a in c.by_agent if a.price is None]
    if unpriced:
        notes.append(
            f"No price is known for {escape('; '.join(unpriced))}, so the cost is unknown, not zero: give its spec "
            "<code>price=IN/CACHED/OUT</code> (dollars per million tokens) or a prices file."
        )
    if c.steps_without_usage:
        notes.append(f"{num(c.steps_without_usage)} steps were recorded without usage (by an older maker).")
    agents = [
        [
            escape(a.agent),
            escape(a.role),
            num(a.prompt_tokens),
            num(a.cached_tokens),
            num(a.completion_tokens),
            "unknown" if a.price is None else " / ".join(f"${x:g}" for x in a.price),
            money(a.cost),
            "estimated" if a.estimated else "as billed",
        ]
        for a in c.by_agent
    ]
    return "".join(
        [
            facts_table(rows),
            *(f'<p class="muted">{n}</p>' for n in notes),
            _cost_plot(s, c),
            "<h3>By agent</h3>",
            table(_AGENT_COST_HEAD, agents, {2, 3, 4, 6}),
        ]
    )


def _wasted(s: TraceStats, c: CostStats) -> str:
    window = s.speculation.window if s.speculation else None
    if window is None:
        return money(c.wasted) if c.wasted else "none"
    return (
        f"{money(c.wasted)} ({num(window.wasted_calls)} calls, {num(window.wasted_tokens)} tokens, on steps drafted "
        "ahead of the chain on a state it never reached; in the total, not in the committed steps)"
    )


def _cost_plot(s: TraceStats, c: CostStats) -> str:
    series = s.series
    cum = series.cost_cum
    if cum is None:
        return '<p class="muted">No plot of the cost over the steps: a billed agent\'s price is unknown.</p>'

    def draw(ax: Any) -> None:
        ax.plot(series.step, cum, color="#3b6ea8")
        ax.set_ylim(bottom=0)
        ax.set_xlabel(_xlabel(s))
        ax.set_ylabel("dollars so far")

    dropped = f"; the speculative steps dropped ({money(c.wasted)}) are not in it" if c.wasted else ""
    caption = f"Cost of the committed steps over the run: {money(c.committed)} at the end{dropped}."
    return '<div class="plots">' + _figure("cost", caption, draw, integer=False) + "</div>"


# -- tables ----------------------------------------------------------------------------------
def _stats_table(s: TraceStats, linked: set[int]) -> str:
    r, t, rf, sp = s.rounds, s.time, s.red_flags, s.samples_per_step
    reasons = ", ".join(f"{escape(str(k))}: {num(v)}" for k, v in rf.by_reason.items()) or "none"
    rows = [
        ["steps", f"{num(s.steps)} (from step {num(s.first_step)}), k = {num(s.k)}"],
        ["errors", "unknown (no oracle)" if s.errors is None else num(s.errors)],
        ["calls", num(s.calls)],
        ["calls per step", _calls_per_step(s)],
        ["samples per step", f"median {num(sp.median)}, p99 {num(sp.p99)}, max {num(sp.max)}"],
        ["p measured", num(s.p_measured) + _voting_only(s, lambda spec: num(spec.voting_p))],
        ["valid rate", _pct(s.valid_rate) + _voting_only(s, lambda spec: _pct(spec.voting_valid_rate))],
        [
            "rounds",
            f"median {num(r.median)}, p99 {num(r.p99)}, max {num(r.max)} (step {_step_link(r.max_step, linked)})",
        ],
        ["red flags", f"{num(rf.total)} ({_pct(rf.rate)} of calls); {reasons}"],
        [
            "time per step",
            f"mean {num(t.mean_ms)} ms, median {num(t.median_ms)} ms, p99 {num(t.p99_ms)}"
            f" ms, max {num(t.max_ms)} ms (step {_step_link(t.max_step, linked)}); "
            f"total {num(t.total_s)} s",
        ],
        ["tokens", num(s.tokens)],
    ]
    spec = s.speculation
    if spec:
        routed = ", ".join(f"{escape(str(k))}: {num(v)}" for k, v in spec.routed.items()) or "none"
        rows.append(
            [
                "speculation",
                f"{num(spec.accepted)} of {num(spec.drafted)} drafts accepted "
                f"({_pct(spec.acceptance_rate)}), {num(spec.escalated)} escalated; "
                f"routed to the large model: {routed}",
            ]
        )
    html = facts_table(rows)
    agents = _agent_rows(s)
    if agents:
        html += "<h3>Agents</h3>" + table(_AGENT_HEAD, agents, {2, 3, 4})
        if s.speculation is not None:
            html += (
                '<p class="muted">p is a voting agent\'s votes for the winning answer (the right one where ground '
                "truth is known) over its valid votes. A draft is one sample, so the drafter has no p here: an "
                "accepted draft's answer is checked against ground truth, a rejected draft's answer is not recorded, "
                "so over all valid drafts only bounds are known. A verifier's TPR and FPR need the truth of the drafts "
                "it rejected, which the trace does not keep: it shows what it accepted, of drafts known right and "
                "wrong.</p>"
            )
    return html


_AGENT_HEAD = [
    "agent",
    "role",
    "steps decided",
    "valid votes",
    "p (votes for the winner)",
    "95% interval",
    "what it did",
]


def _voting_only(s: TraceStats, shown: Callable[[SpeculationStats], str]) -> str:
    """For a speculative run, the voting agents' own figure beside the run's (which counts the drafts)."""
    spec = s.speculation
    return "" if spec is None else f" (all agents, drafts included; the voting agents alone: {shown(spec)})"


def _calls_per_step(s: TraceStats) -> str:
    said = f"{num(s.calls_per_step)} measured, {num(s.calls_per_step_theory)} theory"
    if s.speculation is None:
        return said
    if s.theory == "speculation":
        said += " (the speculation estimate at the measured rates)"
    return said + (
        f"; plain voting would take {num(s.calls_per_step_voting_theory)}; verifier calls, not counted as samples: "
        f"{num(s.speculation.verifier_calls_per_step)} per step"
    )


def _agent_rows(s: TraceStats) -> list[list[str]]:
    """Every agent of the roster: voting agents with their p, the drafter with its drafts, verifiers with their
    verdicts."""
    spec = s.speculation
    voted = {a.agent: a for a in s.per_agent}
    drafter = spec.drafter if spec is not None else None
    verifiers = {v.agent: v for v in spec.verifiers} if spec is not None else {}
    rows = []
    for label in s.agents:
        a = voted.get(label)
        decided = num(a.steps_decided if a else 0)
        if drafter is not None and label == drafter.agent and spec is not None:
            d = drafter
            did = f"{num(d.drafts)} drafts, {num(d.valid)} valid ({_pct(d.valid_rate)}), {num(spec.accepted)} accepted"
            if d.accepted_known:
                did += f"; accepted drafts right: {num(d.accepted_right)} of {num(d.accepted_known)}"
            if d.draft_accuracy_low is not None:
                did += f"; valid drafts right: {_pct(d.draft_accuracy_low)} to {_pct(d.draft_accuracy_high)}"
            rows.append([escape(label), "drafter", decided, "–", "–", "–", did])
        elif (v := verifiers.get(label)) is not None:
            did = (
                f"{num(v.ratings)} verdicts, {num(v.accepts)} accepts ({_pct(v.acceptance_rate)}); accepts of drafts "
                f"known right: {num(v.accepts_right)}, known wrong: {num(v.accepts_wrong)}"
                if v.ratings
                else "never asked"
            )
            rows.append([escape(label), "verifier", "–", "–", "–", "–", did])
        elif a is not None:
            interval = f"{num(a.p_low)} – {num(a.p_high)}"
            rows.append([escape(label), "voting", decided, num(a.votes), num(a.p), interval, "voted"])
        else:
            rows.append([escape(label), "voting", "0", "0", "–", "–", "decided no step"])
    return rows


def _hardest(stats: TraceStats, details: dict[int, dict[str, Any]]) -> str:
    rows: dict[int, dict[str, Any]] = {}
    hard: list[RoundsStep | SplitStep] = [*stats.hardest.most_rounds, *stats.hardest.most_disagreement]
    for one in hard:
        rows.setdefault(one.step, {}).update(one.model_dump())
    out = []
    for step, h in rows.items():
        rec = details.get(step, {})
        votes = rec.get("votes")
        dis = h.get("disagreement", 1 - votes[0] / sum(votes) if votes and sum(votes) else None)
        out.append(
            [
                _step_link(step, set(details)),
                num(h.get("rounds", rec.get("rounds"))),
                num(h.get("samples", rec.get("samples"))),
                escape(", ".join(map(str, votes or []))) or "–",
                _pct(dis),
            ]
        )
    if not out:
        return '<p class="muted">No step needed more than one round or split its votes.</p>'
    return table(["step", "rounds", "samples", "votes", "disagreement"], out, {1, 2, 4})


def _step_section(rec: dict[str, Any]) -> str:
    step = rec["step"]
    flags = ", ".join(f"{escape(str(k))}: {num(v)}" for k, v in (rec.get("red_flags") or {}).items()) or "none"
    correct = {True: "yes", False: '<span class="flag">no</span>', None: "unknown"}[rec.get("correct")]
    facts = [
        ["agent", escape(str(rec["agent"]))],
        ["votes", escape(", ".join(map(str, rec["votes"])))],
        ["rounds", num(rec["rounds"])],
        ["samples", num(rec["samples"])],
        ["red flags", flags],
        ["correct", correct],
        ["tokens", num(rec.get("tokens"))],
        ["time", f"{num(1000 * rec['dur_s'])} ms"],
    ]
    spec = rec.get("speculation")
    if spec:
        said = "; ".join(
            escape(
                f"{v['verifier']}: {'accept' if v['accept'] else 'reject'}"
                + (f" (score {v['score']})" if "score" in v else "")
            )
            for v in spec["verdicts"]
        )
        how = (
            escape(f"routed ({spec['route']})")
            if spec.get("route")
            else ("draft accepted" if spec.get("accepted") else "draft rejected, escalated to voting")
        )
        facts.append(["speculation", how + (f"; {said}" if said else "")])
    html = [
        f'<section class="step" id="step-{step}"><h3>Step {step}</h3>',
        facts_table(facts),
        "<h4>Answer</h4>",
        f"<pre>{escape(json.dumps(rec['answer'], ensure_ascii=False))}</pre>",
        "<h4>Input</h4>",
        f"<pre>{escape(str(rec.get('input') or ''))}</pre>",
    ]
    samples = rec.get("sample_detail") or []
    if samples:
        rows = [
            [
                num(sd["idx"]),
                num(sd["round"] + 1),
                escape(str(sd["agent"])),
                num(sd["temperature"]),
                num(sd["tokens"]),
                f'<span class="flag">{escape(str(sd["red_flag"]))}</span>' if sd["red_flag"] else "–",
                "–" if sd["vote"] is None else "winner" if sd["vote"] == rec["answer"] else "other",
                f"<pre>{escape(str(sd['text']))}</pre>",
            ]
            for sd in samples
        ]
        html += [
            f"<h4>Samples ({len(samples)})</h4>",
            table(["#", "round", "agent", "temperature", "tokens", "red flag", "voted", "text"], rows, {0, 1, 3, 4}),
        ]
    else:
        html.append('<p class="muted">Samples were not recorded for this run (run with --detail samples).</p>')
    return "".join(html) + "</section>"


def _branches_section(b: BranchStats) -> str:
    """What backtracking did: a line of totals, then a table of the branches."""
    from maker.trace._branches import first_line

    kinds = ", ".join(f"{escape(k)} {num(n)}" for k, n in b.by_kind.items())
    said = (
        f"<p>{num(b.branches)} branch(es)"
        + (f" ({kinds})" if kinds else "")
        + ("" if b.limit is None else f" of {num(b.limit)} allowed")
        + f"; {num(b.steps_abandoned)} steps abandoned, {num(b.calls)} calls and {num(b.tokens)} tokens on them; "
        f"{num(b.wrong)} wrong answers among them caught"
        + (f"; {num(b.failed_checks)} failed check(s) let through, no backtrack left" if b.failed_checks else "")
        + ".</p>"
    )
    rows = [
        [
            num(r.branch),
            f"{num(r.to_step)} &rarr; {num(r.from_step)}",
            escape(r.kind),
            escape(first_line(r.reason)),
            num(r.steps),
            num(r.wrong),
            num(r.calls),
        ]
        for r in b.by_branch
    ]
    head = ["branch", "went back from &rarr; to", "kind", "reason", "steps abandoned", "wrong caught", "calls"]
    return said + (table(head, rows, numeric={0, 4, 5, 6}) if rows else "")


# -- the page --------------------------------------------------------------------------------
def render_report(stats: TraceStats, details: list[dict[str, Any]], tree: list[dict[str, Any]] | None = None) -> str:
    """The report as an HTML string, from ``trace_stats``, the step records of the steps to show and, for a
    tree workflow's run, its task tree (:func:`maker.trace._tree.task_tree`)."""
    from maker.trace._tree import tree_html

    by_step = {d["step"]: d for d in details}
    title = escape(f"maker report: {stats.run_id}")
    head = (
        f'<h1>{title}</h1><p class="muted">workflow {escape(str(stats.workflow))}, '
        f"status {escape(str(stats.status))}; agents: " + escape("; ".join(map(str, stats.agents))) + "</p>"
    )
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head><body>',
        head,
        "<h2>Statistics</h2>",
        _stats_table(stats, set(by_step)),
        *(('<h2 id="cost">Cost</h2>', _cost_section(stats, stats.cost)) if stats.cost is not None else ()),
        *(
            ('<h2 id="branches">Branches</h2>', _branches_section(stats.branches))
            if stats.branches is not None and (stats.branches.branches or stats.branches.failed_checks)
            else ()
        ),
        *(("<h2>Task tree</h2>", tree_html(tree)) if tree else ()),
        "<h2>Plots</h2>",
        _plots(stats),
        "<h2>Hardest steps</h2>",
        _hardest(stats, by_step),
        *(_step_section(by_step[s]) for s in sorted(by_step)),
        "</body></html>\n",
    ]
    return "".join(parts)


def write_report(
    store_path: str | os.PathLike[str],
    run_id: str,
    out_path: str | os.PathLike[str],
    *,
    speculation_theory: SpeculationTheory | None = None,
) -> Path:
    """Render run ``run_id`` of the store at ``store_path`` to ``out_path``, atomically; returns the path. A
    speculative run's calls are compared with ``speculation_theory`` (:func:`maker.trace.trace_stats`)."""
    from maker.store import Store
    from maker.trace._records import step_records
    from maker.trace._stats import trace_stats
    from maker.trace._tree import task_tree

    out = Path(out_path)
    if not out.parent.is_dir():
        raise UserError(f"cannot write {out}: directory {out.parent} does not exist; create it or pass another -o")
    with Store.open(store_path) as st:
        record = st.run(run_id)
        stats = trace_stats(st, record, speculation_theory=speculation_theory)
        hard = {h.step for h in stats.hardest.most_rounds} | {h.step for h in stats.hardest.most_disagreement}
        details = [rec for step in sorted(hard) for rec in step_records(st, record, step, step + 1, samples=True)]
        tree = task_tree(st, record)
    page = render_report(stats, details, tree)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a report is for sharing
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out

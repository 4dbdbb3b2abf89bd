"""The trace commands: ``maker trace show|stats|report|export``, ``maker replay`` and ``maker fork``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from maker.cli._common import (
    emit,
    finish,
    otel_option,
    progress_display,
    recorded_sets,
    run_common,
    run_overrides,
    store_option,
    store_path,
    voting_options,
)
from maker.errors import UserError
from maker.store import Store

if TYPE_CHECKING:
    from maker.trace import BranchStats, SpeculationStats, TraceStats

_DEFAULT_SHOWN = 20


@click.group()
def trace() -> None:
    """Inspect a run's recorded steps: show, stats, report, export."""


def _open(store: str | None, run_id: str) -> tuple[Store, Any]:
    st = Store.open(store_path(store))
    try:
        return st, st.run(run_id)
    except BaseException:
        st.close()
        raise


@trace.command()
@click.argument("run_id")
@click.option("--step", type=int, default=None, help="Show this step.")
@click.option("--steps", "steps", default=None, help="Show steps A:B (B excluded; A: or :B leave a side open).")
@click.option(
    "--tree",
    is_flag=True,
    help="The task tree (runs of a tree workflow such as solve): each node's task, decisions with their "
    "tallies, winning decomposition and result.",
)
@click.option(
    "--branches",
    "list_branches",
    is_flag=True,
    help="The run's branches (--backtracks): where each went back from and to, why, and the steps it abandoned.",
)
@click.option(
    "--branch",
    "branch",
    type=int,
    default=None,
    metavar="N",
    help="The steps branch N abandoned, shown as --steps shows live steps.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON record per line (the export format; with --tree, one per node; with --branches, one per branch).",
)
@store_option
def show(
    run_id: str,
    step: int | None,
    steps: str | None,
    tree: bool,
    list_branches: bool,
    branch: int | None,
    as_json: bool,
    store: str | None,
) -> None:
    """Every detail of some steps: input, samples, red flags, tallies, winner, speculation, timings; with --step, a
    failed attempt at that step too (a vote no agent decided, workflow code that raised)."""
    from maker.trace import failure_records, parse_range, step_records

    if sum((tree, list_branches, branch is not None, step is not None or steps is not None)) > 1:
        raise UserError("give one of --tree, --branches, --branch N and --step/--steps")
    st, record = _open(store, run_id)
    with st:
        if tree:
            _show_tree(st, record, as_json)
            return
        if list_branches:
            _show_branches(st, record, as_json)
            return
        if branch is not None:
            _show_branch(st, record, branch, as_json)
            return
        failed = failure_records(st, record, step, step + 1) if step is not None else []
        if failed and step is not None and step >= record.steps:  # the run stopped there: nothing committed at it
            for f in failed:
                _show_failure(f, as_json)
            return
        if step is None:
            _note_failure(st, record, run_id)
            _note_branches(st, record, run_id)
        start, stop = parse_range(step, steps, record)
        if step is None and steps is None and stop - start > _DEFAULT_SHOWN:
            stop = start + _DEFAULT_SHOWN
            click.echo(
                f"steps {start}..{stop - 1} of {record.first_step}..{record.steps - 1}; --steps A:B shows others",
                err=True,
            )
        for rec in step_records(st, record, start, stop, samples=True):
            if as_json:
                click.echo(json.dumps(rec, separators=(",", ":")))
            else:
                _show_step(rec)
        for f in failed:  # earlier attempts at a step that a resume then committed
            _show_failure(f, as_json)


def _note_failure(st: Store, record: Any, run_id: str) -> None:
    """Point at the step a failed run stopped at, which no step range shows (it was never committed)."""
    from maker.trace import failure_records

    if record.status != "failed":
        return
    failed = failure_records(st, record, record.steps, record.steps + 1)
    if failed:
        click.echo(
            f"step {record.steps} failed ({failed[-1]['kind']}); `maker trace show {run_id} --step "
            f"{record.steps}` shows the attempt",
            err=True,
        )


def _note_branches(st: Store, record: Any, run_id: str) -> None:
    """Say that the run went back (its abandoned steps are not among the steps shown)."""
    from maker.trace import branch_stats

    b = branch_stats(st, record)
    if b is None or not (b.branches or b.failed_checks):
        return
    went = (
        f"went back {b.branches:,} time(s), abandoning {b.steps_abandoned:,} steps ({b.wrong:,} wrong)"
        if b.branches
        else "never went back"
    )
    let = f"; {b.failed_checks:,} failed check(s) let through" if b.failed_checks else ""
    more = f"; `maker trace show {run_id} --branches` lists them, --branch N shows one's steps" if b.branches else ""
    click.echo(f"run {run_id} {went}{let}{more}", err=True)


def _show_branches(st: Store, record: Any, as_json: bool) -> None:
    from maker.trace import branch_rows, first_line

    rows = branch_rows(st, record)
    if as_json:
        for r in rows:
            click.echo(json.dumps({"run_id": record.run_id, **r.model_dump()}, separators=(",", ":")))
        return
    if not rows:
        click.echo(f"run {record.run_id} never went back (no branches)")
        return
    for r in rows:
        click.echo(
            f"branch {r.branch:<3} went back from step {r.to_step} to {r.from_step}  {r.kind}  "
            f"{r.steps:,} steps abandoned ({r.wrong:,} wrong), {r.calls:,} calls: {first_line(r.reason)}"
        )


def _show_branch(st: Store, record: Any, branch: int, as_json: bool) -> None:
    from maker.trace import branch_step_records, first_line

    recs = branch_step_records(st, record, branch, samples=True)  # a branch the run lacks is a UserError here
    b = next(b for b in st.branches(record.id) if b.branch == branch)
    if not as_json:
        click.echo(
            f"branch {branch}: went back from step {b.to_step} to {b.from_step} ({b.kind}: {first_line(b.reason)}); "
            f"the steps it abandoned:\n"
        )
    for rec in recs:
        if as_json:
            click.echo(json.dumps(rec, separators=(",", ":")))
        else:
            _show_step(rec)


def _show_failure(r: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(r, separators=(",", ":")))
        return
    head = f"step {r['step']}  FAILED ({r['kind']}), not committed"
    if r["agent"] is not None:
        tokens = f"  {r['tokens']} tokens" if r["tokens"] is not None else ""
        head += f"  last agent {r['agent']}  {r['rounds']} round(s)  {r['samples']} samples{tokens}"
    click.echo(head)
    if r["microstep"] is not None:
        click.echo(f"  microstep {r['microstep']}" + (f"  tag {r['tag']}" if r["tag"] else ""))
        click.echo(f"  digest   {r['digest']}")
    if r["input"] is not None:
        lines = r["input"].rstrip("\n").splitlines()
        click.echo("  input    " + "\n           ".join(lines[:40]) + ("\n           ..." if len(lines) > 40 else ""))
    if r["answer"] is not None:
        click.echo(f"  answer   {json.dumps(r['answer'])}")
    if r["agent"] is not None:
        click.echo(f"  votes    {json.dumps(r['votes'])}  (the last agent's tally, highest first)")
    if r["red_flags"]:
        click.echo("  red flags " + ", ".join(f"{k} {v}" for k, v in r["red_flags"].items()))
    click.echo("  error    " + "\n           ".join(r["error"].splitlines()))
    _show_samples(r)
    if not r["sample_detail"] and r["samples"]:
        click.echo("  (samples not recorded: run with --detail samples to keep them)")
    click.echo("")


def _show_tree(st: Store, record: Any, as_json: bool) -> None:
    from maker.trace import task_tree, tree_text

    nodes = task_tree(st, record)
    if nodes is None:
        raise UserError(
            f"run {record.run_id} has no task tree: its steps carry no node tags (workflow "
            f"{record.workflow}); show its steps with --steps A:B"
        )
    if as_json:
        for n in nodes:
            click.echo(json.dumps(n, separators=(",", ":")))
    else:
        click.echo(tree_text(nodes))


def _show_step(r: dict[str, Any]) -> None:
    ok = {True: "correct", False: "WRONG", None: "correctness unknown"}[r["correct"]]
    tokens = f"  {r['tokens']} tokens" if r["tokens"] is not None else ""
    usage = r.get("usage")
    if usage and usage["cost"] is not None:
        from maker.cli._logging import money

        tokens += f"  {money(usage['cost'])}"
    gone = f"  abandoned by branch {r['abandoned_by']}" if r.get("abandoned_by") is not None else ""
    click.echo(
        f"step {r['step']}  {r['agent']}  {r['rounds']} round(s)  {r['samples']} samples{tokens}  "
        f"{1000 * r['dur_s']:.2f} ms  {ok}{gone}"
    )
    click.echo(f"  digest   {r['digest']}")
    if r["input"] is not None:
        lines = r["input"].rstrip("\n").splitlines()
        click.echo("  input    " + "\n           ".join(lines[:40]) + ("\n           ..." if len(lines) > 40 else ""))
    click.echo(f"  winner   {json.dumps(r['answer'])}")
    click.echo(f"  votes    {r['votes']}  (winner first)")
    if r.get("weighted"):
        w = r["weighted"]
        click.echo(f"  weighted {w['tally']}  margin {w['margin']:g} (in the first agent's votes; --ensemble)")
    if r["red_flags"]:
        click.echo("  red flags " + ", ".join(f"{k} {v}" for k, v in r["red_flags"].items()))
    spec = r["speculation"]
    if spec:
        route = spec.get("route")
        head = f"  speculation  routed to voting ({route})" if route else f"  speculation  drafted by {spec['drafter']}"
        if "entropy" in spec:
            head += f", first-token entropy {spec['entropy']}"
        if spec.get("draft_votes"):
            head += f", drafter's votes {spec['draft_votes']}"
        if spec.get("draft_flag"):
            head += f", draft red-flagged: {spec['draft_flag']}"
        if "logprob" in spec:  # --verify logprob: the draft's own statistic (None: the server returned none)
            lp = spec["logprob"]
            head += ", log-probability " + ("not returned" if lp is None else f"{lp:.4g}")
        click.echo(
            head + (", accepted" if spec.get("accepted") else "") + (", escalated" if spec.get("escalated") else "")
        )
        for v in spec["verdicts"]:
            score = f" score {v['score']}" if "score" in v else ""
            click.echo(f"    {v['verifier']}{score}: {'accept' if v['accept'] else 'reject'}")
    _show_samples(r)
    if not r.get("sample_detail") and r["samples"]:
        click.echo("  (samples not recorded: run with --detail samples to keep them)")
    click.echo("")


def _show_samples(r: dict[str, Any]) -> None:
    for s in r.get("sample_detail", []):
        verdict = f"RED FLAG {s['red_flag']}" if s["red_flag"] else f"vote {json.dumps(s['vote'])}"
        text = s["text"].replace("\n", "\\n")
        click.echo(
            f"  #{s['idx']:<3} round {s['round'] + 1}  {s['agent']}  T={s['temperature']}  {s['tokens']} tok  "
            f"{verdict[:120]}"
        )
        click.echo(f"       {text[:160]}{'...' if len(text) > 160 else ''}")


@trace.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@store_option
def stats(run_id: str, as_json: bool, store: str | None) -> None:
    """Rounds, red flags, calls against theory, per-agent p, speculation, time per step, hardest steps."""
    from maker.trace import trace_stats

    st, record = _open(store, run_id)
    with st:
        s = trace_stats(st, record, speculation_theory=speculation_calls)
    if as_json:
        click.echo(json.dumps(s.model_dump(exclude={"series"})))
        return
    click.echo(_stats_text(s))


def speculation_calls(spec: SpeculationStats, k: int, steps: int) -> float | None:
    """The samples per step a speculative run is expected to draw (its draft and the voting agents' samples; a
    verdict is not a sample), by :func:`maker.planning.speculation_estimate` at the run's measured rates.

    A rejected draft's answer is not recorded, so the verifiers' TPR and FPR cannot be told apart from the trace:
    the estimate takes each verifier's measured acceptance rate over the valid drafts it rated (vote mode: its
    rate of agreeing with the draft) as the chance it accepts any draft, verdicts independent. That is what sets
    how many steps escalate, which is what the calls depend on. Steps routed straight to voting (``large_first``,
    ``entropy``, ``draft_split``) are taken as the estimate's first steps voted without a draft."""
    from maker.planning import speculation_estimate

    drafter = spec.drafter
    if drafter is None or not drafter.valid_rate or not spec.voting_p or not spec.voting_valid_rate:
        return None
    asked = [v for v in spec.verifiers if v.ratings]
    pooled = sum(v.accepts for v in asked) / sum(v.ratings for v in asked) if asked else 0.0
    # a verifier never asked had no say in these steps; its rate is taken as the others' together
    rates = [pooled if v.acceptance_rate is None else v.acceptance_rate for v in spec.verifiers]
    est = speculation_estimate(
        drafter_p=1.0,
        drafter_valid=drafter.valid_rate,
        p=spec.voting_p,
        k=k,
        valid=spec.voting_valid_rate,
        steps=steps,
        mode=spec.mode,
        tpr=rates if spec.mode == "score" else None,
        fpr=rates if spec.mode == "score" else None,
        verifier_p=rates if spec.mode == "vote" else None,
        verifiers=len(rates),
        verify_k=spec.verify_k,
        large_first=sum(spec.routed.values()),
    )
    # draft_k is left at 1: a step records its draft as one sample, however many the drafter's vote drew
    return est.large_calls_per_step + est.drafter_calls_per_step


def _cost_lines(c: Any) -> list[str]:
    from maker.cli._logging import money

    said = "estimated usage" if c.estimated else "as billed"
    per_step = "" if c.per_step is None else f", {money(c.per_step)} per step"
    lines = [
        f"cost              {money(c.total)} ({said}{per_step}; {c.prompt_tokens:,} prompt tokens, "
        f"{c.cached_tokens:,} cached, {c.completion_tokens:,} completion)"
    ]
    if c.wasted:
        lines.append(f"                  {money(c.wasted)} of it on speculative steps dropped")
    if len(c.by_role) > 1:
        lines.append("                  by role: " + ", ".join(f"{r} {money(v)}" for r, v in c.by_role.items()))
    for a in c.by_agent:
        price = "no price" if a.price is None else "$" + "/$".join(f"{x:g}" for x in a.price) + " per M"
        lines.append(
            f"    {a.agent}: {money(a.cost)} ({a.prompt_tokens:,} prompt, {a.completion_tokens:,} completion; {price})"
        )
    if c.steps_without_usage:
        lines.append(f"                  {c.steps_without_usage:,} steps recorded no usage (an older maker)")
    return lines


def _branch_lines(b: BranchStats) -> list[str]:
    kinds = ", ".join(f"{k} {n:,}" for k, n in b.by_kind.items())
    limit = "" if b.limit is None else f" of {b.limit:,} allowed"
    lines = [f"branches          {b.branches:,}" + (f" ({kinds})" if kinds else "") + limit]
    if b.branches:
        lines.append(
            f"                  {b.steps_abandoned:,} steps abandoned, {b.calls:,} calls and {b.tokens:,} tokens on "
            f"them; {b.wrong:,} wrong answers among them caught"
        )
    if b.failed_checks:
        lines.append(f"                  {b.failed_checks:,} failed check(s) let through, no backtrack left")
    return lines


def _calls_text(s: TraceStats) -> str:
    theory, spec = s.calls_per_step_theory, s.speculation
    line = f"calls per step    {s.calls_per_step:.4f} measured"
    if theory and s.theory == "speculation" and spec is not None and spec.drafter is not None:
        line += (
            f", {theory:.4f} expected by the speculation estimate (ratio {s.calls_per_step / theory:.3f}): drafts valid "
            f"{spec.drafter.valid_rate}, accepted {spec.acceptance_rate}, escalated to voting at k={s.k}, "
            f"p={spec.voting_p}, valid rate {spec.voting_valid_rate}"
        )
    elif theory:
        line += (
            f", {theory:.4f} expected for k={s.k} at p={s.p_measured} and valid rate {s.valid_rate}"
            f" (ratio {s.calls_per_step / theory:.3f})"
        )
    if spec is not None and s.calls_per_step_voting_theory:
        line += f"\n                  plain voting would take {s.calls_per_step_voting_theory:.4f}"
        line += f"; verifier calls (not samples) {spec.verifier_calls_per_step} per step"
    return line


def _agent_lines(s: TraceStats) -> list[str]:
    spec = s.speculation
    drafter = spec.drafter if spec else None
    lines = ["per agent (p: votes for the winning answer, the right one where ground truth is known; 95% interval)"]
    for a in s.per_agent:
        if drafter is not None and a.agent == drafter.agent:
            continue
        lines.append(
            f"    {a.agent}: decided {a.steps_decided:,} steps, p {a.p} [{a.p_low}, {a.p_high}] over {a.votes:,} votes"
        )
    if spec is None or drafter is None:
        return lines
    d = drafter
    line = f"    {d.agent}: {d.drafts:,} drafts, {d.valid:,} valid (rate {d.valid_rate}), {spec.accepted:,} accepted"
    if d.accepted_known or d.draft_accuracy_low is not None:
        line += (
            f"; accepted drafts right {d.accepted_right:,} of {d.accepted_known:,} known; valid drafts right between "
            f"{d.draft_accuracy_low} and {d.draft_accuracy_high} (a rejected draft's answer is not recorded)"
        )
    lines.append(line)
    for v in spec.verifiers:
        if not v.ratings:
            lines.append(f"    {v.agent}: never asked")
            continue
        lines.append(
            f"    {v.agent}: {v.ratings:,} verdicts, {v.accepts:,} accepts (rate {v.acceptance_rate}); "
            f"accepts of drafts known right {v.accepts_right:,}, known wrong {v.accepts_wrong:,}"
        )
    return lines


def _stats_text(s: TraceStats) -> str:
    r, sp, t, rf = s.rounds, s.samples_per_step, s.time, s.red_flags
    lines = [
        f"run {s.run_id} ({s.workflow}, {s.status}): {s.steps:,} steps"
        + (f" from step {s.first_step}" if s.first_step else "")
        + f", errors {s.errors}",
        f"rounds per step   median {r.median:g}  p99 {r.p99:g}  max {r.max} (step {r.max_step})",
        _calls_text(s),
        f"samples per step  median {sp.median:g}  p99 {sp.p99:g}  max {sp.max}",
        f"red flags         {rf.total:,} ({100 * rf.rate:.3f}% of calls)"
        + ("".join(f"\n    {k}: {v:,}" for k, v in rf.by_reason.items())),
        f"time per step     mean {t.mean_ms:.3f} ms  median {t.median_ms:.3f}  p99 {t.p99_ms:.3f}  "
        f"max {t.max_ms:.3f} (step {t.max_step})",
        *_agent_lines(s),
    ]
    if s.speculation:
        sp2 = s.speculation
        lines.append(
            f"speculation       drafted {sp2.drafted:,}, accepted {sp2.accepted:,} "
            f"(rate {sp2.acceptance_rate}), escalated {sp2.escalated:,}, routed {sp2.routed}"
        )
        win = sp2.window
        if win:
            lines.append(
                f"window            predictions held {win.predictions_held:,}, missed "
                f"{win.predictions_missed:,}; wasted {win.wasted_calls:,} calls "
                f"({win.wasted_calls_per_step} per step), {win.wasted_tokens:,} tokens: "
                + ", ".join(f"{k} {v:,}" for k, v in win.wasted_by_agent.items())
            )
            lines.append(
                f"                  at a rejected draft: waited for its vote {win.rejected_drafts_waited_at:,} "
                f"times, drafted on past it {win.rejected_drafts_passed:,} times"
            )
    if s.cost is not None:
        lines.extend(_cost_lines(s.cost))
    if s.branches is not None:
        lines.extend(_branch_lines(s.branches))
    lines.append(
        "hardest steps     most rounds: "
        + ", ".join(f"{h.step} ({h.rounds} rounds, {h.samples} samples)" for h in s.hardest.most_rounds[:5])
    )
    if s.hardest.most_disagreement:
        lines.append(
            "                  most disagreement: "
            + ", ".join(
                f"{h.step} ({100 * h.disagreement:.0f}% against the winner)" for h in s.hardest.most_disagreement[:5]
            )
        )
    return "\n".join(lines)


@trace.command()
@click.argument("run_id")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), required=True, help="HTML file to write.")
@store_option
def report(run_id: str, output: str, store: str | None) -> None:
    """One self-contained HTML file with plots, the stats table and the hardest steps' details."""
    from maker.trace import write_report

    path = write_report(store_path(store), run_id, output, speculation_theory=speculation_calls)
    click.echo(f"wrote {path}", err=True)


@trace.command()
@click.argument("run_id")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default="jsonl", show_default=True)
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(dir_okay=False),
    default=None,
    help="File to write (jsonl: default standard output; parquet: required).",
)
@click.option("--samples", "with_samples", is_flag=True, help="jsonl: include every recorded sample in its step.")
@store_option
def export(run_id: str, fmt: str, output: str | None, with_samples: bool, store: str | None) -> None:
    """One record per step, in the documented trace format (docs/trace-format.md)."""
    from maker.trace import export_jsonl, export_parquet

    st, record = _open(store, run_id)
    with st:
        if fmt == "parquet":
            if output is None:
                raise UserError("--format parquet needs -o FILE")
            n = export_parquet(st, record, output)
        elif output is None:
            n = export_jsonl(st, record, sys.stdout, samples=with_samples)
        else:
            tmp = Path(output).with_name(Path(output).name + ".partial")
            with open(tmp, "w", encoding="utf-8") as f:
                n = export_jsonl(st, record, f, samples=with_samples)
            tmp.replace(output)
    click.echo(f"exported {n:,} steps", err=True)


@click.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@store_option
def replay(run_id: str, as_json: bool, store: str | None) -> None:
    """Re-run the workflow code over RUN_ID's recorded answers (no model calls) and check every input and state."""
    from maker.runs import replay_run

    def progress(done: int, total: int) -> None:
        if not as_json and sys.stderr.isatty():
            click.echo(f"\rreplayed {done:,}/{total:,} steps", err=True, nl=False)

    result = replay_run(run_id, store=store_path(store), on_progress=progress)
    if not as_json and sys.stderr.isatty():
        click.echo("", err=True)

    def human() -> None:
        click.echo(
            f"run {run_id}: {result.steps:,} steps replayed in {result.wall_s:.1f} s "
            f"({result.steps_per_s:,.0f} steps/s), every input digest matched, "
            f"{result.snapshots_checked:,} state snapshots matched"
            + (
                f", {result.branches:,} abandoned branch(es) of {result.branch_steps:,} steps led where they had"
                if result.branches
                else ""
            )
            + ("" if result.finished is None else ", the workflow is done at the end")
        )

    emit(result.model_dump(), as_json, human)


@click.command()
@click.argument("run_id")
@click.option("--from-step", "from_step", type=int, required=True, help="Start from the state before this step.")
@click.option(
    "--set",
    "sets",
    multiple=True,
    help="Change a workflow parameter (the parent's answers before the fork are re-applied).",
)
@voting_options
@click.option("--seed", type=int, default=None, help="Run seed (default: the parent's).")
@click.option("--run-id", "new_id", default=None, help="Name of the new run (default: generated).")
@click.option(
    "--detail", type=click.Choice(["summary", "samples"]), default=None, help="What to record (default: the parent's)."
)
@click.option("--snapshots", default=None, metavar="all|every:N", help="State snapshots kept (default: the parent's).")
@otel_option
@run_common
def fork(
    run_id: str,
    from_step: int,
    sets: tuple[str, ...],
    agents: tuple[str, ...],
    seed: int | None,
    new_id: str | None,
    detail: str | None,
    snapshots: str | None,
    otel: bool,
    store: str | None,
    as_json: bool,
    log_level: str,
    **voting: Any,
) -> None:
    """A new run from RUN_ID's state before --from-step, with new settings, linked to its parent.

    With --otel the new run's steps are traced; the parent's steps it re-applies to reach --from-step are not."""
    from maker.cli._common import term_as_interrupt
    from maker.cli._logging import configure_logging
    from maker.runs import fork_run

    configure_logging(level=log_level)
    term_as_interrupt()
    overrides = run_overrides(voting, agents, log_level)
    for name, value in (("seed", seed), ("detail", detail), ("snapshots", snapshots)):
        if value is not None:
            overrides[name] = value
    path = store_path(store)

    def started(rid: str) -> None:
        click.echo(f"run_id: {rid}  (forked from {run_id} at step {from_step}; store {path})", err=True)

    with progress_display(as_json) as progress:
        summary = fork_run(
            run_id,
            from_step,
            store=path,
            params=recorded_sets(sets, path, run_id) or None,
            overrides=overrides,
            new_id=new_id,
            on_start=started,
            on_progress=progress,
            otel=True if otel else None,
        )
    finish(summary, as_json)

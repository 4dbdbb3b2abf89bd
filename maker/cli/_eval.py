"""``maker eval``: a workflow over a data set, one run per problem, with accuracy and cost figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import click

from maker.cli._common import (
    as_flags,
    interrupted,
    parse_sets,
    run_common,
    run_options,
    store_path,
    term_as_interrupt,
    voting_options,
)
from maker.errors import UserError

_SHOWN = 60


@click.command("eval")
@click.argument("data")
@click.option(
    "--workflow", default="solve", show_default=True, help="Workflow: a built-in name, module:Class or file.py:Class."
)
@click.option("--param", default="task", show_default=True, help="Workflow parameter that takes each question.")
@click.option(
    "--answer-key",
    default="answer",
    show_default=True,
    help="Key of the workflow's result that holds the answer to score.",
)
@click.option("--set", "sets", multiple=True, help="Another workflow parameter NAME=VALUE, the same for every problem.")
@voting_options
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Base seed; each problem's run seed derives from it and the problem id (and is recorded).",
)
@click.option(
    "--detail",
    type=click.Choice(["summary", "samples"]),
    default="summary",
    show_default=True,
    help="What to record of each run: one row per step, or also every sample.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Problems run at once; their model requests made together go out as one batched call.",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N problems of DATA.")
@click.option(
    "--name",
    default=None,
    help="Name of the evaluation; runs are NAME/<id> (default: eval-<data stem>-<time>). Give an earlier "
    "evaluation's name to finish what it left.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a self-contained HTML report here.",
)
@click.option(
    "--summary",
    "summary_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the JSON summary (figures, settings, one row per problem) here.",
)
@run_common
def eval_(
    data: str,
    workflow: str,
    param: str,
    answer_key: str,
    sets: tuple[str, ...],
    agents: tuple[str, ...],
    seed: int,
    detail: Literal["summary", "samples"],
    concurrency: int,
    limit: int | None,
    name: str | None,
    report_path: str | None,
    summary_path: str | None,
    store: str | None,
    as_json: bool,
    log_level: str,
    **voting: Any,
) -> None:
    """Evaluate a workflow on DATA, a JSON-lines file of {"id", "question", "answer"}.

    Every problem is its own run NAME/<id> in the store, its question passed as --param; the
    answer is the result's --answer-key, compared with the problem's answer (integers by value,
    lists element by element). Runs go --concurrency at a time in one process, sharing the
    agents. Rerunning the same command with the same --name resumes an interrupted evaluation:
    finished problems are read back, the others resumed from their last commit.

    Exit status 0 when the evaluation ran, however many problems came out wrong or failed (the
    table and --summary say which); 2 for bad input, before anything runs; 130 when interrupted.
    """
    from maker.cli._logging import configure_logging
    from maker.evaluation import evaluate, write_eval_report

    configure_logging(level=log_level)
    term_as_interrupt()
    if not agents:
        raise UserError("give at least one --agent, e.g. --agent simulated:gpt-4.1-mini")
    for out in (report_path, summary_path):
        if out is not None and not Path(out).resolve().parent.is_dir():
            raise UserError(f"cannot write {out}: directory {Path(out).resolve().parent} does not exist; create it")
    options = run_options(
        agents=list(agents),
        seed=seed,
        detail=detail,
        log_steps=log_level == "debug",
        **{k: v for k, v in voting.items() if v is not None},
    )
    path = store_path(store)

    names: list[str] = []

    def started(eval_name: str, total: int, done: int) -> None:
        names.append(eval_name)
        again = f", {done} already done" if done else ""
        click.echo(f"evaluation {eval_name}: {total} problems{again}; runs {eval_name}/<id> in store {path}", err=True)
        click.echo(f"  if it stops, the same command with --name {eval_name} finishes what is left", err=True)

    def finished(row: Any, done: int, total: int) -> None:
        detail = "  (recorded)" if row.reused else ""
        if not row.correct:
            detail += f"  {_cut(as_flags(row.error), 120)}" if row.error else f"  got {_cut(row.got)}"
        click.echo(
            f"[{done:>{len(str(total))}}/{total}] {row.id}  {_outcome(row)}  {row.calls:,} calls  "
            f"{row.wall_s:.2f} s{detail}",
            err=True,
        )

    try:
        summary = evaluate(
            data,
            options,
            store=path,
            workflow=workflow,
            param=param,
            answer_key=answer_key,
            params=parse_sets(sets, workflow),
            concurrency=concurrency,
            limit=limit,
            name=name,
            on_start=started,
            on_result=finished,
        )
    except KeyboardInterrupt:
        if not names:
            raise
        interrupted(
            f"interrupted; finished runs and committed steps are saved: the same command with "
            f"--name {names[0]} finishes the rest"
        )
    if summary_path:
        click.echo(f"wrote {summary.write_json(summary_path)}", err=True)
    if report_path:
        click.echo(f"wrote {write_eval_report(summary, report_path)}", err=True)
    click.echo(summary.model_dump_json() if as_json else _table(summary))


def _cut(text: str | None, n: int = _SHOWN) -> str:
    if text is None:
        return "-"
    text = text.replace("\n", "\\n")
    return text if len(text) <= n else text[: n - 3] + "..."


def _outcome(row: Any) -> str:
    return "correct" if row.correct else "WRONG" if row.status == "done" else "FAILED"


def _table(s: Any) -> str:
    st = s.settings
    rate = f"{s.problems_per_s:,.2f} problems/s" if s.problems_per_s is not None else "nothing left to run"
    per_call = f"  ({s.backend_requests / s.backend_calls:.2f} requests per call)" if s.backend_calls else ""
    rows = [
        ("problems", f"{s.problems:,}  (run now {s.ran:,}, read back {s.reused:,})"),
        ("correct", f"{s.correct:,}  (wrong {s.wrong:,}, failed {s.failed:,})"),
        (
            "accuracy",
            f"{100 * s.accuracy:.1f}%  (95% interval {100 * s.accuracy_low:.1f}% - {100 * s.accuracy_high:.1f}%)",
        ),
        ("calls/problem", f"mean {s.calls_mean:,.1f}  max {s.calls_max:,}"),
        ("tokens/problem", f"mean {s.tokens_mean:,.0f}"),
        ("steps/problem", f"mean {s.steps_mean:,.1f}"),
        ("red flags", f"{s.red_flags:,}"),
        ("wall time", f"{s.wall_s:,.2f} s  ({rate})"),
        ("concurrency", f"{st.concurrency}"),
        ("backend calls", f"{s.backend_calls:,}{per_call}"),
    ]
    lines = [f"evaluation {st.name}: {st.workflow} on {st.data}", *(f"  {a:<15} {b}" for a, b in rows)]
    failures = s.failures
    if failures:
        lines.append(f"not correct ({len(failures)}):")
        for r in failures:
            lines.append(f"  {r.id}  {_outcome(r)}  run {r.run_id}")
            lines.append(f"      expected {_cut(r.expected)}")
            lines.append(f"      got      {_cut(r.got)}")
            if r.error:
                lines.append(f"      error    {_cut(r.error, 200)}")
        lines.append(f"  (maker trace show RUN_ID --store {st.store} shows a run's steps)")
    return "\n".join(lines)

"""``maker eval``: a workflow over a data set, one run per problem, with accuracy and cost figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import click

from maker.cli._common import (
    as_flags,
    interrupted,
    otel_option,
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
@click.option(
    "--scorer",
    default=None,
    help="The benchmark's own scorer, module:function or file.py:function: function(answer, expected, problem) "
    "returns a score from 0 to 1 (or a bool); accuracy is the mean score. Default: integers by value, lists "
    "element by element, else text.",
)
@click.option("--set", "sets", multiple=True, help="Another workflow parameter NAME=VALUE, the same for every problem.")
@voting_options
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Base seed; each problem's run seed derives from it and the problem id (and is recorded). It also "
    "generates the problems of rg:NAME.",
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
    "--size",
    type=click.IntRange(min=1),
    default=None,
    help="rg:NAME: how many problems to generate (default: the data set's own, 500 for most). They are generated "
    "from --seed, or from --rg-config seed=N.",
)
@click.option(
    "--rg-config",
    "rg_config",
    multiple=True,
    metavar="KEY=VALUE",
    help="rg:NAME: a field of the data set's configuration (repeatable), e.g. max_terms=3; a value is read as JSON "
    "where it parses (numbers, true, [lists]), else as text.",
)
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
@otel_option
@run_common
def eval_(
    data: str,
    workflow: str,
    param: str,
    answer_key: str,
    scorer: str | None,
    sets: tuple[str, ...],
    agents: tuple[str, ...],
    seed: int,
    detail: Literal["summary", "samples"],
    concurrency: int,
    limit: int | None,
    size: int | None,
    rg_config: tuple[str, ...],
    name: str | None,
    report_path: str | None,
    summary_path: str | None,
    otel: bool,
    store: str | None,
    as_json: bool,
    log_level: str,
    **voting: Any,
) -> None:
    """Evaluate a workflow on DATA, a JSON-lines file of {"id", "question", "answer"}, or rg:NAME.

    Every problem is its own run NAME/<id> in the store, its question passed as --param; the
    answer is the result's --answer-key, compared with the problem's answer (integers by value,
    lists element by element), or scored by --scorer from 0 to 1. Runs go --concurrency at a time in one process, sharing the
    agents. Rerunning the same command with the same --name resumes an interrupted evaluation:
    finished problems are read back, the others resumed from their last commit.

    --max-cost and --token-budget bound the whole evaluation: every problem's run spends from one
    budget, what earlier evaluations under the same --name spent included. Once it is reached the
    runs under way stop at a commit and the problems left are not started; the same command with
    a larger budget goes on.

    rg:NAME generates the problems of the reasoning-gym data set NAME (products, basic_arithmetic,
    spell_backward, ...; `maker eval rg:` lists them; pip install 'maker[rg]'): --size of them, from
    --seed, configured by --rg-config; their ids are 0, 1, ... and each answer is scored by the data
    set's own score_answer unless --scorer is given.

    --otel emits one OpenTelemetry trace: a maker.eval span, under it each problem's run span (with
    its problem id and score); problems read back run nothing and get none.

    Exit status 0 when the evaluation ran, however many problems came out wrong or failed (the
    table and --summary say which); 2 for bad input, before anything runs; 3 when the budget was
    reached with problems left; 130 when interrupted.
    """
    from maker.cli._logging import configure_logging, money
    from maker.evaluation import evaluate, write_eval_report

    configure_logging(level=log_level)
    term_as_interrupt()
    source = _source(data, size, seed, rg_config)
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
    params = parse_sets(sets, workflow)
    if (options.max_cost is not None or options.token_budget is not None) and not options.over_budget:
        _check_budget(source, workflow, param, params, limit, options)

    names: list[str] = []

    def started(eval_name: str, total: int, done: int) -> None:
        names.append(eval_name)
        again = f", {done} already done" if done else ""
        click.echo(f"evaluation {eval_name}: {total} problems{again}; runs {eval_name}/<id> in store {path}", err=True)
        click.echo(f"  if it stops, the same command with --name {eval_name} finishes what is left", err=True)

    def finished(row: Any, done: int, total: int) -> None:
        detail = "  (recorded)" if row.reused else ""
        if not row.correct:
            detail += f"  {_cut(as_flags(row.error), 120)}" if row.error else f"  got {_cut(row.got)}{_score(row)}"
        click.echo(
            f"[{done:>{len(str(total))}}/{total}] {row.id}  {_outcome(row)}  {row.calls:,} calls  "
            f"{money(row.cost)}  {row.wall_s:.2f} s{detail}",
            err=True,
        )

    try:
        summary = evaluate(
            source,
            options,
            store=path,
            workflow=workflow,
            param=param,
            answer_key=answer_key,
            scorer=scorer,
            params=params,
            concurrency=concurrency,
            limit=limit,
            name=name,
            on_start=started,
            on_result=finished,
            otel=True if otel else None,
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
    if summary.budget_reached:
        from maker.engine import BudgetExceeded

        raise BudgetExceeded(_budget_message(summary))  # shown as `stopped: ...`, exit status 3


def _source(data: str, size: int | None, seed: int, rg_config: tuple[str, ...]) -> Any:
    """DATA as :func:`~maker.evaluation.evaluate` takes it: a file's path, or a reasoning-gym data set, checked."""
    from maker.evaluation import is_reasoning_gym, reasoning_gym_data

    if is_reasoning_gym(data):
        return reasoning_gym_data(data, size=size, seed=seed, config=rg_config)
    given = [opt for opt, value in (("--size", size), ("--rg-config", rg_config)) if value]
    if given:
        raise UserError(
            f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to generated data sets (rg:NAME), "
            f"not to a data file ({data}); use --limit to take the first problems of a file"
        )
    return data


def _check_budget(
    data: Any, workflow: str, param: str, params: dict[str, Any], limit: int | None, options: Any
) -> None:
    """Refuse, before anything is written, an evaluation expected to spend more than its budget (the estimates of
    every problem's run, summed), unless --over-budget. Nothing is refused when a run's spending cannot be estimated
    (a workflow that does not say how many steps it takes, a speculative run): the budget is held as it runs."""
    from maker.evaluation import read_data
    from maker.planning import budget_check
    from maker.runs import resolve_workflow

    wf_cls = resolve_workflow(workflow)
    cost = tokens = 0.0  # an unpriced agent adds no dollars (a money budget then refuses it, naming the agent)
    problems, _ = read_data(data, limit)
    for p in problems:
        try:
            check = budget_check(options, wf_cls, {**params, param: p.question})
        except UserError:  # a problem the workflow refuses: the evaluation says so, naming its line
            return
        if check.estimate is None:
            return
        cost += check.estimate.cost
        tokens += check.estimate.tokens
    over = []
    if options.max_cost is not None and cost > options.max_cost:
        over.append(f"estimated ${cost:,.2f} against --max-cost ${options.max_cost:,g}")
    if options.token_budget is not None and tokens > options.token_budget:
        over.append(f"estimated {tokens:,.0f} tokens against --token-budget {options.token_budget:,}")
    if over:
        raise UserError(
            f"the evaluation is expected to spend more than its budget over its {len(problems):,} problems: "
            f"{'; '.join(over)}. Raise the budget, or start it anyway with --over-budget (its runs stop at a commit "
            f"when the budget is reached, and the same command with a larger one goes on)"
        )


def _cut(text: str | None, n: int = _SHOWN) -> str:
    if text is None:
        return "-"
    text = text.replace("\n", "\\n")
    return text if len(text) <= n else text[: n - 3] + "..."


def _score(row: Any) -> str:
    """A partial score, as the scorer gave it (a wrong answer's 0 goes without saying)."""
    return f"  (score {row.score:.3g})" if row.score else ""


def _outcome(row: Any) -> str:
    if row.out_of_budget:
        return {"stopped": "STOPPED", "not started": "NOT STARTED"}.get(row.status, "NOT RESUMED")
    return "correct" if row.correct else "WRONG" if row.status == "done" else "FAILED"


def _ids(rows: list[Any], shown: int = 8) -> str:
    ids = [r.id for r in rows[:shown]]
    return ", ".join(ids) + (f" and {len(rows) - shown:,} more" if len(rows) > shown else "")


def _budget_message(s: Any) -> str:
    """Which problems are done, which stopped at a commit, which were not started, and how to go on."""
    stopped = [r for r in s.rows if r.out_of_budget and r.status == "stopped"]
    new = [r for r in s.rows if r.out_of_budget and r.status == "not started"]
    old = [r for r in s.rows if r.out_of_budget and r.status not in ("stopped", "not started")]
    done = sum(r.status == "done" for r in s.rows)
    parts = [f"{done:,} of {s.problems:,} problems done"]
    if stopped:
        at = ", ".join(f"{r.id} at step {r.steps:,}" for r in stopped[:8])
        parts.append(f"{len(stopped):,} stopped at a commit ({at}{' ...' if len(stopped) > 8 else ''})")
    if new:
        parts.append(f"{len(new):,} not started ({_ids(new)})")
    if old:
        parts.append(f"{len(old):,} left as they were, not resumed ({_ids(old)})")
    larger = [f"`{k}`" for k in ("max_cost", "token_budget") if s.settings.options.get(k) is not None]
    return (
        f"evaluation {s.settings.name}: {s.budget_reached}; " + ", ".join(parts) + ". The same command with "
        f"--name {s.settings.name} and a larger {' or '.join(larger)} goes on from there"
    )


def _cost(s: Any) -> str:
    from maker.cli._logging import money

    said = "estimated usage" if s.cost_estimated else "as billed"
    unknown = "" if s.cost is not None else "; a billed agent's price is unknown (give price=IN/CACHED/OUT or --prices)"
    return f"{money(s.cost)}  ({money(s.cost_mean)} per problem; {said}{unknown})"


def _table(s: Any) -> str:
    st = s.settings
    idle = "nothing run: the budget was reached" if s.budget_reached else "nothing left to run"
    rate = f"{s.problems_per_s:,.2f} problems/s" if s.problems_per_s is not None else idle
    per_call = f"  ({s.backend_requests / s.backend_calls:.2f} requests per call)" if s.backend_calls else ""
    unfinished = f", unfinished {s.out_of_budget:,}: budget reached" if s.out_of_budget else ""
    rows = [
        ("problems", f"{s.problems:,}  (run now {s.ran:,}, read back {s.reused:,})"),
        ("correct", f"{s.correct:,}  (wrong {s.wrong:,}, failed {s.failed:,}{unfinished})"),
        (
            "accuracy",
            f"{100 * s.accuracy:.1f}%  (95% interval {100 * s.accuracy_low:.1f}% - {100 * s.accuracy_high:.1f}%)",
        ),
        ("calls/problem", f"mean {s.calls_mean:,.1f}  max {s.calls_max:,}"),
        ("tokens/problem", f"mean {s.tokens_mean:,.0f}"),
        ("steps/problem", f"mean {s.steps_mean:,.1f}"),
        ("red flags", f"{s.red_flags:,}"),
        ("scorer", st.scorer),
        ("cost", _cost(s)),
        ("wall time", f"{s.wall_s:,.2f} s  ({rate})"),
        ("concurrency", f"{st.concurrency}"),
        ("backend calls", f"{s.backend_calls:,}{per_call}"),
    ]
    made = ", ".join(f"{k} {v}" for k, v in (st.generated or {}).items() if k not in ("source", "name"))
    data = f"{st.data} ({made})" if made else st.data
    lines = [f"evaluation {st.name}: {st.workflow} on {data}", *(f"  {a:<15} {b}" for a, b in rows)]
    failures = [r for r in s.failures if not r.out_of_budget]  # those the budget left: the closing message
    if failures:
        lines.append(f"not correct ({len(failures)}):")
        for r in failures:
            lines.append(f"  {r.id}  {_outcome(r)}  run {r.run_id}")
            lines.append(f"      expected {_cut(r.expected)}")
            lines.append(f"      got      {_cut(r.got)}{_score(r)}")
            if r.error:
                lines.append(f"      error    {_cut(r.error, 200)}")
        lines.append(f"  (maker trace show RUN_ID --store {st.store} shows a run's steps)")
    return "\n".join(lines)

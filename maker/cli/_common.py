"""What every ``maker`` command shares: the command group, the options several commands take, reading
``--set`` and the run options, printing, and how an error is shown. Command modules import from here, and
:mod:`maker.cli` imports them all, so the dependencies run one way.

Errors, in one place: a command raises :class:`~maker.errors.UserError` (or the library does) and the group
prints it as one line, ``error: ...``, with an option the library names by its key (`max_rounds`) shown as
its flag (--max-rounds); click's own usage errors read the same. The exit status says which kind it was:
:data:`EXIT_FAILED` (1) a run or job failed while working, :data:`EXIT_MISUSE` (2) the command was used
wrongly and nothing ran or was written, :data:`EXIT_BUDGET` (3) spending reached the budget and the run stopped
at a commit, resumable with a larger one, :data:`EXIT_INTERRUPTED` (130) Ctrl-C, SIGTERM or a stop request
(``maker stop``, the UI), committed work saved. A command that must stop itself calls :func:`fail` or :func:`interrupted`, never ``sys.exit``."""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from maker.errors import MakerError, RunError, StopRequested, UserError
from maker.store import Store, default_store_path

__all__ = [
    "main",
    "as_flags",
    "EXIT_FAILED",
    "EXIT_MISUSE",
    "EXIT_INTERRUPTED",
    "EXIT_BUDGET",
    "error_line",
    "fail",
    "interrupted",
    "store_option",
    "store_path",
    "parse_sets",
    "recorded_sets",
    "run_options",
    "voting_options",
    "cluster_options",
    "cluster_placement",
    "new_run_options",
    "otel_option",
    "run_common",
    "run_overrides",
    "term_as_interrupt",
    "progress_display",
    "emit",
    "finish",
    "size_text",
    "cost_line",
]

EXIT_FAILED = 1
"""A run (or a Ray job) failed while working; its committed steps are kept."""
EXIT_MISUSE = 2
"""The command was used wrongly (an option, a parameter, an input): nothing ran and nothing was written."""
EXIT_INTERRUPTED = 130
"""Stopped by Ctrl-C or SIGTERM; committed work is saved."""
EXIT_BUDGET = 3
"""Stopped at a commit because spending reached the budget (``--max-cost``, ``--token-budget``); resumable."""


def error_line(message: str) -> str:
    """How every error reads: ``error: `` and the message, options named by their flags (:func:`as_flags`)."""
    return f"error: {as_flags(message)}"


def fail(message: str, code: int = EXIT_MISUSE) -> NoReturn:
    """Print ``message`` as an error line on stderr and exit with ``code``."""
    click.echo(error_line(message), err=True)
    sys.exit(code)


def interrupted(message: str) -> NoReturn:
    """Print what was saved and how to go on, and exit as interrupted."""
    click.echo(message, err=True)
    sys.exit(EXIT_INTERRUPTED)


def _usage_failed(exc: click.UsageError) -> NoReturn:
    """click's usage error as an error line; a group given no command (click 8.2+ raises that too) shows its
    help as click does."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        raise exc
    fail(_usage_message(exc))


def _usage_message(exc: click.UsageError) -> str:
    """click's usage error on one line, with the command's usage: ``no such option: --bogus (usage: maker run
    [OPTIONS] WORKFLOW; see maker run --help)``."""
    text = exc.format_message().strip().rstrip(".")
    text = text[:1].lower() + text[1:]
    if exc.ctx is None:
        return text
    usage = " ".join(exc.ctx.get_usage().split()).removeprefix("Usage: ")
    return f"{text} (usage: {usage}; see {exc.ctx.command_path} --help)"


def store_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--store",
        "store",
        type=click.Path(dir_okay=False),
        default=None,
        help="SQLite store file (default: $MAKER_STORE or ~/.local/share/maker/runs.sqlite).",
    )(f)


def store_path(store: str | None) -> str:
    return str(store) if store else str(default_store_path())


def parse_sets(items: tuple[str, ...], workflow: Any) -> dict[str, Any]:
    """``--set NAME=VALUE`` items as workflow parameters, each value read by the parameter's declared type of
    ``workflow`` (a class or how to find it; see maker.cli._params), and checked before anything runs: an
    unknown name or a value its parameter refuses is a UserError of one line (``bad parameter disks=-1: must
    be greater than or equal to 1``). Parameters not given are left to the workflow's defaults (or, for an
    evaluation, to each problem)."""
    texts: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set takes NAME=VALUE, got {item!r}")
        texts[key.strip()] = value
    if not texts:
        return {}
    from maker.cli._params import read_params
    from maker.runs import resolve_workflow

    wf_cls = resolve_workflow(workflow) if isinstance(workflow, str) else workflow
    values = read_params(wf_cls.Params, texts)
    wf_cls.check_params(values)
    return values


def recorded_sets(items: tuple[str, ...], store: str, run_id: str) -> dict[str, Any]:
    """``--set`` items of a resume or fork, read by the parameter types of the workflow that made ``run_id``."""
    if not items:
        return {}
    from maker.runs import recorded_workflow

    with Store.open(store) as st:
        record = st.run(run_id)
    return parse_sets(items, recorded_workflow(record))


def run_options(**fields: Any) -> Any:
    """The run options the command line gives, as :class:`~maker.runs.RunOptions`; a bad one is a UserError of
    one line naming each option (``bad run option `k` 0: ...``, shown as ``--k 0``)."""
    from pydantic import ValidationError

    from maker.runs import RunOptions, options_error

    fields = prices_option(fields)
    try:
        return RunOptions(**fields)
    except ValidationError as exc:
        raise options_error(exc) from None


def prices_option(fields: dict[str, Any]) -> dict[str, Any]:
    """``--prices FILE`` (``prices_file``) read into the run option ``prices``: model name to dollars per million
    input, cached input and output tokens, recorded with the run."""
    path = fields.pop("prices_file", None)
    if path is None:
        return fields
    from maker.agents.prices import load_prices

    return {**fields, "prices": {m: p.as_list() for m, p in load_prices(path).items()}}


def voting_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(
        [
            click.option(
                "--agent",
                "agents",
                multiple=True,
                help="Agent spec, e.g. simulated:gpt-4.1-mini. Repeat to give escalation agents (or, with "
                "--ensemble, agents that vote together).",
            ),
            click.option(
                "--ensemble",
                is_flag=True,
                default=None,
                help="Every --agent votes on every step, round-robin, instead of escalating (see docs/voting.md).",
            ),
            click.option(
                "--weights",
                type=click.Choice(["p", "equal"]),
                default=None,
                help="With --ensemble: weigh each vote by ln(p/(1-p)) of its agent's p (default; p from the spec, "
                "p=0.97) or count each as one. --k is then in units of the first agent's weight.",
            ),
            click.option(
                "--k", type=int, default=None, help="Vote margin for first-to-ahead-by-k (default: the microstep's, 3)."
            ),
            click.option("--rule", type=click.Choice(["ahead_by_k", "adaptive"]), default=None, help="Voting rule."),
            click.option(
                "--confidence", type=float, default=None, help="Posterior threshold for --rule adaptive (default 0.95)."
            ),
            click.option(
                "--max-rounds",
                type=int,
                default=None,
                help="Sampling rounds per step before escalating or failing (default 100).",
            ),
            click.option(
                "--temperature", type=float, default=None, help="Temperature of samples after the first (default 0.1)."
            ),
            click.option(
                "--first-temperature",
                type=float,
                default=None,
                help="Temperature of each step's first sample (default 0).",
            ),
            click.option(
                "--batch",
                type=int,
                default=None,
                help="Samples per backend call; later rounds are filled up to it (default: the first round's size).",
            ),
            click.option(
                "--max-tokens", type=int, default=None, help="Red-flag responses longer than this (default 750)."
            ),
            click.option(
                "--drafter", default=None, help="Speculative drafting: small-model agent spec that drafts each step."
            ),
            click.option(
                "--verifier", "verifiers", multiple=True, help="Agent that confirms or rejects drafts (repeatable)."
            ),
            click.option(
                "--verify",
                type=click.Choice(["score", "vote", "logprob"]),
                default=None,
                help="score: rate the draft 0-9 in one prefill pass; vote: verifiers answer themselves; logprob: "
                "the draft's own token log-probabilities pass --logprob-threshold (no verifier).",
            ),
            click.option("--threshold", type=float, default=None, help="Acceptance score, 0-9 (default 7)."),
            click.option(
                "--logprob-stat",
                type=click.Choice(["min", "mean"]),
                default=None,
                help="--verify logprob: check the minimum token log-probability (default) or the mean.",
            ),
            click.option(
                "--logprob-threshold",
                type=float,
                default=None,
                help="--verify logprob: accept a draft whose statistic is at least this (default -2.0).",
            ),
            click.option("--verify-k", type=int, default=None, help="Verdict margin to accept a draft (default 1)."),
            click.option(
                "--draft-k",
                type=int,
                default=None,
                help="Vote each draft among the drafter's own samples, first-to-ahead-by-K (default 1: one sample).",
            ),
            click.option(
                "--draft-batch",
                type=int,
                default=None,
                help="Drafter samples per call with --draft-k above 1 (default 2 x K).",
            ),
            click.option("--large-first", type=int, default=None, help="The first N steps always by the large model."),
            click.option(
                "--entropy-threshold",
                type=float,
                default=None,
                help="Route steps whose drafter first-token entropy exceeds this to the large model.",
            ),
            click.option(
                "--window",
                type=int,
                default=None,
                metavar="W",
                help="With --drafter: steps drafted and decided ahead of the chain, at most (default 64, "
                "adapted to how often drafts hold; 1: one step at a time). The trace is the same.",
            ),
            click.option(
                "--fixed-window", is_flag=True, default=None, help="Keep the window at --window, not adapted."
            ),
            click.option(
                "--backtracks",
                type=int,
                default=None,
                metavar="N",
                help="Go back to the last state that passed the workflow's check when a check fails or a step "
                "cannot be decided, and decide on as a new branch, at most N times (default 0: never).",
            ),
            click.option(
                "--max-cost",
                type=float,
                default=None,
                metavar="USD",
                help="Stop at a commit once the run has spent this many dollars (resume with a larger one).",
            ),
            click.option(
                "--token-budget",
                type=int,
                default=None,
                metavar="TOKENS",
                help="Stop at a commit once the run has been billed this many tokens, prompt and completion.",
            ),
            click.option(
                "--over-budget",
                is_flag=True,
                default=None,
                help="Start even when the run's estimated cost is over --max-cost or --token-budget.",
            ),
            click.option(
                "--prices",
                "prices_file",
                type=click.Path(dir_okay=False),
                default=None,
                help="JSON or TOML file of model prices, dollars per million tokens (see docs/costs.md).",
            ),
        ]
    ):
        f = opt(f)
    return f


def cluster_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(
        [
            click.option(
                "--cluster",
                "cluster",
                default=None,
                metavar="ADDRESS",
                help="Serve the models from Ray replica actors: local (a private instance on loopback), "
                "auto ($RAY_ADDRESS, else the cluster started here with `ray start`), ray://HOST:PORT, "
                "or HOST:PORT.",
            ),
            click.option(
                "--cluster-config",
                type=click.Path(exists=True, dir_okay=False),
                default=None,
                help='TOML file of cluster options: address, [default] and [models."SPEC"] placement.',
            ),
            click.option("--replicas", type=int, default=None, help="Replica actors per model (default 1)."),
            click.option("--replica-cpus", type=float, default=None, help="CPUs each replica reserves (default 1)."),
            click.option(
                "--replica-gpus",
                type=float,
                default=None,
                help="GPUs each replica reserves; fractions share a GPU (default 0).",
            ),
            click.option(
                "--lookahead",
                type=int,
                default=None,
                metavar="N",
                help="Steps a replica runs ahead of this process in one actor call, its model calls "
                "checked and reused here (default 1024; 0: every model call goes out on its own).",
            ),
        ]
    ):
        f = opt(f)
    return f


def cluster_placement(given: dict[str, Any]) -> Any:
    """Cluster options from the command line (taken out of ``given``), or None to run the models in this process."""
    cluster, config = given.pop("cluster"), given.pop("cluster_config")
    replicas, cpus, gpus = given.pop("replicas"), given.pop("replica_cpus"), given.pop("replica_gpus")
    lookahead = given.pop("lookahead")
    if cluster is None and config is None:
        if replicas is not None or cpus is not None or gpus is not None or lookahead is not None:
            raise UserError(
                "--replicas, --replica-cpus, --replica-gpus and --lookahead need --cluster (or --cluster-config)"
            )
        return None
    from maker.cluster.config import ClusterOptions

    top = {} if lookahead is None else {"lookahead": lookahead}
    return ClusterOptions.build(cluster, config, replicas=replicas, cpus=cpus, gpus=gpus, **top)


def emit(obj: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(obj, indent=None, sort_keys=False))
    else:
        human()


def as_flags(message: str) -> str:
    """A library message as the command line shows it: an option the library names by its key (`max_rounds`,
    `agents`) becomes the flag that sets it (--max-rounds, --agent)."""
    flags = _flags()
    return re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: flags.get(m[1], m[0]), message)


@functools.cache
def _flags() -> dict[str, str]:
    """Option key -> flag, read off every command's options (their names are the Python API's keywords), and the
    keys whose flag is named otherwise: workflow parameters, a cluster placement's resources."""
    flags = {"params": "--set", "cpus": "--replica-cpus", "gpus": "--replica-gpus"}

    def walk(cmd: click.Command) -> None:
        for p in cmd.params:
            long = [o for o in p.opts if o.startswith("--")]
            if isinstance(p, click.Option) and p.name and long:
                flags.setdefault(p.name, long[0])
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(main)
    return flags


class _Group(click.Group):
    """The ``maker`` group: every error a command raises is shown here (see the module's doc)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            _usage_failed(exc)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MakerError as exc:
            from maker.engine import BudgetExceeded

            if isinstance(exc, BudgetExceeded):
                click.echo(f"stopped: {as_flags(str(exc))}", err=True)
                sys.exit(EXIT_BUDGET)
            if isinstance(exc, StopRequested):
                interrupted(str(exc))
            fail(str(exc), EXIT_FAILED if isinstance(exc, RunError) else EXIT_MISUSE)
        except click.UsageError as exc:
            _usage_failed(exc)
        except KeyboardInterrupt:
            interrupted("interrupted; committed steps are saved (maker resume RUN_ID continues)")


def term_as_interrupt() -> None:
    """SIGTERM stops a run the way Ctrl-C does: decided steps are committed, the run is marked interrupted."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@click.group(cls=_Group)
@click.version_option(package_name="maker")
def main() -> None:
    """maker: long chains of LLM microsteps, voted on and checkpointed."""


def run_common(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--json", "as_json", is_flag=True, help="Print one JSON summary at the end.")(f)
    f = click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))(f)
    f = store_option(f)
    return f


def progress_display(as_json: bool) -> Any:
    from maker.cli._logging import ProgressDisplay

    return ProgressDisplay(live=sys.stderr.isatty() and not as_json)


def otel_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--otel``: emit an OpenTelemetry trace of the run (see maker.telemetry)."""
    return click.option(
        "--otel",
        is_flag=True,
        default=False,
        help="Emit an OpenTelemetry trace of the run: to the application's tracer provider, else by OTLP HTTP to "
        "$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or $OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318). "
        "Those variables alone ask for it too. Needs pip install 'maker[otel]'.",
    )(f)


def new_run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a new run: voting and speculation, seed, run id, recording, commits, cluster, store, output."""
    for opt in reversed(
        [
            click.option("--seed", type=int, default=0, show_default=True, help="Run seed."),
            click.option("--run-id", default=None, help="Name of the run (default: generated and printed)."),
            click.option(
                "--detail",
                type=click.Choice(["summary", "samples"]),
                default="summary",
                show_default=True,
                help="What to record: one row per step, or also every sample.",
            ),
            click.option(
                "--commit-every", type=int, default=4096, show_default=True, help="Commit at least every N steps."
            ),
            click.option(
                "--commit-seconds", type=float, default=0.5, show_default=True, help="... and at least every S seconds."
            ),
            click.option(
                "--snapshots",
                default=None,
                metavar="all|every:N",
                help="State snapshots kept (one is taken per commit): all, or the first, the latest and the "
                "first of every N steps (default every:16384). Resume, replay and fork re-apply the "
                "recorded answers after the nearest one.",
            ),
        ]
    ):
        f = opt(f)
    return voting_options(cluster_options(run_common(otel_option(f))))


def run_overrides(voting: dict[str, Any], agents: tuple[str, ...], log_level: str) -> dict[str, Any]:
    """The run options a resume or fork changes: the voting options given, agents, step logging."""
    overrides = prices_option({k: v for k, v in voting.items() if v is not None and v != ()})
    if "verifiers" in overrides:
        overrides["verifiers"] = list(overrides["verifiers"])
    if agents:
        overrides["agents"] = list(agents)
    if log_level == "debug":
        overrides["log_steps"] = True
    return overrides


def finish(summary: Any, as_json: bool) -> None:
    data = summary.model_dump(mode="json")
    from maker.cli._logging import get_logger

    get_logger(run_id=summary.run_id).info(
        "run finished",
        **{k: data[k] for k in ("steps", "errors", "solved", "calls", "wall_s", "segment_steps", "segment_wall_s")},
    )

    def human() -> None:
        line = f"run {summary.run_id}: {summary.status}, {summary.steps:,} steps in {summary.wall_s:.1f} s"
        if summary.segment_steps != summary.steps or summary.segment_wall_s != summary.wall_s:
            line += (
                f" in all (this resume: {summary.segment_steps:,} steps in {summary.segment_wall_s:.1f} s,"
                f" from step {summary.first_step + summary.steps - summary.segment_steps:,})"
            )
        click.echo(line)
        click.echo(f"  errors {summary.errors}  solved {summary.solved}")
        if summary.branches or summary.failed_checks:
            click.echo(
                f"  went back {summary.branches:,} time(s), as new branches (`maker trace show {summary.run_id} "
                f"--branches`)"
                + (
                    f"; {summary.failed_checks:,} failed check(s) let through, no backtrack left"
                    if summary.failed_checks
                    else ""
                )
            )
        click.echo(
            f"  calls {summary.calls:,} ({summary.calls_per_step:.4f} per step)  red flags {summary.red_flags:,}"
            f"  max rounds {summary.max_rounds}"
        )
        click.echo(f"  {cost_line(summary)}")
        if summary.drafted or summary.escalated:
            click.echo(f"  drafts {summary.drafted:,}  accepted {summary.accepted:,}  escalated {summary.escalated:,}")
            if summary.wasted_calls:
                click.echo(
                    f"  wasted {summary.wasted_calls:,} calls ({summary.wasted_calls / max(1, summary.steps):.3f}"
                    f" per step), {summary.wasted_tokens:,} tokens, on steps drafted ahead off the chain's path"
                )
            for label, n in summary.agent_calls.items():
                click.echo(f"    {label}: {n:,} calls ({n / max(1, summary.steps):.3f} per step)")
        if summary.result:
            text = json.dumps(summary.result)
            click.echo(f"  result {text[:200]}{'...' if len(text) > 200 else ''}")

    emit(data, as_json, human)


def cost_line(summary: Any) -> str:
    """The summary's cost line: ``cost $1.2345 (estimated usage; 11,523 prompt + 107,550 completion tokens)``."""
    from maker.cli._logging import money

    tokens = f"{summary.prompt_tokens:,} prompt ({summary.cached_tokens:,} cached) + {summary.completion_tokens:,} completion tokens"
    said = "estimated usage" if summary.cost_estimated else "as billed"
    line = f"cost {money(summary.cost)} ({said}; {tokens})"
    if summary.cost is None:
        unpriced = [k for k, v in summary.agent_cost.items() if v is None]
        line += f"; no price for {', '.join(unpriced)} (give price=IN/CACHED/OUT in its spec, or --prices FILE)"
    if summary.wasted_cost:
        line += f"; {money(summary.wasted_cost)} of it on speculative steps dropped"
    return line


def size_text(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"

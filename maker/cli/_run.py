"""``maker run``, ``resume``, ``runs`` and ``serve``."""

from __future__ import annotations

from typing import Any, Literal

import click

from maker.cli._common import (
    cluster_options,
    cluster_placement,
    emit,
    finish,
    new_run_options,
    otel_option,
    parse_sets,
    progress_display,
    recorded_sets,
    run_common,
    run_options,
    run_overrides,
    size_text,
    store_option,
    store_path,
    term_as_interrupt,
    voting_options,
)
from maker.errors import UserError
from maker.store import Store


@click.command()
@click.argument("workflow")
@click.option("--set", "sets", multiple=True, help="Workflow parameter NAME=VALUE (repeatable).")
@new_run_options
def run(workflow: str, sets: tuple[str, ...], **options: Any) -> None:
    """Run WORKFLOW (a built-in name, module:Class or path/to/file.py:Class) to the end."""
    finish(*start(workflow, parse_sets(sets, workflow), **options))


def start(
    workflow: str,
    params: dict[str, Any],
    *,
    agents: tuple[str, ...],
    seed: int,
    run_id: str | None,
    detail: Literal["summary", "samples"],
    commit_every: int,
    commit_seconds: float,
    store: str | None,
    as_json: bool,
    log_level: str,
    snapshots: str | None = None,
    otel: bool = False,
    **voting: Any,
) -> tuple[Any, bool]:
    """Start a run from the command line's options; its summary, and whether to print it as JSON."""
    from maker.cli._logging import configure_logging, get_logger
    from maker.runs import start_run

    configure_logging(level=log_level)
    term_as_interrupt()
    if not agents:
        raise UserError("give at least one --agent, e.g. --agent simulated:gpt-4.1-mini")
    _check_simulated(workflow, params, agents)
    placement = cluster_placement(voting)
    options = run_options(
        agents=list(agents),
        seed=seed,
        detail=detail,
        commit_every=commit_every,
        commit_seconds=commit_seconds,
        log_steps=log_level == "debug",
        cluster=placement,
        **{k: v for k, v in {**voting, "snapshots": snapshots}.items() if v is not None},
    )
    path = store_path(store)
    if options.drafter is not None:
        _preflight(workflow, params, options)
    if options.max_cost is not None or options.token_budget is not None:
        check_budget(workflow, params, options)

    def started(rid: str) -> None:
        click.echo(f"run_id: {rid}  (store {path})", err=True)
        get_logger(run_id=rid).info("run started", workflow=workflow, agents=list(agents), store=path)

    with progress_display(as_json) as progress:
        summary = start_run(
            workflow,
            params,
            options,
            store=path,
            run_id=run_id,
            on_start=started,
            on_progress=progress,
            otel=True if otel else None,
        )
    return summary, as_json


def _check_simulated(workflow: str, params: dict[str, Any], agents: tuple[str, ...]) -> None:
    """Refuse, before a run is made, a `solve` task simulated agents cannot play (`maker solve TASK` and `maker run
    solve --set task=TASK` alike): a bad parameter is said first, whatever the agents."""
    from maker.runs import resolve_workflow
    from maker.workflows.solve import Solve, check_simulated

    wf_cls = resolve_workflow(workflow)
    if issubclass(wf_cls, Solve):
        check_simulated(str(wf_cls.parse_params(params).model_dump()["task"]), agents)


def _preflight(workflow: str, params: dict[str, Any], options: Any) -> None:
    """A speculative run's error estimate before it starts, and a warning naming the fix when at least half a
    wrong step is expected (maker.planning._preflight.preflight)."""
    from maker.cli._logging import get_logger
    from maker.planning import preflight
    from maker.runs import resolve_workflow

    wf_cls = resolve_workflow(workflow)
    steps = wf_cls().expected_steps(wf_cls.parse_params(params))
    text, expected_wrong = preflight(options, None, steps, workflow=wf_cls)
    if text:
        click.echo(text, err=True)
        get_logger().info("speculation estimate", expected_wrong_steps=expected_wrong, warning="warning:" in text)


def check_budget(workflow: str, params: dict[str, Any], options: Any) -> None:
    """Refuse, before anything is written, a run expected to spend more than its budget, unless --over-budget; a
    budget in money needs every agent priced."""
    from maker.cli._logging import get_logger
    from maker.planning import budget_check
    from maker.runs import resolve_workflow

    options.check_priced()
    check = budget_check(options, resolve_workflow(workflow), params)
    if check.text:
        click.echo(check.text + (f" ({check.note})" if check.note else ""), err=True)
        get_logger().info("budget estimate", over=check.over, cost=check.estimate and check.estimate.cost)
    if check.over and not options.over_budget:
        raise UserError(
            f"the run is expected to spend more than its budget: {check.text}. Raise the budget, or start it anyway "
            f"with --over-budget (it stops at a commit when the budget is reached, resumable)"
        )


@click.command()
@click.argument("run_id")
@click.option("--set", "sets", multiple=True, help="Must equal the recorded parameters (checked).")
@voting_options
@cluster_options
@run_common
@otel_option
def resume(
    run_id: str,
    sets: tuple[str, ...],
    agents: tuple[str, ...],
    store: str | None,
    as_json: bool,
    log_level: str,
    otel: bool,
    **voting: Any,
) -> None:
    """Continue RUN_ID from its last committed step."""
    from maker.cli._logging import configure_logging, get_logger
    from maker.runs import resume_run

    configure_logging(level=log_level)
    term_as_interrupt()
    placement = cluster_placement(voting)
    overrides = run_overrides(voting, agents, log_level)
    path = store_path(store)
    params = recorded_sets(sets, path, run_id) or None
    get_logger(run_id=run_id).info("resuming", store=path, overrides=overrides)
    with progress_display(as_json) as progress:
        summary = resume_run(
            run_id,
            store=path,
            params=params,
            overrides=overrides,
            on_progress=progress,
            cluster=placement,
            otel=True if otel else None,
        )
    finish(summary, as_json)


@click.command()
@click.argument("run_id")
@store_option
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait until the run has stopped (at its next commit).",
)
def stop(run_id: str, store: str | None, wait: bool) -> None:
    """Ask RUN_ID, running, to stop at its next commit: it is marked interrupted with every decided step kept, and
    `maker resume RUN_ID` goes on. Works for a run in any process that writes to the store (a terminal, an
    evaluation, a script using the Python API)."""
    import time

    from maker.runs import is_live, request_stop, shown_status

    path = store_path(store)
    record = request_stop(path, run_id, source="maker stop")
    click.echo(f"asked run {run_id} (pid {record.pid}, at step {record.steps:,}) to stop at its next commit", err=True)
    if not wait:
        return
    while True:
        with Store.open(path) as st:
            now = st.run(run_id)
        if now.status != "running" or not is_live(now):
            click.echo(f"run {run_id}: {shown_status(now)} at step {now.steps:,}", err=True)
            return
        time.sleep(0.2)


@click.command()
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs(store: str | None, as_json: bool) -> None:
    """List the runs in a store."""
    from maker.runs import shown_status

    path = store_path(store)
    with Store.open(path) as st:
        records = st.runs()
        kept = st.snapshot_sizes()
        size = st.disk_bytes()
    rows: list[dict[str, Any]] = [
        {
            "run_id": r.run_id,
            "workflow": r.workflow,
            "status": shown_status(r),
            "steps": r.steps,
            "expected_steps": r.expected_steps,
            "errors": r.errors,
            "solved": r.solved,
            "calls": r.calls,
            "tokens": r.tokens,
            "cost": (r.stats or {}).get("cost"),
            "params": r.params,
            "agents": r.config.get("agents"),
            "parent": r.parent_run_id,
            "parent_step": r.parent_step,
            "error": r.error,
            "snapshots": kept.get(r.id, (0, 0))[0],
            "snapshot_bytes": kept.get(r.id, (0, 0))[1],
        }
        for r in records
    ]

    def human() -> None:
        from maker.cli._logging import money

        if not rows:
            click.echo(f"no runs in {path}")
        for r in rows:
            total = f"/{r['expected_steps']:,}" if r["expected_steps"] else ""
            fork = f"  forked from {r['parent']} at step {r['parent_step']}" if r["parent"] else ""
            click.echo(
                f"{r['run_id']}  {r['workflow']}  {r['status']}  {r['steps']:,}{total} steps  "
                f"errors {r['errors']}  cost {money(r['cost'])}  agents {','.join(r['agents'] or [])}  "
                f"snapshots {r['snapshots']} ({size_text(r['snapshot_bytes'])}){fork}"
            )
        click.echo(f"store {path}: {size_text(size)} on disk")

    emit(rows, as_json, human)


@click.command()
@click.option("--agent", "agent", required=True, help="Backend to serve, e.g. hf:smollm2-135m.")
@click.option("--model-name", default=None, help="Model id clients must send (default: the agent spec).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback unless you ask).")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--api-key-env", default=None, help="Require 'Authorization: Bearer $VAR' from clients.")
def serve(agent: str, model_name: str | None, host: str, port: int, api_key_env: str | None) -> None:
    """Serve a backend through the OpenAI-compatible API (/v1/completions, /v1/chat/completions, /v1/models)."""
    import os

    from maker.agents import make_agent
    from maker.agents.serve import make_server

    if api_key_env and not os.environ.get(api_key_env):
        raise UserError(f"--api-key-env {api_key_env}: that variable is not set")
    a = make_agent(agent)
    name = model_name or agent
    server = make_server(a, name, host, port, os.environ.get(api_key_env) if api_key_env else None)
    click.echo(f"serving {name} on http://{host}:{server.server_address[1]}/v1", err=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()

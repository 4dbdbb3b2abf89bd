"""Ray Jobs: ``maker submit`` runs a workflow on a cluster as a job; ``maker jobs`` manages them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from maker.cli._common import EXIT_FAILED, emit, fail, interrupted, parse_sets
from maker.errors import UserError

# Never shipped to the cluster with the working directory (on top of what .gitignore excludes).
_EXCLUDES = [".venv/", ".git/", "__pycache__/", "*.sqlite", "*.sqlite-wal", "*.sqlite-shm"]
_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _address_option(f: Any) -> Any:
    return click.option(
        "--address",
        default=None,
        metavar="URL",
        help="The cluster's job server, e.g. http://127.0.0.1:8265 (default: $RAY_API_SERVER_ADDRESS, "
        "else $RAY_ADDRESS, else http://127.0.0.1:8265).",
    )(f)


def _client(address: str | None) -> Any:
    _use_token()
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        raise UserError("Ray Jobs need Ray: pip install 'maker[ray]'") from None
    url = (
        address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS") or "http://127.0.0.1:8265"
    )
    if "://" not in url:
        url = f"http://{url}"
    try:
        return JobSubmissionClient(url)
    except Exception as exc:  # unreachable, not a job server, refused
        raise UserError(f"cannot reach the Ray job server at {url}: {str(exc).splitlines()[0]}") from None


def _use_token() -> None:
    """Send Ray's cluster token when there is one: clusters started by Ray 2.5x+ require it by default,
    but its client only sends it with RAY_AUTH_MODE=token. The token is read by Ray, never printed."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if (
        os.environ.get("RAY_AUTH_TOKEN")
        or os.environ.get("RAY_AUTH_TOKEN_PATH")
        or (Path.home() / ".ray" / "auth_token").exists()
    ):
        os.environ["RAY_AUTH_MODE"] = "token"


def _follow(client: Any, job_id: str) -> str:
    """Print the job's log as it grows; return its final status."""

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            click.echo(lines, nl=False)

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        interrupted(f"\nstopped following; the job goes on (maker jobs stop {job_id} stops it)")
    for _ in range(100):  # the log closes a moment before the status is final
        status = str(client.get_job_status(job_id).value)
        if status in _TERMINAL:
            return status
        time.sleep(0.1)
    return status


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("workflow")
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED)
@_address_option
@click.option(
    "--working-dir",
    type=click.Path(exists=True, file_okay=False),
    default=".",
    show_default=True,
    help="Shipped to the cluster for the job (what .gitignore ignores, .venv and stores stay here).",
)
@click.option("--no-follow", is_flag=True, help="Print the job id and return instead of following the logs.")
def submit(workflow: str, run_args: tuple[str, ...], address: str | None, working_dir: str, no_follow: bool) -> None:
    """Submit `maker run WORKFLOW RUN_ARGS...` to a Ray cluster as a job.

    RUN_ARGS are `maker run`'s options (--agent, --set, --k, --store, ...). The job's driver
    runs on the cluster with `--cluster auto`, so its models are served by replica actors
    there, and it keeps its store on the cluster: give --store an absolute path that the
    head node can write (default: the store path of the user running the cluster).
    """
    from maker.cli._run import run as run_command
    from maker.runs import new_run_id, resolve_workflow

    args = list(run_args)
    try:  # the options are parsed by `maker run` itself and checked here, before anything is sent
        given = run_command.make_context("run", [workflow, *args], resilient_parsing=False).params
    except click.UsageError as exc:
        raise UserError(f"bad run options for the job: {exc.format_message()}") from None
    for name in ("cluster", "run_id"):
        if given.get(name) is not None:
            raise UserError(f"maker submit sets --{name.replace('_', '-')} itself; leave it out")
    store = given.get("store")
    if store is not None and not Path(store).is_absolute():
        raise UserError(
            f"--store {store}: give an absolute path on the cluster; a relative one would land in the "
            "job's temporary copy of the working directory and be lost"
        )
    wf_cls = resolve_workflow(workflow)
    parse_sets(given.get("sets") or (), wf_cls)  # a bad --set is refused here, not by the job
    wf_name = wf_cls.name
    run_id = new_run_id(wf_name)
    argv = [workflow, *args, "--cluster", "auto", "--run-id", run_id]
    entrypoint = shlex.join(["maker", "run", *argv])
    client = _client(address)
    job_id = client.submit_job(
        entrypoint=entrypoint,
        submission_id=f"maker-{run_id}",
        runtime_env={"working_dir": working_dir, "excludes": _EXCLUDES},
        metadata={"maker_run_id": run_id, "workflow": wf_name},  # names only: never keys or environment
        entrypoint_num_cpus=0,
    )
    click.echo(f"job {job_id}  run_id {run_id}" + (f"  store {store}" if store else ""), err=True)
    if no_follow:
        click.echo(job_id)
        return
    status = _follow(client, job_id)
    if status != "SUCCEEDED":
        fail(f"job {job_id}: {status} (maker jobs logs {job_id} shows its output)", EXIT_FAILED)
    click.echo(f"job {job_id}: {status}", err=True)


@contextlib.contextmanager
def _about_job(job_id: str) -> Iterator[None]:
    """The job server's 'no such job' (a RuntimeError) as a clear error."""
    try:
        yield
    except RuntimeError as exc:
        raise UserError(f"job {job_id}: {str(exc).splitlines()[0]}") from None


@click.group()
def jobs() -> None:
    """List, inspect, follow and stop maker jobs on a Ray cluster."""


def _job_row(j: Any) -> dict[str, Any]:
    meta = j.metadata or {}
    return {
        "job_id": j.submission_id or j.job_id,
        "status": str(j.status.value),
        "run_id": meta.get("maker_run_id"),
        "workflow": meta.get("workflow"),
        "entrypoint": j.entrypoint,
        "message": j.message,
        "start_time": j.start_time,
        "end_time": j.end_time,
    }


@jobs.command("list")
@_address_option
@click.option("--all", "show_all", is_flag=True, help="Also jobs not submitted by maker.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs_list(address: str | None, show_all: bool, as_json: bool) -> None:
    """The cluster's maker jobs, newest first."""
    rows = [_job_row(j) for j in _client(address).list_jobs()]
    rows = [r for r in rows if show_all or r["run_id"]]
    rows.sort(key=lambda r: r["start_time"] or 0, reverse=True)

    def human() -> None:
        if not rows:
            click.echo("no maker jobs on this cluster")
        for r in rows:
            click.echo(f"{r['job_id']}  {r['status']}  {r['workflow'] or ''}  run {r['run_id'] or '-'}")

    emit(rows, as_json, human)


@jobs.command("status")
@click.argument("job_id")
@_address_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs_status(job_id: str, address: str | None, as_json: bool) -> None:
    """One job's status, run id and entrypoint."""
    client = _client(address)
    with _about_job(job_id):
        row = _job_row(client.get_job_info(job_id))

    def human() -> None:
        for k, v in row.items():
            if v is not None:
                click.echo(f"{k}: {v}")

    emit(row, as_json, human)


@jobs.command("logs")
@click.argument("job_id")
@_address_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
def jobs_logs(job_id: str, address: str | None, follow: bool) -> None:
    """A job's output (the run's progress and summary)."""
    client = _client(address)
    with _about_job(job_id):
        if follow:
            _follow(client, job_id)
        else:
            click.echo(client.get_job_logs(job_id), nl=False)


@jobs.command("stop")
@click.argument("job_id")
@_address_option
def jobs_stop(job_id: str, address: str | None) -> None:
    """Stop a job. Its run keeps every committed step and is marked interrupted; `maker resume` continues it."""
    client = _client(address)
    with _about_job(job_id):
        stopped = client.stop_job(job_id)
    click.echo(f"job {job_id}: {'stop requested' if stopped else 'already finished'}")

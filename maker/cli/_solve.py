"""``maker solve TASK``: the built-in ``solve`` workflow on a task in plain text, with its options spelled out."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import click

from maker.cli._common import finish, new_run_options
from maker.cli._run import start
from maker.errors import UserError


def _prompts(path: str) -> dict[str, str]:
    """Prompt templates by role from a TOML or JSON file (``solve = "..."``)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.endswith(".json") else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"--prompts {path}: not valid {'JSON' if path.endswith('.json') else 'TOML'} ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise UserError(f'--prompts {path}: give one template string per role, e.g. solve = "... {{task}} ..."')
    return data


@click.command("solve")
@click.argument("task")
@click.option(
    "--vote",
    type=click.Choice(["key", "judge"]),
    default=None,
    help="How decompositions are voted: by a canonical key (default), or judges pick among candidates.",
)
@click.option("--max-depth", type=int, default=None, help="Nodes this deep are solved without splitting (default 5).")
@click.option("--max-children", type=int, default=None, help="Most sub-tasks per split (default 2).")
@click.option("--candidates", type=int, default=None, help="--vote judge: proposals per node (default 5).")
@click.option(
    "--prompts",
    "prompts_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="TOML or JSON file of prompt templates by role: classify, decompose, judge, solve, compose.",
)
@new_run_options
def solve(
    task: str,
    vote: str | None,
    max_depth: int | None,
    max_children: int | None,
    candidates: int | None,
    prompts_file: str | None,
    **options: Any,
) -> None:
    """Solve TASK, given in plain text, as a voted and checkpointed task tree.

    The same as `maker run solve --set task=TASK ...`: each node is voted atomic or not, split
    by voted decompositions, its children solved concurrently, and its result composed by vote.
    Prints the run's summary, then the answer; `maker trace show RUN_ID --tree` shows the tree.
    """
    params: dict[str, Any] = {"task": task}
    for key, value in (
        ("vote", vote),
        ("max_depth", max_depth),
        ("max_children", max_children),
        ("candidates", candidates),
    ):
        if value is not None:
            params[key] = value
    if prompts_file is not None:
        params["prompts"] = _prompts(prompts_file)
    summary, as_json = start("solve", params, **options)  # which refuses a task simulated agents cannot play
    finish(summary, as_json)
    if not as_json:
        click.echo(f"answer: {(summary.result or {}).get('answer')}")

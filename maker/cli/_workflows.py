"""``maker workflows``: the built-in workflows, or one workflow (built in, ``module:Class`` or ``file.py:Class``)
described: its parameters with their types and defaults, and the microsteps it asks."""

from __future__ import annotations

from typing import Any

import click
from pydantic_core import to_jsonable_python

from maker.cli._common import emit


@click.command()
@click.argument("workflow", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def workflows(workflow: str | None, as_json: bool) -> None:
    """List the built-in workflows, or describe WORKFLOW (a built-in name, module:Class or path/to/file.py:Class):
    its parameters with their types and defaults, and its microsteps."""
    from maker.runs import resolve_workflow
    from maker.workflows import BUILTIN

    if workflow is None:
        rows = [describe(wf) for wf in BUILTIN.values()]
        emit(rows, as_json, lambda: click.echo("\n".join(_text(r, brief=True) for r in rows)))
        return
    row = describe(resolve_workflow(workflow))
    emit(row, as_json, lambda: click.echo(_text(row, brief=False)))


def describe(wf: Any) -> dict[str, Any]:
    """A workflow class as plain data: identity, parameters (type, default, how ``--set`` reads them), microsteps."""
    from maker.cli._params import reading, type_name
    from maker.runs import workflow_ref

    params = {}
    for name, f in wf.Params.model_fields.items():
        required = f.is_required()
        default = None if required else f.get_default(call_default_factory=True)
        params[name] = {
            "type": type_name(f.annotation),
            "required": required,
            "default": to_jsonable_python(default, fallback=repr),
            "help": f.description,
            "set_reads": reading(f.annotation),
        }
    steps = [
        {
            "name": m.name,
            "inputs": list(m.inputs),
            "answer": {n: type_name(f.annotation) for n, f in m.schema.model_fields.items()},
            "voting": m.voting.model_dump(mode="json"),
            "red_flags": [r.name for r in m.red_flags],
            "max_tokens": m.max_tokens,
            "candidate": m.candidate,
        }
        for m in wf.microsteps
    ]
    doc = (wf.__doc__ or "").strip().splitlines()
    return {
        "name": wf.name,
        "version": wf.version,
        "ref": workflow_ref(wf),
        "description": wf.description or (doc[0] if doc else ""),
        "params": params,
        "microsteps": steps,
        "oracle": wf.has_oracle(),
    }


_READS = {"text": "text as given", "scalar": "", "json": "JSON", "any": "JSON, else text"}


def _text(r: dict[str, Any], *, brief: bool) -> str:
    lines = [f"{r['name']} (v{r['version']})" + (f": {r['description']}" if r["description"] else "")]
    if not brief:
        lines.append(f"  ref: {r['ref']}" + ("  (has ground truth: errors are counted)" if r["oracle"] else ""))
        lines.append("  parameters:" if r["params"] else "  parameters: none")
    for n, p in r["params"].items():
        default = "required" if p["required"] else f"default {p['default']!r}"
        if brief:
            lines.append(f"    --set {n}=...  {default}  {p['help'] or ''}".rstrip())
            continue
        reads = _READS[p["set_reads"]]
        lines.append(
            f"    --set {n}=...  {p['type']}{f' ({reads})' if reads else ''}, {default}"
            + (f"  {p['help']}" if p["help"] else "")
        )
    if not brief:
        lines.append("  microsteps:")
        for m in r["microsteps"]:
            v = m["voting"]
            vote = f"k={v['k']}" if v["rule"] == "ahead_by_k" else f"adaptive, confidence {v['confidence']}"
            answer = ", ".join(f"{n}: {t}" for n, t in m["answer"].items())
            flags = f"; red flags: {', '.join(m['red_flags'])}" if m["red_flags"] else ""
            lines.append(
                f"    {m['name']}({', '.join(m['inputs'])}) -> {answer}; {vote}, max {v['max_rounds']} rounds, "
                f"{m['max_tokens']} tokens{flags}" + ("; candidates" if m["candidate"] else "")
            )
    return "\n".join(lines)

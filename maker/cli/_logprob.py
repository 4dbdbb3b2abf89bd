"""``maker calibrate WORKFLOW --verifier logprob --drafter SPEC``: the log-probability verifier's TPR and FPR at each
threshold of a grid, what each means for a speculative run, and the threshold to run at."""

from __future__ import annotations

from typing import Any

import click

from maker.cli._common import emit
from maker.errors import UserError


def calibrate_logprob_command(
    workflow: str,
    params: dict[str, Any],
    verifier: str | None,
    *,
    as_json: bool,
    progress: Any,
    drafter: str | None,
    logprob_stat: str | None,
    drafter_p: float | None,
    threshold: float | None,
    score_by: str | None,
    n_verifiers: int | None,
    verify_k: int | None,
    verify: str | None,
    **common: Any,
) -> None:
    """Check the options, measure, print."""
    from maker.planning import calibrate_logprob

    if verifier not in (None, "logprob"):
        raise UserError(f"--verify logprob asks no verifier: leave out --verifier {verifier} (or give it as logprob)")
    if drafter is None:
        raise UserError("--verifier logprob reads the drafter's own log-probabilities: give --drafter SPEC")
    stray = [
        flag
        for flag, v in (
            ("--drafter-p", drafter_p),
            ("--threshold", threshold),
            ("--score-by", score_by),
            ("--verifiers", n_verifiers),
            ("--verify-k", verify_k),
        )
        if v is not None
    ]
    if stray:
        raise UserError(
            f"{', '.join(stray)}: not read by --verifier logprob (the drafter's p is measured; every threshold of "
            f"the grid is measured)"
        )
    c = calibrate_logprob(workflow, params, drafter, stat=logprob_stat or "min", on_progress=progress, **common)  # type: ignore[arg-type]
    emit(c.model_dump(mode="json"), as_json, lambda: _print(c))


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _print(c: Any) -> None:
    if c.large is not None:
        from maker.cli._plan import _print_calibration

        _print_calibration(c.large)
    t = "the microstep's first temperature" if c.temperature is None else f"temperature {c.temperature:g}"
    click.echo(f"{c.workflow}: the {c.stat} token log-probability of {c.drafter}'s drafts ({c.samples} steps at {t})")
    click.echo(
        f"drafter p = {_num(c.drafter_p, '.4f')} (95% interval {_num(c.drafter_p_low, '.4f')} .. "
        f"{_num(c.drafter_p_high, '.4f')}); valid {c.drafter_valid:.2%}, red-flagged {c.drafts_flagged or 'none'}"
    )
    click.echo(
        f"{c.right} right and {c.wrong} wrong drafts; AUC {_num(c.auc)}; median {c.stat} log-probability "
        f"{_num(c.right_median)} right, {_num(c.wrong_median)} wrong"
    )
    click.echo(f"speculative run of {c.steps_in_task:,} steps (large model p {c.large_p:.4g}, k {c.k}), per threshold:")
    click.echo("  threshold     TPR     FPR   accepted  step error  P(all right)  large calls/step")
    for r in c.rows:
        e = r.estimate
        if e is None:
            click.echo(f"  {r.threshold:>9g}  {_num(r.tpr)}   {_num(r.fpr)}   (rate unknown)")
            continue
        click.echo(
            f"  {r.threshold:>9g}  {r.tpr:.3f}   {r.fpr:.3f}   {e.accept_rate:>7.1%}  {e.step_error:>10.2e}  "
            f"{e.p_full:>12.4g}  {e.large_calls_per_step:>16.3f}"
        )
    voting = next((r.estimate for r in c.rows if r.estimate is not None), None)
    if voting is not None:
        click.echo(
            f"  plain voting: step error {voting.voting_step_error:.2e}, P(all right) {voting.voting_p_full:.4g}, "
            f"{voting.voting_calls_per_step:.3f} large calls/step"
        )
    rec = "none" if c.recommended is None else f"--logprob-threshold {c.recommended:g}"
    safe = "none" if c.recommended_pessimistic is None else f"--logprob-threshold {c.recommended_pessimistic:g}"
    click.echo(f"recommended for a {c.target} chance of a fully correct run: {rec} (at the intervals' ends: {safe})")
    for note in c.notes:
        click.echo(f"note: {note}")

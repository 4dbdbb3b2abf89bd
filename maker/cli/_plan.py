"""Planning a run: ``maker estimate`` (k, calls and error chances from rates) and ``maker calibrate`` (measuring the
rates: an agent's p, a verifier's TPR and FPR)."""

from __future__ import annotations

import math
import sys
from typing import Any, Literal

import click

from maker import stats as vm
from maker.cli._common import emit, parse_sets
from maker.errors import UserError


@click.command()
@click.argument("workflow")
@click.option(
    "--agent", "agent", default=None, help="Agent spec to measure (with --verifier: the large model, optional)."
)
@click.option("--samples", type=int, default=100, show_default=True, help="How many steps to sample (one sample each).")
@click.option("--set", "sets", multiple=True, help="Workflow parameter NAME=VALUE (repeatable).")
@click.option(
    "--temperature",
    type=float,
    default=None,
    help="Sampling temperature (default: the microstep's voting temperature).",
)
@click.option("--target", type=float, default=0.95, show_default=True, help="Wanted chance of a fully correct run.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch", type=int, default=16, show_default=True, help="Steps per generate call.")
@click.option(
    "--max-tokens",
    type=int,
    default=None,
    help="Red-flag (and stop) responses longer than this (default: each microstep's own limit).",
)
@click.option(
    "--verifier",
    default=None,
    help="Measure this verifier's TPR and FPR on drafts of ground-truth steps ('logprob': the drafter's own token "
    "log-probabilities, at each threshold of a grid).",
)
@click.option(
    "--drafter",
    default=None,
    help="With --verifier: judge this drafter's drafts (and measure its p); "
    "default: alternately the right answer and a plausible mistake.",
)
@click.option("--drafter-p", type=float, default=None, help="With --verifier: assume this drafter p for the estimate.")
@click.option(
    "--verify",
    type=click.Choice(["score", "vote", "logprob"]),
    default=None,
    help="How the verifier judges: score (rate 0-9, default) or vote (answer the step itself); logprob: as "
    "--verifier logprob.",
)
@click.option(
    "--logprob-stat",
    type=click.Choice(["min", "mean"]),
    default=None,
    help="--verifier logprob: the statistic checked, minimum token log-probability (default) or mean.",
)
@click.option("--threshold", type=float, default=None, help="Score mode: acceptance score, 0-9 (default 7).")
@click.option(
    "--score-by",
    type=click.Choice(["expected", "greedy"]),
    default=None,
    help="Score mode: expected digit (default) or most likely digit.",
)
@click.option("--verifiers", "n_verifiers", type=int, default=None, help="Verifiers in the estimated run (default 1).")
@click.option("--verify-k", type=int, default=None, help="Verdict margin in the estimated run (default 1).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def calibrate(
    workflow: str,
    agent: str | None,
    samples: int,
    sets: tuple[str, ...],
    temperature: float | None,
    target: float,
    seed: int,
    batch: int,
    max_tokens: int | None,
    as_json: bool,
    verifier: str | None,
    **spec: Any,
) -> None:
    """Measure an agent's per-sample correct rate p on random steps and recommend k (MAKER's pre-run check);
    with --verifier, a verifier's TPR and FPR and what they mean for a speculative run."""
    from maker.planning import calibrate as run_calibration

    live = sys.stderr.isatty() and not as_json

    def progress(done: int, total: int) -> None:
        if live:
            click.echo(f"\r{done}/{total} samples", err=True, nl=done == total)

    if verifier == "logprob" or spec["verify"] == "logprob":
        from maker.cli._logprob import calibrate_logprob_command

        calibrate_logprob_command(
            workflow, parse_sets(sets, workflow), verifier, agent=agent, samples=samples, temperature=temperature,
            target=target, seed=seed, batch=batch, max_tokens=max_tokens, as_json=as_json, progress=progress, **spec,
        )  # fmt: skip
        return
    if spec.pop("logprob_stat") is not None:
        raise UserError("--logprob-stat is for --verifier logprob (the drafter's own log-probabilities)")
    if verifier is not None:
        _calibrate_verifier(
            workflow,
            parse_sets(sets, workflow),
            verifier,
            agent=agent,
            samples=samples,
            temperature=temperature,
            target=target,
            seed=seed,
            batch=batch,
            max_tokens=max_tokens,
            as_json=as_json,
            progress=progress,
            **spec,
        )
        return
    stray = [f"--{k.replace('_', '-')}" for k, v in spec.items() if v is not None]
    if stray:
        raise UserError(
            f"{', '.join(stray).replace('--n-verifiers', '--verifiers')}: these options need "
            f"--verifier SPEC (the verifier whose TPR and FPR are measured)"
        )
    if agent is None:
        raise UserError("give --agent SPEC to measure its p (or --verifier SPEC to measure a verifier's TPR and FPR)")
    c = run_calibration(
        workflow,
        parse_sets(sets, workflow),
        agent,
        samples=samples,
        temperature=temperature,
        target=target,
        seed=seed,
        batch=batch,
        max_tokens=max_tokens,
        on_progress=progress,
    )
    emit(c.model_dump(mode="json"), as_json, lambda: _print_calibration(c))


def _print_calibration(c: Any) -> None:
    click.echo(f"{c.workflow} with {c.agent}: {c.samples} samples at temperature {c.temperature}")
    if c.p is not None:
        click.echo(
            f"p = {c.p:.4f}  (95% interval {c.p_low:.4f} .. {c.p_high:.4f}; {c.correct}/{c.valid} valid correct)"
        )
    click.echo(f"valid {c.valid_rate:.2%}  red flags {c.red_flags or 'none'}  tokens per call {c.tokens_per_call:.1f}")
    if c.k is not None:
        click.echo(
            f"for {c.steps_in_task:,} steps at target {c.target}: k = {c.k}, "
            f"{c.calls_per_step:.3f} calls per step, {c.calls_total:,.0f} in total, "
            f"chance of a fully correct run {c.p_full if c.p_full is not None else 'n/a'}"
        )
    if c.cost_total is not None:
        from maker.cli._logging import money

        said = "estimated usage" if c.usage_estimated else "as billed"
        click.echo(
            f"cost {money(c.cost_total)} for the task ({money(c.cost_per_step)} a step; {c.prompt_tokens_per_call:.0f} "
            f"prompt and {c.tokens_per_call:.0f} completion tokens a call, {said}; at "
            f"${c.price[0]:g}/${c.price[1]:g}/${c.price[2]:g} per M tokens)"
        )
    elif c.price is None and c.calls_per_step is not None:
        click.echo("cost unknown: the agent has no price (give price=IN/CACHED/OUT in its spec)")
    if len(c.by_microstep) > 1:  # a workflow of several roles: each one's own figures
        for name, m in c.by_microstep.items():
            p = "-" if m["p"] is None else f"{m['p']:.3f}"
            click.echo(f"  {name:<12} {m['samples']:>5} samples  valid {m['valid_rate']:.1%}  p {p}")
    if c.note:
        click.echo(f"note: {c.note}")


def _calibrate_verifier(
    workflow: str,
    params: dict[str, Any],
    verifier: str,
    *,
    as_json: bool,
    progress: Any,
    drafter: str | None,
    drafter_p: float | None,
    verify: str | None,
    threshold: float | None,
    score_by: Literal["expected", "greedy"] | None,
    n_verifiers: int | None,
    verify_k: int | None,
    **common: Any,
) -> None:
    """``maker calibrate --verifier``: measure, then print the rates, the estimate and the smallest ensemble."""
    from maker.planning import calibrate_verifier

    mode: Any = verify or "score"
    if mode == "vote" and (threshold is not None or score_by is not None):
        raise UserError(
            "--threshold and --score-by are for --verify score; in vote mode the verifier answers the "
            "step and agrees or not"
        )
    v = calibrate_verifier(
        workflow,
        params,
        verifier,
        drafter=drafter,
        drafter_p=drafter_p,
        mode=mode,
        threshold=7.0 if threshold is None else threshold,
        score_by=score_by or "expected",
        verifiers=1 if n_verifiers is None else n_verifiers,
        verify_k=1 if verify_k is None else verify_k,
        on_progress=progress,
        **common,
    )
    emit(v.model_dump(mode="json"), as_json, lambda: _print_verifier_calibration(v))


def _interval(rate: float | None, low: float | None, high: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.4f}  (95% interval {low:.4f} .. {high:.4f})"


def _print_verifier_calibration(v: Any) -> None:
    """``maker calibrate --verifier`` for people: the large model's calibration (with --agent), the rates, the
    speculative run's estimate, the smallest ensemble and the notes."""
    if v.large is not None:
        _print_calibration(v.large)
    how = (
        f"score mode, accepted at {v.threshold:g} ({v.score_by} digit)"
        if v.mode == "score"
        else "vote mode, accepted when its own answer agrees"
    )
    source = f"drafts by {v.drafter}" if v.drafter else "alternately the right answer and a plausible mistake"
    click.echo(f"{v.workflow} with verifier {v.verifier}: {how}; {v.samples} steps, {source}")
    if v.drafter:
        click.echo(
            f"drafter p = {_interval(v.drafter_p, v.drafter_p_low, v.drafter_p_high)}; valid "
            f"{v.drafter_valid:.2%}, red-flagged drafts {v.drafts_flagged or 'none'}"
        )
    click.echo(f"TPR = {_interval(v.tpr, v.tpr_low, v.tpr_high)} on {v.right} right drafts")
    click.echo(f"FPR = {_interval(v.fpr, v.fpr_low, v.fpr_high)} on {v.wrong} wrong drafts")
    if v.mode == "vote" and v.verifier_p is not None:
        click.echo(
            f"verifier p = {_interval(v.verifier_p, v.verifier_p_low, v.verifier_p_high)}; valid {v.verifier_valid:.2%}"
        )
    _print_speculative_run(v)
    for note in v.notes:
        click.echo(f"note: {note}")


def _print_speculative_run(v: Any) -> None:
    """What a verifier's measured rates mean for a speculative run: the estimate at them and at the intervals'
    pessimistic ends, and the smallest ensemble meeting the target."""
    for label, e in (("", v.estimate), ("at the intervals' pessimistic ends: ", v.estimate_pessimistic)):
        if e is None:
            continue
        if not label:
            click.echo(
                f"speculative run of {e.steps:,} steps ({e.verifiers} verifier{'s' if e.verifiers != 1 else ''}"
                f", verify-k {e.verify_k}; large model p {e.p:.4g}, k {e.k}):"
            )
        click.echo(
            f"  {label}per-step error {e.step_error:.2e}, expected wrong steps {e.expected_wrong:.3g}, "
            f"chance of a fully correct run {e.p_full:.4g}"
        )
        if not label:
            click.echo(
                f"  accepted {e.accept_rate:.1%}, escalated {e.escalation_rate:.1%}; large-model calls per "
                f"step {e.large_calls_per_step:.3f} against {e.voting_calls_per_step:.3f} voting; verifier "
                f"calls {e.verifier_calls_per_step:.3f}"
            )
    ens, safe = v.ensemble, v.ensemble_pessimistic
    if safe is None:
        return

    def one(x: Any) -> str:
        return f"none up to {safe.bound}" if x is None else str(x)

    point = f"{one(ens.unanimous)} at the measured rates, " if ens is not None else ""
    at_n = (
        f"; with {v.verifiers} verifiers, --verify-k {safe.verify_k_at_n}"
        if safe.verify_k_at_n is not None and v.verifiers > 1
        else ""
    )
    click.echo(
        f"smallest ensemble meeting {v.target}: verifiers that all agree (--verify-k equal to their "
        f"number): {point}{one(safe.unanimous)} at the pessimistic ends{at_n}"
    )


@click.command()
@click.option("--steps", type=int, required=True, help="Number of steps s in the task.")
@click.option("--p", "p", type=float, default=None, help="Per-sample correct rate p.")
@click.option("--error", type=float, default=None, help="Per-sample error rate 1-p (instead of --p).")
@click.option("--target", type=float, default=0.95, show_default=True, help="Wanted chance of a fully correct run.")
@click.option("--valid", type=float, default=1.0, show_default=True, help="Fraction of responses not red-flagged.")
@click.option("--k", type=int, default=None, help="Also evaluate this k.")
@click.option(
    "--drafter-p",
    type=float,
    default=None,
    help="Speculative drafting: the drafter's correct rate (then --p/--error is the large model's).",
)
@click.option(
    "--drafter-valid", type=float, default=None, help="Drafter's share of drafts not red-flagged (default 1)."
)
@click.option("--tpr", type=float, default=None, help="Score mode: a verifier's chance of accepting a right draft.")
@click.option("--fpr", type=float, default=None, help="Score mode: a verifier's chance of accepting a wrong draft.")
@click.option("--verifiers", "n_verifiers", type=int, default=None, help="Independent verifiers (default 1).")
@click.option("--verify-k", type=int, default=None, help="Verdict margin that accepts a draft (default 1).")
@click.option(
    "--verify",
    type=click.Choice(["score", "vote", "logprob"]),
    default=None,
    help="Verification mode (default score; logprob: the draft's own log-probabilities, rates as --tpr/--fpr).",
)
@click.option("--verifier-p", type=float, default=None, help="Vote mode: a verifier's per-sample correct rate.")
@click.option(
    "--draft-k",
    type=int,
    default=None,
    help="Drafts voted among the drafter's samples at this margin (default 1: one sample).",
)
@click.option(
    "--verifiers-are-large",
    is_flag=True,
    default=False,
    help="The verifiers are the large model: count their calls as large-model calls.",
)
@click.option("--model", default=None, help="Price the run at this model's published prices (e.g. gpt-4.1-mini).")
@click.option("--price", default=None, metavar="IN/CACHED/OUT", help="Dollars per million tokens (instead of --model).")
@click.option("--prices", "prices_file", default=None, type=click.Path(dir_okay=False), help="Prices file for --model.")
@click.option("--prompt-tokens", type=float, default=None, help="Prompt tokens a request sends (for the cost).")
@click.option("--cached-tokens", type=float, default=0.0, help="Of those, served from the provider's prompt cache.")
@click.option("--completion-tokens", type=float, default=None, help="Completion tokens a call returns (for the cost).")
@click.option(
    "--per-call-prompt",
    is_flag=True,
    default=False,
    help="Bill every call its own prompt (a client sending one request per sample) instead of one per round.",
)
@click.option(
    "--agent-p",
    "agent_p",
    type=float,
    multiple=True,
    help="A mixed ensemble (--ensemble): one agent's p, repeated in the agents' order (the first is the "
    "reference); prints weighted against equal votes (instead of --p).",
)
@click.option(
    "--agent-cost",
    "agent_cost",
    type=float,
    multiple=True,
    help="With --agent-p: what one call of each agent costs (any unit, in the same order), for a cost per step.",
)
@click.option("--k-equal", type=int, default=None, help="With --agent-p and --k: the k evaluated for equal votes.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def estimate(
    steps: int,
    p: float | None,
    error: float | None,
    target: float,
    valid: float,
    k: int | None,
    as_json: bool,
    agent_p: tuple[float, ...],
    agent_cost: tuple[float, ...],
    k_equal: int | None,
    model: str | None,
    price: str | None,
    prices_file: str | None,
    prompt_tokens: float | None,
    cached_tokens: float,
    completion_tokens: float | None,
    per_call_prompt: bool,
    **spec: Any,
) -> None:
    """Plan a run: k_min, expected calls and the chance of a fully correct run (MAKER section 3); with
    --drafter-p, the same for speculative drafting next to it; with a price (--model or --price) and tokens per call
    (--prompt-tokens, --completion-tokens), what the run costs."""
    if agent_p:
        if p is not None or error is not None:
            raise UserError("--agent-p gives each ensemble agent's p: leave out --p and --error")
        _ensemble_estimate(steps, agent_p, agent_cost, target, valid, k, k_equal, as_json)
        return
    if agent_cost or k_equal is not None:
        raise UserError("--agent-cost and --k-equal are for a mixed ensemble: give each agent's p with --agent-p")
    if (p is None) == (error is None):
        raise UserError("give exactly one of --p or --error (or, for a mixed ensemble, --agent-p per agent)")
    if p is None:
        assert error is not None
        p = 1.0 - error
    try:
        kmin = vm.k_min(steps, p, target)
        chosen = k or kmin
        out = {
            "steps": steps,
            "p": p,
            "error": 1 - p,
            "target": target,
            "valid": valid,
            "k_min": kmin,
            "k": chosen,
            "p_step": vm.step_success(p, chosen),
            "p_full": vm.run_success(p, chosen, steps),
            "calls_per_step": vm.expected_calls(p, chosen, valid),
            "calls_total": vm.expected_calls(p, chosen, valid) * steps,
        }
    except ValueError as exc:
        raise UserError(str(exc)) from None
    spec_lines = _speculative_estimate(out, spec)
    cost_lines = _cost(out, model, price, prices_file, prompt_tokens, cached_tokens, completion_tokens, per_call_prompt)

    def human() -> None:
        click.echo(f"steps {steps:,}  p {p:.6g} (1-p {1 - p:.6g})  target {target}")
        click.echo(f"k_min = {kmin}" + (f"  (evaluating k = {chosen})" if k else ""))
        click.echo(f"per-step success {out['p_step']:.12g}")
        click.echo(f"chance of a fully correct run {out['p_full']:.6f}")
        click.echo(f"expected calls per step {out['calls_per_step']:.4f}, in total {math.ceil(out['calls_total']):,}")
        for line in spec_lines + cost_lines:
            click.echo(line)

    emit(out, as_json, human)


def _cost(
    out: dict[str, Any],
    model: str | None,
    price_text: str | None,
    prices_file: str | None,
    prompt_tokens: float | None,
    cached_tokens: float,
    completion_tokens: float | None,
    per_call_prompt: bool,
) -> list[str]:
    """``maker estimate``'s cost: adds ``cost`` to ``out`` and returns its lines (none without a price)."""
    from maker.agents.prices import Price, known_price, load_prices, parse_price
    from maker.cli._logging import money
    from maker.planning import cost_estimate

    if model is None and price_text is None:
        if prompt_tokens is not None or completion_tokens is not None:
            raise UserError(
                "--prompt-tokens and --completion-tokens price a run: give --model NAME or --price IN/CACHED/OUT"
            )
        return []
    price: Price | None
    if price_text is not None:
        price = parse_price(price_text, "--price")
    else:
        price = known_price(model, load_prices(prices_file) if prices_file else None)
        if price is None:
            from maker.agents.prices import KNOWN

            raise UserError(
                f"--model {model}: no known price (known: {', '.join(KNOWN)}); give --price IN/CACHED/OUT "
                f"or a --prices FILE"
            )
    if prompt_tokens is None or completion_tokens is None:
        raise UserError(
            "a cost needs tokens per call: --prompt-tokens N --completion-tokens N (measured: `maker calibrate` "
            "prints tokens per call; `maker trace stats` a run's)"
        )
    try:
        est = cost_estimate(
            steps=out["steps"],
            calls_per_step=out["calls_per_step"],
            k=out["k"],
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
            price=price,
            per_call_prompt=per_call_prompt,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    out["cost"] = est.model_dump(mode="json")
    billed = "every call its own prompt" if per_call_prompt else f"{est.requests_per_step:.4f} requests a step"
    return [
        f"cost {money(est.cost)} ({money(est.cost_per_step)} a step; {billed}, {prompt_tokens:g} prompt tokens a "
        f"request ({cached_tokens:g} cached), {completion_tokens:g} completion tokens a call, at {price})",
        f"tokens {est.tokens:,.0f}",
    ]


def _speculative_estimate(out: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """``maker estimate``'s speculative part: checks the options, adds ``speculative`` and ``ensemble`` to
    ``out`` and returns the lines to print (none without --drafter-p)."""
    from maker.planning import smallest_ensemble, speculation_estimate

    checked = _speculative_options(given)
    if checked is None:
        return []
    n, vk, args = checked
    args.update(p=out["p"], k=out["k"], valid=out["valid"], steps=out["steps"])
    if args["mode"] == "logprob":
        try:
            est = speculation_estimate(verifiers=0, verify_k=1, **args)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        out["speculative"] = est.model_dump(mode="json")
        return _speculative_lines(est, None, n, vk, args, out["target"])
    try:
        est = speculation_estimate(verifiers=n, verify_k=vk, **args)
        ens = smallest_ensemble(target=out["target"], verifiers=n, verify_k=vk, **args)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    out["speculative"], out["ensemble"] = est.model_dump(mode="json"), ens.model_dump(mode="json")
    return _speculative_lines(est, ens, n, vk, args, out["target"])


def _speculative_options(given: dict[str, Any]) -> tuple[int, int, dict[str, Any]] | None:
    """``maker estimate``'s speculative options, checked: ``(verifiers, verify-k, the drafter's and verifiers'
    arguments to the estimate)``, or None without --drafter-p. UserError for options that do not fit together."""
    drafter_p, mode = given["drafter_p"], given["verify"] or "score"
    named = {
        "--drafter-valid": "drafter_valid",
        "--tpr": "tpr",
        "--fpr": "fpr",
        "--verifiers": "n_verifiers",
        "--verify-k": "verify_k",
        "--verify": "verify",
        "--verifier-p": "verifier_p",
        "--verifiers-are-large": "verifiers_are_large",
        "--draft-k": "draft_k",
    }
    if drafter_p is None:
        stray = [flag for flag, key in named.items() if given[key] not in (None, False)]
        if stray:
            raise UserError(
                f"speculative options ({', '.join(stray)}) need --drafter-p, the drafter's correct "
                f"rate, e.g. --drafter-p 0.9 --tpr 0.99 --fpr 0.05"
            )
        return None
    n = 1 if given["n_verifiers"] is None else given["n_verifiers"]
    vk = 1 if given["verify_k"] is None else given["verify_k"]
    tpr, fpr, vp = given["tpr"], given["fpr"], given["verifier_p"]
    if mode == "logprob":  # no verifier: the check's own rates, as `maker calibrate --verifier logprob` measures them
        stray = [
            f
            for f, key in (
                ("--verifiers", "n_verifiers"),
                ("--verify-k", "verify_k"),
                ("--verifier-p", "verifier_p"),
                ("--verifiers-are-large", "verifiers_are_large"),
            )
            if given[key] not in (None, False)
        ]
        if stray:
            raise UserError(f"--verify logprob has no verifiers: leave out {', '.join(stray)}")
        if tpr is None or fpr is None:
            raise UserError(
                "--verify logprob needs --tpr and --fpr: the chance that the log-probability check accepts a right "
                "and a wrong draft at the run's threshold (`maker calibrate WORKFLOW --verifier logprob --drafter "
                "SPEC` measures them)"
            )
        n = 0
    if mode == "score" and vp is not None:
        raise UserError("--verifier-p is for --verify vote; score mode takes --tpr and --fpr")
    if mode == "score" and (tpr is None or fpr is None):
        raise UserError(
            "score mode needs both --tpr and --fpr (a verifier's chance of accepting a right and a "
            "wrong draft; measure them with `maker calibrate WORKFLOW --verifier SPEC`)"
        )
    if mode == "vote" and (tpr is not None or fpr is not None):
        raise UserError("--tpr and --fpr are for --verify score; vote mode takes --verifier-p")
    if mode == "vote" and vp is None:
        raise UserError("--verify vote needs --verifier-p, the verifiers' per-sample correct rate")
    if n < 0 or vk < 1:
        raise UserError(f"need --verifiers >= 0 and --verify-k >= 1, got {n} and {vk}")
    dk = 1 if given["draft_k"] is None else given["draft_k"]
    if dk < 1:
        raise UserError(f"--draft-k must be >= 1, got {dk}")
    if mode == "score" and vk > n:
        raise UserError(
            f"--verify-k {vk} > --verifiers {n}: no draft could ever be accepted (every step would "
            f"escalate); use --verify-k {max(1, n)} or more verifiers"
        )
    for flag, value in (("--drafter-p", drafter_p), ("--tpr", tpr), ("--fpr", fpr), ("--verifier-p", vp)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise UserError(f"{flag} is a rate in [0, 1], got {value}")
    return (
        n,
        vk,
        dict(
            drafter_p=drafter_p,
            drafter_valid=given["drafter_valid"] or 1.0,
            mode=mode,
            tpr=tpr,
            fpr=fpr,
            verifier_p=vp,
            verifiers_are_large=given["verifiers_are_large"],
            draft_k=dk,
        ),
    )


def _speculative_lines(est: Any, ens: Any, n: int, vk: int, args: dict[str, Any], target: float) -> list[str]:
    """``maker estimate``'s speculative lines: the estimate ``est`` for ``n`` verifiers at verify-k ``vk`` next
    to voting, and the smallest ensemble ``ens`` meeting ``target`` (None: a log-probability check, no verifiers)."""
    mode, dk = args["mode"], args["draft_k"]
    rates = f"TPR {args['tpr']:g}, FPR {args['fpr']:g}" if mode != "vote" else f"verifier p {args['verifier_p']:g}"
    head = (
        "speculative: logprob check (no verifier)"
        if ens is None
        else f"speculative: {mode}, {n} verifier{'s' if n != 1 else ''}, verify-k {vk}"
    )
    body = [
        head
        + f"; drafter p {args['drafter_p']:g}"
        + (f" voted at draft-k {dk} (a draft right with {est.draft_p:.6g})" if dk > 1 else "")
        + f", {rates}",
        f"  accepted {est.accept_rate:.2%}  escalated {est.escalation_rate:.2%}",
        f"  per-step error {est.step_error:.3g} (voting {est.voting_step_error:.3g}); whole-run error "
        f"{1 - est.p_full:.6f} (voting {1 - est.voting_p_full:.6f})",
        f"  expected wrong steps {est.expected_wrong:.4g} (voting {est.voting_expected_wrong:.4g})",
        f"  large-model calls per step {est.large_calls_per_step:.4f} against {est.voting_calls_per_step:.4f} voting;"
        f" verifier calls {est.verifier_calls_per_step:.4f}, drafter calls {est.drafter_calls_per_step:.4f}",
    ]
    if ens is None:
        return body
    ensemble = [
        f"{ens.unanimous} verifiers that all agree (--verifiers {ens.unanimous} --verify-k {ens.unanimous})"
        if ens.unanimous is not None
        else f"no unanimous ensemble up to {ens.bound}"
    ]
    if ens.verify_k_at_n is not None:
        ensemble.append(f"--verify-k {ens.verify_k_at_n} with {n} verifiers")
    return [*body, f"  smallest ensemble meeting {target}: " + "; ".join(ensemble)]


def _ensemble_estimate(
    steps: int,
    ps: tuple[float, ...],
    costs: tuple[float, ...],
    target: float,
    valid: float,
    k: int | None,
    k_equal: int | None,
    as_json: bool,
) -> None:
    """``maker estimate --agent-p ...``: a mixed ensemble's k, per-step error and calls, weighted against equal."""
    from maker.planning import ensemble_estimate

    try:
        est = ensemble_estimate(
            steps, list(ps), target=target, valid=valid, k=k, k_equal=k_equal, costs=list(costs) if costs else None
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None

    def side(name: str, s: Any, unit: str) -> None:
        found = f"k_min {s.k_min}" if s.k_min is not None else "no k meets the target"
        cost = "" if s.cost_per_step is None else f", cost per step {s.cost_per_step:.6g}"
        click.echo(
            f"{name:<12} k {s.k} ({unit}; {found})  per-step error {s.step_error:.3g}  full run {s.p_full:.6f}  "
            f"calls per step {s.calls_per_step:.4f} " + "[" + ", ".join(f"{c:.3f}" for c in s.calls_by_agent) + "]"
            f"{cost}"
        )

    def human() -> None:
        w = est.weighted.weights
        click.echo(
            f"steps {steps:,}  target {target}  ensemble of {len(ps)}: p {', '.join(f'{x:g}' for x in ps)} "
            f"(round-robin; weights ln(p/(1-p)) in the first agent's units: {', '.join(f'{x:.4g}' for x in w)})"
        )
        side("weighted", est.weighted, "first agent's votes")
        side("equal", est.equal, "votes")
        side("first alone", est.first_alone, "votes")
        e, q = est.weighted, est.equal
        ratio = q.calls_per_step / e.calls_per_step
        line = f"equal / weighted: calls per step {ratio:.3f}x"
        if e.cost_per_step and q.cost_per_step is not None:
            line += f", cost per step {q.cost_per_step / e.cost_per_step:.3f}x"
        click.echo(line)

    emit(est.model_dump(mode="json"), as_json, human)

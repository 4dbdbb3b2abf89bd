"""What a run is expected to cost in money and tokens, before it starts: calls per step (the voting estimate, or
the speculative one), tokens per call and the model's prices.

How a run is billed: a step's first round asks its k samples in one request, which a provider bills as one prompt
and k completions; every later round is one more request. So a step costs

    requests * prompt_tokens * input_price + calls * completion_tokens * output_price

with ``requests`` at most ``1 + (calls - k)`` a step (each later round asks at least one sample), which is close to 1
when p is high. With cached prompt tokens, the cached part is billed at the cached price. ``per_call_prompt``
bills every call its own prompt instead, as a client that sends one request per sample is billed (MAKER's own
projection counts this way).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from maker.agents import parse_spec
from maker.agents.prices import Price
from maker.agents.specs import spec_price
from maker.dsl import MicrostepCall

if TYPE_CHECKING:  # pragma: no cover
    from maker.dsl import Workflow
    from maker.runs import RunOptions

__all__ = ["CostEstimate", "cost_estimate", "BudgetCheck", "budget_check"]


class CostEstimate(BaseModel):
    """A run's expected cost (:func:`cost_estimate`)."""

    steps: int
    calls_per_step: float
    requests_per_step: float
    """Requests a step sends: its first round's one, and one more for each later round (an upper bound)."""
    prompt_tokens: float
    """Prompt tokens a request sends."""
    cached_tokens: float
    """Of those, the ones a provider serves from its prompt cache."""
    completion_tokens: float
    """Completion tokens a call returns."""
    price: list[float]
    """Dollars per million ``[input, cached input, output]`` tokens (empty for the sum over a speculative run's
    roles, each at its own price: see :attr:`BudgetCheck.by_role`)."""
    cost_per_step: float
    cost: float
    """Dollars for the whole run."""
    tokens: float
    """Tokens billed for the whole run, prompt and completion."""


def cost_estimate(
    *,
    steps: int,
    calls_per_step: float,
    k: int,
    prompt_tokens: float,
    completion_tokens: float,
    price: Price,
    cached_tokens: float = 0.0,
    per_call_prompt: bool = False,
    requests_per_step: float | None = None,
) -> CostEstimate:
    """The expected cost of ``steps`` steps at ``calls_per_step`` (see the module's doc for how requests are
    counted; ``requests_per_step`` gives them instead)."""
    if steps < 0 or calls_per_step < 0 or prompt_tokens < 0 or completion_tokens < 0 or cached_tokens < 0:
        raise ValueError("steps, calls per step and token counts must be 0 or more")
    if cached_tokens > prompt_tokens:
        raise ValueError(f"cached tokens ({cached_tokens:g}) cannot exceed the prompt's ({prompt_tokens:g})")
    requests = calls_per_step if per_call_prompt else min(calls_per_step, 1.0 + max(0.0, calls_per_step - k))
    if requests_per_step is not None:
        requests = requests_per_step
    fresh = prompt_tokens - cached_tokens
    prompt_cost = requests * (fresh * price.input + cached_tokens * price.cached) / 1e6
    completion_cost = calls_per_step * completion_tokens * price.output / 1e6
    per_step = prompt_cost + completion_cost
    return CostEstimate(
        steps=steps,
        calls_per_step=calls_per_step,
        requests_per_step=requests,
        prompt_tokens=prompt_tokens,
        cached_tokens=cached_tokens,
        completion_tokens=completion_tokens,
        price=price.as_list(),
        cost_per_step=per_step,
        cost=per_step * steps,
        tokens=steps * (requests * prompt_tokens + calls_per_step * completion_tokens),
    )


class BudgetCheck(BaseModel):
    """A run's expected spending against its budget, before it starts (:func:`budget_check`)."""

    estimate: CostEstimate | None
    """None when the run's spending cannot be estimated (see ``note``)."""
    over: bool
    """Whether the estimate exceeds ``max_cost`` or ``token_budget``."""
    text: str
    """One line for a person: the estimate against the budget, and how it was made."""
    note: str = ""
    """What the estimate assumed or could not know."""
    by_role: dict[str, CostEstimate] = {}
    """A speculative run's estimate by role (``large``, ``drafter``, ``verifier``); ``estimate`` is their sum."""


def budget_check(options: RunOptions, workflow: type[Workflow[Any, Any]], params: Mapping[str, Any]) -> BudgetCheck:
    """The run's expected cost and tokens against ``options.max_cost`` and ``options.token_budget``.

    The first voting agent is taken to answer every step (escalation is rare when k fits p). Calls per step are
    the voting estimate at the agent's known p (a simulated agent's; a real model's p is unknown before
    ``maker calibrate``, so the run's k, the fewest a step can take, is used and the estimate is a floor). Prompt
    tokens are the first step's prompt at four characters a token; completion tokens a simulated preset's mean, else
    the red-flag limit (a ceiling). A speculative run is estimated by role from the speculation estimate at its
    agents' known rates (:func:`_speculative`); what its window drafts ahead and drops is not in it."""
    from maker.stats import expected_calls

    wf = workflow()
    parsed = workflow.parse_params(params)
    steps = wf.expected_steps(parsed)
    call = wf.next(wf.start(parsed))
    first = call if isinstance(call, MicrostepCall) else None
    if first is None and isinstance(call, Sequence) and call and isinstance(call[0], MicrostepCall):
        first = call[0]
    if steps is None or first is None:
        return BudgetCheck(estimate=None, over=False, text="", note="the workflow does not say how many steps it takes")
    if options.drafter is not None:
        return _speculative(options, workflow, steps, first)
    spec = options.agents[0]
    price = spec_price(spec, options.price_table())
    tokens_mean = _known_tokens(spec)
    policy = first.microstep.voting
    k = options.k or policy.k
    max_tokens = options.max_tokens or first.microstep.max_tokens
    rates = _rates(spec, max_tokens)
    notes = []
    if "p" in rates:
        calls = expected_calls(float(rates["p"]), k, float(rates.get("valid", 1.0)))
    else:
        calls = float(k)
        notes.append(f"p of {spec} unknown (measure it with maker calibrate): {k} calls a step, the fewest")
    completion = float(tokens_mean) if tokens_mean is not None else float(max_tokens)
    if tokens_mean is None:
        notes.append(f"completion tokens unknown: taken at the red-flag limit, {max_tokens}")
    prompt = float(len(first.prompt) // 4 + 1)
    est = cost_estimate(
        steps=steps,
        calls_per_step=calls,
        k=k,
        prompt_tokens=prompt,
        completion_tokens=completion,
        price=price or _FREE,
    )
    if price is None:
        notes.append(f"{spec} has no price (give price=IN/CACHED/OUT in its spec, or --prices FILE)")
    how = f"{calls:.3f} calls a step, {prompt:.0f} prompt and {completion:.0f} completion tokens a call"
    return _against(options, est, price is not None, steps, how, notes)


def _against(
    options: RunOptions, est: CostEstimate, priced: bool, steps: int, how: str, notes: list[str], **more: Any
) -> BudgetCheck:
    """The estimate against the options' budget, with its line for a person."""
    over_cost = options.max_cost is not None and priced and est.cost > options.max_cost
    over_tokens = options.token_budget is not None and est.tokens > options.token_budget
    parts = [f"estimated {est.tokens:,.0f} tokens"]
    if priced:
        parts.insert(0, f"estimated ${est.cost:,.2f}")
    budget = []
    if options.max_cost is not None:
        budget.append(f"--max-cost ${options.max_cost:,.2f}")
    if options.token_budget is not None:
        budget.append(f"--token-budget {options.token_budget:,}")
    text = f"{', '.join(parts)} for {steps:,} steps ({how})" + (f" against {' and '.join(budget)}" if budget else "")
    return BudgetCheck(
        estimate=est if priced else est.model_copy(update={"cost": 0.0, "cost_per_step": 0.0}),
        over=over_cost or over_tokens,
        text=text,
        note="; ".join(notes),
        **more,
    )


def _speculative(
    options: RunOptions, workflow: type[Workflow[Any, Any]], steps: int, first: MicrostepCall
) -> BudgetCheck:
    """A speculative run's spending by role: the drafter's drafts, the verifiers' ratings (score mode: the step's
    prompt and the draft, one token back) or answers (vote mode), and the large model's votes on the steps that
    escalate, at the calls per step the speculation estimate gives for the agents' known rates."""
    from maker.planning._preflight import _common_args, _rate_args, _unknown
    from maker.planning._speculation import speculation_estimate

    assert options.drafter is not None
    large_spec, drafter_spec, verifiers = options.agents[0], options.drafter, options.verifiers
    max_tokens = float(options.max_tokens or first.microstep.max_tokens)
    large, drafter = _rates(large_spec, max_tokens), _rates(drafter_spec, max_tokens)
    vinfo: list[Mapping[str, Any]] = [_rates(v, max_tokens) for v in verifiers]
    unknown = _unknown(options.verify, drafter_spec, drafter, verifiers, vinfo)
    if unknown:
        return BudgetCheck(
            estimate=None,
            over=False,
            text="",
            note=f"not estimated: the rates of {', '.join(unknown)} are unknown (measure them with maker calibrate)",
        )
    policy = first.microstep.voting
    spec = speculation_estimate(
        steps=steps,
        mode=options.verify,
        verifiers=len(verifiers),
        verify_k=options.verify_k,
        **_rate_args(options.verify, vinfo),
        **_common_args(options, policy, large, drafter),
    )
    table = options.price_table()
    prompt = float(len(first.prompt) // 4 + 1)
    notes = [] if "p" in large else [f"voting by {large_spec} counted as error-free: its rate is unknown"]

    def tokens(s: str) -> float:
        mean = _known_tokens(s)
        if mean is None:
            notes.append(f"completion tokens of {s} unknown: taken at the red-flag limit, {max_tokens:.0f}")
        return max_tokens if mean is None else float(mean)

    draft_tokens = tokens(drafter_spec)
    k = options.k or policy.k
    # the large model votes on the steps that escalate: a first round of k samples in one request, then a request
    # a later round
    escalated = spec.escalation_rate
    large_requests = min(spec.large_calls_per_step, escalated + max(0.0, spec.large_calls_per_step - k * escalated))
    roles: list[tuple[str, str, float, float, float, float | None]] = [
        ("large", large_spec, spec.large_calls_per_step, prompt, tokens(large_spec), large_requests)
    ]
    roles.append(("drafter", drafter_spec, spec.drafter_calls_per_step, prompt, draft_tokens, None))
    for v in verifiers:
        n = spec.verifier_calls_per_step / max(1, len(verifiers))
        if options.verify == "score":
            roles.append(("verifier", v, n, prompt + draft_tokens + 30, 1.0, None))
        else:
            roles.append(("verifier", v, n, prompt, tokens(v), None))
    by_role: dict[str, CostEstimate] = {}
    priced = True
    for role, s, calls, p, c, requests in roles:
        price = spec_price(s, table)
        if price is None:
            priced = False
            notes.append(f"{s} has no price (give price=IN/CACHED/OUT in its spec, or --prices FILE)")
        e = cost_estimate(  # a drafter's and a verifier's calls are a request each
            steps=steps,
            calls_per_step=calls,
            k=1,
            prompt_tokens=p,
            completion_tokens=c,
            price=price or _FREE,
            requests_per_step=calls if requests is None else requests,
        )
        if role in by_role:
            got = by_role[role]
            e = got.model_copy(
                update={
                    "calls_per_step": got.calls_per_step + e.calls_per_step,
                    "requests_per_step": got.requests_per_step + e.requests_per_step,
                    "cost_per_step": got.cost_per_step + e.cost_per_step,
                    "cost": got.cost + e.cost,
                    "tokens": got.tokens + e.tokens,
                    "price": [],
                }
            )
        by_role[role] = e
    total = CostEstimate(
        steps=steps,
        calls_per_step=sum(e.calls_per_step for e in by_role.values()),
        requests_per_step=sum(e.requests_per_step for e in by_role.values()),
        prompt_tokens=prompt,
        cached_tokens=0.0,
        completion_tokens=draft_tokens,
        price=[],
        cost_per_step=sum(e.cost_per_step for e in by_role.values()),
        cost=sum(e.cost for e in by_role.values()),
        tokens=sum(e.tokens for e in by_role.values()),
    )
    how = ", ".join(f"{r} {e.calls_per_step:.3f} calls a step" for r, e in by_role.items())
    notes.append("steps the window drafts ahead and drops are not in the estimate")
    return _against(options, total, priced, steps, how, notes, by_role=by_role)


_FREE = Price(0.0, 0.0, 0.0)


def _rates(spec: str, max_tokens: float) -> dict[str, float]:
    """What is known of an agent's rates (:func:`maker.planning.known_rates`), its valid rate lowered by the share of
    a simulated preset's responses that run past the red-flag limit (its tokens a call are drawn within a quarter of
    the mean, evenly)."""
    from maker.planning._preflight import known_rates

    rates = dict(known_rates(spec))
    mean = _known_tokens(spec)
    if "valid" in rates and mean is not None:
        lo, hi = 0.75 * mean, 1.25 * mean
        fits = 1.0 if max_tokens >= hi else max(0.0, (max_tokens - lo) / (hi - lo))
        rates["valid"] *= fits
    return rates


def _known_tokens(spec: str) -> float | None:
    """A simulated agent's mean completion tokens a call (None: not known before the run)."""
    from maker.agents.simulated import SimulatedConfig

    try:
        kind, name, options = parse_spec(spec)
        if kind != "simulated":
            return None
        options.pop("price", None)
        return SimulatedConfig.from_options(name, options).tokens
    except Exception:  # a bad spec fails the run itself, with its own message
        return None

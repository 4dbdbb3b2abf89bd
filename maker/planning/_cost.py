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
    """Dollars per million ``[input, cached input, output]`` tokens."""
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
) -> CostEstimate:
    """The expected cost of ``steps`` steps at ``calls_per_step`` (see the module's doc for how requests are
    counted)."""
    if steps < 0 or calls_per_step < 0 or prompt_tokens < 0 or completion_tokens < 0 or cached_tokens < 0:
        raise ValueError("steps, calls per step and token counts must be 0 or more")
    if cached_tokens > prompt_tokens:
        raise ValueError(f"cached tokens ({cached_tokens:g}) cannot exceed the prompt's ({prompt_tokens:g})")
    requests = calls_per_step if per_call_prompt else min(calls_per_step, 1.0 + max(0.0, calls_per_step - k))
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


def budget_check(options: RunOptions, workflow: type[Workflow[Any, Any]], params: Mapping[str, Any]) -> BudgetCheck:
    """The run's expected cost and tokens against ``options.max_cost`` and ``options.token_budget``.

    The first voting agent is taken to answer every step (escalation is rare when k fits p). Calls per step are
    the voting estimate at the agent's known p (a simulated agent's; a real model's p is unknown before
    ``maker calibrate``, so the run's k, the fewest a step can take, is used and the estimate is a floor). Prompt
    tokens are the first step's prompt at four characters a token; completion tokens a simulated preset's mean, else
    the red-flag limit (a ceiling). A speculative run's spending is not estimated here: its budget is held during
    the run."""
    from maker.planning._preflight import known_rates
    from maker.stats import expected_calls

    if options.drafter is not None:
        return BudgetCheck(
            estimate=None, over=False, text="", note="a speculative run's cost is not estimated before it starts"
        )
    wf = workflow()
    parsed = workflow.parse_params(params)
    steps = wf.expected_steps(parsed)
    call = wf.next(wf.start(parsed))
    first = call if isinstance(call, MicrostepCall) else None
    if first is None and isinstance(call, Sequence) and call and isinstance(call[0], MicrostepCall):
        first = call[0]
    if steps is None or first is None:
        return BudgetCheck(estimate=None, over=False, text="", note="the workflow does not say how many steps it takes")
    spec = options.agents[0]
    price = spec_price(spec, options.price_table())
    tokens_mean = _known_tokens(spec)
    policy = first.microstep.voting
    k = options.k or policy.k
    rates = known_rates(spec)
    notes = []
    if "p" in rates:
        calls = expected_calls(float(rates["p"]), k, float(rates.get("valid", 1.0)))
    else:
        calls = float(k)
        notes.append(f"p of {spec} unknown (measure it with maker calibrate): {k} calls a step, the fewest")
    max_tokens = options.max_tokens or first.microstep.max_tokens
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
    over_cost = options.max_cost is not None and price is not None and est.cost > options.max_cost
    over_tokens = options.token_budget is not None and est.tokens > options.token_budget
    parts = [f"estimated {est.tokens:,.0f} tokens"]
    if price is not None:
        parts.insert(0, f"estimated ${est.cost:,.2f}")
    else:
        notes.append(f"{spec} has no price (give price=IN/CACHED/OUT in its spec, or --prices FILE)")
    budget = []
    if options.max_cost is not None:
        budget.append(f"--max-cost ${options.max_cost:,.2f}")
    if options.token_budget is not None:
        budget.append(f"--token-budget {options.token_budget:,}")
    text = (
        f"{', '.join(parts)} for {steps:,} steps ({calls:.3f} calls a step, {prompt:.0f} prompt and "
        f"{completion:.0f} completion tokens a call)" + (f" against {' and '.join(budget)}" if budget else "")
    )
    return BudgetCheck(
        estimate=est if price is not None else est.model_copy(update={"cost": 0.0, "cost_per_step": 0.0}),
        over=over_cost or over_tokens,
        text=text,
        note="; ".join(notes),
    )


_FREE = Price(0.0, 0.0, 0.0)


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

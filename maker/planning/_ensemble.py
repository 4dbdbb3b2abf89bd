"""A mixed ensemble's estimate before a run: weighted votes against equal ones (and the first agent alone).

Each side gets the smallest k meeting the target (k in units of the first agent's weight when weighted, in votes
when equal), its per-step error, the chance of a fully correct run, and the expected calls per step, in total and
by agent, from :func:`maker.stats.ensemble_step` (exact: the weighted margin is a random walk on a lattice).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from maker.stats import ensemble_k_min, ensemble_step, run_success
from maker.voting import log_odds, relative_weights

__all__ = ["EnsembleEstimate", "EnsembleSide", "ensemble_estimate"]


class EnsembleSide(BaseModel):
    """One way of counting the ensemble's votes, at its k."""

    weights: list[float]
    """Each agent's vote weight, in units of the first agent's."""
    k: int
    """The margin: the smallest meeting the target, or the one asked for."""
    k_min: int | None
    """The smallest k meeting the target (None: none up to the search's bound)."""
    step_error: float
    p_full: float
    calls_per_step: float
    calls_by_agent: list[float]
    cost_per_step: float | None = None
    """Dollars (or whatever unit the per-call costs were given in) a step is expected to cost."""


class EnsembleEstimate(BaseModel):
    """``maker estimate --agent-p ...``: a mixed ensemble, weighted and equal, and its first agent alone."""

    steps: int
    target: float
    ps: list[float]
    valid: list[float]
    weighted: EnsembleSide
    equal: EnsembleSide
    first_alone: EnsembleSide
    """The first agent voting alone (plain first-to-ahead-by-k), for scale."""


def _side(
    steps: int,
    ps: Sequence[float],
    weights: Sequence[float],
    valid: Sequence[float],
    target: float,
    k: int | None,
    costs: Sequence[float] | None,
) -> EnsembleSide:
    try:
        kmin: int | None = ensemble_k_min(steps, ps, weights, target, valid)
    except ValueError:
        kmin = None
    chosen = k or kmin or 1
    est = ensemble_step(ps, weights, chosen, valid)
    p_full = (1.0 - est.error) ** steps
    cost = None if costs is None else sum(c * n for c, n in zip(costs, est.calls_by_agent, strict=True))
    return EnsembleSide(
        weights=[round(w, 6) for w in weights],
        k=chosen,
        k_min=kmin,
        step_error=est.error,
        p_full=p_full,
        calls_per_step=est.calls,
        calls_by_agent=list(est.calls_by_agent),
        cost_per_step=cost,
    )


def ensemble_estimate(
    steps: int,
    ps: Sequence[float],
    *,
    target: float = 0.95,
    valid: Sequence[float] | float = 1.0,
    k: int | None = None,
    k_equal: int | None = None,
    costs: Sequence[float] | None = None,
) -> EnsembleEstimate:
    """The estimate for agents of correct rates ``ps`` (the first is the reference), voting round-robin.

    ``k`` / ``k_equal``: evaluate these margins instead of the smallest meeting ``target``; ``costs``: what one call
    of each agent costs, for the cost per step. ValueError for rates a weighted vote cannot use (p <= 0.5 or 1).
    """
    n = len(ps)
    vs = [float(valid)] * n if isinstance(valid, (int, float)) else [float(v) for v in valid]
    if costs is not None and len(costs) != n:
        raise ValueError(f"give one cost per agent: {n} agents, {len(costs)} costs")
    weights = relative_weights([log_odds(p) for p in ps])
    first = _side(steps, ps[:1], [1.0], vs[:1], target, k_equal, None if costs is None else costs[:1])
    first_alone = first.model_copy(update={"p_full": run_success(ps[0], first.k, steps) if vs[0] else 0.0})
    return EnsembleEstimate(
        steps=steps,
        target=target,
        ps=list(ps),
        valid=vs,
        weighted=_side(steps, ps, weights, vs, target, k, costs),
        equal=_side(steps, ps, [1.0] * n, vs, target, k_equal, costs),
        first_alone=first_alone,
    )

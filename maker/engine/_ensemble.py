"""A mixed ensemble: every voting agent votes on every step, each vote weighed by its agent's weight.

Samples are drawn round-robin: sample ``i`` of a step is agent ``i mod n``'s (agent 0, 1, ..., n-1, 0, ...), its
seed derived from the run seed, the step and ``i`` as in plain voting, at the first temperature for each agent's
first sample and the later one after. A round asks each agent, all at once, for its share of the fewest further
samples that could decide the step (:func:`maker.voting.weighted_needed`), so no sample is drawn that the
one-at-a-time procedure (check after every sample) would not have drawn, and the decision is the same. A step is
decided when the leader's summed weight is ``k`` reference votes (the first agent's weight) ahead of the runner-up's;
a red-flagged sample has no vote. :func:`maker.stats.ensemble_step` is the exact mathematics of this procedure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from maker._rng import mixes
from maker.agents import GenerateRequest
from maker.voting import Voting, weighted_decided, weighted_needed

__all__ = ["round_plan", "WeightedTally"]


def round_plan(lo: int, hi: int, agents: int) -> dict[int, list[int]]:
    """The sample indexes ``lo .. hi-1`` by agent (round-robin), each agent's in order."""
    out: dict[int, list[int]] = {}
    for i in range(lo, hi):
        out.setdefault(i % agents, []).append(i)
    return out


class WeightedTally:
    """A step's votes: raw counts and summed weights (reference-agent units) by vote key."""

    __slots__ = ("weights", "counts", "sums", "winners")

    def __init__(self, weights: Sequence[float]) -> None:
        self.weights = tuple(weights)
        self.counts: dict[Any, int] = {}
        self.sums: dict[Any, float] = {}
        self.winners: dict[Any, Any] = {}
        """The first answer read for each key."""

    def add(self, agent: int, key: Any, answer: Any) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1
        self.sums[key] = self.sums.get(key, 0.0) + self.weights[agent]
        if key not in self.winners:
            self.winners[key] = answer

    def top_two(self) -> tuple[float, float]:
        ranked = sorted(self.sums.values(), reverse=True)
        return (ranked[0] if ranked else 0.0, ranked[1] if len(ranked) > 1 else 0.0)

    def decided(self, policy: Voting) -> bool:
        top, second = self.top_two()
        return bool(self.sums) and weighted_decided(policy, top, second)

    def needed(self, policy: Voting, next_index: int) -> int:
        top, second = self.top_two()
        n = len(self.weights)
        upcoming = [self.weights[(next_index + j) % n] for j in range(n)]
        return weighted_needed(policy, top, second, upcoming)

    def leader(self) -> Any:
        """The leading key: the largest weight, ties to the larger count, then to the first read."""
        order = {key: i for i, key in enumerate(self.winners)}
        return max(self.sums, key=lambda key: (self.sums[key], self.counts[key], -order[key]))

    def votes(self) -> str:
        """The raw counts as a step row keeps them, the leader's first: ``[4,1]``."""
        if not self.counts:
            return "[]"
        leader = self.leader()
        others = sorted((v for key, v in self.counts.items() if key != leader), reverse=True)
        return "[" + ",".join(map(str, [self.counts[leader], *others])) + "]"

    def record(self) -> dict[str, Any]:
        """What the step's record keeps of the weights: the summed weights, the leader's first, and the margin."""
        if not self.sums:
            return {"tally": [], "margin": 0.0}
        leader = self.leader()
        others = sorted((v for key, v in self.sums.items() if key != leader), reverse=True)
        tally = [self.sums[leader], *others]
        return {"tally": [round(x, 4) for x in tally], "margin": round(tally[0] - (others[0] if others else 0.0), 4)}


async def ask_round(
    generators: Sequence[Callable[[Any], Any]],
    plan: dict[int, list[int]],
    step_seed: int,
    make_request: Callable[[list[float], list[int]], GenerateRequest],
    first_temperature: float,
    temperature: float,
) -> dict[int, list[Any]]:
    """Ask each agent of ``plan`` for its samples, all at once: ``{agent: samples, in index order}``."""
    n = len(generators)
    agents = list(plan)

    async def one(a: int) -> list[Any]:
        idx = plan[a]
        seeds = [mixes(step_seed, i, i + 1)[0] for i in idx]
        temps = [first_temperature if i < n else temperature for i in idx]
        (samples,) = await generators[a]([make_request(temps, seeds)])
        return list(samples)

    got = await asyncio.gather(*(one(a) for a in agents))
    return dict(zip(agents, got, strict=True))

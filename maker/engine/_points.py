"""A run's progress over its steps, a point per commit, kept in the run's record for live views (``maker ui``).

Each point holds the run's counters as they stood at a commit: cumulative, so that dropping points keeps every
point left exact. When there are more than :data:`LIMIT` points, every other one goes (the most rounds of a step
between two points is kept as the larger of the two merged), so a run of any length keeps at most ``LIMIT`` points
and writing them costs the same at the millionth step as at the first: nothing per step but two counters.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Points", "POINT_FIELDS", "LIMIT"]

LIMIT = 512
POINT_FIELDS = ("step", "wall_s", "calls", "rounds", "red_flags", "errors", "cost", "wasted_calls", "max_rounds")
"""What each point holds: the steps committed, the run's wall time, model calls, voting rounds, red-flagged samples,
errors against ground truth, dollars (None: unpriced), speculative calls wasted, all up to the point; and the most
rounds one step took since the point before (None where unknown: a run recorded before points were kept)."""


class Points:
    """The points of one run, column by column (``cols[field]``), and the red flags by reason at each point."""

    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {f: [] for f in POINT_FIELDS}
        self.flags: list[dict[str, int]] = []
        """Red-flagged samples by reason up to each point."""

    def __len__(self) -> int:
        return len(self.cols["step"])

    def add(self, values: dict[str, Any], flags: dict[str, int]) -> None:
        """One more point (``values`` by :data:`POINT_FIELDS`); thins the points when there are too many."""
        for f in POINT_FIELDS:
            self.cols[f].append(values[f])
        self.flags.append(dict(flags))
        if len(self) > LIMIT:
            self._thin()

    def _thin(self) -> None:
        """Keep the later point of each pair (the last, unpaired one too); the pair's most rounds is the larger."""
        n = len(self)
        keep = list(range(1, n, 2)) + ([n - 1] if n % 2 else [])
        top = self.cols["max_rounds"]
        merged = [_larger(top[i - 1], top[i]) if i % 2 else top[i] for i in keep]
        for f in POINT_FIELDS:
            col = self.cols[f]
            self.cols[f] = [col[i] for i in keep]
        self.cols["max_rounds"] = merged
        self.flags = [self.flags[i] for i in keep]

    def as_json(self) -> dict[str, Any]:
        return {**self.cols, "flags": self.flags}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Points:
        """The points a record kept (none from a record without them)."""
        p = cls()
        if data and all(isinstance(data.get(f), list) for f in POINT_FIELDS):
            n = len(data["step"])
            if all(len(data[f]) == n for f in POINT_FIELDS):
                p.cols = {f: list(data[f]) for f in POINT_FIELDS}
                flags = data.get("flags")
                p.flags = list(flags) if isinstance(flags, list) and len(flags) == n else [{} for _ in range(n)]
        return p


def _larger(a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return None
    return max(a, b)

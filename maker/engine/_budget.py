"""What a run may spend, in money and in tokens, and what spending that reaches it does: the run stops at a commit,
resumable with a larger budget.

One :class:`Budget` covers one run, or every problem of an evaluation (the ledgers of its runs spend from the
same one). Spending counts every model call a run paid for: its committed steps' and its speculative steps that
were dropped. A stopped run keeps every decided step; ``maker resume RUN --max-cost MORE`` goes on.
"""

from __future__ import annotations

from maker.agents.prices import usd
from maker.errors import RunError

__all__ = ["Budget", "BudgetExceeded"]


class BudgetExceeded(RunError):
    """Spending reached the budget: the run stopped at its last commit and resumes with a larger budget."""

    retryable = True


class Budget:
    """Spending limits (``max_cost`` dollars, ``max_tokens`` tokens in and out; None: no limit) and what has been
    spent against them so far."""

    def __init__(
        self, max_cost: float | None = None, max_tokens: int | None = None, *, cost: float = 0.0, tokens: int = 0
    ) -> None:
        self.max_cost = max_cost
        self.max_tokens = max_tokens
        self.cost = cost
        """Dollars spent so far (by every run spending from this budget)."""
        self.tokens = tokens
        """Tokens, prompt and completion, spent so far."""

    @property
    def limited(self) -> bool:
        return self.max_cost is not None or self.max_tokens is not None

    def spend(self, cost: float, tokens: int) -> None:
        self.cost += cost
        self.tokens += tokens

    @property
    def reached(self) -> bool:
        """Whether spending has reached a limit."""
        return (self.max_cost is not None and self.cost >= self.max_cost) or (
            self.max_tokens is not None and self.tokens >= self.max_tokens
        )

    def what(self) -> str:
        """The limit reached, as a person reads it: ``$2.00 of the $2.00 budget (--max-cost)``."""
        if self.max_cost is not None and self.cost >= self.max_cost:
            return f"spent {usd(self.cost)} of the {usd(self.max_cost)} budget (`max_cost`)"
        return f"spent {self.tokens:,} tokens of the {self.max_tokens or 0:,}-token budget (`token_budget`)"

    def error(self, run_id: str, step: int) -> BudgetExceeded:
        larger = (
            "--max-cost MORE" if self.max_cost is not None and self.cost >= self.max_cost else "--token-budget MORE"
        )
        return BudgetExceeded(
            f"run {run_id} stopped at step {step:,}: {self.what()}; every decided step is committed. "
            f"`maker resume {run_id} {larger}` goes on with a larger budget",
            run_id=run_id,
            step=step,
        )

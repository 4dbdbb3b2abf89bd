"""The engine: decides each microstep call (sample, red-flag, vote, escalate; or draft and verify), keeps many
decisions in flight (fan-outs, the speculative window), and records every decided step through the ledger.

One step's path: the :class:`Scheduler` asks the workflow's ``next`` for calls, the :class:`Decider` turns each
call into a :class:`Decision` from the agents' samples, the :class:`Ledger` records decisions in step order and
commits them to the :class:`~maker.store.Store`, and ``apply`` gives the next state.
"""

from maker.engine._backtrack import CHECK_FAILED, Backtracker, failure_of
from maker.engine._batching import Coalescing
from maker.engine._budget import Budget, BudgetExceeded
from maker.engine._decider import Decider, Decision, flag_reason, too_long
from maker.engine._engine import Ahead, Engine, EngineConfig, Recipe, RunSummary, price_of, roster_of
from maker.engine._ledger import Ledger, Observer, Progress
from maker.engine._reapply import Row, SplitTransition, WorkflowEnded, reapply
from maker.engine._speculation import DRAFT_CALLS, LOGPROB_THRESHOLD, Speculation, logprob_stat
from maker.engine._transitions import calls_of

__all__ = [
    "Engine",
    "EngineConfig",
    "Recipe",
    "Ahead",
    "roster_of",
    "price_of",
    "Budget",
    "BudgetExceeded",
    "RunSummary",
    "Progress",
    "Ledger",
    "Observer",
    "Speculation",
    "DRAFT_CALLS",
    "LOGPROB_THRESHOLD",
    "logprob_stat",
    "Decider",
    "Decision",
    "Coalescing",
    "flag_reason",
    "too_long",
    "Row",
    "reapply",
    "calls_of",
    "WorkflowEnded",
    "SplitTransition",
    "Backtracker",
    "CHECK_FAILED",
    "failure_of",
]

"""maker: very long chains of LLM microsteps that come out right.

A workflow asks microsteps; several samples of each are voted on (first-to-ahead-by-k),
red-flagged samples are discarded, and every decided step is committed to a durable
store before the chain builds on it.
"""

from maker.dsl import DONE, Done, FormatError, Microstep, MicrostepCall, RedFlag, State, Workflow
from maker.engine import Progress, RunSummary
from maker.errors import (
    AgentSpecError,
    MakerError,
    NondeterminismError,
    RunError,
    RunMismatchError,
    RunNotFoundError,
    StepUndecidedError,
    StoreCorruptError,
    StoreError,
    UserError,
    WorkflowCodeError,
    WorkflowDefinitionError,
)
from maker.runs import ReplayResult, RunOptions, fork_run, replay_run, resume_run, start_run
from maker.store import Store, default_store_path
from maker.voting import Voting

__all__ = [
    "DONE",
    "Done",
    "FormatError",
    "Microstep",
    "MicrostepCall",
    "RedFlag",
    "State",
    "Workflow",
    "Voting",
    "RunOptions",
    "RunSummary",
    "Progress",
    "start_run",
    "resume_run",
    "replay_run",
    "fork_run",
    "ReplayResult",
    "Store",
    "default_store_path",
    "MakerError",
    "UserError",
    "WorkflowDefinitionError",
    "AgentSpecError",
    "RunError",
    "StepUndecidedError",
    "WorkflowCodeError",
    "StoreError",
    "StoreCorruptError",
    "RunMismatchError",
    "RunNotFoundError",
    "NondeterminismError",
]

"""What the store's readers get back: a run's record and typed rows, never bare tuples read by position."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "RunRecord",
    "Branch",
    "StepRow",
    "PlainStepRow",
    "StepTally",
    "Answer",
    "Snapshot",
    "Durability",
    "STEP_COLUMNS",
]


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: int
    run_id: str
    workflow: str
    workflow_version: int
    params: dict[str, Any]
    config: dict[str, Any]
    status: str
    error: str | None
    created: float
    updated: float
    expected_steps: int | None
    steps: int
    calls: int
    red_flags: int
    errors: int
    max_rounds: int
    tokens: int
    wall_s: float
    stats: dict[str, Any] | None
    solved: bool | None
    result: dict[str, Any] | None
    pid: int | None
    host: str | None
    parent_run_id: str | None
    parent_step: int | None
    workflow_ref: str | None

    @property
    def first_step(self) -> int:
        """Index of this run's first own step: 0, or the step a fork started from."""
        return self.parent_step or 0


class Branch(NamedTuple):
    """A time a run went back to an earlier state and decided on from there again (``--backtracks``)."""

    branch: int
    """The new branch's number (1, 2, ...; the run began on branch 0). The steps it abandoned are kept under it."""
    from_step: int
    """The step it went back to: the state there passed the workflow's check (or is the run's first)."""
    to_step: int
    """Where the branch it left had got to: its steps ``[from_step, to_step)`` were abandoned."""
    kind: str
    """``check`` (the workflow's check failed on the state after ``to_step`` steps) or ``undecided`` (no agent
    decided step ``to_step``)."""
    reason: str
    """Why, as the check said it (or the undecided step's error); the workflow's ``retry`` is called with it."""
    t: float


class StepRow(NamedTuple):
    """One committed step, as the ``steps`` table holds it (the columns in order)."""

    step: int
    digest: str
    """The prompt's digest: resume, replay and fork check the recomputed prompt against it."""
    answer: str
    """The decided answer, as JSON."""
    votes: str
    """The tally, winner first: ``[3,1]``."""
    rounds: int
    samples: int
    red_flags: str | None
    """Red flags by reason, as JSON (None: none)."""
    agent: int
    """Index of the deciding agent (voting agents, then the drafter, then the verifiers)."""
    t_start: float
    dur: float
    correct: int | None
    """1 or 0 against the workflow's ground truth; None without one."""
    spec: str | None
    """The speculation record, as JSON (None: the run does not draft)."""
    tokens: int | None
    input: str | None
    """The prompt, when the run keeps inputs."""
    microstep: str | None
    tag: str | None
    usage: str | None
    """What the step was billed, by agent, as JSON: ``[[agent, prompt, cached, completion, estimated], ...]``
    (tokens; ``estimated`` counts requests whose server reported no usage). None in stores older than version 4."""


STEP_COLUMNS = StepRow._fields


class PlainStepRow(NamedTuple):
    """A step with no red flags, no speculation record, no kept input and no tag: the columns of a
    :class:`StepRow` less those four, which the store writes as NULL. Most steps of a long run are plain, and
    SQLite binds a NULL literal for nothing where a bound ``None`` costs about as much as a short string."""

    step: int
    digest: str
    answer: str
    votes: str
    rounds: int
    samples: int
    agent: int
    t_start: float
    dur: float
    correct: int | None
    tokens: int | None
    microstep: str | None
    usage: str | None

    @property
    def red_flags(self) -> None:
        """None, as in a :class:`StepRow` without red flags (what the per-step debug log reads)."""
        return None


class StepTally(NamedTuple):
    """How a step was decided and what it cost: the columns of a :class:`StepRow` that the run's statistics read
    (no digest, answer, start time, prompt or tag), in the same order."""

    step: int
    votes: str
    """The tally, winner first, as JSON: ``[3,1]``."""
    rounds: int
    samples: int
    red_flags: str | None
    """Red flags by reason, as JSON (None: none)."""
    agent: int
    """Index of the deciding agent."""
    dur: float
    correct: int | None
    """1 or 0 against the workflow's ground truth; None without one."""
    spec: str | None
    """The speculation record, as JSON (None: the run does not draft)."""
    tokens: int | None
    microstep: str | None
    usage: str | None
    """What the step was billed, by agent, as JSON (see :attr:`StepRow.usage`)."""


class Answer(NamedTuple):
    """A committed step's decided answer and the digest of the prompt it answered."""

    step: int
    digest: str
    answer: str
    """The decided answer, as JSON."""


class Snapshot(NamedTuple):
    """A kept workflow state."""

    step: int
    """The step it is the state before (the state after the steps before it)."""
    state: str
    """The workflow state, as JSON."""


class Durability(NamedTuple):
    """How a store's connection writes (SQLite's ``journal_mode`` and ``synchronous`` settings)."""

    journal_mode: str
    """``wal`` for a store opened for writing."""
    synchronous: int
    """2 (FULL): a commit waits for its fsync; 1 (NORMAL) may lose the last commits at a power loss."""

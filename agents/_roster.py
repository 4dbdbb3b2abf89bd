"""The run's agents in one order, with their labels: voting agents (in escalation order), then the drafter,
then the verifiers. Step rows index agents in this order, and every reader of a trace labels them this way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from maker.agents._base import Agent, Backend

__all__ = ["Roster", "agent_label"]


def agent_label(labels: Sequence[str], index: int) -> str:
    """The label of agent ``index`` among ``labels``; ``agent #N`` for an index the run does not have (a record
    written by a newer version, or a damaged one)."""
    return labels[index] if 0 <= index < len(labels) else f"agent #{index}"


@dataclass(frozen=True, kw_only=True)
class Roster:
    """Who answers a run's steps. Built from agents (:meth:`of`) or, where only their specs are known (a recorded
    run), from specs (:meth:`labels_for`)."""

    voting: tuple[Agent, ...]
    """Agents that vote, in escalation order: a step the first cannot decide goes to the second, and so on."""
    drafter: Agent | None = None
    """The small model that drafts every step, when the run speculates."""
    verifiers: tuple[Agent, ...] = ()
    """Agents that confirm or reject the drafts."""

    @classmethod
    def of(cls, voting: Sequence[Agent], drafter: Agent | None = None, verifiers: Sequence[Agent] = ()) -> Roster:
        return cls(voting=tuple(voting), drafter=drafter, verifiers=tuple(verifiers))

    @property
    def agents(self) -> tuple[Agent, ...]:
        """Every agent, in the order step rows index them."""
        return (*self.voting, *(() if self.drafter is None else (self.drafter, *self.verifiers)))

    @property
    def backends(self) -> list[Backend]:
        """Each distinct backend once, in the agents' order."""
        seen: dict[int, Backend] = {}
        for a in self.agents:
            seen.setdefault(id(a.backend), a.backend)
        return list(seen.values())

    @property
    def labels(self) -> list[str]:
        return self.labels_for(
            [a.spec for a in self.voting],
            None if self.drafter is None else self.drafter.spec,
            [v.spec for v in self.verifiers],
        )

    @staticmethod
    def labels_for(voting: Sequence[str], drafter: str | None = None, verifiers: Sequence[str] = ()) -> list[str]:
        """``agent 1: SPEC`` (voting, in escalation order), ``drafter: SPEC``, ``verifier 1: SPEC``."""
        labels = [f"agent {i + 1}: {a}" for i, a in enumerate(voting)]
        if drafter is not None:
            labels.append(f"drafter: {drafter}")
            labels += [f"verifier {i + 1}: {v}" for i, v in enumerate(verifiers)]
        return labels

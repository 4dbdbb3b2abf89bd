"""Agents and model backends (installed as ``maker.agents``)."""

from maker.agents._base import (
    RATING_INSTRUCTION,
    Agent,
    Backend,
    EntropyProbing,
    GenerateRequest,
    JudgeRequest,
    Judging,
    Oracle,
    Sample,
    Usage,
    digit_score,
    judge_prompt,
)
from maker.agents._http import RateLimitWait, rate_limit_waits
from maker.agents._logprobs import returns_logprobs
from maker.agents._roster import Roster, agent_label
from maker.agents.simulated import PRESETS, SimulatedBackend, SimulatedConfig
from maker.agents.specs import make_agent, parse_spec

__all__ = [
    "Agent",
    "Backend",
    "EntropyProbing",
    "Judging",
    "GenerateRequest",
    "Oracle",
    "Sample",
    "Usage",
    "JudgeRequest",
    "judge_prompt",
    "digit_score",
    "RATING_INSTRUCTION",
    "Roster",
    "agent_label",
    "PRESETS",
    "SimulatedBackend",
    "SimulatedConfig",
    "make_agent",
    "parse_spec",
    "RateLimitWait",
    "rate_limit_waits",
    "returns_logprobs",
]

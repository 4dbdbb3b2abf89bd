"""Agents and model backends (installed as ``maker.agents``)."""

from maker.agents._base import Agent, Backend, EntropyProbing, GenerateRequest, Judging, Oracle, Sample
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
    "PRESETS",
    "SimulatedBackend",
    "SimulatedConfig",
    "make_agent",
    "parse_spec",
]

"""A calibrated, seeded stand-in for a language model.

It writes real response texts in the microstep's format (rendered from the workflow's
ground truth or from one of its plausible mistakes), so every sample goes through the
same parsing, red-flag and voting path as a model's would. Each draw is a pure function
of (agent seed, run seed, step, sample index), so runs are reproducible and resumable.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from maker._rng import derive, uniform
from maker.agents._base import GenerateRequest, Sample, estimate_tokens
from maker.errors import UserError

log = structlog.get_logger("maker")

__all__ = ["SimulatedConfig", "SimulatedBackend", "PRESETS"]

# MAKER (Meyerson et al. 2025) Figure 6b: per-sample error rate on a Hanoi step, tokens per call.
PRESETS: dict[str, tuple[float, int]] = {
    "gpt-4.1-nano": (0.3571, 842),
    "gpt-4.1-mini": (0.0022, 538),  # the temperature MAKER ran with (0.1)
    "gpt-4.1-mini-t1.0": (0.0040, 580),
    "o3-mini": (0.0018, 535),
    "claude-haiku-4.5": (0.1839, 588),
    "llama-3.2-3b": (1.0, 434),
    "gpt-oss-20b": (0.0358, 1104),
    "qwen3": (0.2342, 449),
    "deepseek-v3.1": (0.0569, 1004),
    "kimi-k2": (0.0393, 925),
}


class SimulatedConfig(BaseModel):
    """Parameters of a simulated agent; every key can be set in an agent spec."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    error: float = Field(0.01, ge=0.0, le=1.0)
    """Per-sample chance of a well-formed but wrong answer (1 - p)."""
    spread: int = Field(1, ge=1)
    """How many distinct wrong answers errors are spread over (1: all errors agree, the worst case)."""
    hard_fraction: float = Field(0.0, ge=0.0, le=1.0)
    """Fraction of steps that are hard (correlated errors: every sample of the step errs more)."""
    hard_error: float = Field(0.3, ge=0.0, le=1.0)
    """Per-sample error rate on a hard step."""
    overlong: float = Field(0.0, ge=0.0, le=1.0)
    """Chance a response runs past the token limit."""
    malformed: float = Field(0.0, ge=0.0, le=1.0)
    """Chance a response is not in the answer format."""
    tokens: int | None = Field(None, ge=1)
    """Tokens per response. None (the default): the text it writes, about four characters a token, so a
    microstep's ``max_tokens`` means what it means for a real model. A number: a mean, each response drawn within
    25% of it (reported, not written out); the model presets carry their model's published mean."""
    call_s: float = Field(0.0, ge=0.0)
    """Latency of one generate call, seconds."""
    token_s: float = Field(0.0, ge=0.0)
    """Latency per generated token of the longest response in a call, seconds."""
    sample_s: float = Field(0.0, ge=0.0)
    """Extra latency per sample in a call, seconds (the cost of batching)."""
    seed: int = 0
    """Agent seed, mixed with the run seed: two agents with different seeds err independently."""
    tpr: float = Field(0.99, ge=0.0, le=1.0)
    """As a verifier: chance of accepting a correct draft."""
    fpr: float = Field(0.05, ge=0.0, le=1.0)
    """As a verifier: chance of accepting a wrong draft."""
    lp_sep: float = Field(2.0, ge=0.0)
    """Token log-probabilities (asked for with ``logprobs``): how far apart right and wrong samples are. A sample's
    least likely token has surprise ``s = -logprob``; ``ln s`` is normal with sd 1, mean ``lp_mu`` for a right
    sample and ``lp_mu + lp_sep`` for a wrong one, so ``lp_sep`` is the d' of ``ln s`` and a minimum-log-probability
    check separates right from wrong samples with AUC ``Phi(lp_sep / sqrt 2)`` (2.0: 0.921; 1.0: 0.760; 0: 0.5)."""
    lp_mu: float = 0.0
    """Mean of ``ln s`` for a right sample (0: its least likely token has log-probability -1 at the median)."""
    roles: dict[str, float] = Field(default_factory=dict)
    """Per-sample error rate by microstep name, over ``error`` (spec keys ``p_NAME=`` or ``error_NAME=``): one
    agent that decomposes at p=0.85 and solves at p=0.95 is ``simulated:p=0.95,p_decompose=0.85``."""

    @model_validator(mode="after")
    def _rates(self) -> SimulatedConfig:
        if self.overlong + self.malformed > 1.0:
            raise ValueError("overlong + malformed must be <= 1")
        return self

    @property
    def p(self) -> float:
        return 1.0 - self.error

    @property
    def valid(self) -> float:
        return 1.0 - self.overlong - self.malformed

    @property
    def lp_auc(self) -> float:
        """The AUC of the minimum token log-probability as a right-or-wrong classifier: ``Phi(lp_sep / sqrt 2)``."""
        return NormalDist().cdf(self.lp_sep / math.sqrt(2.0))

    def min_logprob_rates(self, threshold: float) -> tuple[float, float]:
        """``(TPR, FPR)`` of accepting a sample whose minimum token log-probability is at least ``threshold``: the
        chance for a right and for a wrong sample, exactly (no sample is drawn)."""
        if threshold >= 0.0:
            return 0.0, 0.0
        z = math.log(-threshold) - self.lp_mu
        nd = NormalDist()
        return nd.cdf(z), nd.cdf(z - self.lp_sep)

    @classmethod
    def from_options(cls, preset: str | None, options: dict[str, Any]) -> SimulatedConfig:
        values: dict[str, Any] = {}
        if preset is not None:
            if preset not in PRESETS:
                raise UserError(f"unknown simulated preset {preset!r}; choose one of {', '.join(PRESETS)}")
            error, tokens = PRESETS[preset]
            # Red-flag rates are not published per model; these small rates keep the
            # red-flag path exercised in every preset run.
            values.update(error=error, tokens=tokens, overlong=0.001, malformed=0.001)
        options = dict(options)
        roles: dict[str, float] = {}
        for key in [k for k in options if k.startswith(("p_", "error_"))]:
            kind, _, name = key.partition("_")
            roles[name] = _rate(key, options.pop(key), kind == "p")
        if "p" in options:
            options["error"] = _rate("p", options.pop("p"), True)
        values.update(options)
        if roles:
            values["roles"] = roles
        return cls.model_validate(values)


def _rate(key: str, value: Any, is_p: bool) -> float:
    """An error rate from a spec's ``p``-style (correct rate) or ``error``-style value."""
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        what = "per-sample correct rate" if is_p else "per-sample error rate"
        raise UserError(f"{key} is the {what} and must be in [0, 1], got {value!r}")
    return 1.0 - float(value) if is_p else float(value)


_ND = NormalDist()
_LP_TOKENS = 4096  # at most this many token log-probabilities per sample (an overlong one is red-flagged anyway)

_RAMBLE = "Let me reason about this carefully before answering. "


class SimulatedBackend:
    """Backend whose samples are drawn from :class:`SimulatedConfig`."""

    token_logprobs = True
    """Returns each sample's token log-probabilities when a request asks (``lp_sep`` sets how telling they are)."""

    def __init__(self, config: SimulatedConfig, name: str = "simulated") -> None:
        self.config = config
        self.name = name
        self._seed = derive(0x5EED, config.seed)
        self.calls = 0
        self.samples = 0
        self._checked: set[str] = set()  # microsteps whose mistakes were compared with the right answer

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[list[Sample]]:
        out = [self._one(req) for req in requests]
        cfg = self.config
        if cfg.call_s or cfg.token_s or cfg.sample_s:
            longest = max((s.tokens for samples in out for s in samples), default=0)
            n = sum(len(s) for s in out)
            await asyncio.sleep(cfg.call_s + cfg.token_s * longest + cfg.sample_s * n)
        self.calls += 1
        return out

    async def aclose(self) -> None:
        return None

    async def judge(self, requests: Sequence[Any]) -> list[list[float]]:
        """Digit log-probabilities for rating drafts: a correct draft is accepted with chance ``tpr``,
        a wrong or unreadable one with chance ``fpr``."""
        cfg = self.config
        out = []
        for req in requests:
            orc = req.oracle
            if orc is None:
                raise UserError("the simulated verifier needs the workflow's ground truth (an oracle)")
            ms = orc.microstep
            try:
                right = ms.vote_key(ms.parse(req.draft)) == ms.vote_key(orc.answer)
            except Exception:
                right = False
            accept = uniform(req.seed ^ self._seed, 7) < (cfg.tpr if right else cfg.fpr)
            peak = 9 if accept else 2
            out.append([-0.05 if d == peak else -6.0 for d in range(10)])
        await self._sleep(len(requests), 1)
        return out

    async def first_token_entropy(self, requests: Sequence[GenerateRequest]) -> list[float]:
        """Hard steps look uncertain (entropy 2.5 nats), the rest confident (0.3)."""
        cfg = self.config
        out = []
        for req in requests:
            step = req.oracle.step if req.oracle is not None else 0
            hard = cfg.hard_fraction and uniform(derive(self._seed, step), 0) < cfg.hard_fraction
            out.append(2.5 if hard else 0.3)
        await self._sleep(len(requests), 1)
        return out

    async def _sleep(self, n: int, tokens: int) -> None:
        cfg = self.config
        if cfg.call_s or cfg.token_s or cfg.sample_s:
            await asyncio.sleep(cfg.call_s + cfg.token_s * tokens + cfg.sample_s * n)

    def _one(self, req: GenerateRequest) -> list[Sample]:
        orc = req.oracle
        if orc is None:
            raise UserError(
                "the simulated agent answers from the workflow's ground truth, and the workflow gives none for this "
                "step: it has no oracle(state) method, or its oracle does not know this task (solve's reference "
                "knows one multiplication or one sort). Give the workflow an oracle(state) method, or use a real "
                "model: --agent openai:MODEL@URL (an OpenAI-compatible server) or --agent hf:MODEL"
            )
        cfg = self.config
        ms = orc.microstep
        error = cfg.roles.get(ms.name, cfg.error) if cfg.roles else cfg.error
        seed = self._seed
        if cfg.hard_fraction and uniform(derive(seed, orc.step), 0) < cfg.hard_fraction:
            error = cfg.hard_error
        if ms.difficulty is not None:  # a call worth w unit steps is right with probability p ** w
            error = 1.0 - (1.0 - error) ** ms.difficulty_of(orc.inputs or {})
        if error and ms.name not in self._checked:
            self._check_mistakes(orc)
        overlong = cfg.overlong
        flag_cut = overlong + cfg.malformed
        correct: str | None = None
        wrong: dict[int, str] | None = None
        samples: list[Sample] = []
        text: str | None  # a str by the time it is used: wrong.get() misses are rendered
        tokens_mean = cfg.tokens
        for s in req.seeds:
            sd = s ^ seed
            u = uniform(sd, 0)
            tokens = 0 if tokens_mean is None else int(tokens_mean * (0.75 + 0.5 * uniform(sd, 1))) or 1
            if u < flag_cut:
                if correct is None:
                    correct = ms.render(orc.answer)
                if u < overlong:
                    text = _RAMBLE * 8 + correct
                    tokens = req.max_tokens + 1 + int(uniform(sd, 2) * req.max_tokens)
                    samples.append(Sample(text, tokens, self._logprobs(sd, tokens, False) if req.logprobs else None))
                    continue
                text = self._malformed(ms, correct, int(uniform(sd, 2) * 3))
                right = False
            else:
                right = True
                if error and uniform(sd, 3) < error:
                    right = False
                    j = int(uniform(sd, 4) * cfg.spread)
                    if wrong is None:
                        wrong = {}
                    text = wrong.get(j)
                    if text is None:
                        text = wrong[j] = ms.render(ms.mistake(orc.answer, j, orc.inputs or {}))
                else:
                    if correct is None:
                        correct = ms.render(orc.answer)
                    text = correct
            tokens = tokens or estimate_tokens(text)
            samples.append(Sample(text, tokens, self._logprobs(sd, tokens, right) if req.logprobs else None))
        self.samples += len(samples)
        return samples

    def _logprobs(self, sd: int, tokens: int, right: bool) -> list[float]:
        """One log-probability per token, a pure function of the sample's seed: the least likely token's surprise
        ``s`` has ``ln s ~ N(lp_mu, 1)`` for a right sample and ``N(lp_mu + lp_sep, 1)`` for a wrong (or malformed)
        one; every other token is likely whether the sample is right or not (surprise exponential with mean 0.05,
        never below the least likely token's), so the mean over a long response dilutes the one signal."""
        cfg = self.config
        n = max(1, min(tokens, _LP_TOKENS))
        z = _ND.inv_cdf(min(max(uniform(sd, 5), 1e-12), 1.0 - 1e-12))
        low = -math.exp(z + cfg.lp_mu + (0.0 if right else cfg.lp_sep))
        at = int(uniform(sd, 6) * n)
        return [low if i == at else max(low, 0.05 * math.log(1.0 - uniform(sd, 16 + i))) for i in range(n)]

    def _check_mistakes(self, orc: Any) -> None:
        """At a microstep's first step: a mistake that votes like the right answer would make this agent's
        errors count as right, and the simulated error rate silently 0. Say so, once."""
        ms = orc.microstep
        self._checked.add(ms.name)
        try:
            right = ms.vote_key(orc.answer)
            same = [
                j
                for j in range(min(self.config.spread, 8))
                if ms.vote_key(ms.mistake(orc.answer, j, orc.inputs or {})) == right
            ]
        except Exception:  # a workflow without mistakes() fails where the agent errs, with its own message
            return
        if same:
            log.warning(
                f"microstep {ms.name!r}: mistakes() gave an answer that votes like the right one (mistake "
                f"{same[0]} at step {orc.step}); this agent's errors on it count as right, so its simulated "
                f"error rate is 0. Make mistakes() return an answer whose vote key differs",
                agent=self.name,
                microstep=ms.name,
            )

    @staticmethod
    def _malformed(ms: Any, correct: str, kind: int) -> str:
        candidates = (
            correct[: max(1, len(correct) // 2)],
            correct.replace("=", ":"),
            "I am not sure what the next move should be.",
        )
        text = candidates[kind]
        try:
            ms.parse(text)
        except Exception:
            return text
        return ""

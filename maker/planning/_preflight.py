"""A speculative run's error estimate before it starts, from what is known of its agents.

:func:`preflight` builds :func:`maker.planning._speculation.speculation_estimate` for the run's
drafter, verifiers and large model (simulated agents carry their rates; real models' rates
are unknown until measured with ``maker calibrate --verifier``), and when at least half a
wrong step is expected it names the fix: the smallest ensemble that meets the target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from maker.planning._logprob import logprob_preflight
from maker.planning._speculation import SpeculationEstimate, smallest_ensemble, speculation_estimate
from maker.stats import k_min

if TYPE_CHECKING:  # pragma: no cover
    from maker.dsl import Workflow
    from maker.runs import RunOptions
    from maker.voting import Voting

__all__ = ["preflight", "known_rates"]


def known_rates(spec: str) -> dict[str, float]:
    """What is known of an agent's rates without starting it: a simulated agent's ``p``, ``valid``, ``tpr`` and
    ``fpr`` from its spec; nothing for a real model (measure it with ``maker calibrate``)."""
    from maker.agents.simulated import SimulatedConfig
    from maker.agents.specs import parse_spec

    try:
        kind, name, options = parse_spec(spec)
        if kind != "simulated":
            return {}
        cfg = SimulatedConfig.from_options(name, options)
    except Exception:  # a bad spec fails the run itself, with its own message
        return {}
    return {"p": cfg.p, "valid": cfg.valid, "tpr": cfg.tpr, "fpr": cfg.fpr}


def _prob(x: float) -> str:
    return f"{x:.4f}" if x >= 1e-3 else f"{x:.1e}"


def _count(x: float) -> str:
    return f"{x:.1f}" if x >= 0.1 else f"{x:.1e}"


def preflight(
    options: RunOptions,
    agents_info: Mapping[str, Mapping[str, Any]] | None = None,
    expected_steps: int | None = None,
    *,
    workflow: str | type[Workflow[Any, Any]] | None = None,
    target: float = 0.95,
) -> tuple[str, float | None]:
    """A speculative run's estimate before it starts: ``(text, expected wrong steps or None)``.

    ``text`` is empty when the run does not draft. Otherwise its first line is the estimate (or, where an
    agent's rates are unknown, which ones and how to measure them) and, when at least half a wrong step is
    expected, a second line starts ``warning:`` and names the fix: the smallest verify-k or number of
    verifiers that meets ``target``, ``--verify vote``, a larger ``--k``, or better or better-measured agents.

    ``agents_info``: each agent spec's ``info`` (``p``, ``valid``, ``tpr``, ``fpr``), where already built;
    specs not in it are read with :func:`known_rates`. ``workflow`` (a name or class) gives the microstep's
    voting k and max_rounds when the options do not override them, and names the workflow in the advice.
    """
    if options.drafter is None:
        return "", None
    infos = dict(agents_info or {})

    def rates(spec: str) -> Mapping[str, Any]:
        got = infos.get(spec)
        return got if got is not None else known_rates(spec)

    wf_name, policy = _workflow_policy(workflow)
    large, drafter = rates(options.agents[0]), rates(options.drafter)
    vinfo = [rates(v) for v in options.verifiers]
    if options.verify == "logprob":  # no verifiers: the draft's own log-probabilities (maker.planning._logprob)
        common = _common_args(options, policy, large, drafter) if "p" in drafter else None
        return logprob_preflight(options, common, expected_steps, target=target, workflow=wf_name, large=large)
    unknown = _unknown(options.verify, options.drafter, drafter, options.verifiers, vinfo)
    if unknown:
        ver = options.verifiers[0] if options.verifiers else "SPEC"
        return (
            f"speculation estimate: the error rates of {', '.join(unknown)} are unknown; measure them with "
            f"`maker calibrate {wf_name} --verifier {ver} --drafter {options.drafter}` before a long run"
        ), None
    note = ""
    if "p" not in large:
        note = f" (voting by {options.agents[0]} counted as error-free: its rate is unknown)"
    common = _common_args(options, policy, large, drafter)
    n, vk, mode = len(options.verifiers), options.verify_k, options.verify
    rate_args = _rate_args(mode, vinfo)
    if expected_steps is None:
        est = speculation_estimate(steps=1, mode=mode, verifiers=n, verify_k=vk, **rate_args, **common)
        return (
            f"speculation estimate: steps unknown, per-step error {est.step_error:.1e}; large-model calls "
            f"per step {est.large_calls_per_step:.2f} against {est.voting_calls_per_step:.2f} voting{note}"
        ), None
    est = speculation_estimate(steps=expected_steps, mode=mode, verifiers=n, verify_k=vk, **rate_args, **common)
    text = (
        f"speculation estimate: {expected_steps:,} steps, per-step error {est.step_error:.1e}, expected wrong "
        f"steps {_count(est.expected_wrong)} (chance of a fully correct run {_prob(est.p_full)}); large-model "
        f"calls per step {est.large_calls_per_step:.2f} against {est.voting_calls_per_step:.2f} voting{note}"
    )
    if est.expected_wrong >= 0.5:
        text += "\n" + _warning(est, options, vinfo, common, expected_steps, target, wf_name)
    return text, est.expected_wrong


def _workflow_policy(workflow: str | type[Workflow[Any, Any]] | None) -> tuple[str, Voting]:
    """The workflow's name for the advice and its first microstep's voting policy (defaults without one)."""
    from maker.voting import Voting

    if workflow is None:
        return "WORKFLOW", Voting()
    from maker.runs import resolve_workflow

    wf_cls = resolve_workflow(workflow) if isinstance(workflow, str) else workflow
    return wf_cls.name, wf_cls.microsteps[0].voting


def _unknown(
    mode: str, drafter_spec: str, drafter: Mapping[str, Any], verifiers: list[str], vinfo: list[Mapping[str, Any]]
) -> list[str]:
    """The drafter and verifiers whose rates the estimate needs and are not known."""
    need = ("tpr", "fpr") if mode == "score" else ("p",)
    return ([drafter_spec] if "p" not in drafter else []) + [
        v for v, i in zip(verifiers, vinfo, strict=True) if any(x not in i for x in need)
    ]


def _common_args(
    options: RunOptions, policy: Voting, large: Mapping[str, Any], drafter: Mapping[str, Any]
) -> dict[str, Any]:
    """The estimate's arguments other than the verifiers': the drafter's and large model's rates and the run's
    voting and drafting settings (the options' k and max_rounds, else the workflow's)."""
    return dict(
        drafter_p=float(drafter["p"]),
        drafter_valid=float(drafter.get("valid", 1.0)),
        p=float(large.get("p", 1.0)),
        k=options.k or policy.k,
        valid=float(large.get("valid", 1.0)),
        max_rounds=options.max_rounds or policy.max_rounds,
        large_first=options.large_first,
        draft_k=options.draft_k,
        draft_batch=options.draft_batch,
        verifiers_are_large=bool(options.verifiers) and all(v == options.agents[0] for v in options.verifiers),
    )


def _rate_args(mode: str, vinfo: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The verifiers' rates as the estimate takes them: TPR and FPR (score mode), or p and valid (vote mode)."""
    if mode == "score":
        return dict(tpr=[float(i["tpr"]) for i in vinfo], fpr=[float(i["fpr"]) for i in vinfo])
    return dict(verifier_p=[float(i["p"]) for i in vinfo], verifier_valid=[float(i.get("valid", 1.0)) for i in vinfo])


def _warning(
    est: SpeculationEstimate,
    options: RunOptions,
    vinfo: list[Mapping[str, Any]],
    common: dict[str, Any],
    steps: int,
    target: float,
    wf_name: str,
) -> str:
    """The ``warning:`` line: how many wrong steps, and the smallest change that meets the target."""
    head = f"warning: expect {_count(est.expected_wrong)} wrong steps in this run"
    if est.voting_p_full < target:
        try:
            need = f"--k {k_min(steps, est.p, target)}"
        except ValueError:
            need = "a stronger --agent (voting cannot converge at its p)"
        return (
            f"{head}; voting by the large model at k={est.k} alone reaches only {_prob(est.voting_p_full)} "
            f"of a fully correct run: use {need}"
        )
    n, mode = len(options.verifiers), options.verify
    # Verifiers that differ are summarised by the least reliable of them for the search.
    if mode == "score":
        rates: dict[str, Any] = dict(
            tpr=min(float(i["tpr"]) for i in vinfo) if vinfo else 1.0,
            fpr=max(float(i["fpr"]) for i in vinfo) if vinfo else 1.0,
        )
    else:
        rates = dict(
            verifier_p=min(float(i["p"]) for i in vinfo) if vinfo else 0.0,
            verifier_valid=min(float(i.get("valid", 1.0)) for i in vinfo) if vinfo else 1.0,
        )
    ens = smallest_ensemble(
        steps=steps, target=target, mode=mode, verifiers=max(n, 1), verify_k=options.verify_k, **rates, **common
    )
    fixes = []
    if n and ens.verify_k_at_n is not None and ens.verify_k_at_n != options.verify_k:
        fixes.append(f"`--verify-k {ens.verify_k_at_n}` with these {n} verifiers")
    if ens.unanimous is not None:
        fixes.append(
            f"{ens.unanimous} independent verifiers that must all agree "
            f"(`--verifier` {ens.unanimous} times, `--verify-k {ens.unanimous}`)"
        )
    if mode == "score" and vinfo and all("p" in i for i in vinfo):
        vote = smallest_ensemble(
            steps=steps,
            target=target,
            mode="vote",
            verifiers=n,
            verifier_p=min(float(i["p"]) for i in vinfo),
            verifier_valid=min(float(i.get("valid", 1.0)) for i in vinfo),
            **common,
        )
        if vote.verify_k_at_n is not None:
            fixes.append(f"`--verify vote --verify-k {vote.verify_k_at_n}` (the verifiers answer the step themselves)")
    if fixes:
        return f"{head}; to reach a {target} chance of a fully correct run use " + ", or ".join(fixes[:2])
    return (
        f"{head}; no ensemble of up to {ens.bound} such verifiers reaches a {target} chance of a fully correct "
        f"run: use a stronger drafter or verifiers, or measure their rates on more steps "
        f"(`maker calibrate {wf_name} --verifier SPEC --drafter SPEC`)"
    )

"""Planning a run before it starts: measuring agents and verifiers on ground truth (calibration), the
mathematics of speculative drafting, and the checks made before a run (preflight).

The voting mathematics every layer uses (success chances, k_min, Wilson intervals) is in :mod:`maker.stats`.
"""

from maker.planning._calibrate import Calibration, calibrate
from maker.planning._calibrate_logprob import LogprobCalibration, ThresholdRow, calibrate_logprob
from maker.planning._calibrate_verifier import VerifierCalibration, calibrate_verifier
from maker.planning._cost import BudgetCheck, CostEstimate, budget_check, cost_estimate
from maker.planning._ensemble import EnsembleEstimate, EnsembleSide, ensemble_estimate
from maker.planning._logprob import THRESHOLD_GRID, ThresholdChoice, choose_threshold, simulated_logprob_rates
from maker.planning._preflight import known_rates, preflight
from maker.planning._speculation import (
    ENSEMBLE_BOUND,
    DraftVote,
    Ensemble,
    SpeculationEstimate,
    Verification,
    accept_probability,
    draft_vote,
    logprob_verification,
    score_verification,
    smallest_ensemble,
    speculation_estimate,
    verifier_calls,
    vote_accept_probability,
    vote_verification,
    vote_verifier_calls,
)

__all__ = [
    "Calibration",
    "calibrate",
    "VerifierCalibration",
    "calibrate_verifier",
    "LogprobCalibration",
    "ThresholdRow",
    "calibrate_logprob",
    "THRESHOLD_GRID",
    "ThresholdChoice",
    "choose_threshold",
    "simulated_logprob_rates",
    "logprob_verification",
    "preflight",
    "EnsembleEstimate",
    "EnsembleSide",
    "ensemble_estimate",
    "CostEstimate",
    "cost_estimate",
    "BudgetCheck",
    "budget_check",
    "known_rates",
    "accept_probability",
    "verifier_calls",
    "vote_accept_probability",
    "vote_verifier_calls",
    "Verification",
    "score_verification",
    "vote_verification",
    "SpeculationEstimate",
    "speculation_estimate",
    "Ensemble",
    "smallest_ensemble",
    "ENSEMBLE_BOUND",
    "DraftVote",
    "draft_vote",
]

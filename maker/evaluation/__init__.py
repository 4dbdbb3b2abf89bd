"""Evaluation: a workflow over a data set, one run per problem, scored, with accuracy and cost figures and a report."""

from maker.evaluation._datasets import Problem, load_problems
from maker.evaluation._evaluate import (
    EvalSettings,
    EvalSummary,
    ProblemRow,
    default_name,
    evaluate,
    evaluate_async,
    read_data,
)
from maker.evaluation._reasoning_gym import ReasoningGym, is_reasoning_gym, reasoning_gym_data
from maker.evaluation._report import render_eval_report, write_eval_report
from maker.evaluation._scorer import Scorer, load_scorer

__all__ = [
    "Problem",
    "load_problems",
    "read_data",
    "ReasoningGym",
    "reasoning_gym_data",
    "is_reasoning_gym",
    "EvalSettings",
    "EvalSummary",
    "ProblemRow",
    "evaluate",
    "evaluate_async",
    "default_name",
    "render_eval_report",
    "write_eval_report",
    "Scorer",
    "load_scorer",
]

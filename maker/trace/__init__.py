"""Reading a run's trace: step and failure records, statistics, the task tree, the HTML report, and export.

Everything here reads the store through its named questions and never changes it.
"""

from maker.trace._branches import branch_rows, branch_stats, branch_step_records, first_line
from maker.trace._export import export_jsonl, export_parquet
from maker.trace._records import TRACE_FORMAT, agent_labels, failure_records, parse_range, step_records
from maker.trace._report import render_report, write_report
from maker.trace._stats import trace_stats
from maker.trace._stats_model import BranchRow, BranchStats, SpeculationStats, SpeculationTheory, TraceStats
from maker.trace._tree import task_tree, tree_html, tree_text

__all__ = [
    "TRACE_FORMAT",
    "step_records",
    "failure_records",
    "trace_stats",
    "TraceStats",
    "SpeculationStats",
    "SpeculationTheory",
    "agent_labels",
    "parse_range",
    "export_jsonl",
    "export_parquet",
    "render_report",
    "write_report",
    "task_tree",
    "tree_text",
    "tree_html",
    "branch_rows",
    "branch_stats",
    "branch_step_records",
    "first_line",
    "BranchRow",
    "BranchStats",
]

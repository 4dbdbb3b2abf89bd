"""Runs: start one, resume it after a crash, replay its trace without model calls, fork it from a recorded state.

Also where a run's options live (:class:`RunOptions`) and how a workflow's code is found from its name,
``module:Class`` or ``file.py:Class`` and found again from a run's record.
"""

from maker.runs._loading import canonical_ref, is_file_ref, load_file, recorded_workflow, resolve_workflow, workflow_ref
from maker.runs._options import DEFAULT_SNAPSHOTS, DEFAULT_WINDOW, VOTING_OVERRIDES, RunOptions, options_error
from maker.runs._replay import ReplayResult, check_fork_step, fork_run, replay_run
from maker.runs._runs import (
    check_resumable,
    drive,
    is_live,
    new_run,
    new_run_id,
    read_options,
    reopen_run,
    request_stop,
    resume_run,
    shown_status,
    start_run,
)

__all__ = [
    "load_file",
    "RunOptions",
    "start_run",
    "resume_run",
    "replay_run",
    "fork_run",
    "ReplayResult",
    "new_run",
    "new_run_id",
    "reopen_run",
    "request_stop",
    "check_resumable",
    "check_fork_step",
    "drive",
    "is_live",
    "shown_status",
    "options_error",
    "read_options",
    "VOTING_OVERRIDES",
    "DEFAULT_WINDOW",
    "DEFAULT_SNAPSHOTS",
    "resolve_workflow",
    "recorded_workflow",
    "workflow_ref",
    "canonical_ref",
    "is_file_ref",
]

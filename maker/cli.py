"""The ``maker`` command line: the command group, with every command module's commands registered on it."""

from __future__ import annotations

from maker import cli_eval, cli_jobs, cli_plan, cli_run, cli_solve, cli_trace, cli_workflows  # noqa: F401 (register)
from maker._cli_common import as_flags, main

__all__ = ["main", "as_flags"]

if __name__ == "__main__":  # pragma: no cover
    main()

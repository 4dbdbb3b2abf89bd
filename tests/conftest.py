"""Fixtures shared by the test folders. Plain helpers (running ``maker``, reading a store) are in tests/_cli.py."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._cli import TIMEOUT, Started, start_maker


@pytest.fixture
def background(tmp_path: Path) -> Iterator[Callable[..., Started]]:
    """Start ``maker`` commands in the background: :func:`tests._cli.start_maker`, ``tmp`` this test's tmp_path
    unless given. Whatever is still running when the test ends, passed or failed, is killed (with its process
    group, for one started with ``new_session``) and reaped, so no test leaves a process behind for the next: a
    held one would wait minutes."""
    started: list[tuple[Started, bool]] = []

    def start(*args: Any, tmp: Path = tmp_path, new_session: bool = False, **kwargs: Any) -> Started:
        run = start_maker(*args, tmp=tmp, new_session=new_session, **kwargs)
        started.append((run, new_session))
        return run

    yield start
    for run, session in started:
        if run.proc.poll() is None:
            if session:
                os.killpg(run.proc.pid, signal.SIGKILL)
            else:
                run.proc.kill()
        run.proc.wait(timeout=TIMEOUT)


@pytest.fixture(autouse=True)
def _fresh_endpoints() -> Iterator[None]:
    """Each test starts with no HTTP endpoint state: a server that gets a port an earlier test's had, serving the
    same model name, must not inherit that endpoint's pause, limits or open circuit (they live for the process)."""
    from maker.agents._http import forget_endpoints

    forget_endpoints()
    yield
    forget_endpoints()

"""Ready-made workflows (installed as ``maker.workflows``)."""

from maker.workflows.addition import Addition
from maker.workflows.hanoi import Hanoi

__all__ = ["Hanoi", "Addition", "BUILTIN"]

BUILTIN = {wf.name: wf for wf in (Hanoi, Addition)}

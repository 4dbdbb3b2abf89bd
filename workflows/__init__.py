"""Ready-made workflows (installed as ``maker.workflows``)."""

from maker.workflows.addition import Addition
from maker.workflows.counting import Counting
from maker.workflows.hanoi import Hanoi

__all__ = ["Hanoi", "Addition", "Counting", "BUILTIN"]

BUILTIN = {wf.name: wf for wf in (Hanoi, Addition, Counting)}

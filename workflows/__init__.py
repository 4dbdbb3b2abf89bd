"""Ready-made workflows (installed as ``maker.workflows``)."""

from maker.workflows._reference import same_answer
from maker.workflows.addition import Addition
from maker.workflows.counting import Counting
from maker.workflows.hanoi import Hanoi
from maker.workflows.solve import Solve

__all__ = ["Hanoi", "Addition", "Counting", "Solve", "BUILTIN", "same_answer"]

BUILTIN = {wf.name: wf for wf in (Hanoi, Addition, Counting, Solve)}

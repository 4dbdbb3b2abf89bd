"""Solve a task given in plain text by recursive decomposition: a voted, checkpointed task tree.

Each node of the tree is a task. Its life:

1. a voted decision, atomic or not (``classify``); a node at ``max_depth`` is solved
   atomically without one;
2. not atomic: decomposer agents propose sub-tasks and a composition rule, voted on by a
   canonical key (``vote=key``: proposals that name the same problems with the same rule
   are one vote), or sampled as ``candidates`` distinct proposals that judge agents pick
   from by number, the picks tallied first-to-ahead-by-k (``vote=judge``); the children
   are created from the winner (a winner with no sub-tasks makes the node atomic);
3. atomic: solved by voted solver agents (``solve``);
4. once every child has a result: the parent's result is a voted composition (``compose``).

``next`` asks every call that is ready anywhere in the tree at once (a fan-out), so
independent nodes are solved concurrently, and every decision is a committed step tagged
with its node's path (``0``, ``0.1``, ``0.1.0``): a killed run resumes inside the tree and
``maker replay`` replays it. For tasks the reference recognises (long multiplication,
sorting integers) the workflow knows the ground truth of every call, which counts errors
and drives simulated agents.

Backtracking (``--backtracks N``): ``check`` verifies every composed result cheaply, without
the answer (casting out nines and elevens for a product; for a sort, that the result is a
permutation of the list, in order: :mod:`maker.workflows._checks`). When one fails, the run
goes back to the last state that passed, and ``retry`` rejects the failed node's
decomposition there, so the node is decomposed again and the next-best proposal wins (the
old subtree stays in ``nodes``, marked ``dropped``). A composed result fails as often
because a child's result was wrong as because the split was; the rejected split may have
been right, and its replacement is then another right one (the reference knows several for
every problem it splits, which is what simulated agents propose). After ``MAX_REJECTED``
rejections at one place the node keeps its split and gets new children instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from maker.dsl import DONE, Done, MicrostepCall, State, Workflow
from maker.errors import UserError
from maker.workflows import _solve_steps as steps
from maker.workflows._checks import result_check
from maker.workflows._reference import ACCEPTED, Proposal, recognize, same_answer
from maker.workflows._solve_steps import Classify, Decomposition, Pick, Result, decomposition_key, normal_task

__all__ = [
    "Solve",
    "SolveParams",
    "TreeState",
    "Node",
    "Rejection",
    "ACCEPTED",
    "MAX_REJECTED",
    "known_task",
    "check_simulated",
]

MAX_REJECTED = 2
"""Decompositions a backtrack rejects for one task at one place in the tree; past them a failed node keeps its split
and its sub-tasks are decided again (see :meth:`Solve.retry`)."""

_RETRY = "\nretry: "
"""Where a failed check's reason goes on with what :meth:`Solve.retry` reads (JSON, on one line)."""
_PATH = re.compile(r"0(?:\.[0-9]+)*")


def known_task(task: str) -> bool:
    """Whether the reference knows ``task`` (see :data:`ACCEPTED`): only then can simulated agents play it."""
    return recognize(task) is not None


def check_simulated(task: str, agents: Sequence[str]) -> None:
    """Refuse, before a run is made, a task that simulated agents among ``agents`` (specs) cannot play: they answer
    from the reference's ground truth, which covers only the tasks it recognises (:data:`ACCEPTED`)."""
    simulated = [a for a in agents if a.split(":", 1)[0] == "simulated"]
    if simulated and not known_task(task):
        raise UserError(
            f"simulated agents play only the tasks the reference knows, and it does not recognise {task!r}. It "
            f"knows {ACCEPTED}. For any other task use a real model: --agent openai:MODEL@URL (an OpenAI-compatible "
            f"server) or --agent hf:MODEL (a local Hugging Face model)"
        )


class SolveParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, description="the task, in plain text")
    max_depth: int = Field(5, ge=0, le=16, description="nodes this deep are solved without splitting (0: one-shot)")
    max_children: int = Field(2, ge=2, le=16, description="most sub-tasks per split (more is red-flagged)")
    vote: Literal["key", "judge"] = Field("key", description="decompositions voted by canonical key, or judged")
    candidates: int = Field(5, ge=2, le=32, description="vote=judge: proposals sampled per node for the judges")
    prompts: dict[str, str] = Field(default_factory=dict, description="prompt templates by role, over the defaults")


class Node(BaseModel):
    """One task of the tree and what has been decided about it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int
    path: str
    """``0`` for the root, ``0.1`` for its second child, ..."""
    parent: int | None = None
    depth: int = 0
    task: str
    atomic: bool | None = None
    how: str | None = None
    """How the node's shape was settled: ``vote`` (atomic or not), ``depth limit``, ``key``, ``judge``,
    ``unanimous`` (every candidate was the same), or ``no split`` (the winning proposal had no sub-tasks)."""
    candidates: tuple[Decomposition, ...] = ()
    """vote=judge: the distinct proposals the judges chose from, in the order first proposed."""
    decomposition: Decomposition | None = None
    children: tuple[int, ...] = ()
    result: str | None = None
    dropped: bool = False
    """Abandoned by a backtrack: it was in the subtree of a node decomposed again (see :meth:`Solve.retry`). Node ids
    are positions in ``nodes``, so a dropped node stays there, and nothing reads it again."""


class Rejection(BaseModel):
    """A decomposition of the task at ``path`` whose composed result failed its check: the task at that path is
    not decomposed so again (see :meth:`Solve.retry`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    task: str
    decomposition: Decomposition


class TreeState(State):
    nodes: tuple[Node, ...]
    max_depth: int
    max_children: int
    vote: Literal["key", "judge"]
    candidates: int
    prompts: dict[str, str]
    rejected: tuple[Rejection, ...] = ()
    """Decompositions rejected by backtracks, in the order rejected (see :meth:`Solve.retry`)."""


_Action = tuple[Node, str]


def _pending(state: TreeState) -> list[_Action]:
    """Every call ready in the tree, in node order: what ``next`` asks and ``apply`` receives answers for."""
    out: list[_Action] = []
    nodes = state.nodes
    for node in nodes:
        if node.result is not None or node.dropped:
            continue
        if node.atomic is None:
            out.append((node, "classify"))
        elif node.atomic:
            out.append((node, "solve"))
        elif node.decomposition is None:
            if state.vote == "key":
                out.append((node, "decompose"))
            elif node.candidates:
                out.append((node, "judge"))
            else:
                out += [(node, "propose")] * state.candidates
        elif all(nodes[c].result is not None for c in node.children):
            out.append((node, "compose"))
    return out


def _rejected(state: TreeState, node: Node) -> tuple[Decomposition, ...]:
    """The decompositions backtracks rejected for ``node``: those of a task like its at its path."""
    if not state.rejected:
        return ()
    task = normal_task(node.task)
    return tuple(r.decomposition for r in state.rejected if r.path == node.path and normal_task(r.task) == task)


def _drop(nodes: list[Node], i: int) -> None:
    """Mark the subtree below ``nodes[i]`` (not the node itself) dropped."""
    stack = list(nodes[i].children)
    while stack:
        c = stack.pop()
        nodes[c] = nodes[c].model_copy(update={"dropped": True})
        stack += nodes[c].children


def _read_reason(reason: str) -> tuple[str, str, Decomposition] | None:
    """The path, task and decomposition of a node whose composed result failed :meth:`Solve.check`; None for any
    other reason (``undecided: ...``, ``check failed``)."""
    head, sep, tail = reason.rpartition(_RETRY)
    path = head.partition(": ")[0]
    if not sep or not _PATH.fullmatch(path):
        return None
    try:
        data = json.loads(tail)
        return path, str(data["task"]), Decomposition.model_validate(data["decomposition"])
    except (ValueError, KeyError, TypeError):  # pydantic's ValidationError is a ValueError
        return None


def _numbered(candidates: tuple[Decomposition, ...]) -> str:
    return "\n".join(
        f"{i + 1}. subtasks = {json.dumps(d.subtasks)}; compose = {json.dumps(d.compose)}"
        for i, d in enumerate(candidates)
    )


class Solve(Workflow[SolveParams, TreeState], name="solve", version=1):
    """Recursive decomposition of a plain-text task into a tree of voted microsteps."""

    description = "a plain-text task split by voted decompositions into a task tree; children solved concurrently"
    Params = SolveParams
    State = TreeState
    microsteps = (steps.classify, steps.decompose, steps.propose, steps.judge, steps.solve, steps.compose)

    def start(self, params: SolveParams) -> TreeState:
        root = Node(id=0, path="0", task=params.task.strip())
        if params.max_depth == 0:
            root = root.model_copy(update={"atomic": True, "how": "depth limit"})
        return TreeState(
            nodes=(root,),
            max_depth=params.max_depth,
            max_children=params.max_children,
            vote=params.vote,
            candidates=params.candidates,
            prompts=steps.check_prompts(params.prompts),
        )

    def next(self, state: TreeState) -> list[MicrostepCall] | Done:
        if state.nodes[0].result is not None:
            return DONE
        return [self._call(state, node, action) for node, action in _pending(state)]

    def _call(self, state: TreeState, node: Node, action: str) -> MicrostepCall:
        prompts = state.prompts
        if action == "classify":
            call = steps.classify.ask(template=prompts["classify"], task=node.task)
        elif action in ("decompose", "propose"):
            ms = steps.decompose if action == "decompose" else steps.propose
            rejected = _rejected(state, node)
            # only a node with rejected splits has the input: every other call (its prompt, its digest) is as before
            extra = {"rejected": [d.model_dump(mode="json") for d in rejected]} if rejected else {}
            call = ms.ask(template=prompts["decompose"], task=node.task, max_children=state.max_children, **extra)
        elif action == "judge":
            call = steps.judge.ask(
                template=prompts["judge"],
                task=node.task,
                candidates=_numbered(node.candidates),
                count=len(node.candidates),
            )
        elif action == "solve":
            call = steps.solve.ask(template=prompts["solve"], task=node.task)
        else:
            assert node.decomposition is not None
            results = [state.nodes[c].result or "" for c in node.children]
            parts = "\n".join(
                f"R{i + 1}. {state.nodes[c].task}\n    result: {r}"
                for i, (c, r) in enumerate(zip(node.children, results, strict=True))
            )
            call = steps.compose.ask(
                template=prompts["compose"],
                task=node.task,
                parts=parts,
                rule=node.decomposition.compose,
                subtasks=node.decomposition.subtasks,
                results=results,
            )
        return call.tagged(node.path)

    def apply(self, state: TreeState, answers: tuple[Any, ...]) -> TreeState:
        nodes = list(state.nodes)
        proposals: dict[int, list[Decomposition]] = {}
        for (node, action), answer in zip(_pending(state), answers, strict=True):
            i = node.id
            if action == "classify":
                nodes[i] = nodes[i].model_copy(update={"atomic": answer.atomic, "how": "vote"})
            elif action in ("solve", "compose"):
                nodes[i] = nodes[i].model_copy(update={"result": answer.result.strip()})
            elif action == "decompose":
                self._split(state, nodes, i, answer, "key")
            elif action == "propose":
                proposals.setdefault(i, []).append(answer)
            else:
                self._split(state, nodes, i, nodes[i].candidates[answer.choice - 1], "judge")
        for i, found in proposals.items():
            first_seen: dict[Any, Decomposition] = {}
            for d in found:
                first_seen.setdefault(decomposition_key(d), d)
            rejected = {decomposition_key(d) for d in _rejected(state, nodes[i])}
            # a rejected split is no candidate, unless nothing else was proposed
            distinct = [d for k, d in first_seen.items() if k not in rejected] or list(first_seen.values())
            if len(distinct) == 1:
                self._split(state, nodes, i, distinct[0], "unanimous")
            else:
                nodes[i] = nodes[i].model_copy(update={"candidates": tuple(distinct)})
        return state.model_copy(update={"nodes": tuple(nodes)})

    @staticmethod
    def _split(state: TreeState, nodes: list[Node], i: int, d: Decomposition, how: str) -> None:
        parent = nodes[i]
        if not d.subtasks:
            nodes[i] = parent.model_copy(update={"atomic": True, "how": "no split", "decomposition": d})
            return
        depth = parent.depth + 1
        children = []
        for j, task in enumerate(d.subtasks):
            child = Node(id=len(nodes), path=f"{parent.path}.{j}", parent=i, depth=depth, task=task.strip())
            if depth >= state.max_depth:
                child = child.model_copy(update={"atomic": True, "how": "depth limit"})
            nodes.append(child)
            children.append(child.id)
        nodes[i] = parent.model_copy(update={"decomposition": d, "children": tuple(children), "how": how})

    # -- ground truth, where the reference knows the task --------------------------------------------
    def oracle(self, state: TreeState) -> tuple[Any, ...]:
        return tuple(self._truth(state, node, action) for node, action in _pending(state))

    @staticmethod
    def _truth(state: TreeState, node: Node, action: str) -> Any:
        problem = recognize(node.task)
        if problem is None:
            return None
        if action == "classify":
            return Classify(atomic=problem.atomic())
        if action in ("decompose", "propose"):
            if problem.atomic():
                return Decomposition(subtasks=[], compose="")
            # the best correct split that no backtrack rejected here (MAX_REJECTED leaves several for any problem)
            rejected = {decomposition_key(d) for d in _rejected(state, node)}
            ref = problem.split()
            for p in problem.splits():
                d = Decomposition(subtasks=list(p.subtasks), compose=p.compose)
                if decomposition_key(d) not in rejected:
                    return d
            return Decomposition(subtasks=list(ref.subtasks), compose=ref.compose)
        if action == "judge":
            for n, d in enumerate(node.candidates):
                ok = problem.atomic() if not d.subtasks else problem.check(Proposal(tuple(d.subtasks), d.compose))
                if ok:
                    return Pick(choice=n + 1)
            return Pick(choice=1)  # none is right: the judges cannot do better than any
        if action == "solve":
            return Result(result=problem.answer())
        assert node.decomposition is not None
        results = [state.nodes[c].result or "" for c in node.children]
        return Result(result=problem.compose(node.decomposition.compose, results) or problem.answer())

    def solved(self, state: TreeState) -> bool | None:
        root = state.nodes[0]
        problem = recognize(root.task)
        if problem is None or root.result is None:
            return None
        return same_answer(problem.answer(), root.result)

    def result(self, state: TreeState) -> dict[str, Any]:
        nodes = [n for n in state.nodes if not n.dropped]
        out: dict[str, Any] = {
            "answer": nodes[0].result,
            "nodes": len(nodes),
            "depth": max(n.depth for n in nodes),
            "leaves": sum(1 for n in nodes if n.atomic),
        }
        dropped = len(state.nodes) - len(nodes)
        if dropped:
            out["dropped"] = dropped
        return out

    # -- checks and backtracking ----------------------------------------------------------------------
    def check(self, state: TreeState) -> bool | str | None:
        """Each result, composed or a leaf's, checked cheaply without the answer
        (:func:`~maker.workflows._checks.result_check`: casting out nines and elevens, a sort's permutation and
        order). The reason of the first that fails, as ``PATH: WHY`` and, for a composed result, a line
        ``retry: {"task": ..., "decomposition": ...}`` that :meth:`retry` reads (a leaf's is solved again on the new
        branch, with its seeds); True when some result was reached and all pass; None before any was.

        A failure is reported until the run goes past it: a failed node whose parent has composed its own result
        from it (the run had no backtrack left) is not reported again, though its parent's result may well fail."""
        nodes = state.nodes
        checked = False
        for node in nodes:
            if node.dropped or node.result is None:
                continue
            checked = True
            if node.parent is not None and nodes[node.parent].result is not None:
                continue
            why = result_check(node.task, node.result)
            if why:
                d = node.decomposition
                if d is None or not node.children:  # a leaf's own result: the new branch solves it again
                    return f"{node.path}: {why}"
                retry = json.dumps({"task": node.task, "decomposition": d.model_dump(mode="json")})
                return f"{node.path}: {why}{_RETRY}{retry}"
        return True if checked else None

    def retry(self, state: TreeState, reason: str) -> TreeState:
        """The state a new branch starts from after ``check`` failed at a node: its decomposition is rejected and
        the node decomposed again, so the next-best proposal wins.

        ``state`` is the last that passed, before the failure: the node may be there decomposed (usually with its
        children's results), not yet decomposed, or not there at all (the run went back to its start). The failed
        decomposition is recorded in ``TreeState.rejected`` under the node's path and task (the reason carries
        both), so it applies to the node now or when it is made: its decomposition, children and candidates are
        reset and its subtree marked dropped; ``decompose`` red-flags a rejected split and ``propose``'s are no
        candidates (unless nothing else was proposed); the prompt lists the rejected splits. For simulated agents
        the ground truth is the best correct split not rejected (:meth:`Problem.splits`).

        A composed result fails as often because a child's result was wrong as because the split was: a correct
        split rejected is then replaced by another correct one, which costs its subtree again but is still right.
        After :data:`MAX_REJECTED` rejections at a place (or when the same split fails again) the node keeps its
        split instead and gets fresh children, decided again with the new branch's seeds. Any other reason
        (``undecided: ...``) leaves ``state`` as it is, as the default does."""
        found = _read_reason(reason)
        if found is None:
            return state
        path, task, failed = found
        same = normal_task(task)
        nodes = list(state.nodes)
        node = next((n for n in nodes if n.path == path and not n.dropped and normal_task(n.task) == same), None)
        if node is not None and (node.result is not None or node.atomic):
            return state  # not a state the failure came from: nothing to do at that node
        before = [r for r in state.rejected if r.path == path and normal_task(r.task) == same]
        key = decomposition_key(failed)
        if len(before) < MAX_REJECTED and all(decomposition_key(r.decomposition) != key for r in before):
            if node is not None:
                _drop(nodes, node.id)
                how = "vote" if node.atomic is False else node.how
                reset = {"decomposition": None, "children": (), "candidates": (), "how": how}
                nodes[node.id] = node.model_copy(update=reset)
            rejected = (*state.rejected, Rejection(path=path, task=task, decomposition=failed))
            return state.model_copy(update={"nodes": tuple(nodes), "rejected": rejected})
        if node is None or node.decomposition is None or not node.children:
            return state
        _drop(nodes, node.id)  # the same split, new children
        nodes[node.id] = node.model_copy(update={"decomposition": None, "children": ()})
        self._split(state, nodes, node.id, node.decomposition, node.how or "key")
        return state.model_copy(update={"nodes": tuple(nodes)})

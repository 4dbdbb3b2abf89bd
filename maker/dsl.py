"""The workflow DSL: immutable state, microsteps, and the workflow state machine.

A workflow is three pure functions over an immutable pydantic state::

    start(params) -> State
    next(state)   -> MicrostepCall | [MicrostepCall, ...] | DONE
    apply(state, answer) -> State          # one call asked: its answer
    apply(state, answers) -> State         # several asked: a tuple of answers, in the same order

``next`` asks one :class:`Microstep` (a prompt, an output schema, a vote key, red-flag
rules and a voting policy), or several independent ones at once (a *fan-out*: they are
decided concurrently, each is a step of its own), and ``apply`` folds the voted answers
into the next state.
Mistakes in a definition raise :class:`~maker.errors.WorkflowDefinitionError` when the
class or microstep is created, not halfway through a million-step run.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import string
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from maker._parsing import FormatError, parse_fields, render_fields
from maker.errors import UserError, WorkflowCodeError, WorkflowDefinitionError
from maker.voting import Voting

__all__ = [
    "State",
    "Microstep",
    "MicrostepCall",
    "RedFlag",
    "DONE",
    "Done",
    "Workflow",
    "FormatError",
]

A = TypeVar("A", bound=BaseModel)
S = TypeVar("S", bound="State")
P = TypeVar("P", bound=BaseModel)


class State(BaseModel):
    """Base class for workflow state: immutable, plain data, JSON round-trippable."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Done:
    """Returned by ``Workflow.next`` when the task is finished."""

    _instance: ClassVar[Done | None] = None

    def __new__(cls) -> Done:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "DONE"


DONE = Done()


@dataclass(frozen=True, slots=True)
class RedFlag:
    """A user-defined red-flag rule: ``check(answer, inputs)`` returns a reason or None.

    A flagged sample is discarded and resampled, never repaired.
    """

    name: str
    check: Callable[[Any, Mapping[str, Any]], str | None]

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise WorkflowDefinitionError(
                f"red flag name must be lower_snake_case (it is a reason key in traces), got {self.name!r}"
            )
        if not callable(self.check):
            raise WorkflowDefinitionError(f"red flag {self.name!r}: check must be callable, got {self.check!r}")


class Microstep(Generic[A]):
    """One kind of question a workflow asks, and how its answers are read and voted on.

    Args:
        name: identifier used in traces.
        prompt: a ``str.format`` template over the call's inputs, or ``callable(**inputs) -> str``.
        schema: pydantic model of one answer.
        parse: ``text -> dict | schema`` (default: ``name = <json>`` lines, see :mod:`maker._parsing`).
            Raise :class:`FormatError` (or any ``ValueError``) for text that is not an answer.
        render: ``answer -> text``, the inverse of ``parse`` (used by simulated agents and examples).
        vote_key: ``answer -> hashable``; two answers with the same key are one vote
            (default: the answer's canonical JSON).
        red_flags: extra :class:`RedFlag` rules on a parsed answer.
        voting: the :class:`~maker.voting.Voting` policy.
        max_tokens: responses longer than this are red-flagged (MAKER: 750).
        mistakes: ``(correct_answer, index) -> answer``, the index-th distinct plausible wrong
            answer; lets simulated agents err the way models do. A function of three
            parameters also gets the call's inputs: ``(correct_answer, index, inputs)``.
        difficulty: ``inputs -> float``, how many unit steps of work one call is (default 1).
            Simulated agents answer a call correctly with probability ``p ** difficulty``, so a
            microstep that does more at once errs more, as a model does.
        pattern: optional regex a valid response matches in full; backends with structured
            outputs (vLLM) constrain generation to it.
        stop: strings that end a response (the text from the stop string on is dropped).
        candidate: its answers are candidates that a later microstep chooses among (a judge's pick),
            not decisions: a candidate that differs from the ground truth is marked so in its step
            record but is not one of the run's errors.
    """

    def __init__(
        self,
        name: str,
        *,
        prompt: str | Callable[..., str],
        schema: type[A],
        parse: Callable[[str], Any] | None = None,
        render: Callable[[A], str] | None = None,
        vote_key: Callable[[A], Hashable] | None = None,
        red_flags: Sequence[RedFlag] = (),
        voting: Voting | Mapping[str, Any] | None = None,
        max_tokens: int = 750,
        mistakes: Callable[..., A] | None = None,
        difficulty: Callable[[Mapping[str, Any]], float] | None = None,
        pattern: str | None = None,
        stop: Sequence[str] = (),
        candidate: bool = False,
    ) -> None:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name):
            raise WorkflowDefinitionError(f"microstep name must be an identifier, got {name!r}")
        self.name = name
        if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            raise WorkflowDefinitionError(
                f"microstep {name!r}: schema must be a pydantic BaseModel subclass describing one answer, "
                f"got {schema!r}"
            )
        self.schema = schema
        self.fields = tuple(schema.model_fields)
        if isinstance(prompt, str):
            self.inputs = tuple(dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(prompt) if f is not None))
            if any(not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", f) for f in self.inputs):
                raise WorkflowDefinitionError(
                    f"microstep {name!r}: prompt placeholders must be plain names like {{state}}, "
                    f"got {list(self.inputs)}"
                )
            template = prompt
            self._prompt: Callable[[Mapping[str, Any]], str] = template.format_map
        elif callable(prompt):
            self.inputs = tuple(inspect.signature(prompt).parameters)
            self._prompt = lambda inputs: prompt(**inputs)
        else:
            raise WorkflowDefinitionError(
                f"microstep {name!r}: prompt must be a format string or a callable, got {type(prompt).__name__}"
            )
        for label, fn in (
            ("parse", parse),
            ("render", render),
            ("vote_key", vote_key),
            ("mistakes", mistakes),
            ("difficulty", difficulty),
        ):
            if fn is not None and not callable(fn):
                raise WorkflowDefinitionError(f"microstep {name!r}: {label} must be callable, got {fn!r}")
        # the default reader is parse_fields itself, bound to the schema's fields (one Python frame less a sample)
        self._parse = parse if parse is not None else partial(parse_fields, fields=self.fields)
        self.reads_fields = parse is None
        """Whether answers are read as ``name = value`` lines (the default reader)."""
        self._render = render if render is not None else self._render_fields
        self.vote_key: Callable[[A], Hashable] = vote_key if vote_key is not None else _canonical_json
        for flag in red_flags:
            if not isinstance(flag, RedFlag):
                raise WorkflowDefinitionError(
                    f"microstep {name!r}: red_flags must be RedFlag(name, check) items, got {flag!r}"
                )
        self.red_flags = tuple(red_flags)
        if voting is None:
            voting = Voting()
        elif not isinstance(voting, Voting):
            try:
                voting = Voting.model_validate(voting)
            except ValidationError as exc:
                raise WorkflowDefinitionError(f"microstep {name!r}: bad voting policy: {exc}") from None
        self.voting = voting
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise WorkflowDefinitionError(f"microstep {name!r}: max_tokens must be a positive int, got {max_tokens!r}")
        self.max_tokens = max_tokens
        self.mistakes = mistakes
        self._mistakes_read_inputs = mistakes is not None and _takes(mistakes, 3)
        self.difficulty = difficulty
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise WorkflowDefinitionError(f"microstep {name!r}: pattern is not a valid regex: {exc}") from None
        self.pattern = pattern
        if isinstance(stop, str) or not all(isinstance(x, str) and x for x in stop):
            raise WorkflowDefinitionError(f"microstep {name!r}: stop must be a list of non-empty strings, got {stop!r}")
        self.stop = tuple(stop)
        self.candidate = bool(candidate)

    def __repr__(self) -> str:
        return f"Microstep({self.name!r}, schema={self.schema.__name__})"

    # -- asking -------------------------------------------------------------------
    def ask(self, **inputs: Any) -> MicrostepCall:
        """The call ``Workflow.next`` returns: this microstep with these inputs."""
        return MicrostepCall(self, inputs)

    def prompt(self, inputs: Mapping[str, Any]) -> str:
        try:
            return self._prompt(inputs)
        except KeyError as exc:
            raise UserError(
                f"microstep {self.name!r}: prompt needs input {exc.args[0]!r}; "
                f"ask() got {sorted(inputs)} but the prompt uses {list(self.inputs)}"
            ) from None

    # -- reading answers --------------------------------------------------------------
    def parse(self, text: str) -> A:
        """Text to a validated answer. Raises FormatError or pydantic ValidationError."""
        raw = self._parse(text)
        schema = self.schema
        if isinstance(raw, schema):
            return raw
        # model_validate(raw) with its default arguments, less its Python frame: this runs for every sample
        return schema.__pydantic_validator__.validate_python(raw)  # type: ignore[no-any-return]

    def render(self, answer: A) -> str:
        return self._render(answer)

    def check_flags(self, answer: A, inputs: Mapping[str, Any]) -> str | None:
        """Name and reason of the first user red flag that fires, else None.

        A rule that raises is a bug in the rule (it sees answers that already fit the schema), not a verdict on
        the sample: it stops the run with a :class:`~maker.errors.WorkflowCodeError` (the engine adds the step).
        """
        for flag in self.red_flags:
            try:
                reason = flag.check(answer, inputs)
            except Exception as exc:
                method = f"red-flag rule {flag.name!r} of microstep {self.name!r}"
                raise WorkflowCodeError(
                    f"{method} raised {type(exc).__name__}: {exc}"[:600], method=method, workflow=""
                ) from exc
            if reason:
                return f"{flag.name}: {reason}" if isinstance(reason, str) else flag.name
        return None

    def mistake(self, correct: A, index: int, inputs: Mapping[str, Any]) -> A:
        """The index-th plausible wrong answer (``mistakes``), for simulated agents."""
        if self.mistakes is None:
            raise UserError(f"microstep {self.name!r} has no mistakes= function, so a simulated agent cannot err on it")
        if self._mistakes_read_inputs:
            return self.mistakes(correct, index, inputs)
        return self.mistakes(correct, index)

    def difficulty_of(self, inputs: Mapping[str, Any]) -> float:
        """Unit steps of work in one call with these inputs (``difficulty``; 1 when not given)."""
        return 1.0 if self.difficulty is None else float(self.difficulty(inputs))

    def answer_json(self, answer: A) -> str:
        if type(answer).model_dump_json is _MODEL_DUMP_JSON:  # what it does, less its keyword handling: every step
            return answer.__pydantic_serializer__.to_json(answer).decode()
        return answer.model_dump_json()

    def load_answer(self, data: str) -> A:
        return self.schema.model_validate_json(data)

    def _render_fields(self, answer: A) -> str:
        return render_fields(answer.model_dump(mode="json"))


_MODEL_DUMP_JSON = BaseModel.model_dump_json


def _takes(fn: Callable[..., Any], n: int) -> bool:
    """Whether ``fn`` accepts ``n`` positional arguments."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= n or any(p.kind == p.VAR_POSITIONAL for p in params)


def _canonical_json(answer: BaseModel) -> str:
    return json.dumps(answer.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


_DIGEST_SEEDS: dict[str, Any] = {}
"""By microstep name, the hash of the name and a NUL, which every call's digest goes on from (a copy of it costs
less than a fresh start; kept here, not on the microstep, because hash objects cannot be pickled)."""


class MicrostepCall:
    """A microstep bound to its inputs: the unit that gets sampled and voted on.

    ``tag`` is an optional label recorded with the step (a tree workflow tags each call
    with its node's path, ``0.1.0``); the model never sees it.
    """

    __slots__ = ("microstep", "inputs", "_prompt", "tag")

    def __init__(self, microstep: Microstep[Any], inputs: dict[str, Any], tag: str | None = None) -> None:
        self.microstep = microstep
        self.inputs = inputs
        self._prompt: str | None = None
        self.tag = tag

    def tagged(self, tag: str) -> MicrostepCall:
        """This call, labelled ``tag`` in the trace."""
        self.tag = str(tag)
        return self

    @property
    def prompt(self) -> str:
        if self._prompt is None:
            self._prompt = self.microstep.prompt(self.inputs)
        return self._prompt

    def digest(self) -> str:
        """Fingerprint of the exact input a model sees (microstep name and prompt)."""
        name = self.microstep.name
        seed = _DIGEST_SEEDS.get(name)
        if seed is None:
            seed = _DIGEST_SEEDS[name] = hashlib.blake2b(name.encode() + b"\0", digest_size=16)
        h = seed.copy()
        h.update(self.prompt.encode())
        return h.hexdigest()

    def __repr__(self) -> str:
        tag = "" if self.tag is None else f", tag={self.tag!r}"
        return f"MicrostepCall({self.microstep.name!r}, {self.inputs!r}{tag})"


_REQUIRED = ("start", "next", "apply")


class Workflow(Generic[P, S]):
    """Base class of a workflow. Subclass with ``name`` and ``version`` keywords::

        class Hanoi(Workflow, name="hanoi", version=1):
            Params = HanoiParams
            State = HanoiState
            microsteps = (move,)

            def start(self, params): ...
            def next(self, state): ...
            def apply(self, state, answer): ...
            def oracle(self, state): ...   # optional ground truth for the step

    ``next`` may return a list of calls that do not depend on each other (a fan-out):
    they are decided concurrently, take consecutive step indexes in list order, and
    ``apply`` then receives a tuple of their answers in the same order (``oracle`` returns
    a tuple too, with None where it does not know).

    Optional hooks: ``oracle(state)`` (the correct answer, enabling error counts and
    simulated agents), ``solved(state)`` (final check), ``expected_steps(params)``
    (for progress and ETA), ``result(state)`` (what to print at the end), ``check(state)``
    and ``retry(state, reason)`` (a check of a state, and where a run that backtracks
    starts its new branch from: see ``docs/backtracking.md``).
    """

    name: ClassVar[str]
    version: ClassVar[int]
    description: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]]
    State: ClassVar[type[State]]
    microsteps: ClassVar[tuple[Microstep[Any], ...]]

    def __init_subclass__(cls, *, name: str | None = None, version: int = 1, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        where = f"workflow class {cls.__qualname__}"
        if name is None:
            raise WorkflowDefinitionError(f"{where}: give it a name: class {cls.__name__}(Workflow, name='...')")
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
            raise WorkflowDefinitionError(f"{where}: name must be lower-case like 'hanoi', got {name!r}")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise WorkflowDefinitionError(f"{where}: version must be an int >= 1, got {version!r}")
        cls.name = name
        cls.version = version
        params = cls.__dict__.get("Params", getattr(cls, "Params", None))
        if not (isinstance(params, type) and issubclass(params, BaseModel)):
            raise WorkflowDefinitionError(f"{where}: Params must be a pydantic BaseModel subclass, got {params!r}")
        state = getattr(cls, "State", None)
        if not (isinstance(state, type) and issubclass(state, State)):
            raise WorkflowDefinitionError(
                f"{where}: State must subclass maker.State (a frozen pydantic model), got {state!r}"
            )
        steps = getattr(cls, "microsteps", None)
        if isinstance(steps, Microstep):
            steps = (steps,)
        if not steps or not isinstance(steps, (tuple, list)):
            raise WorkflowDefinitionError(f"{where}: declare the microsteps it asks: microsteps = (my_step,)")
        for step in steps:
            if not isinstance(step, Microstep):
                raise WorkflowDefinitionError(
                    f"{where}: {step!r} in microsteps is not a Microstep; wrap it as "
                    f"Microstep('name', prompt=..., schema=...)"
                )
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise WorkflowDefinitionError(f"{where}: microstep names must be unique, got {names}")
        cls.microsteps = tuple(steps)
        for method in _REQUIRED:
            if getattr(cls, method) is getattr(Workflow, method):
                raise WorkflowDefinitionError(f"{where}: define {method}() (start, next and apply are required)")

    # -- required ----------------------------------------------------------------
    def start(self, params: P) -> S:
        raise NotImplementedError

    def next(self, state: S) -> MicrostepCall | Sequence[MicrostepCall] | Done:
        raise NotImplementedError

    def apply(self, state: S, answer: Any) -> S:
        raise NotImplementedError

    # -- optional ----------------------------------------------------------------
    def oracle(self, state: S) -> Any | None:
        """The correct answer to ``next(state)``, when the workflow knows it."""
        return None

    def solved(self, state: S) -> bool | None:
        """Whether a finished state is a correct solution (None: unknown)."""
        return None

    def expected_steps(self, params: P) -> int | None:
        return None

    def result(self, state: S) -> dict[str, Any]:
        return {}

    def check(self, state: S) -> bool | str | None:
        """A check of a state the workflow can make without a model: an invariant, or a verification of a result it
        composed. None: nothing to check here; True: the state passed (a state a run may go back to); False or a
        reason: the state is wrong. With ``--backtracks N`` a failed check sends the run back to the last state
        that passed, as a new branch (see :meth:`retry`); without, it is counted and the run goes on."""
        return None

    def retry(self, state: S, reason: str) -> S:
        """The state a new branch starts from: ``state`` is the last one that passed :meth:`check`, ``reason`` why a
        later check failed (``check failed`` for a plain False; ``undecided: ...`` for a step no agent decided).
        The default goes back to ``state`` as it was, and the new branch's steps are decided with other seeds. A
        pure function of its arguments: resume and replay call it again with the recorded reason."""
        return state

    # -- helpers -----------------------------------------------------------------
    @classmethod
    def has_oracle(cls) -> bool:
        return cls.oracle is not Workflow.oracle

    @classmethod
    def has_check(cls) -> bool:
        return cls.check is not Workflow.check

    @classmethod
    def parse_params(cls, values: Mapping[str, Any]) -> BaseModel:
        """``values`` as the workflow's ``Params``. What it refuses is a UserError of one line: unknown names (with
        the known ones), or each value and the rule it breaks, as ``bad parameter disks=-1: must be greater than or
        equal to 1`` (several joined by ``;``), and parameters left out that have no default."""
        _refuse_unknown(cls, values)
        try:
            return cls.Params.model_validate(dict(values))
        except ValidationError as exc:
            raise UserError(_params_message(exc.errors())) from None

    @classmethod
    def check_params(cls, values: Mapping[str, Any]) -> None:
        """Refuse what :meth:`parse_params` would among ``values`` alone, in its words: unknown names and values
        their parameter does not take. Parameters left out are not asked for (an evaluation gives each problem's
        question later), nor are the rules that tie parameters together checked."""
        _refuse_unknown(cls, values)
        try:
            cls.Params.model_validate(dict(values))
        except ValidationError as exc:
            errors = [e for e in exc.errors() if e["loc"] and e["loc"][0] in values]
            if errors:
                raise UserError(_params_message(errors)) from None


def _refuse_unknown(wf: type[Workflow[Any, Any]], values: Mapping[str, Any]) -> None:
    unknown = sorted(set(values) - set(wf.Params.model_fields))
    if unknown:
        raise UserError(
            f"workflow {wf.name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters are: {', '.join(wf.Params.model_fields) or '(none)'}"
        )


def _params_message(errors: Sequence[Any]) -> str:
    """pydantic's errors on workflow parameters as one line, in the words of a run option's (``options_error``):
    each value as ``--set`` gives it and the rule it breaks; the alternatives of a union joined by "or"."""
    bad: dict[tuple[Any, str], tuple[tuple[Any, ...], list[str]]] = {}
    missing: list[str] = []
    for err in errors:
        loc = tuple(err.get("loc") or ())
        if err.get("type") == "missing" and len(loc) == 1:
            missing.append(f"missing parameter {loc[0]}")
            continue
        value = err.get("input")
        if isinstance(value, str):
            shown = value
        else:
            try:
                shown = json.dumps(value)
            except (TypeError, ValueError):
                shown = repr(value)
        key = (loc[:1], shown)
        where, rules = bad.get(key, (loc, []))
        common = 0
        while common < min(len(where), len(loc)) and where[common] == loc[common]:
            common += 1
        rule = _rule(str(err.get("msg", "is not valid")))
        bad[key] = (where[:common], rules if rule in rules else [*rules, rule])
    parts = []
    for (_, shown), (where, rules) in bad.items():
        if not where:  # a rule of the model as a whole
            parts.append(" or ".join(rules))
            continue
        name = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where).lstrip(".")
        parts.append(f"{name}={shown[:80]}{'...' if len(shown) > 80 else ''}: {' or '.join(rules)}")
    return "; ".join((["bad parameter " + "; ".join(parts)] if parts else []) + missing)


def _rule(msg: str) -> str:
    """pydantic's ``Input should be greater than or equal to 1`` as ``must be greater than or equal to 1``."""
    said = re.match(r"(?:Input|Value|List|String|Tuple|Dictionary|Set|Decimal|Object|Data|URL) should ", msg)
    if said:
        return "must " + msg[said.end() :]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg[:1].lower() + msg[1:]

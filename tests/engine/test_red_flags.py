"""Red flags: whatever text comes back, parsing either yields a valid answer or a flag.

Fuzzes :meth:`Microstep.parse` and the engine's :meth:`Engine._parse` with arbitrary,
garbled and near-miss responses, then checks at engine level that every discarded sample
is recorded with its reason and that the counters agree with the samples table.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from maker._parsing import parse_fields
from maker.dsl import FormatError, Microstep, RedFlag
from maker.engine._decider import TOO_LONG, Decider, Parsed
from maker.errors import WorkflowCodeError
from maker.runs import start_run
from maker.store import Store
from maker.workflows.addition import DigitAnswer, add_digit
from maker.workflows.hanoi import HanoiAnswer, hanoi_move

HANOI_INPUTS = {"disks": 3, "previous_move": "None", "state": "[[3, 2, 1], [], []]"}
DIGIT_INPUTS = {"x": "7", "y": "5", "carry": 1}
VALID_HANOI = "move = [1, 0, 1]\nnext_state = [[3, 2], [1], []]"
VALID_DIGIT = "digit = 3\ncarry = 1"

NEAR_MISSES = [
    "",
    "move: [1,0,1]\nnext_state: [[3, 2], [], [1]]",
    "move = [1,0,1]",
    "next_state = [[3, 2], [1], []]",
    "move = (1, 0, 1)\nnext_state = [[3, 2], [1], []]",
    "move = [1, 0]\nnext_state = [[3, 2], [1], []]",
    "move = [1, 0, 1, 2]\nnext_state = [[3, 2], [1], []]",
    "move = [1, 0, 1]\nnext_state = [[1],[2]]",
    "move = [1, 0, 1]\nnext_state = [[3], [1], [], []]",
    "move = [1, 0, 1]\nnext_state = [[3, 2], [1], [1]]",
    "move = [1, 0, 1]\nnext_state = [[3], [1], []]",
    "move = [1, 0, 1]\nnext_state = [[2, 3], [1], []]",
    "move = [1, 0, 1]\nnext_state = [[3, 2], [1], [4]]",
    "move = [NaN, 0, 1]\nnext_state = [[3, 2], [1], []]",
    "move = [Infinity, 0, 1]\nnext_state = [[3, 2], [1], []]",
    "move = [1, 0, 1]\nnext_state = [[3, -Infinity], [1], []]",
    "move = [1.5, 0, 1]\nnext_state = [[3, 2], [1], []]",
    "move = [1, 0, 1]\nnext_state = [[3, 2], [1], null]",
    'move = [1, 0, 1]\nnext_state = {"a": 1}',
    "move = [1, 0, 1]\nnext_state = [[3, 2], [1], []",
    "move = [1, 0, 1]\nnext_state = [[3, 2], [1], []]]",
    "move = [１, 0, 1]\nnext_state = [[3, 2], [1], []]",
    "move = [1, 0, 1]\u2028next_state = [[3, 2], [1], []]",
    "move\u00a0= [1, 0, 1]\nnext_state = [[3, 2], [1], []]",
    "move = [1, 0, 1]\nnext_state = [[3, 2], [\u0661], []]",
    "move = [1, 0, 1]\nnext_state = [[3, 2], [1], []]\u200b",
    "móve = [1, 0, 1]\nnext_state = [[3, 2], [1], []]",
    "move = [1, 0, 1]\nnext_state = " + "[" * 50 + "]" * 50,
    "move = [1, 0, 1]\nnext_state = [[3, 2], [1], [" + "9" * 5000 + "]]",
    "move = [1, 0, 1]\nnext_state = [[3, 2], [1], [" + ", ".join(["1"] * 20_000) + "]]",
    "digit: 3\ncarry: 1",
    "digit = 10\ncarry = 1",
    "digit = 3\ncarry = 2",
    "digit = -1\ncarry = 0",
    "digit = 3.5\ncarry = 1",
    "digit = NaN\ncarry = 1",
    "digit = 3\ncarry = Infinity",
    "digit = three\ncarry = 1",
    "digit = [3]\ncarry = 1",
    "digit = \ncarry = 1",
    "I am not sure what the next move should be.",
    "\x00\x01\x02",
]


@st.composite
def json_values(draw: st.DrawFn) -> str:
    """Any JSON text, including the NaN / Infinity that Python's json emits and reads."""
    value = draw(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
            max_leaves=12,
        )
    )
    return json.dumps(value)


@st.composite
def hanoi_answers(draw: st.DrawFn) -> str:
    """A well-formed answer over a random arrangement, sometimes with a disk lost or doubled."""
    disks = HANOI_INPUTS["disks"]
    pegs: list[list[int]] = [[], [], []]
    for d in range(disks, 0, -1):
        pegs[draw(st.integers(0, 2))].append(d)
    mutation = draw(st.sampled_from(["none", "drop", "dup", "swap", "extra"]))
    if mutation == "drop":
        for peg in pegs:
            if peg:
                peg.pop()
                break
    elif mutation == "dup":
        pegs[draw(st.integers(0, 2))].append(1)
    elif mutation == "swap" and len(pegs[0]) >= 2:
        pegs[0][0], pegs[0][1] = pegs[0][1], pegs[0][0]
    elif mutation == "extra":
        pegs[2].append(disks + 1)
    move = draw(st.tuples(st.integers(-3, 5), st.integers(-1, 3), st.integers(-1, 3)))
    return f"move = {list(move)}\nnext_state = {pegs}"


@st.composite
def garbled(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A text cut short, with junk spliced in, or wrapped in chatter."""
    text = draw(base)
    how = draw(st.sampled_from(["as_is", "truncate", "splice", "wrap", "repeat"]))
    if how == "truncate":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if how == "splice":
        i = draw(st.integers(0, len(text)))
        return text[:i] + draw(st.text(max_size=4)) + text[i:]
    if how == "wrap":
        return draw(st.text(max_size=30)) + "\n" + text + "\n" + draw(st.text(max_size=30))
    if how == "repeat":
        return text + "\n" + draw(st.sampled_from([VALID_HANOI, VALID_DIGIT, "move = [2, 0, 2]", "digit = 9"]))
    return text


def _responses() -> st.SearchStrategy[str]:
    nested = st.integers(1, 300).map(lambda n: "move = [1, 0, 1]\nnext_state = " + "[" * n + "]" * n)
    return st.one_of(
        st.text(),
        st.binary().map(lambda b: b.decode("utf-8", errors="replace")),
        st.binary().map(lambda b: b.decode("latin-1")),
        garbled(st.sampled_from(NEAR_MISSES + [VALID_HANOI, VALID_DIGIT])),
        garbled(hanoi_answers()),
        garbled(st.builds(lambda a, b: f"move = {a}\nnext_state = {b}", json_values(), json_values())),
        garbled(st.builds(lambda a, b: f"digit = {a}\ncarry = {b}", json_values(), json_values())),
        garbled(st.builds(lambda a, b: f"digit = {a}\ncarry = {b}", st.integers(-2, 12), st.integers(-1, 2))),
        nested,
    )


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CASES = [(hanoi_move, HanoiAnswer, HANOI_INPUTS), (add_digit, DigitAnswer, DIGIT_INPUTS)]


def _engine_parse(ms: Microstep[Any], text: str, inputs: dict[str, Any]) -> Parsed:
    return Decider.parse(ms, ms.parse, ms.vote_key, bool(ms.red_flags), text, inputs)


def _check_parsed(ms: Microstep[Any], schema: type[BaseModel], inputs: dict[str, Any], text: str) -> Parsed:
    parsed = _engine_parse(ms, text, inputs)
    assert isinstance(parsed, Parsed)
    if parsed.flag is None:
        assert isinstance(parsed.answer, schema)
        assert parsed.key == ms.vote_key(parsed.answer)
        assert ms.check_flags(parsed.answer, inputs) is None
        # A valid answer survives its canonical rendering: the same vote.
        assert ms.vote_key(ms.parse(ms.render(parsed.answer))) == parsed.key
        return parsed
    assert isinstance(parsed.flag, str) and parsed.flag
    prefix = parsed.flag.split(":", 1)[0]
    assert prefix in {"format", "schema"} | {rf.name for rf in ms.red_flags}, parsed.flag
    assert parsed.answer is None and parsed.key is None
    assert len(parsed.flag) <= 300 or prefix != "format"
    return parsed


@pytest.mark.parametrize(("ms", "schema", "inputs"), CASES, ids=["hanoi", "addition"])
@pytest.mark.parametrize("text", NEAR_MISSES, ids=range(len(NEAR_MISSES)))
def test_near_misses_are_flagged(
    ms: Microstep[Any], schema: type[BaseModel], inputs: dict[str, Any], text: str
) -> None:
    parsed = _check_parsed(ms, schema, inputs, text)
    assert parsed.flag is not None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("move: [1,0,1]\nnext_state: [[3, 2], [], [1]]", "format"),
        ("move = [1, 0, 1]", "format"),
        ("move = [1, 0, 1]\nnext_state = [[3, 2], [1], []", "format"),
        ("move = [1, 0, 1]\nnext_state = [[3, 2], [1], [" + "9" * 5000 + "]]", "format"),
        ("move = [1, 0, 1]\nnext_state = [[1],[2]]", "schema"),
        ("move = [NaN, 0, 1]\nnext_state = [[3, 2], [1], []]", "schema"),
        ("move = [1, 0, 1]\nnext_state = [[3, -Infinity], [1], []]", "schema"),
        ("move = [1, 0]\nnext_state = [[3, 2], [1], []]", "schema"),
        ("move = [1, 0, 1]\nnext_state = [[3, 2], [1], [1]]", "disks_conserved"),
        ("move = [1, 0, 1]\nnext_state = [[2, 3], [1], []]", "disks_conserved"),
        (VALID_DIGIT, "format"),
    ],
)
def test_flag_reasons(text: str, reason: str) -> None:
    parsed = _engine_parse(hanoi_move, text, HANOI_INPUTS)
    assert parsed.flag is not None and parsed.flag.split(":", 1)[0] == reason, parsed.flag


@pytest.mark.parametrize(
    ("ms", "schema", "inputs", "text"),
    [
        (hanoi_move, HanoiAnswer, HANOI_INPUTS, VALID_HANOI),
        (
            hanoi_move,
            HanoiAnswer,
            HANOI_INPUTS,
            "Thinking: move = [9, 9, 9]\n> move = [1, 0, 1]\n`next_state = [[3,2],[1],[]]`",
        ),
        (add_digit, DigitAnswer, DIGIT_INPUTS, VALID_DIGIT),
        (add_digit, DigitAnswer, DIGIT_INPUTS, "digit = 3  \r\ncarry = 1\r\n"),
    ],
)
def test_valid_answers_parse(ms: Microstep[Any], schema: type[BaseModel], inputs: dict[str, Any], text: str) -> None:
    parsed = _check_parsed(ms, schema, inputs, text)
    assert parsed.flag is None


@pytest.mark.parametrize(("ms", "schema", "inputs"), CASES, ids=["hanoi", "addition"])
@FUZZ
@given(text=_responses())
@example(text="move = [1, 0, 1]\nnext_state = " + "[" * 100_000)
@example(text="move = [1, 0, 1]\nnext_state = " + "[" * 5_000 + "]" * 5_000)
@example(text="digit = " + "[" * 100_000 + "\ncarry = 1")
def test_engine_parse_never_raises(
    ms: Microstep[Any], schema: type[BaseModel], inputs: dict[str, Any], text: str
) -> None:
    parsed = _check_parsed(ms, schema, inputs, text)
    event("valid" if parsed.flag is None else parsed.flag.split(":", 1)[0])


@pytest.mark.parametrize(("ms", "schema", "inputs"), CASES, ids=["hanoi", "addition"])
@FUZZ
@given(text=_responses())
def test_microstep_parse_returns_answer_or_raises_format_or_schema(
    ms: Microstep[Any], schema: type[BaseModel], inputs: dict[str, Any], text: str
) -> None:
    try:
        answer = ms.parse(text)
    except FormatError:
        expected = "format"
    except ValidationError:
        expected = "schema"
    else:
        assert isinstance(answer, schema)
        expected = None
    parsed = _engine_parse(ms, text, inputs)
    if expected is None:
        # Parsed: valid, or rejected by one of the microstep's own rules.
        assert parsed.flag is None or parsed.flag.split(":", 1)[0] in {rf.name for rf in ms.red_flags}
    else:
        assert parsed.flag is not None and parsed.flag.split(":", 1)[0] == expected


def test_microstep_parse_deep_nesting_is_a_format_error() -> None:
    with pytest.raises(FormatError):
        hanoi_move.parse("move = [1, 0, 1]\nnext_state = " + "[" * 100_000)


# -- custom parsers and rules ---------------------------------------------------------


class _Pair(BaseModel):
    a: int
    b: int


def _boom(answer: _Pair, inputs: Any) -> str | None:
    if answer.a == 13:
        raise ZeroDivisionError("unlucky")
    return "a must not exceed b" if answer.a > answer.b else None


def _custom_parse(text: str) -> Any:
    if text.startswith("!"):
        raise KeyError(text)
    if text.startswith("?"):
        raise RecursionError("too deep")
    a, _, b = text.partition(",")
    return {"a": a, "b": b}


CUSTOM = Microstep(
    "pair",
    prompt="{x}",
    schema=_Pair,
    parse=_custom_parse,
    red_flags=[RedFlag("ordered", _boom), RedFlag("never", lambda a, i: None)],
)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), st.builds("{},{}".format, st.integers(-20, 20), st.integers(-20, 20))))
@example(text="!x")
@example(text="?x")
@example(text="13,20")
@example(text="5,2")
@example(text="1,2")
def test_custom_parser_errors_are_flagged_and_a_crashing_rule_raises(text: str) -> None:
    try:
        parsed = _engine_parse(CUSTOM, text, {"x": 1})
    except WorkflowCodeError as exc:  # a rule's bug stops the run (the engine adds the step); it is not a verdict
        assert exc.method == "red-flag rule 'ordered' of microstep 'pair'"
        assert isinstance(exc.__cause__, ZeroDivisionError) and "raised ZeroDivisionError: unlucky" in str(exc)
        assert _Pair.model_validate(_custom_parse(text)).a == 13
        return
    if parsed.flag is None:
        assert parsed.answer.a <= parsed.answer.b and parsed.answer.a != 13
        return
    prefix, _, reason = parsed.flag.partition(":")
    assert prefix in {"format", "schema", "ordered"}, parsed.flag
    if text.startswith(("!", "?")):
        assert prefix == "format"
    assert text != "13,20", "the crashing rule must raise"
    if text == "5,2":
        assert parsed.flag == "ordered: a must not exceed b"


# -- engine level -------------------------------------------------------------------


def test_engine_records_every_red_flag(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    summary = start_run(
        "hanoi",
        {"disks": 6},
        {"agents": ["simulated:overlong=0.2,malformed=0.2,seed=3"], "detail": "samples", "seed": 11},
        store=store,
        run_id="flags",
    )
    assert summary.status == "done"
    assert summary.steps == 63
    assert summary.errors == 0
    assert summary.solved is True

    with Store.open(store) as st_:
        record = st_.run("flags")
        rid = record.id
        steps = list(st_.steps(rid))
        assert len(steps) == 63
        total_flags: Counter[str] = Counter()
        total_samples = 0
        for row in steps:
            step, n_samples, flags_json = row[0], row[5], row[6]
            samples = st_.samples(rid, step)
            assert [s[0] for s in samples] == list(range(n_samples))
            total_samples += n_samples
            counted: Counter[str] = Counter()
            for _idx, _round, _agent, _temp, tokens, text, flag, vote in samples:
                if flag is None:
                    assert vote is not None
                    assert tokens <= hanoi_move.max_tokens
                    assert _check_parsed(hanoi_move, HanoiAnswer, {"disks": 6}, text).flag is None
                    continue
                prefix, sep, reason = flag.partition(":")
                assert sep and reason.strip(), f"flag without a reason: {flag!r}"
                assert prefix in {TOO_LONG, "format", "schema", "disks_conserved"}, flag
                assert vote is None
                assert (prefix == TOO_LONG) == (tokens > hanoi_move.max_tokens)
                counted[prefix] += 1
            recorded = Counter(json.loads(flags_json)) if flags_json is not None else Counter()
            assert recorded == counted, f"step {step}: red_flags {flags_json} but samples table has {dict(counted)}"
            # The tally is the unflagged samples' votes, the winning answer's first, then the others' largest first.
            votes = Counter(s[7] for s in samples if s[6] is None)
            tally = [votes.pop(row[2]), *sorted(votes.values(), reverse=True)]
            assert row[3] == "[" + ",".join(map(str, tally)) + "]", (step, row[3], tally)
            assert tally[0] - (tally[1] if len(tally) > 1 else 0) == summary.k, "each round asks for no more than k"
            total_flags += counted

    assert sum(total_flags.values()) == summary.red_flags == record.red_flags
    assert total_samples == summary.calls == record.calls
    assert set(total_flags) == {TOO_LONG, "format"}
    # 40% of samples are garbage by construction: a 99.9% binomial interval around the rate.
    n = summary.calls
    half = 3.2905 * (0.4 * 0.6 / n) ** 0.5
    assert abs(summary.red_flag_rate - 0.4) <= half, (summary.red_flag_rate, n)


_LAZY_LINE = re.compile(r"^[ \t>*`-]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*(.+?)[ \t`]*$", re.MULTILINE)


def _reference_parse_fields(text: str, fields: tuple[str, ...]) -> dict[str, Any]:
    """The default parser as first written (a lazy value and json.loads): the fast one must read texts the same."""
    found = {name: value for name, value in _LAZY_LINE.findall(text) if name in fields}
    missing = [f for f in fields if f not in found]
    if missing:
        raise FormatError(f"missing line(s) {', '.join(f'{m} = ...' for m in missing)}")
    out = {}
    for name in fields:
        try:
            out[name] = json.loads(found[name])
        except (ValueError, RecursionError):
            raise FormatError(f"value of {name} is not valid JSON: {found[name][:60]!r}") from None
    return out


_LINE_PIECES = st.sampled_from(
    [
        "move = ",
        "x = ",
        "\nx = 1\n",
        "move",
        "x",
        "next_state",
        " ",
        "\t",
        "=",
        "`",
        "> ",
        "- ",
        "*",
        "\n",
        "\r\n",
        "\r",
        "[1, 2]",
        "[[3], []]",
        "7",
        "-1.5e3",
        '"a b"',
        "null",
        "true",
        "{",
        "}",
        "[",
        "]",
        ",",
        "\ufeff",
        "\x0c",
        "NaN",
        "1 2",
        "[1]  ` `",
        "==",
    ]
)


@given(st.lists(_LINE_PIECES, max_size=24).map("".join))
@settings(max_examples=3000, deadline=None)
@example("move = ``\nx = 1")
@example("move =   \nx = [1]  ``\nmove = [1, 2]\t` ")
def test_default_parser_reads_texts_as_the_lazy_pattern_does(text: str) -> None:
    fields = ("move", "x")
    try:
        want: Any = _reference_parse_fields(text, fields)
    except FormatError as exc:
        want = str(exc)
    try:
        got: Any = parse_fields(text, fields)
    except FormatError as exc:
        got = str(exc)
    assert repr(got) == repr(want)  # NaN != NaN, but its repr is its repr

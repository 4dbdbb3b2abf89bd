"""Prices: the spec's ``price=``, a prices file, the known table; and what a step is billed from its samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from maker.agents import Sample, Usage, make_agent
from maker.agents.prices import KNOWN, Price, known_price, load_prices, parse_price
from maker.agents.specs import spec_price
from maker.engine import Decision, price_of
from maker.errors import AgentSpecError, UserError


def test_a_price_bills_cached_prompt_tokens_at_the_cached_rate() -> None:
    p = Price(0.40, 0.10, 1.60)
    assert p.cost(1_000_000, 0, 0) == pytest.approx(0.40)
    assert p.cost(1_000_000, 250_000, 1_000_000) == pytest.approx(0.75 * 0.40 + 0.25 * 0.10 + 1.60)
    assert parse_price("0.4/0.1/1.6") == p
    assert parse_price("2/8") == Price(2.0, 2.0, 8.0)  # no cached price: cached input at the input price


@pytest.mark.parametrize("bad", ["0.4", "a/b/c", "1/2/3/4", "-1/0/1", "nan/0/1"])
def test_bad_prices_are_refused_with_the_form_to_write(bad: str) -> None:
    with pytest.raises(UserError, match="price"):
        parse_price(bad)


def test_the_spec_price_comes_first_then_a_users_table_then_the_known_one() -> None:
    assert make_agent("simulated:gpt-4.1-mini").price is None
    assert price_of(make_agent("simulated:gpt-4.1-mini")) == KNOWN["gpt-4.1-mini"]
    mine = {"gpt-4.1-mini": Price(1, 1, 1)}
    assert price_of(make_agent("simulated:gpt-4.1-mini"), mine) == Price(1, 1, 1)
    assert price_of(make_agent("simulated:gpt-4.1-mini,price=3/2/1"), mine) == Price(3, 2, 1)
    assert price_of(make_agent("simulated:p=0.99")) is None  # no model name: no price
    assert known_price("gpt-4.1-mini-t1.0") == KNOWN["gpt-4.1-mini"]  # a preset's temperature variant
    assert spec_price("openai:gpt-4o-mini@http://127.0.0.1:9/v1") == KNOWN["gpt-4o-mini"]
    assert spec_price("hf:smollm2-135m") is None  # read off the spec: no model is loaded
    with pytest.raises(AgentSpecError, match="price"):
        make_agent("simulated:gpt-4.1-mini,price=cheap")


def test_prices_files_in_json_and_toml(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text('{"m1": "1/0.5/2", "m2": {"input": 3, "output": 4}}')
    assert load_prices(tmp_path / "p.json") == {"m1": Price(1, 0.5, 2), "m2": Price(3, 3, 4)}
    (tmp_path / "p.toml").write_text('m1 = "1/0.5/2"\n[m2]\ninput = 3\ncached = 1\noutput = 4\n')
    assert load_prices(tmp_path / "p.toml") == {"m1": Price(1, 0.5, 2), "m2": Price(3, 1, 4)}
    (tmp_path / "bad.toml").write_text("m1 = {input = 1}\n")
    with pytest.raises(UserError, match="give input, output"):
        load_prices(tmp_path / "bad.toml")
    with pytest.raises(UserError, match="cannot read"):
        load_prices(tmp_path / "missing.toml")


def test_a_step_is_billed_what_the_server_reported_else_an_estimate() -> None:
    d = Decision()
    # a server's usage rides on the first sample of each request; the others carry none
    reported = [Sample("a", 5, usage=Usage(prompt=100, completion=12, cached=40)), Sample("b", 7)]
    d.bill(0, "x" * 400, reported)
    assert d.usage == {0: [100, 40, 12, 0]}
    # none reported: the prompt at four characters a token, every sample's tokens
    d.bill(1, "x" * 400, [Sample("a", 5), Sample("b", 7)])
    assert d.usage == {0: [100, 40, 12, 0], 1: [101, 0, 12, 1]}
    d.bill(0, "y", [Sample("c", 3, usage=Usage(prompt=10, completion=3))])
    assert d.usage[0] == [110, 40, 15, 0]
    assert d.usage_json() == "[[0,110,40,15,0],[1,101,0,12,1]]"

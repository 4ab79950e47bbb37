"""Usage detail: cache reads and writes (the 1-hour share apart) and reasoning tokens, read from
each wire format's own fields, kept in the ledger (NULL when not reported) and priced part by
part from the bundled price map, exact to 1e-9 $ (issue 11)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

import llm_magic as lm
from llm_magic import gateway, pricing
from llm_magic._usage import usage_detail
from llm_magic.record import USAGE_DETAIL
from tests.fakeprovider import FakeProvider, cut_after, ok

EXACT = 1e-9  # dollars

# The issue's two examples, as each provider reports them on the wire.
CLAUDE = dict(input_tokens=500, cache_read_tokens=10_000, cache_write_tokens=2_000)
CLAUDE_COST = 500 * 3e-6 + 10_000 * 0.3e-6 + 2_000 * 3.75e-6 + 100 * 15e-6  # = 0.0135
GPT4O = dict(input_tokens=2_000, cache_read_tokens=1_500, reasoning_tokens=200)
GPT4O_COST = 500 * 2.5e-6 + 1_500 * 1.25e-6 + 300 * 10e-6  # = 0.006125


# --------------------------------------------------------------------------- reading usage


def test_openai_wire_usage_gives_cached_and_reasoning_tokens() -> None:
    wire = {
        "prompt_tokens": 2000,
        "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 1500, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 200, "audio_tokens": 0},
    }
    assert usage_detail(wire) == {
        "cache_read_tokens": 1500,
        "cache_write_tokens": None,  # OpenAI reports no cache writes
        "cache_write_1h_tokens": None,
        "reasoning_tokens": 200,
    }
    usage = gateway.Usage.read(wire, reported=True, model="gpt-4o", finish="stop")
    assert (usage.input_tokens, usage.output_tokens, usage.reported) == (2000, 300, True)
    assert usage.detail() == usage_detail(wire)


def test_anthropic_wire_usage_gives_cache_reads_writes_and_the_1h_share() -> None:
    wire = {
        "input_tokens": 500,
        "cache_read_input_tokens": 10_000,
        "cache_creation_input_tokens": 2_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1_500, "ephemeral_1h_input_tokens": 500},
        "output_tokens": 100,
    }
    assert usage_detail(wire) == {
        "cache_read_tokens": 10_000,
        "cache_write_tokens": 2_000,
        "cache_write_1h_tokens": 500,
        "reasoning_tokens": None,
    }


def test_usage_without_detail_is_none_not_zero() -> None:
    wire = {"prompt_tokens": 7, "completion_tokens": 3}  # e.g. an older OpenAI-compatible server
    assert usage_detail(wire) == dict.fromkeys(USAGE_DETAIL)
    assert usage_detail(None) == dict.fromkeys(USAGE_DETAIL)
    missing = gateway.Usage.read(None, reported=True, model=None, finish=None)
    assert (missing.input_tokens, missing.reported) == (0, False)


# --------------------------------------------------------------------------- pricing


def test_each_part_at_its_price() -> None:
    price = pricing.Price(1e-6, 4e-6, "t", 0.1e-6, 1.25e-6, 2e-6, 3e-6)
    got = price.cost(1000, 100, 600, 300, 100, 40)
    plain_in, read, write_5m, write_1h, plain_out, reasoning = 100, 600, 200, 100, 60, 40
    expected = (
        plain_in * 1e-6
        + read * 0.1e-6
        + write_5m * 1.25e-6
        + write_1h * 2e-6
        + plain_out * 4e-6
        + reasoning * 3e-6
    )
    assert got == pytest.approx(expected, abs=1e-15)


def test_a_part_without_its_own_price_costs_what_its_tokens_cost() -> None:
    override = pricing.Price(3e-6, 15e-6, "override")  # %llm price: input and output only
    assert override.cost(12_500, 100, 10_000, 2_000, 500, 0) == pytest.approx(
        12_500 * 3e-6 + 100 * 15e-6, abs=1e-15
    )
    no_1h = pricing.Price(3e-6, 15e-6, "t", 0.3e-6, 3.75e-6)
    assert no_1h.cost(2_000, 0, 0, 2_000, 2_000, 0) == pytest.approx(2_000 * 3.75e-6, abs=1e-15)


def test_not_reported_parts_count_as_none_and_no_price_is_nan() -> None:
    price = pricing.Price(2.5e-6, 10e-6, "t", 1.25e-6)
    assert pricing.cost(price, 2000, 300) == pricing.cost(
        price, 2000, 300, cache_read_tokens=None, reasoning_tokens=None
    )
    assert math.isnan(pricing.cost(None, 2000, 300, cache_read_tokens=1500))


def test_the_issues_examples_with_the_bundled_map(tmp_path: Path) -> None:
    book = lm.ledger(str(tmp_path / "l.sqlite"))
    claude = pricing.price_for("claude-sonnet-4-5", "anthropic", book)
    assert claude is not None and claude.source.startswith("litellm ")
    # input_tokens counts every prompt token: 500 plain + 10,000 read + 2,000 written
    got = pricing.cost(claude, 12_500, 100, cache_read_tokens=10_000, cache_write_tokens=2_000)
    assert got == pytest.approx(0.0135, abs=EXACT) and CLAUDE_COST == pytest.approx(0.0135)
    one_hour = pricing.cost(claude, 2_000, 0, cache_write_tokens=2_000, cache_write_1h_tokens=2_000)
    assert one_hour == pytest.approx(2_000 * 6e-6, abs=EXACT)  # 2× input for the 1-hour cache
    gpt = pricing.price_for("gpt-4o", "openai", book)
    got = pricing.cost(gpt, 2_000, 300, cache_read_tokens=1_500, reasoning_tokens=200)
    assert got == pytest.approx(0.006125, abs=EXACT) and GPT4O_COST == pytest.approx(0.006125)


def test_reprice_carries_the_parts(tmp_path: Path) -> None:
    from llm_magic.store import utcnow

    book = lm.ledger(str(tmp_path / "l.sqlite"))
    base = {"trace_id": "t", "ts_start": utcnow(), "status": "ok", "model": "m"}
    book.record(
        {**base, "call_id": "cached", "input_tokens": 12_500, "output_tokens": 100}
        | {"cache_read_tokens": 10_000, "cache_write_tokens": 2_000, "cache_write_1h_tokens": 0}
    )
    book.record({**base, "call_id": "plain", "input_tokens": 1000, "output_tokens": 10})
    what_if = book.reprice("claude-sonnet-4-5").set_index("call_id")
    assert set(USAGE_DETAIL) <= set(what_if.columns)
    assert what_if.loc["cached", "repriced_cost_usd"] == pytest.approx(0.0135, abs=EXACT)
    assert what_if.loc["cached", "cache_read_tokens"] == 10_000
    assert pd.isna(what_if.loc["plain", "cache_read_tokens"])  # not reported: NULL, priced as 0
    assert what_if.loc["plain", "repriced_cost_usd"] == pytest.approx(
        1000 * 3e-6 + 10 * 15e-6, abs=EXACT
    )


# --------------------------------------------------------------------------- end to end


def test_anthropic_stream_usage_detail_reaches_the_row_priced_exactly(
    provider: FakeProvider, book
) -> None:
    provider.script(ok("Cached answer.", output_tokens=100, **CLAUDE))
    result = lm.complete("Hi", model="claude-sonnet-4-5", max_tokens=200)
    row = book.df.iloc[-1]
    assert (row.input_tokens, row.output_tokens, row.usage_source) == (12_500, 100, "provider")
    assert (row.cache_read_tokens, row.cache_write_tokens, row.cache_write_1h_tokens) == (
        10_000,
        2_000,
        0,
    )
    assert row.cost_usd == pytest.approx(0.0135, abs=EXACT)
    assert result.cost_usd == row.cost_usd and result.record is not None
    assert result.record.cache_read_tokens == 10_000


def test_anthropic_1h_cache_writes_are_priced_at_the_1h_price(provider: FakeProvider, book) -> None:
    provider.script(
        ok(
            "x",
            input_tokens=10,
            output_tokens=1,
            cache_write_tokens=3000,
            cache_write_1h_tokens=1000,
        )
    )
    lm.complete("Hi", model="claude-sonnet-4-5", max_tokens=20)
    row = book.df.iloc[-1]
    assert (row.input_tokens, row.cache_write_tokens, row.cache_write_1h_tokens) == (
        3010,
        3000,
        1000,
    )
    assert row.cost_usd == pytest.approx(
        10 * 3e-6 + 2000 * 3.75e-6 + 1000 * 6e-6 + 1 * 15e-6, abs=EXACT
    )


def test_openai_stream_usage_detail_reaches_the_row_priced_exactly(
    provider: FakeProvider, book
) -> None:
    provider.script(ok("Thought it through.", output_tokens=300, **GPT4O))
    lm.complete("Hi", model="gpt-4o", max_tokens=400)
    row = book.df.iloc[-1]
    assert (row.input_tokens, row.output_tokens) == (2_000, 300)
    assert (row.cache_read_tokens, row.reasoning_tokens) == (1_500, 200)
    assert pd.isna(row.cache_write_tokens) and pd.isna(row.cache_write_1h_tokens)
    assert row.cost_usd == pytest.approx(0.006125, abs=EXACT)


def test_estimated_usage_leaves_the_detail_null(provider: FakeProvider, book) -> None:
    provider.script(cut_after(2, text="one two three four"))
    with pytest.raises(lm.errors.StreamInterrupted):
        lm.complete("Hi", model="gpt-4o", max_tokens=20)
    row = book.df.iloc[-1]
    assert (row.status, row.usage_source) == ("interrupted", "estimated")
    assert all(pd.isna(row[name]) for name in USAGE_DETAIL)


def test_the_direct_reader_reads_the_same_detail(fake_provider: FakeProvider) -> None:
    """The embedded model's path (no litellm) reads the OpenAI wire's detail fields too."""
    fake_provider.script(ok("a b", input_tokens=40, output_tokens=2, cache_read_tokens=32))
    pieces = list(
        gateway.stream_chat(
            model="openai/smollm2",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=5,
            temperature=0.0,
            api_base=fake_provider.openai_base,
            direct=True,
        )
    )
    usage = pieces[-1]
    assert isinstance(usage, gateway.Usage) and usage.reported
    assert (usage.input_tokens, usage.cache_read_tokens, usage.reasoning_tokens) == (40, 32, 0)

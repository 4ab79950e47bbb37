"""Prompt caching you can ask for (``cache_prompt=True`` / ``%%llm --cache-prompt``), what the
cache saved (footer, summaries, plot), and seed rule 4: which count of the prompt the guards
used (issue 11)."""

from __future__ import annotations

import math
from typing import Any

import pytest

import llm_magic as lm
from llm_magic import _counts, pricing
from tests.fakeprovider import FakeProvider, ok, status

EXACT = 1e-9  # dollars
# claude-sonnet-4-5 in the bundled map: $3 / 1M input, 0.1× for cache reads, 1.25× for writes
IN, READ, WRITE, OUT = 3e-6, 0.3e-6, 3.75e-6, 15e-6

SYSTEM = "You answer questions about the document, briefly."
# over Anthropic's minimum cacheable size (~1,024 tokens) whatever the tokenizer
DOCUMENT = "The harbour master logs every ship that enters the bay. " * 200
SHORT_QUESTION = "Who logs the ships?"


def anthropic_bodies(fp: FakeProvider) -> list[dict[str, Any]]:
    return [r.body for r in fp.completions() if r.path.endswith("/messages")]


def marked(block: Any) -> bool:
    return isinstance(block, dict) and block.get("cache_control") == {"type": "ephemeral"}


# --------------------------------------------------------------------------- marking


def test_cache_prompt_marks_system_and_long_context_in_the_anthropic_body(
    provider: FakeProvider, book
) -> None:
    prompt = [
        {"role": "user", "content": DOCUMENT},
        {"role": "assistant", "content": "I have read it."},
        {"role": "user", "content": SHORT_QUESTION},
    ]
    lm.complete(prompt, model="claude-sonnet-4-5", system=SYSTEM, max_tokens=50, cache_prompt=True)
    (body,) = anthropic_bodies(provider)
    # the system prompt: a block in Anthropic's own "system" field, marked
    assert body["system"] == [
        {"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}
    ]
    doc, answer, question = body["messages"]
    assert doc["content"] == [
        {"type": "text", "text": DOCUMENT, "cache_control": {"type": "ephemeral"}}
    ]
    # short turns are left as they were: no mark
    for turn in (answer, question):
        blocks = turn["content"] if isinstance(turn["content"], list) else [turn["content"]]
        assert not any(marked(b) for b in blocks)


def test_without_cache_prompt_nothing_is_marked(provider: FakeProvider, book) -> None:
    lm.complete(DOCUMENT, model="claude-sonnet-4-5", system=SYSTEM, max_tokens=50)
    (body,) = anthropic_bodies(provider)
    assert "cache_control" not in str(body)


def test_at_most_four_marks(provider: FakeProvider, book) -> None:
    turns: list[dict[str, str]] = []
    for i in range(5):
        turns += [
            {"role": "user", "content": f"Part {i}. " + DOCUMENT},
            {"role": "assistant", "content": "ok"},
        ]
    turns.append({"role": "user", "content": SHORT_QUESTION})
    lm.complete(turns, model="claude-sonnet-4-5", system=SYSTEM, max_tokens=20, cache_prompt=True)
    (body,) = anthropic_bodies(provider)
    marks = [marked(b) for b in body["system"]]
    for m in body["messages"]:
        if isinstance(m["content"], list):
            marks += [marked(b) for b in m["content"]]
    assert sum(marks) == 4
    assert marked(body["system"][0])  # the system prompt, then the last three long parts
    long_marked = [
        i
        for i, m in enumerate(body["messages"])
        if isinstance(m["content"], list) and any(marked(b) for b in m["content"])
    ]
    assert long_marked == [4, 6, 8]


def test_openai_caches_by_itself_a_note_says_so(provider: FakeProvider, book) -> None:
    result = lm.complete(DOCUMENT, model="gpt-4o", system=SYSTEM, max_tokens=20, cache_prompt=True)
    (req,) = provider.completions()
    assert "cache_control" not in str(req.body)
    assert any("OpenAI caches prompts" in n for n in result.notes)
    assert result.status == "ok"


def test_local_and_other_routes_are_left_as_they_are() -> None:
    from llm_magic import _caching
    from llm_magic.models import Route

    sent = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": DOCUMENT}]
    for provider, says in (("local", "llama.cpp"), ("gemini", "Anthropic routes only")):
        notes: list[str] = []
        route = Route("m", "m", provider, f"{provider}/m")
        assert _caching.mark(route, sent, notes) is sent  # nothing marked, no error
        assert len(notes) == 1 and says in notes[0]


def test_count_url_under_each_kind_of_base(monkeypatch: pytest.MonkeyPatch) -> None:
    from llm_magic._count_api import count_url

    monkeypatch.delenv("ANTHROPIC_API_BASE", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    assert count_url(None) == "https://api.anthropic.com/v1/messages/count_tokens"
    for base in ("http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/messages"):
        assert count_url(base) == "http://h:1/v1/messages/count_tokens", base
    monkeypatch.setenv("ANTHROPIC_API_BASE", "http://proxy:2")
    assert count_url(None) == "http://proxy:2/v1/messages/count_tokens"


# --------------------------------------------------------------------------- savings


def test_cache_saving_is_exact() -> None:
    price = pricing.Price(IN, OUT, "t", READ, WRITE, 6e-6)
    assert pricing.cache_saving(price, 10_000) == pytest.approx(10_000 * (IN - READ), abs=EXACT)
    assert pricing.cache_saving(price, 0, 2_000) == pytest.approx(-2_000 * (WRITE - IN), abs=EXACT)
    assert pricing.cache_saving(price, 0, 2_000, 500) == pytest.approx(
        -1_500 * (WRITE - IN) - 500 * (6e-6 - IN), abs=EXACT
    )
    assert pricing.cache_saving(price) == 0
    assert math.isnan(pricing.cache_saving(None, 10_000))


def test_rerunning_over_the_same_document_pays_the_cache_read_price(
    provider: FakeProvider, book
) -> None:
    provider.script(
        ok("First.", input_tokens=20, output_tokens=10, cache_write_tokens=10_000),
        ok("Second.", input_tokens=20, output_tokens=10, cache_read_tokens=10_000),
    )
    ask = dict(model="claude-sonnet-4-5", system=SYSTEM, max_tokens=50, cache_prompt=True)
    first = lm.complete(DOCUMENT, **ask)
    second = lm.complete(DOCUMENT, **ask)
    # the same marked body both times: the provider's cache prefix matches
    one, two = anthropic_bodies(provider)
    assert one == two and marked(one["system"][0])
    rows = book.df.set_index("call_id")
    assert rows.loc[first.call_id, "cost_usd"] == pytest.approx(
        20 * IN + 10_000 * WRITE + 10 * OUT, abs=EXACT
    )
    assert rows.loc[second.call_id, "cost_usd"] == pytest.approx(
        20 * IN + 10_000 * READ + 10 * OUT, abs=EXACT
    )
    assert rows.loc[second.call_id, "cost_usd"] < rows.loc[first.call_id, "cost_usd"]
    assert second.cache_saved_usd == pytest.approx(0.027, abs=EXACT)
    assert "10,000 cached (saved $0.0270)" in second.footer()
    assert first.cache_saved_usd == pytest.approx(-10_000 * (WRITE - IN), abs=EXACT)
    assert "10,000 written to the cache (+$0.007500)" in first.footer()


def test_no_cache_no_mention(provider: FakeProvider, book) -> None:
    result = lm.complete("Hi", model="claude-sonnet-4-5", max_tokens=20)
    assert "cached" not in result.footer() and "cache" not in result.footer()


def test_the_magic_flag_marks_the_cell(ip_ledger, provider: FakeProvider) -> None:
    provider.script(ok("Again.", input_tokens=20, output_tokens=3, cache_read_tokens=10_000))
    ip_ledger.run_cell_magic(
        "llm", f"-m claude-sonnet-4-5 --cache-prompt -s {SYSTEM.split()[0]!r} -o r", DOCUMENT
    )
    (body,) = anthropic_bodies(provider)
    assert marked(body["system"][0]) and marked(body["messages"][0]["content"][0])
    assert "10,000 cached (saved $0.0270)" in ip_ledger.user_ns["r"].footer()


# --------------------------------------------------------------------------- seed rule 4


def counts(fp: FakeProvider) -> list[Any]:
    return [r for r in fp.requests if r.path.endswith("/count_tokens")]


def test_short_claude_prompt_keeps_the_estimate(provider: FakeProvider, book) -> None:
    lm.complete("Hi", model="claude-sonnet-4-5", max_tokens=20)
    assert counts(provider) == []
    assert book.df.iloc[-1].prompt_count_source == "estimate"


def near_the_guard_text(window: int = 200_000) -> str:
    """A prompt whose estimate is between 60% and 80% of claude-sonnet-4-5's window."""
    return "word " * int(window * 0.7)


def test_claude_prompt_near_the_guard_is_counted_by_anthropic(
    provider: FakeProvider, book, provider_keys: dict[str, str]
) -> None:
    provider.script(ok(input_tokens=123_456), endpoint="count_tokens")
    lm.complete(near_the_guard_text(), model="claude-sonnet-4-5", max_tokens=20)
    (req,) = counts(provider)
    assert req.api_key == provider_keys["ANTHROPIC_API_KEY"] and req.header("anthropic-version")
    assert req.body["model"] == "claude-sonnet-4-5"
    assert req.body["messages"][0]["role"] == "user"
    row = book.df.iloc[-1]
    assert row.prompt_count_source == "anthropic" and row.status == "ok"


def test_anthropic_count_decides_the_context_guard(provider: FakeProvider, book) -> None:
    """The estimate (~70%) passes the 80% guard; Anthropic's count (190,000) does not."""
    provider.script(ok(input_tokens=190_000), endpoint="count_tokens")
    with pytest.raises(lm.errors.ContextTooLong, match="~190000 tokens"):
        lm.complete(near_the_guard_text(), model="claude-sonnet-4-5", max_tokens=20)
    assert provider.completions() == []  # refused: nothing sent
    row = book.df.iloc[-1]
    assert (row.status, row.prompt_count_source) == ("refused_context", "anthropic")


def test_a_failed_count_falls_back_to_the_estimate(provider: FakeProvider, book) -> None:
    provider.script(status(500), endpoint="count_tokens")
    result = lm.complete(near_the_guard_text(), model="claude-sonnet-4-5", max_tokens=20)
    assert len(counts(provider)) == 1
    assert result.status == "ok"
    assert any("Anthropic's token count failed (HTTP 500" in n for n in result.notes)
    assert book.df.iloc[-1].prompt_count_source == "estimate"


def test_openai_prompt_near_the_guard_keeps_the_estimate(provider: FakeProvider, book) -> None:
    lm.complete("word " * int(128_000 * 0.7), model="gpt-4o", max_tokens=20)
    assert counts(provider) == []
    assert book.df.iloc[-1].prompt_count_source == "estimate"


def test_the_threshold_is_sixty_percent() -> None:
    from llm_magic.models import Route
    from llm_magic.secrets import Secret

    route = Route("c", "c", "anthropic", "anthropic/c", key=Secret("k", "t"), context_window=1000)
    assert not _counts._near_the_guard(route, 600) and _counts._near_the_guard(route, 601)
    keyless = Route("c", "c", "anthropic", "anthropic/c", context_window=1000)
    assert not _counts._near_the_guard(keyless, 900)


@pytest.mark.local_model
def test_local_prompts_are_counted_by_the_tokenizer(local_model: str, book) -> None:
    lm.complete("Say hi", model="local", max_tokens=4)
    assert book.df.iloc[-1].prompt_count_source == "tokenizer"


# --------------------------------------------------------------------------- summaries, plot


def add_calls(book) -> None:  # type: ignore[no-untyped-def]
    """Two Claude calls over one document (a cache write, then a read), one gpt-4o call with
    cached and reasoning tokens, one local call and one call with no cache use."""
    from llm_magic.store import utcnow

    now = utcnow()

    def row(call_id: str, model: str, provider: str, agent: str, **parts: int) -> None:
        book.record(
            {
                "call_id": call_id,
                "trace_id": call_id,
                "ts_start": now,
                "status": "ok",
                "model": model,
                "provider": provider,
                "agent": agent,
                "input_tokens": parts.pop("input_tokens"),
                "output_tokens": parts.pop("output_tokens"),
                "cost_usd": 0.01,
                **parts,
            }
        )

    row("w", "claude-sonnet-4-5", "anthropic", "a", input_tokens=10_020, output_tokens=10,
        cache_read_tokens=0, cache_write_tokens=10_000, cache_write_1h_tokens=0)  # fmt: skip
    row("r", "claude-sonnet-4-5", "anthropic", "a", input_tokens=10_020, output_tokens=10,
        cache_read_tokens=10_000, cache_write_tokens=0, cache_write_1h_tokens=0)  # fmt: skip
    row("g", "gpt-4o", "openai", "b", input_tokens=2_000, output_tokens=300,
        cache_read_tokens=1_500, reasoning_tokens=200)  # fmt: skip
    row("l", "smollm2", "local", "b", input_tokens=50, output_tokens=5, cache_read_tokens=40)
    row("p", "gpt-4o", "openai", "c", input_tokens=100, output_tokens=10)


CLAUDE_SAVED = 10_000 * (IN - READ) - 10_000 * (WRITE - IN)  # 0.027 - 0.0075 = 0.0195
GPT_SAVED = 1_500 * (2.5e-6 - 1.25e-6)  # OpenAI: cached tokens at half price, no write premium


def test_summary_carries_the_detail_and_the_saving(book) -> None:
    add_calls(book)
    by_model = book.summary()
    claude = by_model.loc["claude-sonnet-4-5"]
    assert (claude.calls, claude.cache_read_tokens, claude.cache_write_tokens) == (
        2,
        10_000,
        10_000,
    )
    assert claude.cache_saved_usd == pytest.approx(CLAUDE_SAVED, abs=EXACT)
    gpt = by_model.loc["gpt-4o"]
    assert (gpt.calls, gpt.cache_read_tokens, gpt.reasoning_tokens) == (2, 1_500, 200)
    assert gpt.cache_saved_usd == pytest.approx(GPT_SAVED, abs=EXACT)
    assert by_model.loc["smollm2"].cache_saved_usd == 0  # the local model costs nothing anyway
    by_agent = book.summary(by="agent")
    assert by_agent.loc["a"].cache_saved_usd == pytest.approx(CLAUDE_SAVED, abs=EXACT)
    assert by_agent.loc["b"].cache_saved_usd == pytest.approx(GPT_SAVED, abs=EXACT)
    assert by_agent.loc["c"].cache_saved_usd == 0 and by_agent.loc["c"].cache_read_tokens == 0
    for by in ("model", "agent", "user", "day", "status", "provider", "chat"):
        table = book.summary(by=by)
        assert int(table.cache_read_tokens.sum()) == 10_000 + 1_500 + 40, by
        assert int(table.reasoning_tokens.sum()) == 200, by
        assert table.cache_saved_usd.sum() == pytest.approx(CLAUDE_SAVED + GPT_SAVED, abs=EXACT)
        assert table.calls.sum() == 5 and table.cost_usd.sum() == pytest.approx(0.05)
        assert str(table.cache_read_tokens.dtype) == "int64", by


def test_summary_of_an_unpriced_model_saving_is_nan(book) -> None:
    from llm_magic.store import utcnow

    book.record({"call_id": "x", "trace_id": "x", "ts_start": utcnow(), "status": "ok",
                 "model": "house-model", "provider": "openai", "input_tokens": 100,
                 "output_tokens": 1, "cache_read_tokens": 80})  # fmt: skip
    row = book.summary().loc["house-model"]
    assert row.cache_read_tokens == 80 and math.isnan(row.cache_saved_usd)
    book.set_price("house-model", 2.0, 8.0)  # an override: reads at the input price, no saving
    assert book.summary().loc["house-model"].cache_saved_usd == 0


def test_empty_summary_has_the_new_columns(book) -> None:
    table = book.summary()
    assert table.empty
    assert {"cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "cache_saved_usd"} <= (
        set(table.columns)
    )


def test_ledger_command_shows_the_saving(ip_ledger, book) -> None:
    add_calls(book)
    table = ip_ledger.run_line_magic("llm", "ledger --by agent")
    assert table.loc["a", "cache_saved_usd"] == pytest.approx(CLAUDE_SAVED, abs=EXACT)
    assert table.loc["b", "reasoning_tokens"] == 200


def test_cache_savings_plot(book) -> None:
    import os

    os.environ.setdefault("MPLBACKEND", "Agg")
    from matplotlib.patches import Rectangle

    add_calls(book)
    fig = lm.plots.cache_savings(book.df)
    (ax,) = fig.axes
    heights = {}
    legend = ax.get_legend()
    names = {tuple(h.get_facecolor()): t.get_text() for h, t in zip(legend.legend_handles, legend.get_texts(), strict=True)}  # fmt: skip
    for bar in ax.patches:
        assert isinstance(bar, Rectangle)
        heights[names[tuple(bar.get_facecolor())]] = bar.get_height()
    assert heights == pytest.approx({"claude-sonnet-4-5": CLAUDE_SAVED, "gpt-4o": GPT_SAVED})
    assert "$0.0214" in ax.get_title() and "11,540 cached tokens" in ax.get_title()


def test_cache_savings_plot_without_cache_use_says_so(book) -> None:
    from llm_magic.store import utcnow

    book.record({"call_id": "x", "trace_id": "x", "ts_start": utcnow(), "status": "ok",
                 "model": "gpt-4o", "input_tokens": 100, "output_tokens": 1})  # fmt: skip
    fig = lm.plots.cache_savings(book.df)
    assert any("no call used the prompt cache" in t.get_text() for t in fig.axes[0].texts)

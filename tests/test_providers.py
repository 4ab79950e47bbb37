"""The magics and the API against a scripted provider on 127.0.0.1 speaking the real OpenAI
and Anthropic wire formats: ledger rows match the provider's usage to the cent, failures are
rows too, and no key ever shows."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

import llm_magic as lm
from llm_magic import config
from tests.fakekeys import fake_key
from tests.fakeprovider import FakeProvider, cut_after, ok, status

OPENAI_KEY = fake_key("OPENAIKEY")
ANTHROPIC_KEY = fake_key("ANTHROPICKEY", kind="ant-test", tail=16)


@pytest.fixture
def provider_keys() -> dict[str, str]:
    return {"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}


def posts(server: FakeProvider) -> list:  # type: ignore[type-arg]
    """The completion requests the provider received (model-list GETs aside)."""
    return [r for r in server.requests if r.method == "POST"]


def rows(path: Path):  # type: ignore[no-untyped-def]
    return lm.ledger(str(path)).df


def test_openai_usage_and_cost_match_to_the_cent(provider, ip_ledger, clean_env, capsys) -> None:
    provider.script(ok("Tides rise and fall.", input_tokens=1234, output_tokens=567))
    ip_ledger.run_cell_magic("llm", "-m gpt-4o --max-tokens 300 --user ada -o r", "Tides?")
    out = capsys.readouterr().out
    assert "Tides rise and fall." in out
    row = rows(clean_env).iloc[0]
    assert (row.input_tokens, row.output_tokens, row.usage_source) == (1234, 567, "provider")
    assert row.cost_usd == pytest.approx(1234 * 2.5e-6 + 567 * 10e-6, abs=1e-12)
    assert row.price_source.startswith("litellm ")
    assert row.provider == "openai" and row.user == "ada" and row.status == "ok"
    # what went over the wire: streamed, bounded, usage asked for, the key only in the header
    sent = provider.requests[-1]
    assert sent.body["stream"] is True and sent.body["max_tokens"] == 300
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.api_key == OPENAI_KEY
    assert row.key_alias.startswith("OPENAI_API_KEY:") and OPENAI_KEY not in row.key_alias


def test_anthropic_usage_and_cost_match_to_the_cent(provider, ip_ledger, clean_env) -> None:
    provider.script(ok("Moon pulls the sea.", input_tokens=2000, output_tokens=300))
    ip_ledger.run_cell_magic("llm", "-m claude-sonnet-4-5 -s 'Be brief.'", "Tides?")
    row = rows(clean_env).iloc[0]
    assert row.response == "Moon pulls the sea."
    assert (row.input_tokens, row.output_tokens, row.usage_source) == (2000, 300, "provider")
    assert row.cost_usd == pytest.approx(2000 * 3e-6 + 300 * 15e-6, abs=1e-12)
    sent = provider.requests[-1]
    assert sent.path.endswith("/v1/messages") and sent.header("x-api-key") == ANTHROPIC_KEY
    assert sent.body["max_tokens"] == 2048 and sent.body["system"]


def test_unknown_price_is_nan_with_a_note_then_an_override_prices_it(
    provider, ip_ledger, clean_env, capsys
) -> None:
    provider.script(ok("One.", input_tokens=100, output_tokens=10), ok("Two.", 100, 10))
    ip_ledger.run_cell_magic("llm", "-m claude-sonnet-4-20250514", "Hi")
    assert "No price known for claude-sonnet-4-20250514" in capsys.readouterr().out
    assert math.isnan(rows(clean_env).iloc[0].cost_usd)
    ip_ledger.run_line_magic("llm", "price claude-sonnet-4-20250514 3 15")
    ip_ledger.run_cell_magic("llm", "-m claude-sonnet-4-20250514", "Hi")
    second = rows(clean_env).iloc[1]
    assert second.cost_usd == pytest.approx(100 * 3e-6 + 10 * 15e-6, abs=1e-12)
    assert second.price_source == "override"


def test_401_fails_fast_names_the_variable_and_is_a_row(
    provider, ip_ledger, clean_env, capsys
) -> None:
    provider.script(status(401))
    ip_ledger.run_cell_magic("llm", "-m claude-sonnet-4-5", "Hi")  # no traceback, no raise
    err = capsys.readouterr().err
    assert "ANTHROPIC_API_KEY" in err and len(err.strip().splitlines()) == 1
    assert len(posts(provider)) == 1  # not retried
    row = rows(clean_env).iloc[0]
    assert (row.status, row.http_status, row.error_type) == ("error", 401, "auth")
    assert row.cost_usd == 0.0


def test_500_is_retried_then_answers(provider, ip_ledger, clean_env) -> None:
    provider.script(status(500), ok("Fine now.", input_tokens=5, output_tokens=3))
    ip_ledger.run_cell_magic("llm", "-m gpt-4o -o r", "Hi")
    assert ip_ledger.user_ns["r"].text == "Fine now."
    row = rows(clean_env).iloc[0]
    assert (row.status, row.attempts) == ("ok", 2)
    calls = posts(provider)
    assert calls[1].t - calls[0].t >= 2.0 * 0.01  # the SPEC's 2 s, scaled for tests


def test_a_cut_stream_keeps_the_partial_text_and_says_so(
    provider, ip_ledger, clean_env, capsys
) -> None:
    provider.script(cut_after(3, text="one two three four five six"))
    ip_ledger.run_cell_magic("llm", "-m gpt-4o -o r", "Count")
    captured = capsys.readouterr()
    assert "response interrupted" in captured.out + captured.err
    result = ip_ledger.user_ns["r"]
    assert result.status == "interrupted" and result.text.startswith("one")
    row = rows(clean_env).iloc[0]
    assert row.status == "interrupted" and row.response == result.text
    assert row.output_tokens >= 1 and row.usage_source == "estimated"
    assert len(posts(provider)) == 1  # text was shown: never retried silently


def test_fallback_shares_a_trace_id(provider, ip_ledger, clean_env, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FALLBACK_MODELS", "claude-haiku-4-5")
    config.reload_settings()
    provider.script(status(503), status(503), ok("From haiku.", input_tokens=7, output_tokens=2))
    ip_ledger.run_cell_magic("llm", "-m gpt-4o -o r", "Hi")
    result = ip_ledger.user_ns["r"]
    assert result.text == "From haiku." and result.fallback_from == "gpt-4o"
    assert "answered by the next fallback" in capsys.readouterr().out
    df = rows(clean_env)
    assert list(df.status) == ["error", "ok"] and df.trace_id.nunique() == 1
    assert list(df.model) == ["gpt-4o", "claude-haiku-4-5"] and df.attempts.iloc[0] == 2


def test_gateway_base_sends_everything_through_the_proxy(provider, clean_env, monkeypatch) -> None:
    monkeypatch.setenv("LLM_MAGIC_API_BASE", provider.openai_base)
    monkeypatch.setenv("LLM_MAGIC_API_KEY", fake_key("PROXYKEY", kind="proxy", tail=14))
    config.reload_settings()
    provider.script(ok("Via proxy.", input_tokens=10, output_tokens=4))
    result = lm.complete("Hi", model="claude-sonnet-4-5", max_tokens=20)
    sent = provider.requests[-1]
    assert sent.path.endswith("/chat/completions") and sent.model == "claude-sonnet-4-5"
    assert sent.api_key == fake_key("PROXYKEY", kind="proxy", tail=14)
    assert result.model == "claude-sonnet-4-5"
    assert result.cost_usd == pytest.approx(10 * 3e-6 + 4 * 15e-6, abs=1e-12)


def test_keys_never_show(provider, ip_ledger, clean_env, capsys, caplog) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    provider.script(
        ok("fine", 3, 1),
        status(401, body={"error": {"message": f"Incorrect API key provided: {OPENAI_KEY}"}}),
        status(400),
    )
    ip_ledger.run_cell_magic("llm", "-m gpt-4o -o a", "Hi")
    ip_ledger.run_cell_magic("llm", "-m gpt-4o -o b", "Hi")
    ip_ledger.run_cell_magic("llm", "-m gpt-4o -o c", "Hi")
    ip_ledger.run_line_magic("llm", "config")
    ip_ledger.run_line_magic("llm", "models")
    captured = capsys.readouterr()
    texts = [captured.out, captured.err]
    texts += [repr(ip_ledger.user_ns[v]) for v in "abc"]
    texts += [str(ip_ledger.user_ns[v]._repr_markdown_()) for v in "abc"]
    texts += [repr(config.settings()), repr(config.settings().keys("openai"))]
    texts += [p.read_bytes().decode("latin-1") for p in clean_env.parent.glob("ledger.sqlite*")]
    texts.append(rows(clean_env).to_csv())
    texts.append(caplog.text)
    for key in (OPENAI_KEY, ANTHROPIC_KEY):
        assert not any(key in t for t in texts)
    assert ip_ledger.user_ns["b"].status == "error"  # the 401 really happened


def test_display_updates_are_coalesced(provider, clean_env) -> None:
    from llm_magic.display import StreamView

    words = " ".join(f"w{i}" for i in range(300))
    provider.script(ok(words, input_tokens=5, output_tokens=300, chunk_delay=0.003))
    view = StreamView("text", rate=30)
    started = time.monotonic()
    stream = lm.stream("go", model="gpt-4o", max_tokens=400)
    for chunk in stream:
        view.add(chunk)
    elapsed = time.monotonic() - started
    assert stream.result is not None and stream.result.output_tokens == 300
    assert view.text == stream.result.text
    assert 2 <= view.updates <= 30 * elapsed + 2  # streamed, but never faster than 30/s


@pytest.mark.parametrize(
    ("script", "error_type", "http_status", "requests"),
    [
        ([status(429), status(429), status(429), status(429)], "rate_limited", 429, 4),
        ([status(503), status(503)], "server_error", 503, 2),
        ([status(529), status(529)], "overloaded", 529, 2),
        ([status(400)], "context_length", 400, 1),
        ([status(403)], "auth", 403, 1),
    ],
)
@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-5"])
def test_provider_errors_map_to_our_types_with_the_spec_retries(
    provider, clean_env, model, script, error_type, http_status, requests
) -> None:
    provider.script(*script)
    with pytest.raises(lm.errors.ProviderError) as caught:
        lm.complete("Hi", model=model, max_tokens=5)
    assert caught.value.error_type == error_type and caught.value.status == http_status
    assert len(posts(provider)) == requests  # 1 try + the SPEC's retries, no more
    row = rows(clean_env).iloc[-1]
    assert (row.status, row.error_type, row.http_status) == ("error", error_type, http_status)
    assert row.attempts == requests


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-5"])
def test_connection_refused_is_a_connection_error(clean_env, monkeypatch, model) -> None:
    from tests.fakeprovider import refused_url

    base = refused_url()
    monkeypatch.setenv("OPENAI_API_BASE", base + "/v1")
    monkeypatch.setenv("ANTHROPIC_API_BASE", base)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    config.reload_settings()
    with pytest.raises(lm.errors.ConnectionFailed):
        lm.complete("Hi", model=model, max_tokens=5)
    assert rows(clean_env).iloc[-1].error_type == "connection"

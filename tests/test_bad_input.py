"""Bad input and provider edge cases end in one clear sentence naming the fix: numbers that
are not finite or out of range, a comma-only model list, a bad ``-o`` name, alias cycles, a
``--max-tokens`` beyond the model, a ``.env`` that is not UTF-8, a bad base URL, an empty
answer, every fallback failing, every key rate-limited."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import llm_magic as lm
from llm_magic import config
from tests.fakekeys import fake_key
from tests.fakeprovider import FakeProvider, ok, refused_url, status

KEY = fake_key("BADINPUT")
KEYS = [fake_key(f"LIMITED{i}") for i in range(3)]


@pytest.fixture
def provider_keys() -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY, "ANTHROPIC_API_KEY": fake_key("BADINPUTANT", kind="ant-test")}


def posts(server: FakeProvider) -> list:  # type: ignore[type-arg]
    return [r for r in server.requests if r.method == "POST"]


def one_line(text: str) -> str:
    assert len(text.strip().splitlines()) == 1, text
    return text


# -- numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("price m nan 5", "IN_PER_1M='nan' is not a finite number"),
        ("price gpt-4o inf inf", "IN_PER_1M='inf' is not a finite number"),
        ("price gpt-4o 2.5 -1", "OUT_PER_1M='-1' is out of range"),
        ("budget nan", "%llm budget 'nan' is not a finite number"),
        ("budget inf", "%llm budget 'inf' is not a finite number"),
        ("budget -1", "%llm budget '-1' is out of range"),
    ],
)
def test_magic_numbers_must_be_finite_and_non_negative(
    ip_ledger, clean_env: Path, line: str, message: str
) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        ip_ledger.run_line_magic("llm", line)
    assert "e.g. %llm" in one_line(str(caught.value))  # names the fix
    book = lm.ledger(str(clean_env))
    assert book.prices() == {}  # nothing stored
    assert config.settings().daily_budget_usd is None  # the budget is not silently turned off


def test_set_price_refuses_what_the_magic_refuses(clean_env: Path) -> None:
    book = lm.ledger(str(clean_env))
    for bad in ((float("nan"), 5.0), (float("inf"), 1.0), (1.0, -2.0)):
        with pytest.raises(lm.errors.UsageProblem, match="finite dollars per 1M tokens >= 0"):
            book.set_price("m", *bad)
    assert book.prices() == {}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DAILY_BUDGET_USD", "-5", "DAILY_BUDGET_USD='-5' is out of range (dollars >= 0)"),
        ("DAILY_BUDGET_USD", "nan", "DAILY_BUDGET_USD='nan' is not a finite number"),
        ("BUDGET_ALERT_THRESHOLD", "2", "BUDGET_ALERT_THRESHOLD='2' is out of range"),
        ("BUDGET_ALERT_THRESHOLD", "0", "BUDGET_ALERT_THRESHOLD='0' is out of range"),
        ("LLM_MAGIC_TIMEOUT_S", "0", "LLM_MAGIC_TIMEOUT_S='0' is out of range (seconds > 0)"),
        ("MAX_COST_PER_REQUEST_USD", "nan", "MAX_COST_PER_REQUEST_USD='nan' is not a finite"),
        ("MAX_COST_PER_REQUEST_USD", "-inf", "is not a finite number"),
    ],
)
def test_environment_numbers_are_checked_not_replaced(
    provider, ip_ledger, clean_env: Path, monkeypatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    try:
        with pytest.raises(lm.errors.UsageProblem, match=re.escape(message)) as caught:
            config.reload_settings()
        assert f"set e.g. {name}=" in one_line(str(caught.value))
        # the call refuses to run on it, as a one-line UsageError in a cell
        with pytest.raises(UsageError, match=re.escape(message)):
            ip_ledger.run_cell_magic("llm", "-m gpt-4o", "Hi")
        with pytest.raises(lm.errors.UsageProblem, match=re.escape(message)):
            lm.complete("Hi", model="gpt-4o", max_tokens=5)
        assert (
            posts(provider) == [] and len(lm.ledger(str(clean_env))) == 0
        )  # nothing sent or written
    finally:
        monkeypatch.delenv(name)


# -- the face ------------------------------------------------------------------------------


def test_a_model_list_of_commas_is_a_usage_error(provider, ip_ledger, capsys) -> None:
    with pytest.raises(UsageError, match="names no model"):
        ip_ledger.run_cell_magic("llm", "-m ,", "Hi")
    assert "Comparing" not in capsys.readouterr().out and posts(provider) == []


def test_one_model_and_a_trailing_comma_is_one_ordinary_call(
    provider, ip_ledger, clean_env
) -> None:
    provider.script(ok("Just one.", 3, 2))
    ip_ledger.run_cell_magic("llm", "-m gpt-4o, -o r", "Hi")
    result = ip_ledger.user_ns["r"]
    assert type(result).__name__ == "Result" and result.text == "Just one."  # not a table
    assert len(posts(provider)) == 1


@pytest.mark.parametrize("name", ["1abc", "class", "a-b", "my var"])
def test_out_must_be_a_variable_name(provider, ip_ledger, clean_env, name: str) -> None:
    with pytest.raises(UsageError, match="is not a Python variable name"):
        ip_ledger.run_cell_magic("llm", f"-m gpt-4o -o '{name}'", "Hi")
    assert posts(provider) == [] and len(lm.ledger(str(clean_env))) == 0
    assert name not in ip_ledger.user_ns


def test_alias_chains_resolve_fully_and_cycles_are_refused(provider, ip_ledger, clean_env) -> None:
    ip_ledger.run_line_magic("llm", "alias fast quick")
    ip_ledger.run_line_magic("llm", "alias quick gpt4o-mini")  # → builtin gpt4o-mini → gpt-4o-mini
    provider.script(ok("Quick.", 3, 1))
    ip_ledger.run_cell_magic("llm", "-m fast -o r", "Hi")
    assert posts(provider)[-1].model == "gpt-4o-mini"
    assert ip_ledger.user_ns["r"].model == "gpt-4o-mini"
    with pytest.raises(UsageError, match="would make a cycle"):
        ip_ledger.run_line_magic("llm", "alias gpt4o-mini fast")
    with pytest.raises(UsageError, match="cannot point to itself"):
        ip_ledger.run_line_magic("llm", "alias loop loop")
    assert lm.ledger(str(clean_env)).aliases() == {"fast": "quick", "quick": "gpt4o-mini"}


def test_a_cycle_written_through_the_api_is_a_usage_error_not_a_hang(provider, clean_env) -> None:
    book = lm.ledger(str(clean_env))
    book.set_alias("a", "b")
    book.set_alias("b", "a")
    with pytest.raises(lm.errors.UsageProblem, match=r"cycle \(a → b → a\)"):
        lm.complete("Hi", model="a", max_tokens=5)
    assert posts(provider) == []


def test_max_tokens_beyond_the_model_is_refused_with_its_maximum(
    provider, ip_ledger, clean_env
) -> None:
    with pytest.raises(UsageError, match=r"over gpt-4o's maximum output of 16384 tokens") as caught:
        ip_ledger.run_cell_magic("llm", "-m gpt-4o --max-tokens 10000000000", "Hi")
    assert "refused, nothing sent" in one_line(str(caught.value))
    assert posts(provider) == [] and len(lm.ledger(str(clean_env))) == 0


def test_max_tokens_beyond_any_model_is_refused_when_the_model_maximum_is_unknown(
    fake_provider, clean_env, monkeypatch
) -> None:
    monkeypatch.setenv("LLM_MAGIC_API_BASE", fake_provider.openai_base)  # a proxy's own model name
    config.reload_settings()
    with pytest.raises(lm.errors.UsageProblem, match="beyond any model's output"):
        lm.complete("Hi", model="team-model-x", max_tokens=10_000_000_000)
    assert posts(fake_provider) == []
    assert len(lm.ledger(str(clean_env))) == 0


def test_a_fallback_with_a_smaller_maximum_is_lowered_with_a_note(
    provider, clean_env, monkeypatch
) -> None:
    monkeypatch.setenv("FALLBACK_MODELS", "gpt-4")  # gpt-4 writes at most 4096 tokens
    config.reload_settings()
    provider.script(status(503), status(503), ok("From gpt-4.", 3, 2))
    result = lm.complete("Hi", model="gpt-4o", max_tokens=10000)
    assert result.text == "From gpt-4." and posts(provider)[-1].body["max_tokens"] == 4096
    assert any("max_tokens lowered from 10000 to 4096" in n for n in result.notes)


def test_a_dotenv_that_is_not_utf8_is_one_line_naming_the_file(
    clean_env: Path, monkeypatch, ip_ledger
) -> None:
    dotenv = clean_env.parent / ".env"
    dotenv.write_bytes("OPENAI_API_KEY=caf\xe9\n".encode("latin-1"))
    monkeypatch.setattr(config, "_dotenv_loaded", False)
    try:
        with pytest.raises(lm.errors.UsageProblem, match="is not UTF-8") as caught:
            config.reload_settings()
        assert str(dotenv) in one_line(str(caught.value)) and "save it as UTF-8" in str(
            caught.value
        )
        with pytest.raises(UsageError, match="is not UTF-8"):  # in a cell: no traceback
            ip_ledger.run_cell_magic("llm", "", "Hi")
    finally:
        dotenv.unlink()
    config.reload_settings()  # fixed: read again, nothing stuck


# -- the provider's edge cases -------------------------------------------------------------


def test_an_unknown_host_is_not_retried_and_names_the_url(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_BASE", "http://no-such-host.invalid/v1")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    config.reload_settings()
    with pytest.raises(lm.errors.ConnectionFailed) as caught:
        lm.complete("Hi", model="gpt-4o", max_tokens=5)
    message = one_line(str(caught.value))
    assert "no-such-host.invalid" in message and "check OPENAI_API_BASE" in message
    row = lm.ledger(str(clean_env)).df.iloc[-1]
    assert (row.error_type, row.attempts) == ("connection", 1)  # not retried as a 500


def test_a_base_url_without_a_scheme_is_not_retried(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_BASE", "127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    config.reload_settings()
    with pytest.raises(lm.errors.ConnectionFailed) as caught:
        lm.complete("Hi", model="gpt-4o", max_tokens=5)
    assert "check OPENAI_API_BASE" in one_line(str(caught.value))
    row = lm.ledger(str(clean_env)).df.iloc[-1]
    assert (row.error_type, row.attempts) == ("connection", 1)


def test_a_wrong_path_is_a_404_naming_the_url_not_retried(provider, clean_env, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_BASE", provider.url + "/wrong")
    config.reload_settings()
    with pytest.raises(lm.errors.NotFound) as caught:
        lm.complete("Hi", model="gpt-4o", max_tokens=5)
    message = one_line(str(caught.value))
    assert f"{provider.url}/wrong/chat/completions" in message and "OPENAI_API_BASE" in message
    assert "/v1" in message
    assert len(posts(provider)) == 1
    row = lm.ledger(str(clean_env)).df.iloc[-1]
    assert (row.error_type, row.http_status, row.attempts) == ("not_found", 404, 1)


def test_a_refused_proxy_names_llm_magic_api_base(clean_env, monkeypatch) -> None:
    base = refused_url()
    monkeypatch.setenv("LLM_MAGIC_API_BASE", base + "/v1")
    config.reload_settings()
    with pytest.raises(lm.errors.ConnectionFailed) as caught:
        lm.complete("Hi", model="gpt-4o", max_tokens=5)
    assert base in str(caught.value) and "check LLM_MAGIC_API_BASE" in str(caught.value)


def test_an_empty_200_stream_is_an_error_row_not_a_blank_answer(
    provider, ip_ledger, clean_env, capsys
):
    provider.script(ok("", input_tokens=12, output_tokens=0, chunks=[]))
    ip_ledger.run_cell_magic("llm", "-m gpt-4o -o r", "Hi")
    err = capsys.readouterr().err
    assert "EmptyResponse" in err and "empty answer" in one_line(err)
    row = lm.ledger(str(clean_env)).df.iloc[-1]
    assert (row.status, row.error_type) == ("error", "empty_response")
    assert row.input_tokens == 12  # billed input is kept, from the provider's usage
    assert ip_ledger.user_ns["r"].status == "error"


def test_when_every_fallback_fails_each_error_is_shown(
    provider, ip_ledger, clean_env, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("FALLBACK_MODELS", "claude-haiku-4-5")
    config.reload_settings()
    provider.script(status(503), status(503), status(500), status(500), status(500))
    ip_ledger.run_cell_magic("llm", "-m gpt-4o -o r", "Hi")
    captured = capsys.readouterr()
    err = one_line(captured.err)
    assert "Every model failed" in err
    assert "gpt-4o: ServerError 503" in err and "claude-haiku-4-5: ServerError 500" in err
    result = ip_ledger.user_ns["r"]
    assert result.status == "error"
    assert not any("answered by" in n for n in result.notes)  # no fallback answered
    assert "answered by" not in captured.out + captured.err
    df = lm.ledger(str(clean_env)).df
    assert list(df.status) == ["error", "error"] and df.trace_id.nunique() == 1


def test_a_skipped_last_fallback_still_shows_each_error(provider, clean_env, monkeypatch) -> None:
    monkeypatch.setenv("FALLBACK_MODELS", "gemini/gemini-2.0-flash")  # no GEMINI key
    config.reload_settings()
    provider.script(status(503), status(503))
    with pytest.raises(lm.errors.ServerError) as caught:
        lm.complete("Hi", model="gpt-4o", max_tokens=5)
    result = caught.value.result  # type: ignore[attr-defined]
    assert result.status == "error"
    assert not any("answered by" in n for n in result.notes)
    assert any("Skipped fallback gemini/gemini-2.0-flash" in n for n in result.notes)


def test_429_on_every_key_says_all_keys_were_limited(fake_provider, clean_env, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_BASE", fake_provider.openai_base)
    monkeypatch.setenv("OPENAI_API_KEYS", ",".join(KEYS))
    config.reload_settings()
    fake_provider.script(*[status(429)] * 4)
    with pytest.raises(lm.errors.RateLimited) as caught:
        lm.complete("Hi", model="gpt-4o", max_tokens=5)
    assert {r.api_key for r in posts(fake_provider)} == set(KEYS)
    message = one_line(str(caught.value))
    assert "All 3 keys for openai were rate-limited" in message and "OPENAI_API_KEYS" in message
    assert not any(k in message for k in KEYS)

"""No secret in any output: real failures from the fake provider (401, 429, 500, a refused
connection) carry no key in their exception chain, in the locals of any frame of ours, or in a
``%xmode Verbose`` traceback; URLs are shown with their passwords masked."""

from __future__ import annotations

import re
import types

import pytest

import llm_magic as lm
from llm_magic import config
from llm_magic.secrets import mask_url, scrub
from tests.fakekeys import fake_key
from tests.fakeprovider import ok, refused_url, status

KEY = fake_key("CHAINKEY")
ECHO = {"error": {"message": f"Incorrect API key provided: {KEY}", "type": "x", "code": "y"}}


@pytest.fixture
def provider_keys() -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY}


def _exceptions(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything reachable from it through __cause__ and __context__."""
    found: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is f for f in found):
            continue
        found.append(e)
        todo += [e.__cause__, e.__context__]
    return found


def _our_frames(exc: BaseException) -> list[types.FrameType]:
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith("llm_magic"):
            frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def _assert_no_key_behind(exc: BaseException) -> None:
    chain = _exceptions(exc)
    assert exc.__context__ is None and exc.__cause__ is None  # nothing chained behind ours
    frames = [f for e in chain for f in _our_frames(e)]
    assert frames, "the error carries no traceback through llm_magic"
    for e in chain:
        assert KEY not in str(e) and KEY not in repr(e) and KEY not in repr(e.args)
        assert KEY not in repr(vars(e))  # .result, .url, …
    for frame in frames:
        for name, value in frame.f_locals.items():
            assert KEY not in repr(value), f"{frame.f_code.co_name}: local {name} holds the key"


@pytest.mark.parametrize(
    "script",
    [
        [status(401, body=ECHO)],
        [status(429, body=ECHO)] * 4,
        [status(500, body=ECHO)] * 3,
    ],
    ids=["401", "429", "500"],
)
def test_provider_failures_carry_no_key_in_their_chain_or_frames(
    provider, clean_env, script
) -> None:
    provider.script(*script)
    with pytest.raises(lm.errors.ProviderError) as caught:
        lm.complete("Hi", model="gpt-4o", max_tokens=5)
    assert provider.requests[-1].api_key == KEY  # the key really went out, in the header only
    assert "Incorrect API key provided" in str(caught.value)  # the provider's words are kept
    _assert_no_key_behind(caught.value)


def test_a_refused_connection_carries_no_key(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_BASE", refused_url() + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    config.reload_settings()
    with pytest.raises(lm.errors.ConnectionFailed) as caught:
        lm.complete("Hi", model="gpt-4o", max_tokens=5)
    _assert_no_key_behind(caught.value)


def test_verbose_traceback_shows_no_key(provider, ip_ledger, capsys) -> None:
    """What ``%xmode Verbose`` prints for a failing ``lm.complete``: every frame with its
    variables, and the key in none of them."""
    ip_ledger.run_line_magic("xmode", "Verbose")
    try:
        provider.script(*[status(500, body=ECHO)] * 3)
        with pytest.raises(lm.errors.ServerError):
            ip_ledger.run_cell("import llm_magic as lm\nlm.complete('Hi', model='gpt-4o')")
    finally:
        ip_ledger.run_line_magic("xmode", "Context")
    shown = capsys.readouterr()
    text = re.sub(r"\x1b\[[0-9;]*m", "", shown.out + shown.err)  # no colours
    assert "in stream_chat(" in text and "ServerError" in text  # every frame, with arguments…
    assert "api_key=Secret(OPENAI_API_KEY:" in text  # …the key as its alias
    assert "Incorrect API key provided: ***" in text
    assert KEY not in text


def test_config_and_reprs_mask_url_passwords(ip_ledger, monkeypatch, capsys) -> None:
    pg = "postgresql+psycopg://ada:hunter2pw@db.example:5432/ledger"
    proxy = f"https://proxy.example/v1?api-key={KEY}&region=eu"
    monkeypatch.setenv("LLM_MAGIC_API_BASE", proxy)
    monkeypatch.setenv("OLLAMA_API_BASE", "http://bob:s3cretpw@gpu-box:11434")
    config.reload_settings()
    ip_ledger.run_line_magic("config", f"LLMMagics.ledger = {pg!r}")
    ip_ledger.run_line_magic("llm", "config")
    out = capsys.readouterr().out
    assert "postgresql+psycopg://ada:***@db.example:5432/ledger" in out
    assert "api-key=***" in out and "region=eu" in out
    texts = [out, repr(config.settings())]
    for secret in ("hunter2pw", KEY, "s3cretpw"):
        assert not any(secret in t for t in texts), secret
    # errors that quote a URL are scrubbed too
    assert "hunter2pw" not in scrub(f"could not connect to {pg}")
    assert mask_url(pg) == "postgresql+psycopg://ada:***@db.example:5432/ledger"


def test_an_unreachable_postgresql_ledger_is_named_without_its_password() -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql+psycopg://ada:hunter2pw@{refused_url().removeprefix('http://')}/ledger"
    with pytest.raises(lm.errors.LedgerError) as caught:
        lm.Ledger(url)
    assert "ada:***@127.0.0.1" in str(caught.value)  # says which ledger…
    assert not any("hunter2pw" in repr(e) for e in _exceptions(caught.value))  # …not its password


def test_an_answer_after_failures_keeps_no_key(provider, clean_env) -> None:
    provider.script(status(500, body=ECHO), ok("fine", 3, 1))
    result = lm.complete("Hi", model="gpt-4o", max_tokens=5)
    assert result.text == "fine" and KEY not in repr(result) + str(result.notes)
    df = lm.ledger(str(clean_env)).df
    assert KEY not in df.to_csv()


def test_a_key_in_the_proxy_url_shows_nowhere(provider, ip_ledger, clean_env, monkeypatch, capsys):
    """``LLM_MAGIC_API_BASE=http://user:KEY@proxy/v1``: the URL works, and a verbose
    traceback (which prints ``api_base`` among every frame's arguments) masks the key."""
    base = provider.openai_base.replace("http://", f"http://proxyuser:{KEY}@")
    monkeypatch.setenv("LLM_MAGIC_API_BASE", base)
    monkeypatch.setenv("LLM_MAGIC_API_KEY", fake_key("PROXYKEY", kind="proxy"))
    config.reload_settings()
    provider.script(ok("via proxy", 3, 1), *[status(500)] * 3)
    assert lm.complete("Hi", model="gpt-4o", max_tokens=5).text == "via proxy"
    ip_ledger.run_line_magic("xmode", "Verbose")
    try:
        with pytest.raises(lm.errors.ServerError):
            ip_ledger.run_cell("import llm_magic as lm\nlm.complete('Hi', model='gpt-4o')")
        ip_ledger.run_line_magic("llm", "config")
    finally:
        ip_ledger.run_line_magic("xmode", "Context")
    shown = capsys.readouterr()
    text = re.sub(r"\x1b\[[0-9;]*m", "", shown.out + shown.err)
    assert "in stream_chat(" in text and "proxyuser:***@127.0.0.1" in text
    assert KEY not in text


def test_a_bad_setting_beside_a_proxy_key_shows_no_key(ip_ledger, monkeypatch, capsys) -> None:
    """Reading the settings fails on a bad number while the proxy key is being read too: the
    verbose traceback of ``lm.complete`` shows the settings code, not the key."""
    monkeypatch.setenv("LLM_MAGIC_API_KEY", KEY)
    monkeypatch.setenv("DAILY_BUDGET_USD", "-5")
    monkeypatch.setattr(config, "_settings", None)
    ip_ledger.run_line_magic("xmode", "Verbose")
    try:
        with pytest.raises(lm.errors.UsageProblem, match="DAILY_BUDGET_USD='-5'"):
            ip_ledger.run_cell("import llm_magic as lm\nlm.complete('Hi', model='gpt-4o')")
    finally:
        ip_ledger.run_line_magic("xmode", "Context")
        monkeypatch.delenv("DAILY_BUDGET_USD")
    text = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    assert "Settings.from_env(" in text and KEY not in text

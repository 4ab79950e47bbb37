"""On/off environment switches read one way everywhere (``config.env_flag``): the response
cache, stored text, OpenTelemetry export."""

from __future__ import annotations

import pytest

from llm_magic import _otel, config


@pytest.mark.parametrize(
    ("word", "cache", "store_text", "otel"),
    [
        ("", False, True, False),
        ("1", True, True, True),
        ("YES", True, True, True),
        (" on ", True, True, True),
        ("0", False, False, False),
        ("Off", False, False, False),
        ("no", False, False, False),
        ("maybe", False, True, False),  # another word: the opposite of the default
    ],
)
def test_one_reading_of_on_and_off(
    monkeypatch: pytest.MonkeyPatch, word: str, cache: bool, store_text: bool, otel: bool
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for name in ("LLM_MAGIC_CACHE", "LLM_MAGIC_STORE_TEXT", "LLM_MAGIC_OTEL"):
        monkeypatch.setenv(name, word)
    cfg = config.reload_settings()
    assert (cfg.cache, cfg.store_text, _otel.enabled()) == (cache, store_text, otel)


def test_an_endpoint_turns_otel_on_unless_it_is_switched_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.delenv("LLM_MAGIC_OTEL", raising=False)
    assert _otel.enabled()
    monkeypatch.setenv("LLM_MAGIC_OTEL", "false")
    assert not _otel.enabled()

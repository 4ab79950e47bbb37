"""One status → error mapping (errors.for_status) for litellm's path and the local model's
direct stream; and the local server's state file, which does not follow the ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_magic import errors, gateway
from tests.fakeprovider import FakeProvider, status

# (status, error type, recorded status) as the reliability rules (SPEC) need them.
CASES = [
    (400, errors.ContextTooLong, 400),  # the fake's 400 is OpenAI's context-length error
    (401, errors.AuthError, 401),
    (403, errors.AuthError, 403),
    (404, errors.NotFound, 404),
    (429, errors.RateLimited, 429),
    (500, errors.ServerError, 500),
    (503, errors.ServerError, 503),
]


@pytest.mark.parametrize(("code", "kind", "recorded"), CASES)
def test_for_status_maps_each_status(code: int, kind: type, recorded: int) -> None:
    message = "maximum context length exceeded" if code == 400 else f"HTTP {code}"
    err = errors.for_status(code, message, model="m", url="http://x")
    assert (
        type(err) is kind and err.status == recorded and (err.model, err.url) == ("m", "http://x")
    )


def test_for_status_edges() -> None:
    assert type(errors.for_status(400, "bad field 'foo'")) is errors.BadRequest
    assert type(errors.for_status(529, "overloaded")) is errors.Overloaded
    assert type(errors.for_status(408, "slow")) is errors.Timeout
    assert type(errors.for_status(418, "teapot")) is errors.BadRequest
    assert type(errors.for_status(502, "gateway")) is errors.ServerError
    assert type(errors.for_status(None, "who knows")) is errors.ProviderError
    assert errors.for_status(429, "slow down", retry_after=3.0).retry_after == 3.0
    too_long = errors.for_status(413, "prompt is too long: 300000 tokens")
    assert type(too_long) is errors.ContextTooLong and too_long.status == 400


def _fail(fp: FakeProvider, code: int, *, direct: bool) -> errors.ProviderError:
    fp.script(status(code))
    with pytest.raises(errors.ProviderError) as info:
        for _ in gateway.stream_chat(
            model="openai/gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=8,
            temperature=0.0,
            api_base=fp.openai_base,
            api_key="sk-test-unused",
            direct=direct,
        ):
            pass
    return info.value


@pytest.mark.parametrize(("code", "kind", "recorded"), CASES)
def test_litellm_and_the_direct_stream_say_the_same(code: int, kind: type, recorded: int) -> None:
    """The same HTTP failure from an OpenAI-compatible server is the same error through
    litellm (translate_error) and through the local model's direct reader (_direct)."""
    with FakeProvider() as fp:
        via_litellm = _fail(fp, code, direct=False)
        direct = _fail(fp, code, direct=True)
    assert type(via_litellm) is kind and via_litellm.status == recorded
    assert type(direct) is kind and direct.status == recorded


def test_local_state_file_is_in_the_user_data_dir_not_beside_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm_magic import local

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("LLM_MAGIC_LEDGER", str(tmp_path / "elsewhere" / "team.sqlite"))
    assert local._state_file() == tmp_path / "data" / "llm_magic" / "local_server.json"

"""The fake provider speaks wire formats that the real litellm parses, and injects faults."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import httpx  # noqa: E402
import litellm  # noqa: E402
import pytest  # noqa: E402
from fakeprovider import (  # noqa: E402 - tests/ is on sys.path (rootdir-less test dir)
    FakeProvider,
    cut_after,
    free_port,
    hang,
    http_date,
    malformed,
    ok,
    refused_url,
    status,
    stream_error,
)
from litellm.exceptions import MidStreamFallbackError  # noqa: E402

litellm.suppress_debug_info = True

OPENAI = "openai/gpt-4o"
ANTHROPIC = "anthropic/claude-sonnet-4-5"
MSGS = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def fp() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


def base_for(fp: FakeProvider, model: str) -> str:
    return fp.openai_base if model.startswith("openai/") else fp.anthropic_base


def call(fp: FakeProvider, model: str, **kw: Any) -> Any:
    """litellm.completion against the fake provider, with litellm's own retries off."""
    kw.setdefault("api_key", "sk-test-default")
    kw.setdefault("timeout", 5)
    return litellm.completion(
        model=model,
        api_base=base_for(fp, model),
        messages=MSGS,
        num_retries=0,
        max_retries=0,
        **kw,
    )


def drain(stream: Any) -> tuple[str, Any]:
    """(joined delta text, last non-None usage) of a litellm stream."""
    text, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
        usage = getattr(chunk, "usage", None) or usage
    return "".join(text), usage


# --------------------------------------------------------------------------- happy paths


def test_openai_stream_yields_scripted_text_and_usage(fp: FakeProvider) -> None:
    fp.script(ok("The quick brown fox jumps", input_tokens=17, output_tokens=5))
    stream = call(
        fp, OPENAI, api_key="sk-test-openai", stream=True, stream_options={"include_usage": True}
    )
    text, usage = drain(stream)

    assert text == "The quick brown fox jumps"
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (17, 5, 22)
    (req,) = fp.requests
    assert req.method == "POST" and req.path == "/v1/chat/completions"
    assert req.header("Authorization") == "Bearer sk-test-openai"
    assert req.api_key == "sk-test-openai"
    assert req.body["model"] == "gpt-4o" and req.stream
    assert req.body["stream_options"] == {"include_usage": True}
    assert req.body["messages"] == MSGS


def test_anthropic_stream_yields_scripted_text_and_usage(fp: FakeProvider) -> None:
    fp.script(ok("Bonjour from Claude", input_tokens=23, output_tokens=4))
    stream = call(
        fp, ANTHROPIC, api_key="sk-ant-test", stream=True, stream_options={"include_usage": True}
    )
    text, usage = drain(stream)

    assert text == "Bonjour from Claude"
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (23, 4, 27)
    (req,) = fp.requests
    assert req.path == "/v1/messages"
    assert req.header("x-api-key") == "sk-ant-test" == req.api_key
    assert req.header("anthropic-version")
    assert req.body["model"] == "claude-sonnet-4-5" and req.body["stream"] is True


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
def test_non_stream_answer(fp: FakeProvider, model: str) -> None:
    fp.script(ok("plain answer here", input_tokens=8, output_tokens=3))
    resp = call(fp, model)
    assert resp.choices[0].message.content == "plain answer here"
    assert resp.choices[0].finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (8, 3)


@pytest.mark.parametrize("suffix", ["", "/", "/v1/messages"])
def test_anthropic_api_base_forms(fp: FakeProvider, suffix: str) -> None:
    resp = litellm.completion(
        model=ANTHROPIC,
        api_base=fp.url + suffix,
        api_key="k",
        messages=MSGS,
        num_retries=0,
        max_retries=0,
    )
    assert resp.choices[0].message.content == "Hello from the fake provider."
    assert fp.requests[0].path == "/v1/messages"


def test_ollama_chat_stream_text_and_usage(fp: FakeProvider) -> None:
    fp.script(ok("llama says hi", input_tokens=6, output_tokens=3))
    stream = litellm.completion(
        model="ollama_chat/llama3.2",
        api_base=fp.ollama_base,
        messages=MSGS,
        stream=True,
        stream_options={"include_usage": True},
        num_retries=0,
    )
    text, usage = drain(stream)
    assert text == "llama says hi"
    assert (usage.prompt_tokens, usage.completion_tokens) == (6, 3)
    chats = [r for r in fp.requests if r.path == "/api/chat"]
    assert len(chats) == 1 and chats[0].body["model"] == "llama3.2"


def test_empty_script_gives_default_answer_and_queue_is_fifo(fp: FakeProvider) -> None:
    fp.script(ok("first"), ok("second"))
    assert fp.pending() == 2
    answers = [call(fp, OPENAI).choices[0].message.content for _ in range(3)]
    assert answers == ["first", "second", "Hello from the fake provider."]
    assert fp.pending() == 0
    times = [r.t for r in fp.requests]
    assert times == sorted(times) and len(times) == 3


def test_slow_tokens_arrive_chunk_delay_apart(fp: FakeProvider) -> None:
    fp.script(ok("one two three", chunk_delay=0.1))
    arrivals = []
    for chunk in call(fp, OPENAI, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
    assert len(arrivals) == 3
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert all(g >= 0.08 for g in gaps), gaps


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
def test_async_stream_then_429(fp: FakeProvider, model: str) -> None:
    """litellm.acompletion (a different HTTP client path) parses the same wire format."""
    fp.script(ok("async hello world", input_tokens=9, output_tokens=3), status(429, retry_after=4))

    async def run() -> tuple[str, Any, BaseException]:
        kw: dict[str, Any] = dict(api_base=base_for(fp, model), api_key="k", messages=MSGS)
        kw.update(num_retries=0, max_retries=0, stream=True, stream_options={"include_usage": True})
        text, usage = [], None
        async for chunk in await litellm.acompletion(model=model, **kw):
            if chunk.choices and chunk.choices[0].delta.content:
                text.append(chunk.choices[0].delta.content)
            usage = getattr(chunk, "usage", None) or usage
        try:
            async for _ in await litellm.acompletion(model=model, **kw):
                pass
        except litellm.RateLimitError as e:
            return "".join(text), usage, e
        raise AssertionError("no RateLimitError")

    text, usage, err = asyncio.run(run())
    assert text == "async hello world"
    assert (usage.prompt_tokens, usage.completion_tokens) == (9, 3)
    assert getattr(err, "litellm_response_headers", {})["retry-after"] == "4"
    assert len(fp.requests) == 2


# --------------------------------------------------------------------------- HTTP errors

ERROR_CASES = [
    # (model, scripted code, litellm class, exception.status_code)
    (OPENAI, 429, litellm.RateLimitError, 429),
    (OPENAI, 500, litellm.InternalServerError, 500),
    (OPENAI, 503, litellm.ServiceUnavailableError, 503),
    (OPENAI, 529, litellm.APIError, 529),
    (OPENAI, 401, litellm.AuthenticationError, 401),
    (OPENAI, 403, litellm.APIError, 403),  # litellm has no 403 branch for openai
    (OPENAI, 400, litellm.ContextWindowExceededError, 400),
    (ANTHROPIC, 429, litellm.RateLimitError, 429),
    (ANTHROPIC, 500, litellm.InternalServerError, 500),
    (ANTHROPIC, 503, litellm.ServiceUnavailableError, 503),
    (ANTHROPIC, 529, litellm.InternalServerError, 500),  # provider_status_code == 529
    (ANTHROPIC, 401, litellm.AuthenticationError, 401),
    (ANTHROPIC, 403, litellm.PermissionDeniedError, 403),
    (ANTHROPIC, 400, litellm.ContextWindowExceededError, 400),
]


@pytest.mark.parametrize(("model", "code", "exc_type", "exc_status"), ERROR_CASES)
def test_status_maps_to_litellm_exception(
    fp: FakeProvider, model: str, code: int, exc_type: type[Exception], exc_status: int
) -> None:
    fp.script(status(code))
    with pytest.raises(exc_type) as info:
        drain(call(fp, model, stream=True))
    assert info.value.status_code == exc_status  # type: ignore[attr-defined]
    assert len(fp.requests) == 1, "litellm must not retry on its own"
    if model == ANTHROPIC and code == 529:
        assert info.value.provider_status_code == 529  # type: ignore[attr-defined]


def test_error_bodies_are_real_shapes(fp: FakeProvider) -> None:
    fp.script(status(400), status(529), status(401))
    with httpx.Client(base_url=fp.url) as client:
        oai = client.post("/v1/chat/completions", json={"model": "gpt-4o"}).json()
        ant = client.post("/v1/messages", json={"model": "claude"}).json()
        oll = client.post("/api/chat", json={"model": "llama3.2"})
    assert oai["error"]["code"] == "context_length_exceeded"
    assert oai["error"]["type"] == "invalid_request_error"
    assert oai["error"]["message"].startswith("This model's maximum context length is 8192 tokens")
    assert ant["type"] == "error" and ant["error"] == {
        "type": "overloaded_error",
        "message": "Overloaded",
    }
    assert oll.status_code == 401 and isinstance(oll.json()["error"], str)


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_reaches_exception_headers(fp: FakeProvider, model: str, form: str) -> None:
    when = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=30)
    fp.script(status(429, retry_after=7 if form == "seconds" else when))
    with pytest.raises(litellm.RateLimitError) as info:
        call(fp, model)
    headers = getattr(info.value, "litellm_response_headers", None)  # set via setattr by litellm
    assert isinstance(headers, httpx.Headers)
    value = headers["retry-after"]
    if form == "seconds":
        assert value == "7"
    else:
        from email.utils import parsedate_to_datetime

        assert parsedate_to_datetime(value) == when
    if model == OPENAI:  # only the openai path keeps the real response on the exception
        assert info.value.response.headers["retry-after"] == value


def test_http_date_helper() -> None:
    from email.utils import parsedate_to_datetime

    delta = parsedate_to_datetime(http_date(60)) - datetime.now(timezone.utc)
    assert 55 < delta.total_seconds() <= 61


def test_custom_body_and_headers(fp: FakeProvider) -> None:
    fp.script(status(418, body={"error": {"message": "teapot"}}, headers={"x-extra": "1"}))
    with httpx.Client() as client:
        r = client.post(fp.url + "/chat/completions", json={})
    assert (
        r.status_code == 418
        and r.json() == {"error": {"message": "teapot"}}
        and r.headers["x-extra"] == "1"
    )


# --------------------------------------------------------------------------- transport faults


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
@pytest.mark.parametrize("reset", [False, True])
def test_cut_after_raises_mid_stream_with_partial_text(
    fp: FakeProvider, model: str, reset: bool
) -> None:
    fp.script(cut_after(2, text="alpha beta gamma delta", reset=reset))
    got = []
    with pytest.raises(MidStreamFallbackError) as info:
        for chunk in call(fp, model, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert "".join(got) == "alpha beta"
    assert info.value.generated_content == "alpha beta"
    assert len(fp.requests) == 1


def test_cut_after_non_stream_truncates_body(fp: FakeProvider) -> None:
    fp.script(cut_after(1))
    with pytest.raises(httpx.RemoteProtocolError), httpx.Client() as client:
        client.post(fp.url + "/v1/chat/completions", json={"model": "gpt-4o"})


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
def test_malformed_chunk_is_an_error(fp: FakeProvider, model: str) -> None:
    fp.script(malformed(after_chunks=1))
    with pytest.raises(MidStreamFallbackError):
        drain(call(fp, model, stream=True))


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
def test_in_stream_error_event(fp: FakeProvider, model: str) -> None:
    fp.script(stream_error(after_chunks=1, code=529))
    with pytest.raises(MidStreamFallbackError) as info:
        drain(call(fp, model, stream=True))
    assert "overloaded" in str(info.value).lower()


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
def test_hang_hits_litellm_timeout(fp: FakeProvider, model: str) -> None:
    fp.script(hang(300))
    start = time.monotonic()
    with pytest.raises(litellm.Timeout):
        drain(call(fp, model, stream=True, timeout=0.3))
    # cut by the 0.3 s timeout, not the hang's end (which a loaded machine cannot bring 200x
    # nearer); closing the provider wakes the hanging handler
    assert 0.25 < time.monotonic() - start < 60


def test_hang_then_answer(fp: FakeProvider) -> None:
    fp.script(hang(0.2, then=ok("late but fine")))
    start = time.monotonic()
    assert call(fp, OPENAI).choices[0].message.content == "late but fine"
    assert time.monotonic() - start >= 0.2


def _causes(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
def test_connection_refused(model: str) -> None:
    port = free_port()
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=1),
    ):
        pass
    base = refused_url() + ("/v1" if model == OPENAI else "")
    # litellm reports a refused connection as InternalServerError (500), not APIConnectionError.
    with pytest.raises(litellm.InternalServerError) as info:
        litellm.completion(
            model=model,
            api_base=base,
            api_key="k",
            messages=MSGS,
            num_retries=0,
            max_retries=0,
            timeout=2,
        )
    assert any(isinstance(c, ConnectionRefusedError) for c in _causes(info.value))


# --------------------------------------------------------------------------- raw wire format


def _sse_events(body: str) -> list[tuple[str | None, str]]:
    events = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        events.append((name, data))
    return events


def test_anthropic_sse_event_sequence(fp: FakeProvider) -> None:
    fp.script(ok("a b", input_tokens=3, output_tokens=2))
    with httpx.Client() as client:
        r = client.post(fp.url + "/v1/messages", json={"model": "claude", "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["transfer-encoding"] == "chunked"
    events = _sse_events(r.text)
    names = [n for n, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    datas = [json.loads(d) for _, d in events]
    assert all(d["type"] == n for d, n in zip(datas, names, strict=True))
    assert datas[0]["message"]["usage"]["input_tokens"] == 3
    assert datas[3]["delta"] == {"type": "text_delta", "text": "a"}
    assert (
        datas[6]["delta"]["stop_reason"] == "end_turn" and datas[6]["usage"]["output_tokens"] == 2
    )


def test_openai_sse_usage_chunk_only_when_asked(fp: FakeProvider) -> None:
    with httpx.Client() as client:
        plain = client.post(fp.url + "/v1/chat/completions", json={"stream": True}).text
        usage = client.post(
            fp.url + "/v1/chat/completions",
            json={"stream": True, "stream_options": {"include_usage": True}},
        ).text
    for body in (plain, usage):
        assert body.endswith("data: [DONE]\n\n")
    plain_chunks = [json.loads(d) for _, d in _sse_events(plain)[:-1]]
    usage_chunks = [json.loads(d) for _, d in _sse_events(usage)[:-1]]
    assert all("usage" not in c and c["object"] == "chat.completion.chunk" for c in plain_chunks)
    assert usage_chunks[-1]["choices"] == [] and usage_chunks[-1]["usage"]["total_tokens"] > 0
    assert all(c["usage"] is None for c in usage_chunks[:-1])


def test_ollama_ndjson_and_tags(fp: FakeProvider) -> None:
    fp.script(ok("x y", input_tokens=4, output_tokens=2))
    with httpx.Client(base_url=fp.url) as client:
        lines = client.post("/api/chat", json={"model": "llama3.2"}).text.splitlines()
        tags = client.get("/api/tags").json()
    objs = [json.loads(line) for line in lines]
    assert [o["done"] for o in objs] == [False, False, True]
    assert objs[-1]["prompt_eval_count"] == 4 and objs[-1]["eval_count"] == 2
    assert "llama3.2" in [m["name"] for m in tags["models"]]


def test_models_endpoint_and_its_own_script(fp: FakeProvider) -> None:
    fp.script(status(401), endpoint="models")
    with httpx.Client(
        base_url=fp.url, headers={"Authorization": "Bearer sk-test-models"}
    ) as client:
        denied = client.get("/v1/models")
        listed = client.get("/v1/models").json()
    assert denied.status_code == 401
    assert listed["object"] == "list" and "gpt-4o" in [m["id"] for m in listed["data"]]
    assert [r.api_key for r in fp.requests] == ["sk-test-models"] * 2
    assert fp.pending() == 0 and fp.pending("models") == 0


# --------------------------------------------------------------------------- lifecycle


def test_close_is_fast_with_a_hanging_request_and_idempotent() -> None:
    fp = FakeProvider().start()
    fp.script(hang(30))
    port = fp.port
    errors: list[BaseException] = []

    def client() -> None:
        try:
            httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={}, timeout=10)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=client)
    t.start()
    fp.wait_for_requests(1)
    fp.close()
    fp.close()
    t.join(5)  # half the client's 10 s timeout: close() cut the connection, it did not expire
    assert not t.is_alive() and isinstance(errors[0], httpx.RemoteProtocolError)
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=1),
    ):
        pass

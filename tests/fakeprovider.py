"""Fault-injecting fake LLM provider (OpenAI, Anthropic, Ollama wire formats) for tests.

Stdlib only. A ``ThreadingHTTPServer`` (HTTP/1.1) on 127.0.0.1 runs in a background thread.
Streams use ``Transfer-Encoding: chunked``, so an abrupt close mid-stream is detectable by
the client (httpx: ``RemoteProtocolError: incomplete chunked read``), just as with the real APIs.

Usage::

    with FakeProvider() as fp:
        fp.script(ok("Hello there", input_tokens=12, output_tokens=3),
                  status(429, retry_after=2),
                  status(529),
                  hang(5),
                  cut_after(2),
                  malformed())
        litellm.completion(model="openai/gpt-4o", api_base=fp.openai_base, ...)
        fp.requests[0].api_key       # "sk-test-..." (Bearer or x-api-key)
        fp.requests[1].t - fp.requests[0].t   # seconds between arrivals (monotonic)

Endpoints (protocol is chosen by path):

* OpenAI: ``POST /v1/chat/completions`` (and ``/chat/completions``), ``GET /v1/models``.
  ``api_base`` for litellm: ``fp.url + "/v1"`` (``fp.openai_base``).
* Anthropic: ``POST /v1/messages`` (and ``/messages``); ``api_base``: ``fp.url``
  (``fp.anthropic_base``). ``GET /v1/models`` answers in Anthropic's shape when the request
  carries an ``anthropic-version`` header.
* Ollama: ``POST /api/chat``, ``POST /api/generate`` (NDJSON, streaming unless
  ``"stream": false``), ``GET /api/tags``, ``POST /api/show``, ``GET /api/version``;
  ``api_base``: ``fp.url``.

Behaviours -- each completion request (chat / messages / generate) pops the next scripted
behaviour from a FIFO queue; an empty queue gives ``fp.default`` (a normal answer):

* ``ok(text, input_tokens=10, output_tokens=None, chunk_delay=0.0, chunks=None)`` -- a normal
  answer; ``text`` is streamed word by word (or as the given ``chunks``), ``chunk_delay``
  seconds apart; ``output_tokens`` defaults to the number of chunks. Usage detail, in each
  wire's own fields: ``cache_read_tokens`` (OpenAI ``prompt_tokens_details.cached_tokens``,
  Anthropic ``cache_read_input_tokens``), ``cache_write_tokens`` and ``cache_write_1h_tokens``
  (Anthropic ``cache_creation_input_tokens`` and ``cache_creation.ephemeral_1h_input_tokens``),
  ``reasoning_tokens`` (OpenAI ``completion_tokens_details.reasoning_tokens``); 0 when not
  given, as the real APIs send it. ``input_tokens`` is the wire's own input count: OpenAI's
  ``prompt_tokens`` includes the cached tokens, Anthropic's ``input_tokens`` leaves them out.
* ``ok("", tool_calls=[tool_call("get_weather", ['{"city": ', '"Paris"}'])])`` -- an answer
  that calls tools (after its text, if any): OpenAI ``delta.tool_calls`` pieces (the first with
  the call's index, id and name, then the arguments piece by piece) and ``finish_reason:
  tool_calls``; Anthropic a ``tool_use`` content block per call (``content_block_start``, then
  ``input_json_delta`` pieces) and ``stop_reason: tool_use``. ``tool_call(name, pieces, id=None)``.
* ``status(code, body=None, retry_after=None, headers=None)`` -- an HTTP error. Without
  ``body``, the provider's real error JSON for ``code`` is sent (400 = context length
  exceeded; 429/500/503/529/401/403/404/413 also known). ``body`` may be a dict (JSON),
  str or bytes. ``retry_after``: seconds (int/float), a ``datetime`` (sent as HTTP date),
  or a literal string; see also ``http_date()``.
* ``hang(seconds, then=None)`` -- read the request, send no bytes for ``seconds``, then
  close the connection (or carry on with behaviour ``then``).
* ``cut_after(n_chunks, text=..., stall=0.0, reset=False)`` -- stream ``n_chunks`` content
  chunks, optionally stall, then close the socket without the end of the body (FIN, or
  RST if ``reset``). For non-stream requests, half the announced body is sent.
* ``malformed(after_chunks=1, payload="{not json", text=...)`` -- a stream containing a data
  line that is not valid JSON (then the normal end); non-stream: an invalid JSON body.
* ``stream_error(after_chunks=1, code=529)`` -- HTTP 200 stream, then an in-stream error
  event (Anthropic ``event: error``, OpenAI ``data: {"error": ...}``, Ollama ``{"error":...}``).

Embeddings: ``POST /v1/embeddings`` (and ``/embeddings``), OpenAI's wire format: ``data`` (one
``embedding`` per input, floats or, with ``"encoding_format": "base64"``, little-endian float32
in base64) and ``usage`` (``prompt_tokens``, ``total_tokens``). ``fp.script(embed(dim=8,
input_tokens=None), status(429), …, endpoint="embeddings")`` scripts it; unscripted it answers
``embed()``: deterministic vectors of ``dim`` floats from each text's hash, and one token per
whitespace-separated word of the inputs unless ``input_tokens`` gives the request's total.

``fp.script(..., endpoint="models")`` scripts the model-list endpoints (``/v1/models``,
``/api/tags``) instead; they otherwise answer normally. ``endpoint="count_tokens"`` scripts
Anthropic's token counting (``POST /v1/messages/count_tokens``): ``ok(input_tokens=N)`` answers
``{"input_tokens": N}``, an error behaviour fails it; unscripted, it answers about a token per
4 characters of the body's text. Every request (any path) is recorded
as a ``RecordedRequest`` in ``fp.requests``: ``method``, ``path``, ``query``, ``headers``,
``header(name)``, ``body`` (parsed JSON or None), ``raw``, ``t`` (``time.monotonic()`` at
arrival), ``api_key``, ``model``, ``stream``, ``behaviour``. Also: ``fp.completions()`` (only
chat/messages/generate requests), ``fp.wait_for_requests(n, timeout)``, ``fp.pending()``,
``fp.gather(n)`` (hold completion requests until ``n`` are open at once; ``fp.most_open``),
``fp.reset()``, ``FakeProvider(default=ok(...), models=[...])``. ``close()`` wakes hanging
handlers and shuts every open socket, and is idempotent.

litellm quirks (1.110.2): anthropic 529/overloaded -> ``InternalServerError`` with
``status_code == 500`` and ``provider_status_code == 529``; openai 529 and 403 -> plain
``APIError`` (status 529/403); Retry-After is in ``exc.litellm_response_headers`` (httpx.Headers)
for both providers, in ``exc.response.headers`` for openai only; mid-stream faults raise
``litellm.exceptions.MidStreamFallbackError`` (``generated_content`` = text so far); connection
refused raises ``InternalServerError`` (500), not ``APIConnectionError``.

``free_port()`` / ``refused_url()`` give a port / URL where nothing listens (connection
refused). Standalone: ``python tests/fakeprovider.py --port 8765 --script script.json``
where the JSON is a list like ``[{"kind": "status", "code": 429, "retry_after": 1}, ...]``.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import datetime as dt
import email.utils
import hashlib
import json
import math
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, NoReturn
from urllib.parse import parse_qsl, urlsplit

from tests._servers import free_port  # noqa: F401 - tests import it from here too

__all__ = [
    "Behaviour",
    "CutAfter",
    "FakeProvider",
    "Hang",
    "Malformed",
    "Ok",
    "RecordedRequest",
    "Status",
    "StreamError",
    "ToolCall",
    "behaviour_from_dict",
    "cut_after",
    "embed",
    "Embed",
    "error_body",
    "free_port",
    "hang",
    "http_date",
    "malformed",
    "ok",
    "refused_url",
    "status",
    "stream_error",
    "tool_call",
]

DEFAULT_TEXT = "Hello from the fake provider."
_COMPLETION_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/chat/completions",
        "/v1/messages",
        "/messages",
        "/api/chat",
        "/api/generate",
    }
)
Protocol = Literal["openai", "anthropic", "ollama"]
Endpoint = Literal["completion", "models", "count_tokens", "embeddings"]
_COUNT_TOKENS_PATHS = frozenset({"/v1/messages/count_tokens", "/messages/count_tokens"})


# --------------------------------------------------------------------------- behaviours


@dataclass(frozen=True)
class ToolCall:
    """A tool call an answer makes: its arguments (JSON text) streamed in ``pieces``."""

    name: str
    pieces: tuple[str, ...]
    id: str

    @property
    def arguments(self) -> str:
        return "".join(self.pieces)


def tool_call(name: str, pieces: Iterable[str] | str, id: str | None = None) -> ToolCall:
    """A scripted tool call; ``pieces`` (or one string) make its JSON arguments."""
    parts = (pieces,) if isinstance(pieces, str) else tuple(pieces)
    return ToolCall(name, parts, id or f"call_{uuid.uuid4().hex[:24]}")


@dataclass(frozen=True)
class Ok:
    """A normal answer."""

    text: str = DEFAULT_TEXT
    input_tokens: int = 10
    output_tokens: int | None = None
    chunk_delay: float = 0.0
    chunks: tuple[str, ...] | None = None
    finish_reason: str = "stop"
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    tool_calls: tuple[ToolCall, ...] = ()

    def pieces(self) -> list[str]:
        """The streamed text pieces (word by word unless ``chunks`` was given)."""
        if self.chunks is not None:
            return list(self.chunks)
        if self.tool_calls and not self.text:
            return []
        return re.findall(r"\s*\S+", self.text) or [self.text]

    def completion_tokens(self) -> int:
        """Output token count reported in usage."""
        if self.output_tokens is not None:
            return self.output_tokens
        return len(self.pieces()) + sum(len(c.pieces) + 1 for c in self.tool_calls)


@dataclass(frozen=True)
class Status:
    """An HTTP error response (body defaults to the provider's real error JSON)."""

    code: int
    body: dict[str, Any] | str | bytes | None = None
    retry_after: float | str | dt.datetime | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hang:
    """Accept the request, send nothing for ``seconds``, then close (or do ``then``)."""

    seconds: float
    then: Behaviour | None = None


@dataclass(frozen=True)
class CutAfter:
    """Stream ``n_chunks`` content chunks, then drop the connection mid-body."""

    n_chunks: int
    answer: Ok = field(default_factory=Ok)
    stall: float = 0.0
    reset: bool = False


@dataclass(frozen=True)
class Malformed:
    """Send a stream line (or a whole body) that is not valid JSON."""

    after_chunks: int = 1
    payload: str = "{not json"
    answer: Ok = field(default_factory=Ok)


@dataclass(frozen=True)
class StreamError:
    """HTTP 200 stream that carries an error event after ``after_chunks`` chunks."""

    after_chunks: int = 1
    code: int = 529
    answer: Ok = field(default_factory=Ok)


@dataclass(frozen=True)
class Embed:
    """An embeddings answer: ``dim`` floats per input; ``input_tokens`` the request's total
    (None: one per whitespace-separated word of the inputs)."""

    dim: int = 8
    input_tokens: int | None = None


Behaviour = Ok | Status | Hang | CutAfter | Malformed | StreamError | Embed
_EMBEDDING_PATHS = frozenset({"/v1/embeddings", "/embeddings"})


def embed(dim: int = 8, input_tokens: int | None = None) -> Embed:
    """An embeddings answer (see :class:`Embed`)."""
    return Embed(dim=dim, input_tokens=input_tokens)


def fake_vector(text: str, dim: int) -> list[float]:
    """The fake provider's deterministic vector for ``text`` (unit length)."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = [((seed[i % len(seed)] + 7 * i) % 251) / 125.0 - 1.0 for i in range(dim)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def embeddings_body(body: Any, b: Embed) -> dict[str, Any]:
    """OpenAI's ``/v1/embeddings`` response for the request ``body``."""
    raw = body.get("input") if isinstance(body, dict) else None
    texts = [raw] if isinstance(raw, str) else [str(t) for t in (raw or [])]
    b64 = isinstance(body, dict) and body.get("encoding_format") == "base64"
    data = []
    for i, text in enumerate(texts):
        vec = fake_vector(text, b.dim)
        value: Any = vec
        if b64:
            value = base64.b64encode(struct.pack(f"<{b.dim}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = b.input_tokens
    if tokens is None:
        tokens = sum(len(t.split()) for t in texts)
    model = body.get("model") if isinstance(body, dict) else None
    return {
        "object": "list",
        "data": data,
        "model": model or "text-embedding-3-small",
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def ok(
    text: str = DEFAULT_TEXT,
    input_tokens: int = 10,
    output_tokens: int | None = None,
    chunk_delay: float = 0.0,
    chunks: Iterable[str] | None = None,
    finish_reason: str = "stop",
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
    reasoning_tokens: int = 0,
    tool_calls: Iterable[ToolCall] = (),
) -> Ok:
    """A normal answer streamed in several chunks (slow tokens via ``chunk_delay``), with the
    usage detail given (cache reads and writes, reasoning) in the wire's fields, and the tool
    calls given (``finish_reason`` then defaults to ``tool_calls``)."""
    parts = None if chunks is None else tuple(chunks)
    calls = tuple(tool_calls)
    if calls and finish_reason == "stop":
        finish_reason = "tool_calls"
    return Ok(
        text=text if parts is None else "".join(parts),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        chunk_delay=chunk_delay,
        chunks=parts,
        finish_reason=finish_reason,
        cache_read_tokens=cache_read_tokens,
        cache_write_tokens=cache_write_tokens,
        cache_write_1h_tokens=cache_write_1h_tokens,
        reasoning_tokens=reasoning_tokens,
        tool_calls=calls,
    )


def status(
    code: int,
    body: dict[str, Any] | str | bytes | None = None,
    retry_after: float | str | dt.datetime | None = None,
    headers: dict[str, str] | None = None,
) -> Status:
    """An HTTP error; ``retry_after`` as seconds, datetime (HTTP date) or literal string."""
    return Status(code=code, body=body, retry_after=retry_after, headers=dict(headers or {}))


def hang(seconds: float, then: Behaviour | None = None) -> Hang:
    """Send no bytes for ``seconds``, then close the connection (or continue with ``then``)."""
    return Hang(seconds=seconds, then=then)


def cut_after(
    n_chunks: int,
    text: str = DEFAULT_TEXT,
    stall: float = 0.0,
    reset: bool = False,
    chunk_delay: float = 0.0,
) -> CutAfter:
    """Send ``n_chunks`` chunks, stall ``stall`` s, then close abruptly (RST if ``reset``)."""
    return CutAfter(n_chunks, Ok(text=text, chunk_delay=chunk_delay), stall, reset)


def malformed(
    after_chunks: int = 1, payload: str = "{not json", text: str = DEFAULT_TEXT
) -> Malformed:
    """A stream whose data line after ``after_chunks`` chunks is ``payload`` (invalid JSON)."""
    return Malformed(after_chunks, payload, Ok(text=text))


def stream_error(after_chunks: int = 1, code: int = 529, text: str = DEFAULT_TEXT) -> StreamError:
    """A 200 stream that turns into the provider's in-stream error event for ``code``."""
    return StreamError(after_chunks, code, Ok(text=text))


def behaviour_from_dict(d: dict[str, Any]) -> Behaviour:
    """Build a behaviour from ``{"kind": "ok"|"status"|"hang"|"cut_after"|..., **kwargs}``."""
    args = dict(d)
    kind = args.pop("kind")
    if kind == "hang" and isinstance(args.get("then"), dict):
        args["then"] = behaviour_from_dict(args["then"])
    factories: dict[str, Any] = {
        "ok": ok,
        "status": status,
        "hang": hang,
        "embed": embed,
        "cut_after": cut_after,
        "malformed": malformed,
        "stream_error": stream_error,
    }
    return factories[kind](**args)  # type: ignore[no-any-return]


def http_date(seconds_from_now: float) -> str:
    """An RFC 7231 HTTP date ``seconds_from_now`` in the future (for Retry-After)."""
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


def refused_url() -> str:
    """``http://127.0.0.1:PORT`` where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


# --------------------------------------------------------------------------- recording


@dataclass
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw: bytes
    body: Any
    t: float
    behaviour: Behaviour | None = None

    def header(self, name: str, default: str | None = None) -> str | None:
        """Case-insensitive header lookup."""
        low = name.lower()
        for k, v in self.headers.items():
            if k.lower() == low:
                return v
        return default

    @property
    def api_key(self) -> str | None:
        """Key from ``Authorization: Bearer …`` or ``x-api-key`` (or ``api-key``)."""
        auth = self.header("authorization")
        if auth and auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return self.header("x-api-key") or self.header("api-key")

    @property
    def model(self) -> str | None:
        """``model`` from the JSON body, if any."""
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def stream(self) -> bool:
        """Whether the request asked for a stream (Ollama streams unless told not to)."""
        if not isinstance(self.body, dict):
            return False
        return bool(self.body.get("stream", self.path.startswith("/api/")))


# --------------------------------------------------------------------------- wire formats

_OPENAI_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: (
        "This model's maximum context length is 8192 tokens. However, your messages resulted "
        "in 9000 tokens. Please reduce the length of the messages.",
        "invalid_request_error",
        "context_length_exceeded",
    ),
    401: (
        "Incorrect API key provided: sk-test***. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        "invalid_api_key",
    ),
    403: (
        "Country, region, or territory not supported",
        "request_forbidden",
        "unsupported_country_region_territory",
    ),
    404: (
        "The model `x` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    429: (
        "Rate limit reached for gpt-4o in organization org-fake on requests per min (RPM): "
        "Limit 3, Used 3, Requested 1. Please try again in 20s.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
    529: ("The engine is currently overloaded, please try again later.", "server_error", None),
}

_ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum"),
    401: ("authentication_error", "invalid x-api-key"),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "model: claude-x"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service Unavailable"),
    529: ("overloaded_error", "Overloaded"),
}

_OLLAMA_ERRORS: dict[int, str] = {
    400: "input length exceeds the context length",
    401: "unauthorized",
    403: "forbidden",
    404: "model 'x' not found, try pulling it first",
    429: "too many requests",
    500: "llama runner process has terminated: exit status 2",
    503: "server busy, please try again.  maximum pending requests exceeded",
}


def error_body(protocol: Protocol, code: int) -> dict[str, Any]:
    """The provider's real error JSON for HTTP ``code``."""
    if protocol == "anthropic":
        etype, msg = _ANTHROPIC_ERRORS.get(code, ("api_error", f"HTTP {code}"))
        return {
            "type": "error",
            "error": {"type": etype, "message": msg},
            "request_id": f"req_{uuid.uuid4().hex[:24]}",
        }
    if protocol == "ollama":
        return {"error": _OLLAMA_ERRORS.get(code, f"HTTP {code}")}
    msg, etype, ecode = _OPENAI_ERRORS.get(code, (f"HTTP {code}", "server_error", None))
    return {"error": {"message": msg, "type": etype, "param": None, "code": ecode}}


def _openai_usage(b: Ok) -> dict[str, Any]:
    """OpenAI's usage: ``prompt_tokens`` includes the cached ones, ``completion_tokens`` the
    reasoning ones."""
    out = b.completion_tokens()
    return {
        "prompt_tokens": b.input_tokens,
        "completion_tokens": out,
        "total_tokens": b.input_tokens + out,
        "prompt_tokens_details": {"cached_tokens": b.cache_read_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": b.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _anthropic_usage(b: Ok, output_tokens: int) -> dict[str, Any]:
    """Anthropic's usage: ``input_tokens`` leaves out the cache reads and writes, which it
    reports apart (the writes split by cache lifetime in ``cache_creation``)."""
    return {
        "input_tokens": b.input_tokens,
        "cache_creation_input_tokens": b.cache_write_tokens,
        "cache_read_input_tokens": b.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": b.cache_write_tokens - b.cache_write_1h_tokens,
            "ephemeral_1h_input_tokens": b.cache_write_1h_tokens,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _oai_call(c: ToolCall) -> dict[str, Any]:
    return {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")


class _Wire:
    """Renders one answer in one protocol: full JSON body or a list of stream frames."""

    def __init__(self, protocol: Protocol, req: RecordedRequest, answer: Ok) -> None:
        self.protocol = protocol
        self.req = req
        self.answer = answer
        self.model = req.model or "fake-model"
        self.created = int(time.time())
        self.id = {
            "openai": f"chatcmpl-{uuid.uuid4().hex[:29]}",
            "anthropic": f"msg_{uuid.uuid4().hex[:24]}",
            "ollama": "",
        }[protocol]
        body = req.body if isinstance(req.body, dict) else {}
        opts = body.get("stream_options") or {}
        self.include_usage = bool(opts.get("include_usage")) if isinstance(opts, dict) else False
        self.generate = req.path.rstrip("/").endswith("/api/generate")

    # -- non-stream
    def full(self) -> dict[str, Any]:
        """The non-stream response body."""
        a = self.answer
        text = "".join(a.pieces())
        if self.protocol == "openai":
            return {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": text or (None if a.tool_calls else ""),
                            "refusal": None,
                            "annotations": [],
                            **(
                                {"tool_calls": [_oai_call(c) for c in a.tool_calls]}
                                if a.tool_calls
                                else {}
                            ),
                        },
                        "logprobs": None,
                        "finish_reason": a.finish_reason,
                    }
                ],
                "usage": _openai_usage(a),
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
            }
        if self.protocol == "anthropic":
            return {
                "id": self.id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": ([{"type": "text", "text": text}] if text or not a.tool_calls else [])
                + [
                    {
                        "type": "tool_use",
                        "id": c.id,
                        "name": c.name,
                        "input": json.loads(c.arguments),
                    }
                    for c in a.tool_calls
                ],
                "stop_reason": self._anthropic_stop(),
                "stop_sequence": None,
                "usage": _anthropic_usage(a, a.completion_tokens()),
            }
        return self._ollama_final(text)

    # -- stream: list of (frame, is_content_chunk)
    def frames(self) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """(head frames, one frame per content piece, tail frames)."""
        pieces = self.answer.pieces()
        if self.protocol == "openai":
            first = "" if pieces or not self.answer.tool_calls else None
            head = [self._oai_chunk({"role": "assistant", "content": first, "refusal": None}, None)]
            body = [self._oai_chunk({"content": p}, None) for p in pieces]
            body += self._oai_tool_frames()
            tail = [self._oai_chunk({}, self.answer.finish_reason)]
            if self.include_usage:
                tail.append(self._sse(None, self._oai_base([], _openai_usage(self.answer))))
            tail.append(b"data: [DONE]\n\n")
            return head, body, tail
        if self.protocol == "anthropic":
            a = self.answer
            usage = _anthropic_usage(a, 1)  # output_tokens: 1 until message_delta's count
            start = {
                "type": "message_start",
                "message": {
                    "id": self.id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": usage,
                },
            }
            texted = bool(pieces) or not a.tool_calls  # a text block (index 0) comes first
            head = [
                self._sse("message_start", start),
                *(
                    [
                        self._sse(
                            "content_block_start",
                            {
                                "type": "content_block_start",
                                "index": 0,
                                "content_block": {"type": "text", "text": ""},
                            },
                        )
                    ]
                    if texted
                    else []
                ),
                self._sse("ping", {"type": "ping"}),
            ]
            body = [
                self._sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": p},
                    },
                )
                for p in pieces
            ]
            stop_text = [
                self._sse("content_block_stop", {"type": "content_block_stop", "index": 0})
            ]
            if a.tool_calls:
                body += (stop_text if texted else []) + self._anthropic_tool_frames(int(texted))
                stop_text = []
            tail = [
                *stop_text,
                self._sse(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": self._anthropic_stop(), "stop_sequence": None},
                        "usage": {"output_tokens": a.completion_tokens()},
                    },
                ),
                self._sse("message_stop", {"type": "message_stop"}),
            ]
            return head, body, tail
        body = [self._ndjson(self._ollama_piece(p)) for p in pieces]
        return [], body, [self._ndjson(self._ollama_final(""))]

    def error_frame(self, code: int) -> bytes:
        """An in-stream error event."""
        err = error_body(self.protocol, code)
        if self.protocol == "anthropic":
            return self._sse("error", {"type": "error", "error": err["error"]})
        if self.protocol == "ollama":
            return self._ndjson(err)
        return self._sse(None, err)

    def malformed_frame(self, payload: str) -> bytes:
        """A stream line whose JSON does not parse."""
        if self.protocol == "anthropic":
            return f"event: content_block_delta\ndata: {payload}\n\n".encode()
        if self.protocol == "ollama":
            return (payload + "\n").encode()
        return f"data: {payload}\n\n".encode()

    # -- helpers
    def _anthropic_stop(self) -> str:
        return {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}.get(
            self.answer.finish_reason, self.answer.finish_reason
        )

    def _oai_tool_frames(self) -> list[bytes]:
        """OpenAI's ``delta.tool_calls`` pieces: index, id and name first, then the arguments."""
        frames = []
        for i, c in enumerate(self.answer.tool_calls):
            opening = {"index": i, "id": c.id, "type": "function"}
            opening["function"] = {"name": c.name, "arguments": ""}
            frames.append(self._oai_chunk({"tool_calls": [opening]}, None))
            for piece in c.pieces:
                more = {"index": i, "function": {"arguments": piece}}
                frames.append(self._oai_chunk({"tool_calls": [more]}, None))
        return frames

    def _anthropic_tool_frames(self, first: int) -> list[bytes]:
        """Anthropic's ``tool_use`` blocks: start, ``input_json_delta`` pieces, stop."""
        frames = []
        for k, c in enumerate(self.answer.tool_calls, start=first):
            block = {"type": "tool_use", "id": c.id, "name": c.name, "input": {}}
            frames.append(
                self._sse(
                    "content_block_start",
                    {"type": "content_block_start", "index": k, "content_block": block},
                )
            )
            for piece in c.pieces:
                delta = {"type": "input_json_delta", "partial_json": piece}
                frames.append(
                    self._sse(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": k, "delta": delta},
                    )
                )
            frames.append(
                self._sse("content_block_stop", {"type": "content_block_stop", "index": k})
            )
        return frames

    def _oai_base(self, choices: list[Any], usage: Any) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
            "choices": choices,
        }
        if self.include_usage:
            d["usage"] = usage
        return d

    def _oai_chunk(self, delta: dict[str, Any], finish: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._sse(None, self._oai_base([choice], None))

    def _ollama_piece(self, text: str) -> dict[str, Any]:
        d: dict[str, Any] = {"model": self.model, "created_at": _now_iso()}
        if self.generate:
            d["response"] = text
        else:
            d["message"] = {"role": "assistant", "content": text}
        d["done"] = False
        return d

    def _ollama_final(self, text: str) -> dict[str, Any]:
        d = self._ollama_piece(text)
        a = self.answer
        d.update(
            done=True,
            done_reason="length" if a.finish_reason == "length" else "stop",
            total_duration=12_345_678,
            load_duration=1_234_567,
            prompt_eval_count=a.input_tokens,
            prompt_eval_duration=2_345_678,
            eval_count=a.completion_tokens(),
            eval_duration=8_765_432,
        )
        if self.generate:
            d["context"] = [1, 2, 3]
        return d

    @staticmethod
    def _sse(event: str | None, data: Any) -> bytes:
        head = f"event: {event}\n" if event else ""
        return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

    @staticmethod
    def _ndjson(data: Any) -> bytes:
        return (json.dumps(data, separators=(",", ":")) + "\n").encode()


# --------------------------------------------------------------------------- server


class _Closed(Exception):
    """The client went away or the server is shutting down."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    provider: FakeProvider


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30  # idle keep-alive connections give up after this

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.provider.verbose:
            super().log_message(format, *args)

    def setup(self) -> None:
        super().setup()
        self.server.provider._track(self.connection, add=True)

    def handle(self) -> None:
        # Clients resetting idle keep-alive sockets (or close()) is normal, not an error.
        with contextlib.suppress(OSError):
            super().handle()

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.provider._track(self.connection, add=False)

    # -- entry points
    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        t = time.monotonic()
        fp = self.server.provider
        split = urlsplit(self.path)
        raw = self._read_body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        req = RecordedRequest(
            method=self.command,
            path=split.path,
            query=dict(parse_qsl(split.query)),
            headers=dict(self.headers.items()),
            raw=raw,
            body=body,
            t=t,
        )
        path = split.path.rstrip("/")
        try:
            if self.command == "POST" and path in _COMPLETION_PATHS:
                self._completion(req, _protocol_of(path))
            elif self.command == "POST" and path in _COUNT_TOKENS_PATHS:
                self._count_tokens(req)
            elif self.command == "POST" and path in _EMBEDDING_PATHS:
                self._embeddings(req)
            elif self.command == "GET" and path in ("/v1/models", "/models"):
                proto: Protocol = "anthropic" if req.header("anthropic-version") else "openai"
                self._models(req, proto)
            elif self.command == "GET" and path == "/api/tags":
                self._models(req, "ollama")
            elif path == "/api/show":
                fp._record(req)
                self._json(200, _ollama_show(body))
            elif path == "/api/version":
                fp._record(req)
                self._json(200, {"version": "0.12.0"})
            else:
                fp._record(req)
                self._json(
                    404,
                    {
                        "error": {
                            "message": f"Unknown path {split.path}",
                            "type": "invalid_request_error",
                        }
                    },
                )
        except _Closed:
            self.close_connection = True

    # -- behaviours
    def _completion(self, req: RecordedRequest, proto: Protocol) -> None:
        fp = self.server.provider
        b = fp._next("completion")
        req.behaviour = b
        fp._record(req)
        with fp._answering():
            self._run(b, req, proto)

    def _count_tokens(self, req: RecordedRequest) -> None:
        """Anthropic's token counting: ``{"input_tokens": N}``, N the scripted ``ok``'s
        ``input_tokens``, else about a token per 4 characters of the body's text."""
        fp = self.server.provider
        scripted = fp.pending("count_tokens") > 0
        b = fp._next("count_tokens")
        req.behaviour = b
        fp._record(req)
        if isinstance(b, Ok):
            n = b.input_tokens if scripted else _rough_count(req.body)
            self._json(200, {"input_tokens": n})
        else:
            self._run(b, req, "anthropic")

    def _embeddings(self, req: RecordedRequest) -> None:
        fp = self.server.provider
        b = fp._next("embeddings")
        req.behaviour = b
        fp._record(req)
        if isinstance(b, Embed):
            self._json(200, embeddings_body(req.body, b))
        elif isinstance(b, (Status, Hang)):
            self._run(b, req, "openai")
        else:
            raise ValueError(f"{type(b).__name__} is not an embeddings behaviour")

    def _models(self, req: RecordedRequest, proto: Protocol) -> None:
        fp = self.server.provider
        b = fp._next("models")
        req.behaviour = b
        fp._record(req)
        if isinstance(b, Ok):
            self._json(200, _model_list(proto, fp.models))
        else:
            self._run(b, req, proto)

    def _run(self, b: Behaviour, req: RecordedRequest, proto: Protocol) -> None:
        if isinstance(b, Hang):
            self._sleep(b.seconds)
            if b.then is None:
                self._drop()
            self._run(b.then, req, proto)
        elif isinstance(b, Status):
            self._status(b, proto)
        elif isinstance(b, Ok):
            self._answer(req, proto, b)
        elif isinstance(b, CutAfter):
            self._answer(req, proto, b.answer, stop_after=b.n_chunks, cut=b)
        elif isinstance(b, Malformed):
            self._answer(req, proto, b.answer, stop_after=b.after_chunks, bad=b.payload)
        elif isinstance(b, Embed):
            self._json(200, embeddings_body(req.body, b))
        else:
            self._answer(req, proto, b.answer, stop_after=b.after_chunks, error=b.code)

    def _status(self, b: Status, proto: Protocol) -> None:
        headers = dict(b.headers)
        if b.retry_after is not None:
            ra = b.retry_after
            if isinstance(ra, dt.datetime):
                ra = email.utils.format_datetime(ra.astimezone(dt.timezone.utc), usegmt=True)
            elif isinstance(ra, float) and ra.is_integer():
                ra = int(ra)
            headers.setdefault("Retry-After", str(ra))
        if b.body is None or isinstance(b.body, dict):
            self._json(b.code, b.body if b.body is not None else error_body(proto, b.code), headers)
        else:
            data = b.body.encode() if isinstance(b.body, str) else b.body
            self._send(b.code, data, "text/plain; charset=utf-8", headers)

    def _answer(
        self,
        req: RecordedRequest,
        proto: Protocol,
        a: Ok,
        stop_after: int | None = None,
        cut: CutAfter | None = None,
        bad: str | None = None,
        error: int | None = None,
    ) -> None:
        wire = _Wire(proto, req, a)
        if not req.stream:
            if bad is not None:
                self._send(200, bad.encode(), "application/json")
                return
            if error is not None:
                self._status(Status(error), proto)
                return
            data = json.dumps(wire.full()).encode()
            if cut is not None:
                self._send_headers(200, "application/json", {"Content-Length": str(len(data))})
                self._write(data[: len(data) // 2])
                self._sleep(cut.stall)
                self._drop(cut.reset)
            self._send(200, data, "application/json")
            return
        ctype = "application/x-ndjson" if proto == "ollama" else "text/event-stream; charset=utf-8"
        self._send_headers(
            200, ctype, {"Transfer-Encoding": "chunked", "Cache-Control": "no-cache"}
        )
        head, pieces, tail = wire.frames()
        for frame in head:
            self._chunk(frame)
        for i, frame in enumerate(pieces):
            if stop_after is not None and i >= stop_after:
                break
            if i and a.chunk_delay:
                self._sleep(a.chunk_delay)
            self._chunk(frame)
        if cut is not None:
            self._sleep(cut.stall)
            self._drop(cut.reset)
        if error is not None:
            self._chunk(wire.error_frame(error))
            self._end_chunks()
            return
        if bad is not None:
            self._chunk(wire.malformed_frame(bad))
            for frame in pieces[stop_after or 0 :]:
                self._chunk(frame)
        for frame in tail:
            self._chunk(frame)
        self._end_chunks()

    # -- I/O helpers
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self.server.provider._stopping.wait(seconds):
            self._drop()

    def _drop(self, reset: bool = False) -> NoReturn:
        """Close the socket abruptly (FIN, or RST if ``reset``) and abandon the request."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            if reset:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.connection.close()
        raise _Closed

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError as e:
            raise _Closed from e

    def _send_headers(self, code: int, ctype: str, headers: dict[str, str]) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        rid = f"req_{uuid.uuid4().hex[:24]}"
        self.send_header("x-request-id", rid)
        self.send_header("request-id", rid)
        for k, v in headers.items():
            self.send_header(k, v)
        try:
            self.end_headers()
        except OSError as e:
            raise _Closed from e

    def _send(
        self, code: int, data: bytes, ctype: str, headers: dict[str, str] | None = None
    ) -> None:
        self._send_headers(code, ctype, {**(headers or {}), "Content-Length": str(len(data))})
        self._write(data)

    def _json(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json", headers)

    def _chunk(self, data: bytes) -> None:
        self._write(f"{len(data):X}\r\n".encode() + data + b"\r\n")

    def _end_chunks(self) -> None:
        self._write(b"0\r\n\r\n")


def _protocol_of(path: str) -> Protocol:
    if path.startswith("/api/"):
        return "ollama"
    return "anthropic" if path.endswith("/messages") else "openai"


def _rough_count(body: Any) -> int:
    """About a token per 4 characters of a count_tokens body's system and message text."""
    if not isinstance(body, dict):
        return 0
    texts = [json.dumps(body.get("system") or "")]
    texts += [json.dumps(m.get("content") or "") for m in body.get("messages") or []]
    return max(1, sum(len(t) for t in texts) // 4)


def _model_list(proto: Protocol, models: list[str]) -> dict[str, Any]:
    if proto == "anthropic":
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in models
        ]
        return {
            "data": data,
            "has_more": False,
            "first_id": models[0] if models else None,
            "last_id": models[-1] if models else None,
        }
    if proto == "ollama":
        return {
            "models": [
                {
                    "name": m,
                    "model": m,
                    "modified_at": "2025-01-01T00:00:00Z",
                    "size": 1_000_000,
                    "digest": uuid.uuid5(uuid.NAMESPACE_DNS, m).hex,
                    "details": {
                        "format": "gguf",
                        "family": "llama",
                        "parameter_size": "135M",
                        "quantization_level": "Q8_0",
                    },
                }
                for m in models
            ]
        }
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "fakeprovider"}
            for m in models
        ],
    }


def _ollama_show(body: Any) -> dict[str, Any]:
    name = body.get("model") or body.get("name") if isinstance(body, dict) else None
    return {
        "modelfile": f"FROM {name}",
        "parameters": "",
        "template": "{{ .Prompt }}",
        "details": {
            "format": "gguf",
            "family": "llama",
            "parameter_size": "135M",
            "quantization_level": "Q8_0",
        },
        "model_info": {"general.architecture": "llama", "llama.context_length": 8192},
        "capabilities": ["completion"],
    }


class FakeProvider:
    """Background fake LLM provider; see the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        default: Behaviour | None = None,
        models: Iterable[str] = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "llama3.2"),
        verbose: bool = False,
    ) -> None:
        self.default: Behaviour = default if default is not None else Ok()
        self.models = list(models)
        self.verbose = verbose
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._queues: dict[str, collections.deque[Behaviour]] = {
            "completion": collections.deque(),
            "models": collections.deque(),
            "count_tokens": collections.deque(),
            "embeddings": collections.deque(),
        }
        self._requests: list[RecordedRequest] = []
        self._arrived = threading.Condition(self._lock)
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._open = 0  # completion requests being answered now
        self.most_open = 0  # the most completion requests answered at once so far
        self._gather = 0  # completion requests wait until this many are open (0: no wait)
        self._gather_timeout = 0.0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> FakeProvider:
        """Bind and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self._host, self._port), _Handler)
        server.provider = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fakeprovider:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, wake hanging handlers, and close every open connection. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        with self._arrived:
            self._arrived.notify_all()  # wakes requests held by gather()
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                c.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- addresses
    @property
    def port(self) -> int:
        """The bound port."""
        if self._server is None:
            raise RuntimeError("FakeProvider is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{self._host}:{self.port}"

    @property
    def openai_base(self) -> str:
        """``api_base`` for litellm ``openai/…`` models."""
        return self.url + "/v1"

    @property
    def anthropic_base(self) -> str:
        """``api_base`` for litellm ``anthropic/…`` models."""
        return self.url

    @property
    def ollama_base(self) -> str:
        """``api_base`` for litellm ``ollama/…`` and ``ollama_chat/…`` models."""
        return self.url

    # -- scripting
    def script(self, *behaviours: Behaviour, endpoint: Endpoint = "completion") -> FakeProvider:
        """Queue behaviours for the next requests to ``endpoint`` (FIFO)."""
        with self._lock:
            self._queues[endpoint].extend(behaviours)
        return self

    def pending(self, endpoint: Endpoint = "completion") -> int:
        """How many scripted behaviours are not used yet."""
        with self._lock:
            return len(self._queues[endpoint])

    def reset(self) -> None:
        """Forget the script and the recorded requests."""
        with self._lock:
            for q in self._queues.values():
                q.clear()
            self._requests.clear()
            self.most_open = 0

    def _next(self, endpoint: Endpoint) -> Behaviour:
        with self._lock:
            q = self._queues[endpoint]
            if q:
                return q.popleft()
        if endpoint == "embeddings":
            return Embed()
        return self.default if endpoint == "completion" else Ok()

    # -- recording
    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def embeddings(self) -> list[RecordedRequest]:
        """Only the embeddings requests."""
        return [r for r in self.requests if r.path.rstrip("/") in _EMBEDDING_PATHS]

    def completions(self) -> list[RecordedRequest]:
        """Only the completion requests (chat / messages / generate)."""
        return [r for r in self.requests if r.path.rstrip("/") in _COMPLETION_PATHS]

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``n`` requests arrived (``TimeoutError`` otherwise)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(f"{len(self._requests)} of {n} requests arrived")
            return list(self._requests)

    def gather(self, n: int, timeout: float = 60.0) -> FakeProvider:
        """Hold every completion request, unanswered, until ``n`` of them are open at once, then
        answer them all: concurrency shown without timing. A client that sends them one after
        another leaves ``most_open`` below ``n``; after ``timeout`` seconds without ``n`` open
        the hold ends (each request is then answered) so that such a client fails its test
        rather than hanging it."""
        with self._lock:
            self._gather, self._gather_timeout = n, timeout
        return self

    @contextlib.contextmanager
    def _answering(self) -> Iterator[None]:
        with self._arrived:
            self._open += 1
            self.most_open = max(self.most_open, self._open)
            self._arrived.notify_all()
            if self._gather:
                n = self._gather
                self._arrived.wait_for(
                    lambda: self._open >= n or self._stopping.is_set(), self._gather_timeout
                )
                self._gather = 0  # gathered (or never will be): later requests are not held
        try:
            yield
        finally:
            with self._arrived:
                self._open -= 1

    def _record(self, req: RecordedRequest) -> None:
        with self._arrived:
            self._requests.append(req)
            self._arrived.notify_all()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)


# --------------------------------------------------------------------------- CLI


def _iter_script(path: str) -> Iterator[Behaviour]:
    with open(path, encoding="utf-8") as f:
        for item in json.load(f):
            yield behaviour_from_dict(item)


def main(argv: list[str] | None = None) -> int:
    """Run the fake provider in the foreground."""
    ap = argparse.ArgumentParser(description="Fault-injecting fake LLM provider")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument(
        "--script", help='JSON list of behaviours, e.g. [{"kind": "status", "code": 429}]'
    )
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fp = FakeProvider(args.host, args.port, verbose=args.verbose).start()
    if args.script:
        fp.script(*_iter_script(args.script))
    print(fp.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fp.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The embedded model's stream, read straight from llama.cpp's OpenAI-compatible server.

The local model needs nothing litellm does for it (no key, no price, no provider mapping, its
own tokenizer), and ``import litellm`` costs seconds of CPU (about 14 s on a 2-core machine):
a first ``%%llm`` cell on ``local`` should not wait for it. This reader speaks the same wire
format litellm would send and read (``POST {base}/chat/completions`` with ``stream: true``;
``data: {...}`` lines until ``data: [DONE]``), and yields what :func:`gateway.stream_chat`
yields: text chunks (and tool-call pieces), then one ``Usage`` with the finish reason. Failures become
:mod:`llm_magic.errors` types, raised outside any handler (no exception chain).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

from . import errors
from ._toolcalls import ToolDelta

__all__ = ["stream_openai"]


def _http_error(status: int, body: str, model: str, url: str) -> errors.ProviderError:
    try:
        message = str(json.loads(body)["error"]["message"])
    except Exception:
        message = body.strip().splitlines()[0][:300] if body.strip() else f"HTTP {status}"
    return errors.for_status(status, f"HTTP {status}: {message}", model=model, url=url)


def stream_openai(
    *,
    usage_type: Any,
    model: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    temperature: float,
    api_base: str,
    timeout: float,
    extra: dict[str, Any] | None = None,
) -> Generator[Any, None, None]:
    """Stream one chat completion from an OpenAI-compatible server with no key."""
    import httpx

    url = api_base.rstrip("/") + "/chat/completions"
    served = model.split("/", 1)[-1]
    body = {
        "model": served,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": int(max_tokens),
        "temperature": float(temperature),
        **(extra or {}),
    }
    limits = httpx.Timeout(connect=10.0, read=timeout, write=timeout, pool=timeout)
    tally = _Tally()
    failure: errors.ProviderError | None = None
    try:
        with (
            httpx.Client(timeout=limits) as client,
            client.stream("POST", url, json=body) as response,
        ):
            if response.status_code != 200:
                failure = _http_error(
                    response.status_code, response.read().decode("utf-8", "replace"), model, url
                )
            else:
                for chunk in _events(response.iter_lines()):
                    yield from tally.take(chunk)
    except (httpx.ConnectError, httpx.UnsupportedProtocol) as exc:
        failure = errors.ConnectionFailed(f"cannot connect to {url}: {exc}", model=model, url=url)
    except httpx.TimeoutException:
        failure = errors.Timeout(f"no answer from {url} for {timeout:g} s", model=model, url=url)
    except (httpx.HTTPError, ValueError) as exc:
        failure = errors.ServerError(f"the stream from {url} broke: {exc}", model=model, url=url)
    if failure is not None:
        if tally.got_text:
            failure = errors.StreamInterrupted(
                f"response interrupted: {failure}", status=failure.status, model=model
            )
        raise failure  # outside the handler: no exception chain behind it
    yield usage_type.read(
        tally.usage,
        reported=True,
        model=tally.answered_by,
        finish=tally.finish,
        response_id=tally.response_id,
    )


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON of each ``data:`` line of an OpenAI chat SSE stream, up to ``[DONE]``."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        yield json.loads(data)


@dataclass
class _Tally:
    """What a stream said besides its text: usage, the model that answered, the finish reason."""

    got_text: bool = False
    usage: dict[str, Any] | None = None
    answered_by: str | None = None
    finish: str | None = None
    response_id: str | None = None

    def take(self, chunk: dict[str, Any]) -> list[str | ToolDelta]:
        """Note what ``chunk`` says; return its text pieces and tool-call pieces."""
        self.answered_by = chunk.get("model") or self.answered_by
        self.response_id = chunk.get("id") or self.response_id
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        pieces: list[str | ToolDelta] = []
        for choice in chunk.get("choices") or ():
            self.finish = choice.get("finish_reason") or self.finish
            delta = choice.get("delta") or {}
            piece = delta.get("content")
            if piece:
                self.got_text = True
                pieces.append(str(piece))
            for position, call in enumerate(delta.get("tool_calls") or ()):
                self.got_text = True
                function = call.get("function") or {}
                pieces.append(
                    ToolDelta(
                        index=int(call.get("index", position)),
                        id=call.get("id") or None,
                        name=function.get("name") or None,
                        arguments=function.get("arguments") or "",
                    )
                )
        return pieces

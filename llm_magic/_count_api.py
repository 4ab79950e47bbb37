"""Anthropic's token counting (``POST /v1/messages/count_tokens``): the provider's own count of a
prompt, for seed rule 4 (see :mod:`llm_magic._counts`).

A direct httpx call: litellm's counter is async and proxy-shaped, and our messages are plain
chat turns (a leading system turn goes to ``system``, the rest as they are). Gateway layer;
imports only the base. The key is revealed only inside the request's header expression.
"""

from __future__ import annotations

import os
from typing import Any

from . import errors
from .secrets import Secret, scrub

__all__ = ["ANTHROPIC_BASE", "count_url", "anthropic_count_tokens"]

ANTHROPIC_BASE = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"


def count_url(api_base: str | None) -> str:
    """The count-tokens URL under ``api_base`` (as litellm resolves the chat base: the
    argument, else ``ANTHROPIC_API_BASE`` / ``ANTHROPIC_BASE_URL``, else Anthropic's host; a
    base may already end in ``/v1`` or ``/v1/messages``)."""
    base = (
        api_base
        or os.environ.get("ANTHROPIC_API_BASE")
        or os.environ.get("ANTHROPIC_BASE_URL")
        or ANTHROPIC_BASE
    ).rstrip("/")
    if base.endswith("/v1/messages"):
        return base + "/count_tokens"
    if base.endswith("/v1"):
        return base + "/messages/count_tokens"
    return base + "/v1/messages/count_tokens"


def _body(model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    system = [str(m.get("content") or "") for m in messages if m.get("role") == "system"]
    body: dict[str, Any] = {
        "model": model.split("/", 1)[1] if model.startswith("anthropic/") else model,
        "messages": [
            {"role": m.get("role", "user"), "content": m.get("content") or ""}
            for m in messages
            if m.get("role") != "system"
        ],
    }
    if system:
        body["system"] = "\n\n".join(system)
    return body


def anthropic_count_tokens(
    model: str,
    messages: list[dict[str, Any]],
    *,
    api_key: Secret,
    api_base: str | None = None,
    timeout: float = 10.0,
) -> int:
    """Anthropic's count of ``messages``' input tokens for ``model``. Raises
    :class:`errors.LLMError` (the key scrubbed from its text) when it cannot say."""
    import httpx

    url = count_url(api_base)
    problem = None
    try:
        reply = httpx.post(
            url,
            json=_body(model, messages),
            headers={
                "x-api-key": api_key.reveal(),
                "anthropic-version": ANTHROPIC_VERSION,
                "content-type": "application/json",
            },
            timeout=timeout,
        )
        if reply.status_code != 200:
            problem = f"HTTP {reply.status_code} from {url}"
        else:
            count = reply.json().get("input_tokens")
            if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
                return count
            problem = f"no input_tokens in the answer of {url}"
    except Exception as exc:  # connection, timeout, JSON: said below, outside the handler
        problem = f"{type(exc).__name__}: {scrub(str(exc))}"
    raise errors.LLMError(problem)

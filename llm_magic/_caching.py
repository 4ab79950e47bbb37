"""Prompt caching you can ask for (``cache_prompt=True``, ``%%llm --cache-prompt``).

On Anthropic routes the system prompt and every long message (over Anthropic's minimum cacheable
size, ~1,024 tokens) are sent as content blocks marked ``cache_control: {"type": "ephemeral"}``
(at most four marks: the system prompt and the last long messages; a mark caches everything
before it too). litellm passes the blocks through to Anthropic's body as they are: the system
blocks go to ``system``, the others stay in ``messages``. OpenAI caches prompts of 1,024+ tokens
by itself (nothing to mark); the local model's llama.cpp server keeps its own KV cache. Re-running
a cell over the same document then pays the cache-read price (0.1× input on Anthropic).

Pipeline layer: called by :func:`llm_magic._plan.prepare` for each model of the chain.
"""

from __future__ import annotations

from typing import Any

from . import gateway
from .models import Route

__all__ = ["MIN_CACHEABLE_TOKENS", "MAX_BREAKPOINTS", "mark"]

MIN_CACHEABLE_TOKENS = 1024  # Anthropic's smallest cacheable prompt (Sonnet, Opus)
MAX_BREAKPOINTS = 4  # Anthropic accepts at most four cache_control blocks in a request
EPHEMERAL = {"type": "ephemeral"}

_ELSEWHERE = {
    "openai": "OpenAI caches prompts of 1,024+ tokens by itself: nothing to mark",
    "local": "the local model's llama.cpp server keeps its own cache: nothing to mark",
}


def mark(route: Route, messages: list[dict[str, Any]], notes: list[str]) -> list[dict[str, Any]]:
    """``messages`` as they are sent with ``--cache-prompt`` on ``route``: on Anthropic, the
    system prompt and the long messages as content blocks marked for the prompt cache; elsewhere
    unchanged, with a note saying why (OpenAI caches by itself; the local model keeps its own)."""
    if route.provider != "anthropic":
        why = _ELSEWHERE.get(
            route.provider, f"{route.provider} is not marked (Anthropic routes only)"
        )
        notes.append(f"--cache-prompt on {route.model}: {why}")
        return messages
    chosen = _breakpoints(route, messages)
    if not chosen:
        notes.append(
            f"--cache-prompt: nothing to cache on {route.model} (no system prompt, and no "
            f"message over ~{MIN_CACHEABLE_TOKENS} tokens)"
        )
        return messages
    return [_marked(m) if i in chosen else m for i, m in enumerate(messages)]


def _breakpoints(route: Route, messages: list[dict[str, Any]]) -> set[int]:
    """Which messages get a mark: the system prompt(s), then the last long messages, at most
    :data:`MAX_BREAKPOINTS` in all (the system prompt first: it is the prefix every call
    shares)."""
    system = [i for i, m in enumerate(messages) if m.get("role") == "system" and m.get("content")]
    long = [
        i
        for i, m in enumerate(messages)
        if m.get("role") != "system"
        and isinstance(m.get("content"), str)
        and gateway.count_tokens(route.litellm_model, [m]) >= MIN_CACHEABLE_TOKENS
    ]
    keep = system[:MAX_BREAKPOINTS]
    room = MAX_BREAKPOINTS - len(keep)
    return set(keep + (long[-room:] if room > 0 else []))


def _marked(message: dict[str, Any]) -> dict[str, Any]:
    """``message`` with its text as one content block marked for the cache."""
    content = message.get("content")
    if isinstance(content, list):  # already blocks: mark the last one
        blocks = [dict(b) for b in content]
        if blocks:
            blocks[-1]["cache_control"] = dict(EPHEMERAL)
        return {**message, "content": blocks}
    block = {"type": "text", "text": str(content or ""), "cache_control": dict(EPHEMERAL)}
    return {**message, "content": [block]}

"""A stream's final usage, read: input and output tokens and the parts beyond them.

The same reader serves litellm's usage object (:func:`llm_magic.gateway.stream_chat`) and the
wire's JSON (:mod:`llm_magic._direct`, the embedded model's server). Gateway layer; imports only
the base.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .record import UsageDetail

__all__ = ["Usage", "usage_detail"]


@dataclass(frozen=True)
class Usage:
    """Token usage at the end of a stream; ``reported`` is False when litellm had to estimate.
    ``finish_reason`` is why the answer ended, as the provider said (``length``: max_tokens).

    ``input_tokens`` counts every prompt token, the cached ones included (OpenAI's
    ``prompt_tokens``; for Anthropic litellm adds ``cache_read_input_tokens`` and
    ``cache_creation_input_tokens`` to ``input_tokens``); the detail parts are None when the
    provider's usage does not carry them (:func:`usage_detail`)."""

    input_tokens: int
    output_tokens: int
    reported: bool
    model: str | None = None  # the model the provider (or a proxy) says answered
    finish_reason: str | None = None
    cache_read_tokens: int | None = None  # of input_tokens: read from the provider's cache
    cache_write_tokens: int | None = None  # of input_tokens: written to it
    cache_write_1h_tokens: int | None = None  # of cache_write_tokens: into the 1-hour cache
    reasoning_tokens: int | None = None  # of output_tokens
    response_id: str | None = None  # the provider's id of the answer (spans only, not the ledger)

    @classmethod
    def read(
        cls,
        usage: Any,
        *,
        reported: bool,
        model: str | None,
        finish: str | None,
        response_id: str | None = None,
    ) -> Usage:
        """The Usage of a stream's final usage (litellm's object or the wire's dict)."""
        return cls(
            int(_part(usage, "prompt_tokens") or 0),
            int(_part(usage, "completion_tokens") or 0),
            reported and usage is not None,
            model,
            finish,
            **usage_detail(usage),
            response_id=response_id or None,
        )

    def detail(self) -> UsageDetail:
        """The detail parts by ledger column name."""
        return UsageDetail(
            cache_read_tokens=self.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens,
            reasoning_tokens=self.reasoning_tokens,
        )


def _part(obj: Any, name: str) -> Any:
    """``obj[name]`` of a dict, ``obj.name`` of an object; None when absent."""
    if obj is None:
        return None
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _count(*values: Any) -> int | None:
    """The first value that is a token count (an int; a bool or None is not)."""
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def usage_detail(usage: Any) -> UsageDetail:
    """Cache reads and writes and reasoning tokens from a stream's usage, as litellm normalises
    it (``prompt_tokens_details.cached_tokens`` / ``.cache_creation_tokens`` /
    ``.cache_creation_token_details.ephemeral_1h_input_tokens``,
    ``completion_tokens_details.reasoning_tokens``) or as the wire says it (OpenAI's same names;
    Anthropic's ``cache_read_input_tokens``, ``cache_creation_input_tokens`` and
    ``cache_creation.ephemeral_1h_input_tokens``). None for a part not reported."""
    prompt = _part(usage, "prompt_tokens_details")
    split = _part(prompt, "cache_creation_token_details") or _part(usage, "cache_creation")
    return UsageDetail(
        cache_read_tokens=_count(
            _part(prompt, "cached_tokens"), _part(usage, "cache_read_input_tokens")
        ),
        cache_write_tokens=_count(
            _part(prompt, "cache_write_tokens"),
            _part(prompt, "cache_creation_tokens"),
            _part(usage, "cache_creation_input_tokens"),
        ),
        cache_write_1h_tokens=_count(_part(split, "ephemeral_1h_input_tokens")),
        reasoning_tokens=_count(
            _part(_part(usage, "completion_tokens_details"), "reasoning_tokens")
        ),
    )

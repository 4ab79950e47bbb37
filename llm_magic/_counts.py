"""Seed rule 4: which count of a prompt the pre-send guards use, and the ledger says so.

- ``tokenizer``: the local model's prompt, counted with SmolLM2's own tokenizer (when loaded);
- ``anthropic``: a Claude prompt (provider ``anthropic``, a key present, no proxy) whose local
  estimate is within reach of the 80% context guard — over :data:`ANTHROPIC_COUNT_SHARE`
  (60%) of the window — is counted by Anthropic (``POST /v1/messages/count_tokens``): the
  estimate is tiktoken's, not Claude's tokenizer, and the difference matters only near the
  guard; far below it, the round trip buys nothing;
- ``estimate``: everything else (litellm's estimate), and a Claude count that failed (a note
  says so; the call goes on).

Pipeline layer: called by :func:`llm_magic._plan.prepare` after the context fit.
"""

from __future__ import annotations

from typing import Any

from . import _count_api, local
from .models import Route
from .secrets import scrub

__all__ = ["ANTHROPIC_COUNT_SHARE", "prompt_count"]

ANTHROPIC_COUNT_SHARE = 0.6  # of the context window: from here Anthropic counts Claude prompts
COUNT_TIMEOUT_S = 10.0


def prompt_count(
    route: Route, messages: list[dict[str, Any]], estimate: int, notes: list[str]
) -> tuple[int, str]:
    """(tokens, source) of ``messages`` on ``route``: ``estimate`` (the context fit's count)
    or Anthropic's count, and which one it is (a value of ``record.PROMPT_COUNTS``)."""
    if route.provider == "local":
        return estimate, "tokenizer" if local.tokenizer_loaded() else "estimate"
    if not _near_the_guard(route, estimate):
        return estimate, "estimate"
    assert route.key is not None
    try:
        counted = _count_api.anthropic_count_tokens(
            route.litellm_model,
            messages,
            api_key=route.key,
            api_base=route.api_base,
            timeout=COUNT_TIMEOUT_S,
        )
    except Exception as exc:
        notes.append(
            f"Anthropic's token count failed ({scrub(str(exc))}): the estimate of "
            f"~{estimate} tokens stands"
        )
        return estimate, "estimate"
    return counted, "anthropic"


def _near_the_guard(route: Route, estimate: int) -> bool:
    """A Claude prompt Anthropic can count (key, no proxy) whose estimate is over
    :data:`ANTHROPIC_COUNT_SHARE` of a known window."""
    return (
        route.provider == "anthropic"
        and route.key is not None
        and not route.via_proxy
        and bool(route.context_window)
        and estimate > (route.context_window or 0) * ANTHROPIC_COUNT_SHARE
    )

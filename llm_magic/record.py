"""One call, one record: the fields of a ledger row, in the ledger's column order.

:class:`CallRecord` is the only place a call's fields are listed. The ledger's columns
(:data:`COLUMNS`), the :class:`~llm_magic.result.Result` a call returns and the comparison table's
rows are views of it. Adding a column is one field here plus one migration in
:mod:`llm_magic._migrations` (which never changes what an earlier migration made).

Base layer: imports nothing of llm_magic.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Protocol, TypedDict

__all__ = [
    "CallRecord",
    "COLUMNS",
    "NAMES",
    "STATUSES",
    "USAGE_DETAIL",
    "UsageDetail",
    "Book",
    "utcnow",
    "tokens_per_second",
]

OPERATIONS = ("chat", "embeddings")
#: ``anthropic``: Anthropic's token-counting endpoint; ``tokenizer``: the model's own tokenizer
#: (the local model); ``estimate``: litellm's estimate (tiktoken) for everything else.
PROMPT_COUNTS = ("anthropic", "tokenizer", "estimate")
#: ``cached``: answered from the ledger by the response cache (``cache=True``; nothing sent).
STATUSES = ("ok", "error", "interrupted", "refused_budget", "refused_context", "cached")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _col(kind: str, default: Any = None, doc: str = "") -> Any:
    """A record field stored as a ledger column of ``kind`` (``text``, ``int`` or ``float``)."""
    return field(default=default, metadata={"kind": kind, "doc": doc})


def tokens_per_second(output_tokens: int, latency_s: float, ttft_s: float) -> float:
    """Output tokens per second of generation (after the first token); NaN when no token came
    back or no first token was seen. The one rule, for the ledger and every table."""
    if not output_tokens or ttft_s is None or math.isnan(ttft_s):
        return math.nan
    gen = latency_s - ttft_s
    return output_tokens / gen if gen > 0 else math.nan


@dataclass
class CallRecord:
    """Everything the ledger keeps about one call (one model; its retries are ``attempts``)."""

    call_id: str = _col("text", "")
    trace_id: str = _col("text", "", "one per user request, shared by retries and fallbacks")
    ts_start: datetime | None = _col("text", None, "ISO 8601 UTC: sorts as time, on every engine")
    ts_end: datetime | None = _col("text")
    requested_model: str | None = _col("text")
    model: str | None = _col("text")
    provider: str | None = _col("text")
    fallback_from: str | None = _col("text")
    attempts: int = _col("int", 0)
    status: str = _col("text", "ok", "one of STATUSES")
    error_type: str | None = _col("text")
    http_status: int | None = _col("int")
    input_tokens: int = _col("int", 0, "every prompt token, cached ones included")
    output_tokens: int = _col("int", 0)
    usage_source: str = _col("text", "provider", "provider or estimated")
    cost_usd: float = _col("float", math.nan, "NULL ⇔ no known price (NaN), never a silent 0")
    price_source: str | None = _col("text")
    latency_s: float = _col("float", math.nan)
    ttft_s: float = _col("float", math.nan)
    output_tps: float = _col("float", math.nan, "see tokens_per_second")
    max_tokens: int | None = _col("int")
    temperature: float | None = _col("float")
    agent: str | None = _col("text")
    user: str | None = _col("text")
    tags: dict[str, str] | None = _col("text", None, "JSON object")
    chat: str | None = _col("text")
    execution_count: int | None = _col("int")
    key_alias: str | None = _col("text", None, "masked, never the key")
    prompt: str | None = _col("text", None, "unless store_text is off")
    response: str | None = _col("text", None, "unless store_text is off")
    error_message: str | None = _col("text")
    finish_reason: str | None = _col("text", None, "as the provider reported it")
    setup_s: float = _col("float", 0.0, "seconds waited before the request could be sent")
    # usage detail (m006): NULL when the provider's usage does not report the part
    cache_read_tokens: int | None = _col("int", None, "of input_tokens: read from the cache")
    cache_write_tokens: int | None = _col("int", None, "of input_tokens: written to the cache")
    cache_write_1h_tokens: int | None = _col("int", None, "of cache_write_tokens: 1-hour cache")
    reasoning_tokens: int | None = _col("int", None, "of output_tokens: reasoning")
    # call shape (m007)
    operation: str = _col("text", "chat", "one of OPERATIONS")
    prompt_count_source: str | None = _col(
        "text", None, "which pre-send count of the prompt the guards used (see PROMPT_COUNTS)"
    )
    tool_calls: list[dict[str, Any]] | None = _col(
        "text", None, "JSON text of a list, NULL when none"
    )
    # response cache (m009)
    request_hash: str | None = _col(
        "text", None, "the request's identity (model, messages, parameters): _respcache"
    )
    saved_usd: float = _col(
        "float", math.nan, "cached rows: the original call's cost it avoided; NULL otherwise"
    )
    # experiments (m010): NULL outside lm.experiment
    experiment: str | None = _col("text", None, "the lm.experiment name")
    prompt_hash: str | None = _col(
        "text", None, "the call's identity in its experiment: prompt, system, parameters"
    )
    repeat: int | None = _col("int", None, "repeat index in its experiment (0-based)")

    def row(self) -> dict[str, Any]:
        """The ledger row: column name → value (the ledger serialises dates, tags and NaN)."""
        return asdict(self)


COLUMNS: list[tuple[str, str]] = [(f.name, f.metadata["kind"]) for f in fields(CallRecord)]
NAMES: list[str] = [name for name, _ in COLUMNS]


class UsageDetail(TypedDict, total=False):
    """The parts of a call's usage beyond input and output tokens, by column name."""

    cache_read_tokens: int | None
    cache_write_tokens: int | None
    cache_write_1h_tokens: int | None
    reasoning_tokens: int | None


#: The parts of a call's usage beyond input and output tokens (each NULL when not reported).
#: ``input_tokens`` counts every prompt token, the cached ones included (OpenAI's
#: ``prompt_tokens``; Anthropic's ``input_tokens`` + ``cache_read_input_tokens`` +
#: ``cache_creation_input_tokens``); ``output_tokens`` includes the reasoning tokens.
USAGE_DETAIL = (
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
)


class Book(Protocol):
    """What the guards (budget, pricing, models) need of a ledger; :class:`Ledger` is one."""

    @property
    def path(self) -> object: ...

    def cost_today(self) -> float: ...

    def reserve(
        self, call_id: str, model: str, amount: float, budget: float
    ) -> tuple[bool, float, float]: ...

    def reservations(self) -> float: ...

    def prices(self) -> dict[str, tuple[float, float]]: ...

    def aliases(self) -> dict[str, str]: ...

    def set_alias(self, name: str, model: str) -> None: ...

"""``Result``: what one request produced, with a rich repr for notebooks."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field, fields
from typing import Any

from ._toolcalls import show_call
from .record import CallRecord
from .vocab import cost, no_math

__all__ = ["Result", "SETUP_SHOWN_S"]

SETUP_SHOWN_S = 0.5  # the footer mentions set-up time above this


@dataclass
class Result:
    """The answer and its accounting. ``status`` is ``ok``, ``error``, ``interrupted``,
    ``refused_budget``, ``refused_context`` or ``cached`` (answered from the ledger)."""

    text: str
    model: str
    requested_model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = math.nan
    latency_s: float = math.nan
    ttft_s: float = math.nan
    attempts: int = 0
    fallback_from: str | None = None
    status: str = "ok"
    call_id: str = ""
    trace_id: str = ""
    usage_source: str = "provider"
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    finish_reason: str | None = None  # as the provider reported it: stop, length, tool_calls, …
    setup_s: float = 0.0  # waited before the request could be sent (import, local model start)
    max_tokens: int | None = None
    tool_calls: list[dict[str, Any]] | None = None  # parsed: id, name, arguments (a dict)
    data: Any = None  # with ``schema=``: the validated object
    cache_read_tokens: int | None = None  # of input_tokens: read from the provider's cache
    cache_write_tokens: int | None = None  # of input_tokens: written to it
    cache_saved_usd: float = math.nan  # what the cache saved (pricing.cache_saving)
    request_hash: str | None = None  # the request's identity (the response cache's key)
    saved_usd: float = math.nan  # answered from the ledger: the original call's cost
    record: CallRecord | None = field(default=None, repr=False, compare=False)  # its ledger row

    @classmethod
    def from_record(cls, rec: CallRecord, *, text: str, notes: list[str] | None = None) -> Result:
        """The Result a call returns: a view of its ledger row (``rec``), with the answer's
        full text (the row keeps it only when ``store_text`` is on) and the notes said with it."""
        own = {"text", "requested_model", "model", "notes", "record"}
        shared = {
            f.name: getattr(rec, f.name)
            for f in fields(cls)
            if f.name not in own and hasattr(rec, f.name)
        }
        return cls(
            text=text,
            model=str(rec.model),
            requested_model=str(rec.requested_model),
            error=rec.error_message,
            notes=list(notes or []),
            record=rec,
            **shared,
        )

    @property
    def cached(self) -> bool:
        """Answered from the ledger by the response cache (nothing was sent)."""
        return self.status == "cached"

    @property
    def truncated(self) -> bool:
        """The answer stopped because it reached ``max_tokens``."""
        return self.finish_reason == "length"

    def tool_lines(self) -> list[str]:
        """The answer's tool calls, one line each: ``⚙ get_weather({"city": "Paris"})``."""
        return [show_call(c) for c in self.tool_calls or ()]

    def footer(self) -> str:
        """One line of accounting: model, tokens, cost, latency, TTFT (and the set-up waited
        for, when noticeable; and a cut at max_tokens, with the option that raises it)."""
        parts = [self.model]
        if self.fallback_from:
            parts.append(f"fallback from {self.fallback_from}")
        est = "~" if self.usage_source == "estimated" else ""
        parts.append(f"{est}{self.input_tokens:,} in / {est}{self.output_tokens:,} out tokens")
        parts.append(cost(self.cost_usd))
        if self.cached:
            known = not math.isnan(self.saved_usd)
            parts.append(f"cached (saved {cost(self.saved_usd)})" if known else "cached")
        cached = self._cached()
        if cached:
            parts.append(cached)
        if not math.isnan(self.latency_s):
            parts.append(f"{self.latency_s:.2f} s")
        if not math.isnan(self.ttft_s):
            parts.append(f"first token {self.ttft_s:.2f} s")
        if self.setup_s > SETUP_SHOWN_S:
            parts.append(f"set-up {self.setup_s:.2f} s before sending")
        if self.truncated:
            if self.max_tokens:
                more = f"--max-tokens {2 * self.max_tokens}"
                parts.append(f"stopped at max_tokens ({self.max_tokens}): raise it, e.g. {more}")
            else:
                parts.append("stopped at max_tokens: raise it with --max-tokens N")
        if self.status not in ("ok", "cached"):
            parts.append(self.status)
        return " · ".join(parts)

    def _cached(self) -> str:
        """``10,000 cached (saved $0.0270)``; with cache writes only,
        ``2,000 written to the cache (+$0.001500)``; empty when the cache was not used."""
        read, written = self.cache_read_tokens or 0, self.cache_write_tokens or 0
        saved = self.cache_saved_usd
        if read:
            return f"{read:,} cached (saved {cost(saved)})"
        if written:
            if math.isnan(saved):
                return f"{written:,} written to the cache"
            return f"{written:,} written to the cache (+{cost(-saved)})"
        return ""

    def __repr__(self) -> str:
        preview = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        return f"Result({self.status}, {self.model!r}, {preview!r}, {self.footer()!r})"

    def __str__(self) -> str:
        return self.text

    def _repr_markdown_(self) -> str:
        notes = "".join(f"\n\n> {no_math(n)}" for n in self.notes)
        calls = "".join(
            f"\n\n<code>{html.escape(c, quote=False)}</code>" for c in self.tool_lines()
        )
        return f"{self.text}{calls}{notes}\n\n{no_math(self.footer(), 'small')}"

    def _repr_html_(self) -> str:
        body = html.escape(self.text).replace("\n", "<br>")
        body += "".join(f"<p><code>{html.escape(c)}</code></p>" for c in self.tool_lines())
        notes = "".join(f"<p><em>{no_math(n)}</em></p>" for n in self.notes)
        return f"<div>{body}</div>{notes}{no_math(self.footer(), 'small')}"

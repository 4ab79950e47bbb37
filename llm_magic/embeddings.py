"""``Embeddings``: what ``lm.embed`` returns — the vectors and their accounting."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

from .result import Result
from .vocab import cost

__all__ = ["Embeddings"]


@dataclass
class Embeddings:
    """``vectors``: a NumPy float32 array of shape (n, dim), one row per text, in order.
    ``calls`` holds each request's :class:`~llm_magic.result.Result` (one ledger row each:
    large inputs are sent in several batches); the totals add them up."""

    vectors: Any
    model: str
    requested_model: str
    calls: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def input_tokens(self) -> int:
        return sum(r.input_tokens for r in self.calls)

    @property
    def cost_usd(self) -> float:
        return math.fsum(r.cost_usd for r in self.calls)  # NaN when a price is unknown

    @property
    def latency_s(self) -> float:
        return math.fsum(r.latency_s for r in self.calls)

    @property
    def call_ids(self) -> list[str]:
        return [r.call_id for r in self.calls]

    @property
    def trace_id(self) -> str:
        return self.calls[0].trace_id if self.calls else ""

    @property
    def usage_source(self) -> str:
        est = any(r.usage_source == "estimated" for r in self.calls)
        return "estimated" if est else "provider"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.vectors.shape)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def footer(self) -> str:
        """One line: model, texts × dimensions, tokens, cost, latency, requests."""
        n, dim = self.shape
        est = "~" if self.usage_source == "estimated" else ""
        parts = [
            self.model,
            f"{n} text{'s' if n != 1 else ''} × {dim} dims",
            f"{est}{self.input_tokens} in tokens",
            cost(self.cost_usd),
            f"{self.latency_s:.2f} s",
        ]
        if len(self.calls) > 1:
            parts.append(f"{len(self.calls)} requests")
        return " · ".join(parts)

    def __repr__(self) -> str:
        return f"Embeddings({self.footer()!r})"

    def _repr_html_(self) -> str:
        notes = "".join(f"<p><em>{html.escape(n)}</em></p>" for n in self.notes)
        return f"{notes}<small>{html.escape(self.footer())}</small>"

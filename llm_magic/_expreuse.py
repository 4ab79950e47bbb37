"""An experiment's answers that need no call: its own ``ok`` calls on a re-run, and, with the
response cache on, identical requests answered anywhere in the ledger.

Each reused answer is recorded as a ``cached`` row of its own (cost 0, ``saved_usd`` = the
original's cost, the original's tokens and answer, the run's experiment/prompt_hash/repeat),
made by :func:`llm_magic._respcache.cached_record` and written all at once in one transaction
(:meth:`~llm_magic.store.Ledger.record_many`): nothing is sent, nothing reserved.

The response cache (``cache=True``, or ``LLMMagics.cache`` / ``LLM_MAGIC_CACHE`` for
temperature 0) answers only repeat 0 of a new identity: repeats measure how a model's answers
vary, so repeats 1… are always made (one earlier answer cannot stand for several samples).

Pipeline layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import _otel, _respcache
from ._expplan import Job
from ._expreads import answered_calls
from .config import Settings
from .core import Request
from .models import all_aliases
from .record import NAMES, CallRecord, utcnow
from .store import Ledger

__all__ = ["Reuse", "answered", "cache_wanted", "from_cache"]

Identity = tuple[str, str, int]  # (prompt_hash, model asked for, repeat)


@dataclass
class Reuse:
    """What a run answers without a call: ``(request, original call)`` per answer, and the
    run's start of the reuse (for the rows' latency)."""

    served: list[tuple[Request, CallRecord]] = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)
    written: int = 0
    saved_usd: float = 0.0

    def write(self, book: Ledger, store_text: bool) -> None:
        """One ``cached`` row per answer, in one transaction; sets ``written`` and
        ``saved_usd`` (the originals' known costs)."""
        if not self.served:
            return
        start = utcnow()
        latency = time.perf_counter() - self.t0
        rows: list[Mapping[str, Any]] = []
        for req, hit in self.served:
            rec = _respcache.cached_record(
                hit,
                req,
                request_hash=hit.request_hash,
                trace_id=_otel.trace_id(),  # the experiment's span's, when OTel is on
                start=start,
                latency_s=latency,
                max_tokens=hit.max_tokens or req.max_tokens,
                prompt=req.prompt if store_text and isinstance(req.prompt, str) else None,
                store_text=store_text,
            )
            # the row's fields as they are (CallRecord.row() deep-copies every value: 10,000
            # rows took seconds); the ledger serialises them (row_values) as for any row
            rows.append({name: getattr(rec, name) for name in NAMES})
        book.record_many(rows)
        if _otel.enabled():  # record_many is also the ledger's bulk copy: spans are sent here
            for row in rows:
                _otel.emit(row)
        self.written = len(rows)
        self.saved_usd = sum(r.cost_usd for _, r in self.served if r.cost_usd == r.cost_usd)


def answered(book: Ledger, name: str) -> dict[Identity, CallRecord]:
    """The newest ``ok`` call of each identity of experiment ``name``: what a re-run reuses."""
    book.replay_pending()  # rows a busy ledger could not take yet count too
    out: dict[Identity, CallRecord] = {}
    for row in answered_calls(book, name):  # oldest first: the newest wins
        h, m, k = row.get("prompt_hash"), row.get("requested_model"), row.get("repeat")
        if h is not None and m is not None and k is not None:
            out[(str(h), str(m), int(k))] = _respcache.record_of(row)
    return out


def cache_wanted(cache: bool | None, cfg: Settings, temperature: float) -> bool:
    """``cache=True`` asks whatever the temperature; ``None`` follows the session's switch,
    for temperature 0 only (as for a single call); ``False`` never."""
    if cache is None:
        return cfg.cache and temperature == 0
    return bool(cache)


def from_cache(
    jobs: list[Job], request: Callable[[Job], Request], cfg: Settings, book: Ledger
) -> dict[int, tuple[Request, CallRecord]]:
    """The jobs (by index) the response cache answers: repeat 0 only, looked up in batches
    (:func:`llm_magic._respcache.lookup_many`); the hit's ``request_hash`` is the request's."""
    if not cfg.store_text:
        return {}  # no stored answers to give (the cache says so on single calls)
    aliases = all_aliases(book)
    wanted: dict[int, tuple[Request, str]] = {}
    for i, job in enumerate(jobs):
        if job.repeat == 0:
            req = request(job)
            wanted[i] = (req, _respcache.request_hash_of(req, cfg, book, aliases))
    hits = _respcache.lookup_many(book, [h for _, h in wanted.values()])
    return {i: (req, hits[h]) for i, (req, h) in wanted.items() if h in hits}

"""An experiment's answers that need no call: its own ``ok`` calls on a re-run, and, with the
response cache on, identical requests answered anywhere in the ledger.

Each reused answer is recorded as a ``cached`` row of its own (cost 0, ``saved_usd`` = the
original's cost, the original's tokens and answer, the run's experiment/prompt_hash/repeat),
as :func:`llm_magic._respcache.cached_record` makes it: a re-run's own answers are copied in
the database (:func:`llm_magic._respstore.copy_cached`, one transaction), the response cache's
are written at once (:meth:`~llm_magic.store.Ledger.record_many`): nothing is sent, nothing
reserved.

The response cache (``cache=True``, or ``LLMMagics.cache`` / ``LLM_MAGIC_CACHE`` for
temperature 0) answers only repeat 0 of a new identity: repeats measure how a model's answers
vary, so repeats 1… are always made (one earlier answer cannot stand for several samples).

Pipeline layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import _otel, _respcache, _respstore
from ._expplan import Job
from ._expreads import answered_ids, calls_by_id
from ._sql import row_values
from .config import Settings
from .core import Request
from .models import all_aliases
from .record import NAMES, CallRecord, utcnow
from .store import Ledger

__all__ = ["Reuse", "answered", "cache_wanted", "from_cache"]

Identity = tuple[str, str, int]  # (prompt_hash, model asked for, repeat)


@dataclass
class Reuse:
    """What a run answers without a call: ``own``, the experiment's own ``ok`` calls it
    reuses (job, source call id, its cost), and ``served``, the ``(request, original call)``
    pairs the response cache found; ``request`` makes a job's request (for the rows'
    attribution); ``t0``: the run's start of the reuse (for the rows' latency)."""

    request: Callable[[Job], Request]
    own: list[tuple[Job, str, float | None]] = field(default_factory=list)
    served: list[tuple[Request, CallRecord]] = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)
    written: int = 0
    saved_usd: float = 0.0

    def write(self, book: Ledger, store_text: bool) -> None:
        """One ``cached`` row per answer; sets ``written`` and ``saved_usd`` (the originals'
        known costs). The own reuses are copied by the database in one transaction
        (:func:`~llm_magic._respstore.copy_cached`: 10,000 rows need no Python row each) — with
        OpenTelemetry on they are built in Python instead, as each row is also sent as a span;
        the cache's answers are built in Python and written in one transaction."""
        start = utcnow()
        latency = time.perf_counter() - self.t0
        served = list(self.served)
        if self.own and not _otel.enabled():
            first, source, _ = self.own[0]
            hit = _respcache.record_of(calls_by_id(book, [source])[source])
            template = row_values(self._row(hit, self.request(first), start, latency, store_text))
            ids = [source for _, source, _ in self.own]
            self.written += _respstore.copy_cached(book, ids, template, store_text)
        elif self.own:
            rows = calls_by_id(book, [source for _, source, _ in self.own])
            served += [
                (self.request(job), _respcache.record_of(rows[source]))
                for job, source, _ in self.own
            ]
        if served:
            records = [self._row(hit, req, start, latency, store_text) for req, hit in served]
            book.record_many(records)
            if _otel.enabled():  # record_many is also the ledger's bulk copy: spans sent here
                for row in records:
                    _otel.emit(row)
            self.written += len(records)
        costs = [cost for _, _, cost in self.own] + [hit.cost_usd for _, hit in self.served]
        self.saved_usd = sum(c for c in costs if c is not None and c == c)

    @staticmethod
    def _row(
        hit: CallRecord, req: Request, start: datetime, latency: float, store_text: bool
    ) -> dict[str, Any]:
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
        # the row's fields as they are (CallRecord.row() deep-copies every value: 10,000 rows
        # took seconds); the ledger serialises them (row_values) as for any row
        return {name: getattr(rec, name) for name in NAMES}


Source = tuple[str, float | None]  # an ok call's id and cost


def answered(book: Ledger, name: str) -> dict[Identity, Source]:
    """The newest ``ok`` call of each identity of experiment ``name`` (its id and cost): what
    a re-run reuses."""
    book.replay_pending()  # rows a busy ledger could not take yet count too
    out: dict[Identity, Source] = {}
    for h, m, k, call_id, cost in answered_ids(book, name):  # oldest first: the newest wins
        if h is not None and m is not None and k is not None:
            out[(str(h), str(m), int(k))] = (str(call_id), cost)
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

"""Running an experiment's calls: bounded per provider, under its cost cap, with a progress bar
per model, stopped cleanly by Ctrl-C.

Each call is an ordinary call driven the way ``lm.compare`` drives one
(:func:`llm_magic.comparison._one`: the embedded model's queue, a stop that cuts a stream at
its next chunk and records it as interrupted); on top of it, a semaphore per provider
(:func:`llm_magic.config.provider_concurrency`) and a :class:`SpendGuard` that starts no call
whose worst case, with the spend so far and the worst case of the calls in flight, could pass
``max_cost_usd``. Key cool-downs after a 429 are the key pool's, shared by every call.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, as_completed
from typing import Any

from . import _otel
from .comparison import Outcome, _one
from .config import Settings, provider_concurrency
from .core import Request
from .store import Ledger

__all__ = ["SpendGuard", "run", "NOT_STARTED", "CAP_REACHED", "MAX_THREADS"]

NOT_STARTED = "interrupted before it started"
CAP_REACHED = "not started: max_cost_usd could be passed"
MAX_THREADS = 64

_semaphores: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_semaphores_lock = threading.Lock()


def _semaphore(provider: str) -> threading.BoundedSemaphore:
    """The process's bound on calls in flight to ``provider`` (shared by every experiment)."""
    limit = provider_concurrency(provider)
    with _semaphores_lock:
        return _semaphores.setdefault((provider, limit), threading.BoundedSemaphore(limit))


class SpendGuard:
    """Admits a call only while spend + worst case in flight + its worst case fits the cap."""

    def __init__(self, cap: float | None) -> None:
        self.cap = cap
        self.spent = 0.0
        self.held = 0.0
        self.stopped = False  # a call was refused: no more are started
        self._lock = threading.Lock()

    def admit(self, worst: float) -> bool:
        with self._lock:
            if self.cap is None:
                return True
            if self.stopped or self.spent + self.held + worst > self.cap:
                self.stopped = True
                return False
            self.held += worst
            return True

    def settle(self, worst: float, cost: float) -> None:
        with self._lock:
            if self.cap is not None:
                self.held -= worst
            if math.isfinite(cost):
                self.spent += cost


def _call(
    req: Request,
    repeat: int,
    worst: float,
    provider: str,
    guard: SpendGuard,
    stop: threading.Event,
    cfg: Settings,
    book: Ledger,
) -> Outcome:
    model = str(req.model)
    with _semaphore(provider):
        if stop.is_set():
            return Outcome(model, repeat, None, NOT_STARTED)
        if not guard.admit(worst):
            return Outcome(model, repeat, None, CAP_REACHED)
        outcome = Outcome(model, repeat, None, NOT_STARTED)
        try:
            outcome = _one(req, repeat, None, stop, cfg, book)
        finally:
            cost = outcome.result.cost_usd if outcome.result is not None else 0.0
            guard.settle(worst, cost)
        return outcome


def run(
    work: list[tuple[Request, int, float, str]],
    *,
    concurrency: int | None,
    guard: SpendGuard,
    cfg: Settings,
    book: Ledger,
    on_done: Callable[[int, Outcome], None] | None = None,
) -> list[Outcome]:
    """Run every ``(request, repeat, worst_usd, provider)``; outcomes in input order. A Ctrl-C
    stops it: calls in flight are recorded as interrupted, the rest are not started; the
    outcomes so far are returned (``NOT_STARTED`` for the rest). The ledger's aliases and
    prices are read once for the whole run (:meth:`Ledger.held_reads`), not several times a
    call."""
    if not work:
        return []
    with book.held_reads():
        return _run_pool(work, concurrency, guard, cfg, book, on_done)


def _run_pool(
    work: list[tuple[Request, int, float, str]],
    concurrency: int | None,
    guard: SpendGuard,
    cfg: Settings,
    book: Ledger,
    on_done: Callable[[int, Outcome], None] | None,
) -> list[Outcome]:
    stop = threading.Event()
    limits = {p: provider_concurrency(p) for *_, p in work}
    width = concurrency or min(MAX_THREADS, sum(limits.values()))
    width = max(1, min(width, len(work)))
    outcomes: dict[int, Outcome] = {}
    pool = ThreadPoolExecutor(max_workers=width, thread_name_prefix="llm-experiment")
    futures: dict[Future[Outcome], int] = {
        pool.submit(_otel.carried(_call), req, k, worst, p, guard, stop, cfg, book): i
        for i, (req, k, worst, p) in enumerate(work)
    }
    try:
        for future in as_completed(futures):
            outcomes[futures[future]] = future.result()
            if on_done is not None:
                on_done(futures[future], outcomes[futures[future]])
    except KeyboardInterrupt:
        stop.set()  # each stream stops at its next chunk and records itself interrupted
        pool.shutdown(wait=True, cancel_futures=True)
        for future, i in futures.items():
            if i not in outcomes:
                outcomes[i] = _settled(future, work[i])
    except BaseException:
        stop.set()  # a failure (the ledger, say): no more calls start, the ones in flight stop
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
    return [outcomes[i] for i in range(len(work))]


def _settled(future: Future[Outcome], item: tuple[Any, ...]) -> Outcome:
    req, repeat = item[0], item[1]
    try:
        return future.result()
    except CancelledError:
        return Outcome(str(req.model), repeat, None, NOT_STARTED)

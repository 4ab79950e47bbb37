"""How many served calls may be starting at once.

Starting a call is the CPU-heavy part of it (planning, counting tokens, reserving budget,
litellm building and sending the request): ~100 ms of Python each. When a few hundred requests
arrive together, a few hundred worker threads start at once and the event loop that writes every
stream's events and ``: ping``s waits behind them for the GIL, for seconds (bench B9). The gate
lets ``LLM_MAGIC_SERVE_STARTING`` (default 4) calls start at a time; the others wait, costing
nothing, while their streams are already open and receive their pings. A call has started when
its first piece arrives or it ends; one whose provider is slow to answer stops counting after
``stale_s``, so a silent provider never holds the others back for longer than that.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["StartGate", "starting_limit"]

STARTING = 4
STALE_S = 0.25


def starting_limit() -> int:
    """``LLM_MAGIC_SERVE_STARTING`` (a whole number ≥ 1), else :data:`STARTING`."""
    raw = os.environ.get("LLM_MAGIC_SERVE_STARTING", "").strip()
    return max(1, int(raw)) if raw.isdigit() else STARTING


class StartGate:
    """At most ``limit`` holders at once, a holder older than ``stale_s`` not counted."""

    def __init__(self, limit: int, stale_s: float = STALE_S) -> None:
        self.limit = limit
        self.stale_s = stale_s
        self._cond = threading.Condition()
        self._since: dict[int, float] = {}  # holder → when it entered
        self._next = 0

    def enter(self) -> int:
        """Wait for a place; returns the holder's ticket for :meth:`leave`."""
        with self._cond:
            while True:
                now = time.monotonic()
                live = [t for t in self._since.values() if now - t < self.stale_s]
                if len(live) < self.limit:
                    break
                self._cond.wait(timeout=self.stale_s - (now - min(live)) + 0.01)
            self._next += 1
            self._since[self._next] = time.monotonic()
            return self._next

    def leave(self, ticket: int) -> None:
        """Give the place back (again: nothing)."""
        with self._cond:
            if self._since.pop(ticket, None) is not None:
                self._cond.notify()

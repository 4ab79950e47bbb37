"""Turns: how many served calls' threads run Python at once.

Every served answer is read by a worker thread (:mod:`llm_magic.web.chat`) while one event loop
writes every stream's events and ``: ping``s. CPython hands its lock (the GIL) to one waiting
thread at a time: with 200 streams whose chunks arrive together, 200 threads want it, and the
loop, which gives it up at each socket write, waits behind all of them after each one. Bench B9
measured the loop seconds late (heartbeats 6× their period), with the process using half a core.

A served call runs only while it holds a *turn* (``LLM_MAGIC_SERVE_TURNS``, default 1, in the
whole process): it takes one when it starts and gives it back whenever it would wait for its
provider's socket (connecting, or reading a chunk that has not arrived), through the network
backend :func:`backend` installs under litellm's HTTP clients
(:func:`llm_magic.gateway.allow_connections`). The other calls wait for a turn in a queue,
asleep, first come first served; the loop competes with at most that many threads. A call that
holds its turn while waiting for something else (a retry's back-off, the local model's stream,
a locked ledger) stops counting after ``stale_s``: no call waits long behind a blocked one.

The loop goes first: while a server runs, its loop ticks every ``TICK_S`` (:func:`pulse`);
a call taking its turn while the loop has not ticked for ``LATE_S`` waits for the next tick
(at most ``LATE_S``), so the loop's backlog (a burst of requests to answer) is not shared with
the calls' own work.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import select
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any

__all__ = ["Turns", "TURNS", "turns_limit", "backend", "pulse"]

LIMIT = 1
STALE_S = 0.05
SLICE_S = 0.01  # a call reading chunks that are already there yields its turn after this
TICK_S = 0.01
LATE_S = 0.02


def turns_limit() -> int:
    """``LLM_MAGIC_SERVE_TURNS`` (a whole number ≥ 1), else :data:`LIMIT`."""
    raw = os.environ.get("LLM_MAGIC_SERVE_TURNS", "").strip()
    return max(1, int(raw)) if raw.isdigit() else LIMIT


class _Waiter:
    __slots__ = ("woken", "ticket")

    def __init__(self) -> None:
        self.woken = threading.Event()
        self.ticket = 0


class Turns:
    """At most ``limit`` threads hold a turn, a holder older than ``stale_s`` not counted;
    waiters are served in order. A thread holds at most one turn (:meth:`held`)."""

    def __init__(self, limit: int, stale_s: float = STALE_S) -> None:
        self.limit = limit
        self.stale_s = stale_s
        self._lock = threading.Lock()
        self._since: dict[int, float] = {}  # ticket → when its holder took it
        self._queue: deque[_Waiter] = deque()
        self._head: _Waiter | None = None  # the waiter last told it is first
        self._next = 0
        self._mine = threading.local()  # this thread's ticket (0: none)
        self.loop_seen = 0.0  # the serving loop's last tick (time.monotonic(); 0: no loop)
        self._ticked = threading.Event()

    def tick(self) -> None:
        """The serving loop is running (called by it every ``TICK_S``)."""
        self.loop_seen = time.monotonic()
        self._ticked.set()

    def _after_the_loop(self) -> None:
        """When the loop has not ticked for ``LATE_S``, wait (that long at most) until it has."""
        seen = self.loop_seen
        if seen and time.monotonic() - seen > LATE_S:
            self._ticked.clear()
            if self.loop_seen == seen:
                self._ticked.wait(LATE_S)

    def holding(self) -> bool:
        return bool(getattr(self._mine, "ticket", 0))

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold a turn within (nothing more when this thread holds one already)."""
        if self.holding():
            yield
            return
        self._take()
        try:
            yield
        finally:
            self._give()

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Give this thread's turn back while it waits within (nothing when it holds none)."""
        if not self.holding():
            yield
            return
        self._give()
        try:
            yield
        finally:
            self._take()

    def pause(self) -> None:
        """Between two pieces of work: when others wait and this thread has held its turn for
        ``SLICE_S``, let them go first (an answer whose chunks are all there would otherwise be
        read to its end before the next call is even set up)."""
        ticket = getattr(self._mine, "ticket", 0)
        since = self._since.get(ticket) if ticket and self._queue else None
        if since is not None and time.monotonic() - since >= SLICE_S:
            self._give()
            self._take()

    # -- under self._lock --------------------------------------------------------------------
    def _grant(self, now: float) -> int:
        self._next += 1
        self._since[self._next] = now
        return self._next

    def _live(self, now: float) -> list[float]:
        return [t for t in self._since.values() if now - t < self.stale_s]

    def _admit(self) -> None:
        """Give free turns to the first waiters; wake the new first one so it watches for a
        stale holder."""
        now = time.monotonic()
        free = self.limit - len(self._live(now))
        while self._queue and free > 0:
            waiter = self._queue.popleft()
            waiter.ticket = self._grant(now)
            waiter.woken.set()
            free -= 1
        head = self._queue[0] if self._queue else None
        if head is not None and head is not self._head:
            head.woken.set()
        self._head = head

    # -- taking and giving -------------------------------------------------------------------
    def _take(self) -> None:
        self._wait_turn()
        self._after_the_loop()

    def _wait_turn(self) -> None:
        with self._lock:
            now = time.monotonic()
            if not self._queue and len(self._live(now)) < self.limit:
                self._mine.ticket = self._grant(now)
                return
            waiter = _Waiter()
            self._queue.append(waiter)
            self._admit()
        while True:
            with self._lock:
                if waiter.ticket:
                    break
                waiter.woken.clear()
                timeout = None
                if self._queue and self._queue[0] is waiter:  # first: watch the oldest holder
                    live = self._live(time.monotonic())
                    timeout = min(live) + self.stale_s - time.monotonic() if live else 0.0
            waiter.woken.wait(None if timeout is None else max(timeout, 0.0) + 0.001)
            with self._lock:
                if not waiter.ticket:
                    self._admit()
        self._mine.ticket = waiter.ticket

    def _give(self) -> None:
        ticket = getattr(self._mine, "ticket", 0)
        self._mine.ticket = 0
        with self._lock:
            self._since.pop(ticket, None)
            if self._queue:
                self._admit()


TURNS = Turns(turns_limit())


@contextlib.asynccontextmanager
async def pulse(turns: Turns = TURNS) -> AsyncIterator[None]:
    """While within (on the serving loop): tick ``turns`` every ``TICK_S``."""

    async def beat() -> None:
        while True:
            turns.tick()
            await asyncio.sleep(TICK_S)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        turns.loop_seen = 0.0


# -- the network side: a call waiting for its provider's socket gives its turn back -----------
def _ready(stream: Any) -> bool:
    """Whether a read of ``stream`` would return at once (data or EOF waiting)."""
    sock = stream.get_extra_info("socket")
    if sock is None:
        return False
    pending = getattr(sock, "pending", None)  # TLS: bytes decrypted already
    if pending is not None and pending():
        return True
    try:
        poll = select.poll()
        poll.register(sock.fileno(), select.POLLIN)
        return bool(poll.poll(0))
    except (OSError, ValueError):
        return False


@functools.cache
def backend(turns: Turns = TURNS) -> Any:
    """An httpcore network backend (the synchronous one underneath) whose connections give the
    calling thread's turn back while they connect or wait for data (one per ``turns``)."""
    import httpcore

    class _Stream(httpcore.NetworkStream):
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            if not turns.holding() or _ready(self._inner):
                return bytes(self._inner.read(max_bytes, timeout))
            with turns.released():
                return bytes(self._inner.read(max_bytes, timeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._inner.write(buffer, timeout)

        def close(self) -> None:
            self._inner.close()

        def start_tls(self, *args: Any, **kwargs: Any) -> Any:
            with turns.released():
                return _Stream(self._inner.start_tls(*args, **kwargs))

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    class _Backend(httpcore.NetworkBackend):
        def __init__(self) -> None:
            self._inner = httpcore.SyncBackend()

        def connect_tcp(self, *args: Any, **kwargs: Any) -> Any:
            with turns.released():
                return _Stream(self._inner.connect_tcp(*args, **kwargs))

        def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
            with turns.released():
                return _Stream(self._inner.connect_unix_socket(*args, **kwargs))

        def sleep(self, seconds: float) -> None:
            with turns.released():
                self._inner.sleep(seconds)

    return _Backend()

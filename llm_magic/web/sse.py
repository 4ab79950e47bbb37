"""Server-sent events as bytes, and the bounded per-stream replay buffer they are kept in.

:class:`Replay` holds one answer's events (``id: <sid>:<n>``) while a worker thread adds them;
any number of readers :meth:`Replay.follow` it from an event id on, with a ``: ping`` comment
each ``heartbeat_s`` while nothing arrives. It keeps at most ``max_events`` events and
``max_bytes`` bytes (the oldest go first); :class:`Streams` forgets it ``replay_s`` seconds after
the call ended.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["PING", "DONE", "frame", "Replay", "Streams"]

PING = b": ping\n\n"
DONE = "[DONE]"
MAX_EVENTS = 20_000  # per stream: an answer of ~20k deltas fits
MAX_BYTES = 4 << 20  # per stream


def frame(event_id: str, data: Any, event: str | None = None) -> bytes:
    """One SSE event: ``id:``, ``event:`` (when named) and one ``data:`` line (JSON, or the
    literal ``[DONE]``)."""
    payload = data if data == DONE else json.dumps(data, ensure_ascii=False)
    head = f"id: {event_id}\n" + (f"event: {event}\n" if event else "")
    return f"{head}data: {payload}\n\n".encode()


class Replay:
    """One stream's events, numbered from 0, kept for readers that come (back) later."""

    def __init__(self, sid: str, *, max_events: int = MAX_EVENTS, max_bytes: int = MAX_BYTES):
        self.sid = sid
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.ended_at: float | None = None  # time.monotonic() when the last event was added
        self._lock = threading.Lock()
        self._events: deque[tuple[int, bytes]] = deque()
        self._bytes = 0
        self._next = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def add(self, data: Any, event: str | None = None) -> int:
        """Keep one event (from any thread) and wake the readers; returns its number."""
        with self._lock:
            n = self._next
            self._next += 1
            raw = frame(f"{self.sid}:{n}", data, event)
            self._events.append((n, raw))
            self._bytes += len(raw)
            while len(self._events) > 1 and (
                len(self._events) > self.max_events or self._bytes > self.max_bytes
            ):
                self._bytes -= len(self._events.popleft()[1])
        self._wake()
        return n

    def close(self) -> None:
        """No more events: readers end once they have read them all."""
        with self._lock:
            self.ended_at = time.monotonic()
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, ready in waiters:
            try:
                loop.call_soon_threadsafe(ready.set)
            except RuntimeError:  # that reader's loop is gone
                pass

    @property
    def done(self) -> bool:
        return self.ended_at is not None

    def kept_from(self) -> int:
        """The number of the oldest event still kept (the next one when none is)."""
        with self._lock:
            return self._events[0][0] if self._events else self._next

    def since(self, after: int) -> tuple[list[tuple[int, bytes]], bool]:
        """The kept events numbered above ``after``, and whether the stream has ended."""
        with self._lock:
            return [e for e in self._events if e[0] > after], self.ended_at is not None

    def _quiet(self, after: int) -> bool:
        """Nothing after event ``after`` yet, and the stream goes on."""
        with self._lock:
            return self._next - 1 <= after and self.ended_at is None

    async def follow(self, after: int, heartbeat_s: float) -> AsyncIterator[bytes]:
        """The events after number ``after``, then the live ones until the stream ends; a
        ``: ping`` each ``heartbeat_s`` seconds while nothing arrives."""
        ready = asyncio.Event()
        loop = asyncio.get_running_loop()
        key = (loop, ready)
        with self._lock:
            self._waiters.add(key)
        try:
            while True:
                ready.clear()
                events, done = self.since(after)
                for n, raw in events:
                    after = n
                    yield raw
                if done:
                    return
                if events:
                    continue
                # a timer that wakes this reader as an event would (no task per wait, as
                # wait_for makes: 200 readers wait twice a second each)
                timer = loop.call_later(heartbeat_s, ready.set)
                try:
                    await ready.wait()
                finally:
                    timer.cancel()
                if self._quiet(after):
                    yield PING
        finally:
            with self._lock:
                self._waiters.discard(key)


class Streams:
    """The server's streams by id, each kept ``replay_s`` seconds after its call ended."""

    def __init__(self, replay_s: float) -> None:
        self.replay_s = replay_s
        self.served = 0  # streams started since the server started
        self._lock = threading.Lock()
        self._items: dict[str, Any] = {}

    def add(self, sid: str, item: Any) -> None:
        self.purge()
        with self._lock:
            self._items[sid] = item
            self.served += 1

    def get(self, sid: str) -> Any | None:
        self.purge()
        with self._lock:
            return self._items.get(sid)

    def purge(self) -> None:
        """Forget the streams whose call ended more than ``replay_s`` seconds ago."""
        now = time.monotonic()
        with self._lock:
            old = [
                sid
                for sid, item in self._items.items()
                if item.replay.ended_at is not None and now - item.replay.ended_at > self.replay_s
            ]
            for sid in old:
                del self._items[sid]

    @property
    def open(self) -> int:
        """Streams whose call is still running."""
        with self._lock:
            return sum(1 for item in self._items.values() if not item.replay.done)

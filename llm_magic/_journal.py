"""The pending-rows journal: ledger rows that could not be written when their call finished
(ledger locked by another process beyond the wait, disk full, file unwritable).

Append-only JSON lines, one row per line, each written in one ``write`` and fsynced before the
call returns. Rows are keyed by ``call_id`` and the ledger ignores a ``call_id`` it already has,
so replaying a journal twice (or after a crash between the ledger's commit and the truncation
here) adds nothing. Appends and replays take an exclusive ``flock`` on the journal, so a row
appended by another thread or process while a replay runs is never truncated away.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: appends are still atomic, replays unlocked
    fcntl = None  # type: ignore[assignment]


class Journal:
    """One ledger's journal file (created on the first row it keeps)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    @contextlib.contextmanager
    def _locked(self, flags: int) -> Iterator[int]:
        fd = os.open(self.path, flags, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the flock

    def append(self, values: dict[str, Any]) -> None:
        """Keep one row durably (raises ``OSError`` when even that is impossible)."""
        line = (json.dumps(values, sort_keys=True, default=str) + "\n").encode()
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(os.O_WRONLY | os.O_APPEND | os.O_CREAT) as fd:
            os.write(fd, line)
            os.fsync(fd)
        if new:  # the file's name must survive a crash too
            with contextlib.suppress(OSError):
                dfd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def rows(self) -> list[dict[str, Any]]:
        """The rows kept (a torn last line, from a crash mid-append, is skipped)."""
        if not self._size():
            return []
        out = []
        for raw in self.path.read_bytes().splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(raw)
                if isinstance(row, dict) and row.get("call_id"):
                    out.append(row)
        return out

    def pending(self) -> int:
        return len(self.rows())

    def replay(self, write: Callable[[list[dict[str, Any]]], None]) -> int:
        """Hand every kept row to ``write`` (one transaction, idempotent), then empty the
        journal. If ``write`` raises, the journal is left as it was. Returns rows replayed."""
        if not self._size():
            return 0
        with self._locked(os.O_RDWR) as fd:
            data = b""
            while chunk := os.read(fd, 1 << 20):
                data += chunk
            rows = []
            for raw in data.splitlines():
                with contextlib.suppress(ValueError):
                    row = json.loads(raw)
                    if isinstance(row, dict) and row.get("call_id"):
                        rows.append(row)
            if rows:
                write(rows)
            os.ftruncate(fd, 0)
            os.fsync(fd)
        return len(rows)

    def cost_on(self, now: datetime) -> float:
        """The known cost of the rows waiting here that started on ``now``'s day (UTC) or
        later: spend all the same, for the daily budget."""
        today = now.date().isoformat()
        total = 0.0
        for r in self.rows():
            cost = r.get("cost_usd")
            if isinstance(cost, (int, float)) and str(r.get("ts_start") or "") >= today:
                total += float(cost)
        return total


def journal_path(url: str, path: Path | str) -> Path:
    """Beside an SQLite ledger; in the user data folder for a server ledger."""
    if isinstance(path, Path):
        return path.with_name(path.name + ".pending.jsonl")
    import hashlib

    from .config import default_ledger_path

    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return default_ledger_path().with_name(f"pending-{digest}.jsonl")

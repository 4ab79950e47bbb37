"""The ledger's SQL plumbing: engines, URLs, the tables as queries see them, and database
errors said as one sentence naming the fix.

The tables here are the *current* schema, for queries; they never create anything: tables are
made only by the frozen migrations in :mod:`llm_magic._migrations`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LedgerBusy, LedgerError, LedgerUnavailable, UsageProblem
from .record import COLUMNS, NAMES, STATUSES

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = [
    "tables",
    "dialect_insert",
    "to_url",
    "wait_s",
    "problem",
    "check_sqlite_path",
    "make_engine",
    "row_values",
]

_schema: dict[str, Any] = {}


def tables() -> dict[str, Any]:
    """The tables as queries see them, the calls table from :data:`~llm_magic.record.COLUMNS`
    (built on first use: importing this module stays cheap). Never used to create a table."""
    if _schema:
        return _schema
    from sqlalchemy import Column, Float, Integer, MetaData, Table, Text

    kinds = {"text": Text, "int": Integer, "float": Float}
    meta = MetaData()
    cols = [
        Column(
            n, kinds[t](), primary_key=(n == "call_id"), nullable=n not in ("trace_id", "status")
        )
        for n, t in COLUMNS
    ]
    _schema["calls"] = Table("calls", meta, *cols)
    _schema["prices"] = Table(
        "prices",
        meta,
        Column("model", Text, primary_key=True),
        Column("input_per_1m", Float, nullable=False),
        Column("output_per_1m", Float, nullable=False),
        Column("set_at", Text, nullable=False),
    )
    _schema["aliases"] = Table(
        "aliases",
        meta,
        Column("name", Text, primary_key=True),
        Column("model", Text, nullable=False),
    )
    _schema["reservations"] = Table(
        "reservations",
        meta,
        Column("call_id", Text, primary_key=True),
        Column("model", Text),
        Column("amount_usd", Float, nullable=False),
        Column("created_at", Text, nullable=False),
        Column("expires_at", Text, nullable=False),
        Column("host", Text),
        Column("pid", Integer),
    )
    _schema["migrations"] = Table(
        "_migrations",
        meta,
        Column("name", Text, primary_key=True),
        Column("applied_at", Text),
    )
    return _schema


def to_url(spec: str) -> str:
    """A path, ``sqlite:///path`` or any SQLAlchemy URL → an SQLAlchemy URL."""
    if "://" in spec:
        return spec
    return f"sqlite:///{Path(spec).expanduser()}"


def wait_s() -> float:
    """How long a write waits for a ledger locked by another process (LLM_MAGIC_LEDGER_WAIT_S,
    default 5 s) before it says so; the row then goes to the journal."""
    raw = os.environ.get("LLM_MAGIC_LEDGER_WAIT_S", "").strip()
    if not raw:
        return 5.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise UsageProblem(
            f"LLM_MAGIC_LEDGER_WAIT_S={raw!r}: give seconds to wait for a busy ledger, e.g. 5"
        )
    return value


def problem(exc: BaseException, where: object) -> LedgerError:
    """A database error as one sentence naming the fix (SQLite's result code decides)."""
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    low = text.lower()
    if primary in (5, 6) or "database is locked" in low or "lock timeout" in low:
        return LedgerBusy(
            f"The ledger {where} is locked by another process (waited {wait_s():g} s): let the "
            "other notebook or script finish its write (or stop it), or raise "
            "LLM_MAGIC_LEDGER_WAIT_S"
        )
    if primary == 13 or "disk is full" in low or "no space" in low:
        return LedgerUnavailable(
            f"The ledger {where} cannot grow: the disk is full ({text}); free some space, or set "
            "LLM_MAGIC_LEDGER to a file on another disk"
        )
    if primary == 8:
        return LedgerUnavailable(
            f"The ledger {where} is read-only ({text}): make the file and its folder writable, "
            "or set LLM_MAGIC_LEDGER to a writable file"
        )
    if primary == 14:
        return LedgerUnavailable(
            f"The ledger {where} cannot be opened ({text}): set LLM_MAGIC_LEDGER to a file in a "
            "folder you can write"
        )
    if primary in (11, 26):
        return LedgerError(
            f"{where} is not a readable llm_magic ledger ({text}); it was left untouched: move "
            "it aside or set LLM_MAGIC_LEDGER to another file"
        )
    if primary is not None:
        return LedgerUnavailable(
            f"The ledger {where} cannot be written ({text}): check the disk, or set "
            "LLM_MAGIC_LEDGER to another file"
        )
    return LedgerUnavailable(
        f"Cannot reach the ledger at {where} ({text}): check the server, or set LLM_MAGIC_LEDGER"
    )


def check_sqlite_path(path: Path) -> None:
    """A path SQLite could not use, said in one sentence before SQLite says it worse."""
    fix = "set LLM_MAGIC_LEDGER to a file in a folder you can write"
    if path.is_dir():
        raise LedgerError(
            f"The ledger path {path} is a folder: {fix}, e.g. {path / 'ledger.sqlite'}"
        )
    for up in path.parents:
        if up.exists():
            if not up.is_dir():
                raise LedgerError(
                    f"Cannot create the ledger {path}: {up} is a file, not a folder; {fix}"
                )
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LedgerError(
            f"Cannot create the ledger's folder {path.parent} ({exc.strerror}): {fix}"
        ) from None
    if not path.exists() and not os.access(path.parent, os.W_OK):
        raise LedgerError(f"Cannot create the ledger {path}: {path.parent} is not writable; {fix}")


def make_engine(url: str) -> Engine:
    from sqlalchemy import create_engine, event

    if url.startswith("sqlite"):
        path = url.split("sqlite:///", 1)[-1]
        if path and path != ":memory:":
            check_sqlite_path(Path(path))
        wait = wait_s()
        engine = create_engine(url, connect_args={"timeout": wait, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi: Any, _record: Any) -> None:
            dbapi.isolation_level = None  # we say BEGIN ourselves (pysqlite's own is unsafe)
            cur = dbapi.cursor()
            cur.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            # 16 MiB of page cache (SQLite's default is 2 MiB), taken only as pages are read:
            # a re-run's 10,000 rows update seven indexes, one of them on random call ids
            cur.execute("PRAGMA cache_size = -16384")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            immediate = conn.get_execution_options().get("immediate")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    try:
        return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)
    except ImportError as exc:
        raise UsageProblem(
            f"LLM_MAGIC_LEDGER needs a database driver ({exc.name}): pip install 'llm_magic[team]'"
        ) from None
    except Exception as exc:
        raise UsageProblem(f"LLM_MAGIC_LEDGER is not a database URL I can use: {exc}") from None


def dialect_insert(dialect: str, table: Any) -> Any:
    """An INSERT that knows ``ON CONFLICT`` on this engine."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


_PLAIN = (str, int, bool)  # stored as they are (the common case, checked first)
_JSON_COLUMNS = frozenset(("tags", "tool_calls"))
_NAME_SET = frozenset(NAMES)


def row_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as the calls table takes it: every column, dates as ISO 8601 UTC, tags and tool calls as JSON,
    NaN as NULL, numpy scalars as Python ones. ``ValueError`` for unknown columns or status."""
    if not _NAME_SET.issuperset(row):
        raise ValueError(f"unknown ledger columns: {sorted(set(row) - _NAME_SET)}")
    if row.get("status") not in STATUSES:
        raise ValueError(f"bad status {row.get('status')!r}")
    get = row.get
    values: dict[str, Any] = {}
    for name in NAMES:  # an experiment's re-run writes 10,000 rows: the plain cases go first
        v = get(name)
        if v is None or type(v) in _PLAIN:
            values[name] = v
        elif type(v) is float:
            values[name] = None if v != v else v  # NaN is stored as NULL and read back as NaN
        else:
            values[name] = _converted(name, v)
    return values


def _converted(name: str, v: Any) -> Any:
    if name in _JSON_COLUMNS:
        return json.dumps(v, sort_keys=True)
    if isinstance(v, datetime):
        return v.astimezone(timezone.utc).isoformat()
    if hasattr(v, "item"):  # numpy scalars
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v

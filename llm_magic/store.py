"""The ledger store: one row per call (failures, refusals and interruptions included).

SQLite (WAL) by default, PostgreSQL for a team (``LLM_MAGIC_LEDGER=postgresql+psycopg://…``),
both through SQLAlchemy Core with the same schema and the same migrations, recorded in
``_migrations``. A ledger written by a newer llm_magic, or a file that is not a ledger, is
refused with a clear error and never touched. Writes are idempotent (``call_id`` is unique), so
a retried write never duplicates a row. pandas is imported only when a DataFrame is asked for.

One SQLite library per file per process: this process reads and writes an SQLite ledger through
Python's ``sqlite3`` only. A big ledger is loaded by ADBC's SQLite driver in a child process
(:mod:`llm_magic._arrow_child`), never in this one (two SQLite libraries on one file in one
process corrupt it). A row that cannot be written when its call ends (ledger locked by another
process beyond ``LLM_MAGIC_LEDGER_WAIT_S``, disk full) goes to a durable journal
(:mod:`llm_magic._journal`) and into the ledger on the next successful write or open.
"""

from __future__ import annotations

import json
import math
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._journal import Journal
from .errors import LedgerBusy, LedgerError, LedgerUnavailable, UsageProblem

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Connection, Engine

__all__ = ["Ledger", "LedgerWarning", "COLUMNS", "ledger", "open_ledger", "utcnow"]

# (name, type) in the SPEC's order; types are SQLAlchemy's generic ones (see _tables).
COLUMNS: list[tuple[str, str]] = [
    ("call_id", "text"),
    ("trace_id", "text"),
    ("ts_start", "text"),  # ISO 8601 UTC: sorts as time, on every engine
    ("ts_end", "text"),
    ("requested_model", "text"),
    ("model", "text"),
    ("provider", "text"),
    ("fallback_from", "text"),
    ("attempts", "int"),
    ("status", "text"),
    ("error_type", "text"),
    ("http_status", "int"),
    ("input_tokens", "int"),
    ("output_tokens", "int"),
    ("usage_source", "text"),
    ("cost_usd", "float"),  # NULL ⇔ no known price (NaN in pandas), never a silent 0
    ("price_source", "text"),
    ("latency_s", "float"),
    ("ttft_s", "float"),
    ("output_tps", "float"),
    ("max_tokens", "int"),
    ("temperature", "float"),
    ("agent", "text"),
    ("user", "text"),
    ("tags", "text"),
    ("chat", "text"),
    ("execution_count", "int"),
    ("key_alias", "text"),
    ("prompt", "text"),
    ("response", "text"),
    ("error_message", "text"),
    ("finish_reason", "text"),  # as the provider reported it: stop, length, tool_calls, …
    ("setup_s", "float"),  # seconds waited before the request could be sent (import, start-up)
]
NAMES = [name for name, _ in COLUMNS]
STATUSES = ("ok", "error", "interrupted", "refused_budget", "refused_context")
GROUPS = ("model", "agent", "user", "day", "status", "provider", "chat")

_schema: dict[str, Any] = {}


def _tables() -> dict[str, Any]:
    """The SQLAlchemy tables (built on first use: importing this module stays cheap)."""
    if _schema:
        return _schema
    from sqlalchemy import Column, Float, Index, Integer, MetaData, Table, Text

    kinds = {"text": Text, "int": Integer, "float": Float}
    meta = MetaData()
    cols = [
        Column(
            n, kinds[t](), primary_key=(n == "call_id"), nullable=n not in ("trace_id", "status")
        )
        for n, t in COLUMNS
    ]
    _schema["calls"] = Table(
        "calls",
        meta,
        *cols,
        Index("calls_ts_start", "ts_start"),
        Index("calls_trace", "trace_id"),
    )
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
    _schema["reservations"] = Table(  # created by m005, literally (see _m005_reservations)
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


# The calls table as schema 1 made it, written out: a released migration never changes, so a
# column added to COLUMNS later reaches old and new ledgers alike through its own migration.
_M001_COLUMNS: list[tuple[str, str]] = [
    ("call_id", "text"), ("trace_id", "text"), ("ts_start", "text"), ("ts_end", "text"),
    ("requested_model", "text"), ("model", "text"), ("provider", "text"),
    ("fallback_from", "text"), ("attempts", "int"), ("status", "text"), ("error_type", "text"),
    ("http_status", "int"), ("input_tokens", "int"), ("output_tokens", "int"),
    ("usage_source", "text"), ("cost_usd", "float"), ("price_source", "text"),
    ("latency_s", "float"), ("ttft_s", "float"), ("output_tps", "float"), ("max_tokens", "int"),
    ("temperature", "float"), ("agent", "text"), ("user", "text"), ("tags", "text"),
    ("chat", "text"), ("execution_count", "int"), ("key_alias", "text"), ("prompt", "text"),
    ("response", "text"), ("error_message", "text"),
]  # fmt: skip


def _m001_calls(conn: Connection) -> None:
    # The calls table as of schema 1 (with its indexes), from its own column list above. A
    # later column goes in a later migration (ALTER TABLE … ADD COLUMN), never here.
    from sqlalchemy import Column, Float, Index, Integer, MetaData, Table, Text

    kinds = {"text": Text, "int": Integer, "float": Float}
    cols = [
        Column(
            n, kinds[t](), primary_key=(n == "call_id"), nullable=n not in ("trace_id", "status")
        )
        for n, t in _M001_COLUMNS
    ]
    Table(
        "calls",
        MetaData(),
        *cols,
        Index("calls_ts_start", "ts_start"),
        Index("calls_trace", "trace_id"),
    ).create(conn)


def _m002_prices_aliases(conn: Connection) -> None:
    _tables()["prices"].create(conn)
    _tables()["aliases"].create(conn)


# The columns ``summary()`` reads, in one covering index: its scans read this narrow copy
# (~120 bytes a row) instead of every row's prompt and response text (~1 KB).
SUMMARY_INDEX_COLUMNS = (
    "status", "ts_start", "model", "provider", "agent", "user", "chat",
    "input_tokens", "output_tokens", "cost_usd", "latency_s", "ttft_s",
)  # fmt: skip


def _m003_summary_index(conn: Connection) -> None:
    from sqlalchemy import text

    cols = ", ".join(f'"{c}"' for c in SUMMARY_INDEX_COLUMNS)
    conn.execute(text(f"CREATE INDEX IF NOT EXISTS calls_summary ON calls ({cols})"))


def _m004_finish_setup(conn: Connection) -> None:
    # Why an answer stopped (``length`` = cut at max_tokens) and the set-up a call waited for
    # before it could be sent (importing litellm, starting the local model).
    from sqlalchemy import text

    conn.execute(text("ALTER TABLE calls ADD COLUMN finish_reason TEXT"))
    conn.execute(text("ALTER TABLE calls ADD COLUMN setup_s FLOAT"))


def _m005_reservations(conn: Connection) -> None:
    # Budget reservations: the worst-case cost of each call in flight, visible to every process
    # (budget.reserve). A row lives from just before sending until the call's ledger row is
    # written (same transaction), or until it expires (a killed process).
    from sqlalchemy import text

    conn.execute(
        text(
            "CREATE TABLE reservations ("
            "call_id TEXT PRIMARY KEY, model TEXT, amount_usd DOUBLE PRECISION NOT NULL, "
            "created_at TEXT NOT NULL, expires_at TEXT NOT NULL, host TEXT, pid INTEGER)"
        )
    )


MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("m001_calls", _m001_calls),
    ("m002_prices_aliases", _m002_prices_aliases),
    ("m003_summary_index", _m003_summary_index),
    ("m004_finish_setup", _m004_finish_setup),
    ("m005_reservations", _m005_reservations),
]

_TEXT_COLUMNS = {name for name, kind in COLUMNS if kind == "text"}
_INT_COLUMNS = [name for name, kind in COLUMNS if kind == "int"]
_ROWS_PER_READER = 100_000  # a big SQLite ledger is read by parallel readers of this many rows


_CHILD_READ_ROWS = 50_000  # from this many rows, .df and summary() read in a child process


class _ChildReader:
    """The child process that reads big SQLite ledgers through ADBC (C, straight into Arrow
    columns: several times faster than ``pandas.read_sql``; see :mod:`llm_magic._arrow_child`
    for why not in this process). Started on first use and kept for the process's next reads;
    one read at a time. Columns named in ``columns`` get the ledger's declared types: SQLite's
    values carry none, and an all-NULL part would otherwise come back as integers."""

    def __init__(self) -> None:
        self.proc: Any = None
        self.lock = threading.Lock()

    def _started(self) -> Any:
        import subprocess
        import sys

        if self.proc is None or self.proc.poll() is not None:
            script = Path(__file__).with_name("_arrow_child.py")
            self.proc = subprocess.Popen(
                [sys.executable, str(script)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        return self.proc

    def submit(
        self, path: Path, queries: list[str], columns: list[str] | None = None
    ) -> Callable[[], Any]:
        """Send the read now; the function returned waits for its Arrow table (and raises
        ``RuntimeError`` if the child failed). Call it exactly once: the child is held until."""
        job = {"path": str(path), "queries": queries, "types": dict(COLUMNS), "columns": columns}
        self.lock.acquire()
        try:
            proc = self._started()
            proc.stdin.write(json.dumps(job).encode() + b"\n")
            proc.stdin.flush()
        except BaseException:
            self._stop()
            self.lock.release()
            raise
        state: dict[str, Any] = {}

        def result() -> Any:
            if not state:
                import pyarrow as pa

                try:
                    status = proc.stdout.readline()
                    if status.startswith(b"ok"):
                        state["table"] = pa.ipc.open_stream(proc.stdout).read_all()
                    elif status.startswith(b"error "):
                        state["error"] = RuntimeError(json.loads(status[6:]))
                    else:
                        self._stop()  # died, or out of step: the next read starts a fresh one
                        state["error"] = RuntimeError("the ledger reader process stopped")
                except BaseException as exc:  # e.g. interrupted mid-read: out of step
                    self._stop()
                    state["error"] = exc
                finally:
                    self.lock.release()
            if "error" in state:
                raise state["error"]
            return state["table"]

        return result

    def _stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


_reader = _ChildReader()


def _time_ranges(path: Path) -> list[str]:
    """WHERE clauses splitting the calls into consecutive ``ts_start`` ranges of about equal
    size, one per core for a big ledger: each part, read in ``ts_start`` order through its
    index, continues the previous one, so the parts joined are in order with no sort."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=_wait_s())) as db:
        n = int(db.execute("SELECT count(*) FROM calls").fetchone()[0])
        parts = max(1, min(os.cpu_count() or 1, n // _ROWS_PER_READER))
        bounds = [
            db.execute(
                "SELECT ts_start FROM calls ORDER BY ts_start LIMIT 1 OFFSET ?", (n * i // parts,)
            ).fetchone()[0]
            for i in range(1, parts)
        ]
    bounds = sorted({b for b in bounds if b is not None})
    if not bounds:
        return ["1"]

    def q(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    wheres = [f"(ts_start < {q(bounds[0])} OR ts_start IS NULL)"]
    wheres += [
        f"ts_start >= {q(a)} AND ts_start < {q(b)}"
        for a, b in zip(bounds, bounds[1:], strict=False)
    ]
    wheres.append(f"ts_start >= {q(bounds[-1])}")
    return wheres


def _url(spec: str) -> str:
    """A path, ``sqlite:///path`` or any SQLAlchemy URL → an SQLAlchemy URL."""
    if "://" in spec:
        return spec
    return f"sqlite:///{Path(spec).expanduser()}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _wait_s() -> float:
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


def _problem(exc: BaseException, where: object) -> LedgerError:
    """A database error as one sentence naming the fix (SQLite's result code decides)."""
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    low = text.lower()
    if primary in (5, 6) or "database is locked" in low or "lock timeout" in low:
        return LedgerBusy(
            f"The ledger {where} is locked by another process (waited {_wait_s():g} s): let the "
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


def _check_sqlite_path(path: Path) -> None:
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


def _engine(url: str) -> Engine:
    from sqlalchemy import create_engine, event

    if url.startswith("sqlite"):
        path = url.split("sqlite:///", 1)[-1]
        if path and path != ":memory:":
            _check_sqlite_path(Path(path))
        wait = _wait_s()
        engine = create_engine(url, connect_args={"timeout": wait, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi: Any, _record: Any) -> None:
            dbapi.isolation_level = None  # we say BEGIN ourselves (pysqlite's own is unsafe)
            cur = dbapi.cursor()
            cur.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
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


class LedgerWarning(UserWarning):
    """A call's ledger row could not be written when it finished (it waits in the journal)."""


RESERVATION_TTL_S = 900.0  # a reservation left by a killed process on another host expires


def _alive(pid: Any) -> bool:
    """Whether process ``pid`` (on this host) still runs."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True


def _journal_path(url: str, path: Path | str) -> Path:
    """Beside an SQLite ledger; in the user data folder for a server ledger."""
    if isinstance(path, Path):
        return path.with_name(path.name + ".pending.jsonl")
    import hashlib

    from .config import default_ledger_path

    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return default_ledger_path().with_name(f"pending-{digest}.jsonl")


class Ledger:
    """One ledger (an SQLite file or a PostgreSQL database). Thread- and process-safe."""

    def __init__(self, spec: str) -> None:
        from sqlalchemy import exc as sa_exc

        self.url = _url(spec)
        self._engine = _engine(self.url)
        self.dialect = self._engine.dialect.name
        if self.dialect == "sqlite":
            self.path: Path | str = Path(self.url.split("sqlite:///", 1)[-1])
        else:
            self.path = self._engine.url.render_as_string(hide_password=True)
        try:
            self._migrate()
            if self.dialect == "sqlite":
                with self._engine.connect() as conn:
                    self.journal_mode = str(conn.exec_driver_sql("PRAGMA journal_mode").scalar())
            else:
                self.journal_mode = "server"
        except sa_exc.DBAPIError as exc:
            self._engine.dispose()
            raise _problem(exc, self.path) from None
        self._insert = self._dialect_insert(_tables()["calls"]).on_conflict_do_nothing(
            index_elements=["call_id"]
        )
        self.journal = Journal(_journal_path(self.url, self.path))
        self._reserved: set[str] = set()  # reservations this process holds, settled by record
        self._reserved_lock = threading.Lock()
        self.replay_pending(quick=True)  # rows a busy ledger could not take last time

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    def _dialect_insert(self, table: Any) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(table)
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)

    # -- schema --------------------------------------------------------------------------------
    def _migrate(self) -> None:
        from sqlalchemy import inspect, select, text

        tables = _tables()
        known = {name for name, _ in MIGRATIONS}
        with self._engine.connect() as conn:  # a read first: works while another process writes
            if inspect(conn).has_table("_migrations"):
                done = set(conn.execute(select(tables["migrations"].c.name)).scalars())
                if done >= known and not done - known:
                    return
        with self._engine.connect().execution_options(immediate=True) as conn:
            with conn.begin():
                if self.dialect == "postgresql":
                    # one kernel migrates at a time; the others wait, then find it done
                    conn.execute(text("SELECT pg_advisory_xact_lock(7419001)"))
                if not inspect(conn).has_table("_migrations"):
                    tables["migrations"].create(conn)
                done = set(conn.execute(select(tables["migrations"].c.name)).scalars())
                newer = sorted(done - known)
                if newer:
                    raise LedgerError(
                        f"{self.path} was written by a newer llm_magic (schema {newer[-1]}); "
                        "upgrade llm_magic, or set LLM_MAGIC_LEDGER to another file"
                    )
                for name, step in MIGRATIONS:
                    if name not in done:
                        step(conn)
                        conn.execute(
                            tables["migrations"]
                            .insert()
                            .values(name=name, applied_at=utcnow().isoformat())
                        )

    def schema_version(self) -> list[str]:
        from sqlalchemy import select

        table = _tables()["migrations"]
        with self._engine.connect() as conn:
            return list(conn.execute(select(table.c.name).order_by(table.c.name)).scalars())

    # -- writing -------------------------------------------------------------------------------
    @staticmethod
    def _values(row: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(row) - set(NAMES)
        if unknown:
            raise ValueError(f"unknown ledger columns: {sorted(unknown)}")
        if row.get("status") not in STATUSES:
            raise ValueError(f"bad status {row.get('status')!r}")
        values: dict[str, Any] = {}
        for name in NAMES:
            v = row.get(name)
            if name == "tags" and v is not None and not isinstance(v, str):
                v = json.dumps(v, sort_keys=True)
            if isinstance(v, datetime):
                v = v.astimezone(timezone.utc).isoformat()
            if isinstance(v, float) and math.isnan(v):
                v = None  # NaN is stored as NULL and read back as NaN
            if v is not None and hasattr(v, "item"):  # numpy scalars
                v = v.item()
            values[name] = v
        return values

    def _write(
        self, values: list[dict[str, Any]], *, settle: bool = False, quick: bool = False
    ) -> None:
        """Insert rows (idempotent) and, in the same transaction, drop their budget
        reservations. ``quick``: wait at most 0.2 s for a busy SQLite ledger. Database
        failures come out as :class:`LedgerError` sentences."""
        from sqlalchemy import exc as sa_exc

        ids = [v["call_id"] for v in values]
        if not settle:
            with self._reserved_lock:
                settle = any(i in self._reserved for i in ids)
        quick = quick and self.dialect == "sqlite"
        try:
            with self._engine.connect() as conn:
                raw: Any = conn.connection.dbapi_connection if quick else None
                if raw is not None:
                    raw.execute("PRAGMA busy_timeout = 200")
                try:
                    with conn.begin():
                        conn.execute(self._insert, values)
                        if settle:
                            table = _tables()["reservations"]
                            conn.execute(table.delete().where(table.c.call_id.in_(ids)))
                finally:
                    if raw is not None:
                        raw.execute(f"PRAGMA busy_timeout = {int(_wait_s() * 1000)}")
        except sa_exc.DBAPIError as exc:
            raise _problem(exc, self.path) from None
        if settle:
            with self._reserved_lock:
                self._reserved.difference_update(ids)

    def record(self, row: Mapping[str, Any]) -> None:
        """Append one call, durably, in one transaction (all columns or nothing).

        Idempotent: writing the same ``call_id`` again changes nothing. Raises
        :class:`~llm_magic.errors.LedgerBusy` when another process holds the ledger longer
        than ``LLM_MAGIC_LEDGER_WAIT_S`` (see :meth:`keep` for a write that never fails)."""
        self._write([self._values(row)])
        self.replay_pending()

    def record_many(self, rows: list[Mapping[str, Any]]) -> None:
        """Append many calls in one transaction (idempotent per ``call_id``)."""
        if not rows:
            return
        self._write([self._values(r) for r in rows])

    def keep(self, row: Mapping[str, Any]) -> str | None:
        """Write one call's row; if the ledger cannot take it now (locked by another process
        beyond the wait, disk full, unwritable), keep it in the journal instead, to go into the
        ledger on the next successful write or open. Never raises for that: the call's answer
        was paid for. Returns the warning shown to the user (None when the row is in)."""
        values = self._values(row)
        try:
            self._write([values])
        except LedgerError as exc:
            try:
                self.journal.append(values)
            except OSError as io:
                note = (
                    f"This call is not in the ledger: {exc} It could not be kept in "
                    f"{self.journal.path} either ({io.strerror or io}): its tokens and cost are "
                    "only in this answer's footer"
                )
            else:
                note = (
                    f"Not in the ledger yet: {exc} The row is kept in {self.journal.path} "
                    f"({self.journal.pending()} pending) and goes in on the next successful write"
                )
            warnings.warn(note, LedgerWarning, stacklevel=3)
            return note
        self.replay_pending()
        return None

    def pending(self) -> int:
        """Rows waiting in the journal for a ledger that was busy or full."""
        return self.journal.pending()

    def replay_pending(self, quick: bool = False) -> int:
        """Write the journal's rows into the ledger (idempotent), then empty it. Nothing
        happens, and the rows stay, while the ledger is still busy (``quick``: try for at most
        0.2 s). Returns how many rows went in."""
        if not self.journal.path.exists() or not self.journal.path.stat().st_size:
            return 0
        fields = set(NAMES)

        def write(rows: list[dict[str, Any]]) -> None:
            self._write([{k: r.get(k) for k in fields} for r in rows], settle=True, quick=quick)

        try:
            return self.journal.replay(write)
        except (LedgerError, OSError):
            return 0

    # -- budget reservations -------------------------------------------------------------------
    def reserve(
        self, call_id: str, model: str, amount: float, budget: float
    ) -> tuple[bool, float, float]:
        """Atomically: if today's spend + open reservations + ``amount`` fit in ``budget``,
        hold ``amount`` for ``call_id`` (visible to every process) until its row is written.
        Returns (held, spent, held by others). Expired reservations, and those of dead
        processes on this host, are dropped first."""
        import socket

        from sqlalchemy import exc as sa_exc
        from sqlalchemy import func, select, text

        self.replay_pending()
        res = _tables()["reservations"]
        calls = _tables()["calls"]
        now = utcnow()
        host = socket.gethostname()
        try:
            with self._engine.connect().execution_options(immediate=True) as conn:
                with conn.begin():
                    if self.dialect == "postgresql":
                        conn.execute(text("SELECT pg_advisory_xact_lock(7419005)"))
                    conn.execute(res.delete().where(res.c.expires_at < now.isoformat()))
                    rows = conn.execute(select(res.c.call_id, res.c.host, res.c.pid)).all()
                    dead = [r.call_id for r in rows if r.host == host and not _alive(r.pid)]
                    if dead:
                        conn.execute(res.delete().where(res.c.call_id.in_(dead)))
                    spent = conn.execute(
                        select(func.coalesce(func.sum(calls.c.cost_usd), 0.0)).where(
                            calls.c.ts_start >= now.date().isoformat()
                        )
                    ).scalar()
                    held = conn.execute(
                        select(func.coalesce(func.sum(res.c.amount_usd), 0.0))
                    ).scalar()
                    spent = float(spent or 0.0) + self._journal_cost(now)
                    held = float(held or 0.0)
                    if spent + held + amount > budget * (1 + 1e-9) + 1e-12:
                        return False, spent, held
                    conn.execute(
                        res.insert().values(
                            call_id=call_id,
                            model=model,
                            amount_usd=float(amount),
                            created_at=now.isoformat(),
                            expires_at=datetime.fromtimestamp(
                                now.timestamp() + RESERVATION_TTL_S, timezone.utc
                            ).isoformat(),
                            host=host,
                            pid=os.getpid(),
                        )
                    )
        except sa_exc.DBAPIError as exc:
            raise _problem(exc, self.path) from None
        with self._reserved_lock:
            self._reserved.add(call_id)
        return True, spent, held

    def release(self, call_id: str) -> None:
        """Drop a reservation whose call will write no row (best effort: it expires anyway)."""
        from sqlalchemy import exc as sa_exc

        res = _tables()["reservations"]
        try:
            with self._engine.begin() as conn:
                conn.execute(res.delete().where(res.c.call_id == call_id))
        except sa_exc.DBAPIError:
            return
        with self._reserved_lock:
            self._reserved.discard(call_id)

    def reservations(self) -> float:
        """Dollars held by calls in flight (all processes)."""
        from sqlalchemy import func, select

        res = _tables()["reservations"]
        with self._engine.connect() as conn:
            return float(
                conn.execute(select(func.coalesce(func.sum(res.c.amount_usd), 0.0))).scalar() or 0.0
            )

    def _journal_cost(self, now: datetime) -> float:
        """Today's known cost of the rows waiting in the journal (spend all the same)."""
        today = now.date().isoformat()
        total = 0.0
        for r in self.journal.rows():
            cost = r.get("cost_usd")
            if isinstance(cost, (int, float)) and str(r.get("ts_start") or "") >= today:
                total += float(cost)
        return total

    # -- prices and aliases --------------------------------------------------------------------
    def _upsert(self, table: Any, key: str, values: dict[str, Any]) -> None:
        stmt = self._dialect_insert(table).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[key], set_={k: v for k, v in values.items() if k != key}
        )
        with self._engine.begin() as conn:
            conn.execute(stmt)

    def set_price(self, model: str, input_per_1m: float, output_per_1m: float) -> None:
        if not all(
            isinstance(p, (int, float)) and 0 <= p < math.inf for p in (input_per_1m, output_per_1m)
        ):
            raise UsageProblem(
                f"Prices for {model} must be finite dollars per 1M tokens >= 0, not "
                f"{input_per_1m!r}, {output_per_1m!r}: e.g. set_price({model!r}, 3, 15)"
            )
        self._upsert(
            _tables()["prices"],
            "model",
            {
                "model": model,
                "input_per_1m": float(input_per_1m),
                "output_per_1m": float(output_per_1m),
                "set_at": utcnow().isoformat(),
            },
        )

    def prices(self) -> dict[str, tuple[float, float]]:
        from sqlalchemy import select

        t = _tables()["prices"]
        with self._engine.connect() as conn:
            rows = conn.execute(select(t.c.model, t.c.input_per_1m, t.c.output_per_1m))
            return {m: (float(i), float(o)) for m, i, o in rows}

    def set_alias(self, name: str, model: str) -> None:
        self._upsert(_tables()["aliases"], "name", {"name": name, "model": model})

    def aliases(self) -> dict[str, str]:
        from sqlalchemy import select

        t = _tables()["aliases"]
        with self._engine.connect() as conn:
            return {n: m for n, m in conn.execute(select(t.c.name, t.c.model))}

    # -- reading -------------------------------------------------------------------------------
    def __bool__(self) -> bool:
        return True  # a ledger is a ledger even when empty (and len() is a COUNT(*))

    def _fast_sqlite(self) -> bool:
        """Whether big reads go through ADBC's SQLite driver in a child process: an SQLite
        file of at least ``_CHILD_READ_ROWS`` rows (below that, starting the child costs more
        than it saves), driver and pyarrow installed (found, not imported: this process must
        never load ADBC's SQLite)."""
        from importlib.util import find_spec

        if self.dialect != "sqlite" or not isinstance(self.path, Path) or not self.path.is_file():
            return False
        if find_spec("adbc_driver_sqlite") is None or find_spec("pyarrow") is None:
            return False
        if _CHILD_READ_ROWS <= 0:
            return True
        with self._engine.connect() as conn:  # the last rowid: O(log n), ≈ the row count
            last = conn.exec_driver_sql("SELECT max(rowid) FROM calls").scalar()
        return int(last or 0) >= _CHILD_READ_ROWS

    def _df_arrow(self) -> pd.DataFrame:
        import pandas as pd
        import pyarrow as pa
        import pyarrow.compute as pc

        assert isinstance(self.path, Path)
        cols = ", ".join(f'"{n}"' for n in NAMES)
        queries = [
            f"SELECT {cols} FROM calls WHERE {where} ORDER BY ts_start, rowid"
            for where in _time_ranges(self.path)
        ]
        table = _reader.submit(self.path, queries, NAMES)()
        utc = pa.timestamp("us", tz="UTC")
        for name in ("ts_start", "ts_end"):
            i = table.column_names.index(name)
            table = table.set_column(i, name, pc.cast(table.column(name), utc))
        tags = [json.loads(t) if t else {} for t in table.column("tags").to_pylist()]
        table = table.drop_columns(["tags"])
        ints = {pa.int64(): pd.Int64Dtype()}
        frame = table.to_pandas(types_mapper=ints.get)
        frame.insert(NAMES.index("tags"), "tags", pd.Series(tags, index=frame.index, dtype=object))
        for name in _TEXT_COLUMNS - {"tags"}:  # as read_sql gives it: an all-NULL text column
            if table.column(name).null_count == table.num_rows and table.num_rows:  # is object
                frame[name] = pd.Series(None, index=frame.index, dtype=object)
        return frame

    def __len__(self) -> int:
        from sqlalchemy import func, select

        with self._engine.connect() as conn:
            count = conn.execute(select(func.count()).select_from(_tables()["calls"])).scalar()
            return int(count or 0)

    @staticmethod
    def _typed(frame: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        for col in ("ts_start", "ts_end"):
            if col in frame:
                frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601")
        for col in ("cost_usd", "latency_s", "ttft_s", "output_tps", "temperature", "setup_s"):
            if col in frame:
                frame[col] = frame[col].astype("float64")
        for col in _INT_COLUMNS:
            if col in frame:
                frame[col] = frame[col].astype("Int64")
        if "tags" in frame:
            frame["tags"] = frame["tags"].map(
                lambda t: json.loads(t) if isinstance(t, str) and t else {}
            )
        return frame

    @property
    def df(self) -> pd.DataFrame:
        """Every call as a DataFrame (UTC timestamps, NaN where no cost is known)."""
        import pandas as pd
        from sqlalchemy import select

        if self._fast_sqlite():
            try:
                return self._df_arrow()
            except Exception:
                pass  # e.g. a timestamp Arrow cannot parse: the general path below reads it
        calls = _tables()["calls"]
        with self._engine.connect() as conn:
            frame = pd.read_sql(select(calls).order_by(calls.c.ts_start), conn)
        return self._typed(frame)

    def cost_today(self) -> float:
        """Dollars spent since midnight UTC (known costs only; rows waiting in the journal for
        a busy ledger count too)."""
        from sqlalchemy import func, select

        calls = _tables()["calls"]
        today = utcnow().date().isoformat()
        query = select(func.coalesce(func.sum(calls.c.cost_usd), 0.0)).where(
            calls.c.ts_start >= today
        )
        with self._engine.connect() as conn:
            spent = float(conn.execute(query).scalar() or 0.0)
        return spent + self._journal_cost(utcnow())

    def summary(self, by: str = "model", today: bool = False) -> pd.DataFrame:
        """Calls, tokens, cost (NaN if none known) and latency percentiles of ok calls, grouped
        by ``model|agent|user|day|status|provider|chat``. Aggregated in SQL: a million rows are
        never pulled into pandas."""
        from sqlalchemy import case, func, literal, select

        if by not in GROUPS:
            raise UsageProblem(f"cannot group by {by!r}: use one of {', '.join(GROUPS)}")
        c = _tables()["calls"].c
        key = func.substr(c.ts_start, 1, 10) if by == "day" else c[by]
        key = func.coalesce(key, literal("—")).label(by)
        where = [c.ts_start >= utcnow().date().isoformat()] if today else []
        totals = (
            select(
                key,
                func.count().label("calls"),
                func.sum(case((c.status != "ok", 1), else_=0)).label("errors"),
                func.coalesce(func.sum(c.input_tokens), 0).label("input_tokens"),
                func.coalesce(func.sum(c.output_tokens), 0).label("output_tokens"),
                func.sum(c.cost_usd).label("cost_usd"),  # NULL when every cost is unknown
                func.sum(case((c.cost_usd.is_(None), 1), else_=0)).label("unpriced_calls"),
            )
            .where(*where)
            .group_by(key)
            .order_by(key)
        )
        ok = [*where, c.status == "ok"]
        inputs = select(key, c.latency_s, c.ttft_s).where(*ok)  # SQLite's percentiles, below
        fast = None
        if self._fast_sqlite():
            # read (ADBC, in a child process) while SQLite groups the totals here
            fast = self._arrow_frame(inputs, ["latency_s", "ttft_s"])
        try:
            out, spread = self._summary_parts(totals, inputs, ok, key, by, fast)
        finally:
            if fast is not None:
                fast()  # the child is held until its answer is read, whatever happened here
        out = out.join(spread, how="left")
        for col in ("calls", "errors", "input_tokens", "output_tokens", "unpriced_calls"):
            out[col] = out[col].astype("int64")
        for col in ("cost_usd", "p50_latency_s", "p95_latency_s", "p50_ttft_s"):
            out[col] = out[col].astype("float64")
        return out

    def _summary_parts(
        self, totals: Any, inputs: Any, ok: list[Any], key: Any, by: str, fast: Any
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        import pandas as pd
        from sqlalchemy import func, select

        c = _tables()["calls"].c
        with self._engine.connect() as conn:
            out = pd.read_sql(totals, conn).set_index(by)
            if self.dialect == "postgresql":
                pct = (
                    select(
                        key,
                        func.percentile_cont(0.5).within_group(c.latency_s).label("p50_latency_s"),
                        func.percentile_cont(0.95).within_group(c.latency_s).label("p95_latency_s"),
                        func.percentile_cont(0.5).within_group(c.ttft_s).label("p50_ttft_s"),
                    )
                    .where(*ok)
                    .group_by(key)
                )
                spread = pd.read_sql(pct, conn).set_index(by)
            else:  # SQLite has no percentiles: fetch three columns of the ok calls only
                raw = fast() if fast is not None else None
                if raw is None:
                    raw = pd.read_sql(inputs, conn)
                raw = raw.astype({"latency_s": "float64", "ttft_s": "float64"})  # even if empty
                grouped = raw.groupby(by)
                spread = pd.DataFrame(
                    {
                        "p50_latency_s": grouped["latency_s"].median(),
                        "p95_latency_s": grouped["latency_s"].quantile(0.95),
                        "p50_ttft_s": grouped["ttft_s"].median(),
                    }
                )
        return out, spread

    def _arrow_frame(self, query: Any, columns: list[str]) -> Callable[[], pd.DataFrame | None]:
        """Start reading ``query`` (a SQLAlchemy select) through ADBC in a child process; the
        function returned waits for it as a DataFrame, or None if that failed (the caller then
        reads it the general way)."""
        from sqlalchemy.dialects import sqlite

        assert isinstance(self.path, Path)
        sql = str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
        try:
            pending = _reader.submit(self.path, [sql], columns)
        except OSError:
            return lambda: None
        box: list[pd.DataFrame | None] = []

        def frame() -> pd.DataFrame | None:
            if not box:
                try:
                    box.append(pending().to_pandas())
                except Exception:
                    box.append(None)
            return box[0]

        return frame

    def reprice(self, model: str) -> pd.DataFrame:
        """What-if: every call's tokens priced as ``model`` would have charged them.

        ``lm.ledger().reprice("gpt-4o").repriced_cost_usd.sum()`` — nothing is sent."""
        from . import gateway
        from .models import BUILTIN_ALIASES
        from .pricing import price_for

        name = {**BUILTIN_ALIASES, **self.aliases()}.get(model, model)
        try:
            provider = "local" if name == "local" else gateway.provider_of(name)
        except UsageProblem:
            provider = "unknown"  # a price set with %llm price needs no provider
        price = price_for(name, provider, self, also=(model,))
        if price is None:
            raise UsageProblem(
                f"No price known for {model}: set one with %llm price {model} IN_PER_1M OUT_PER_1M"
            )
        frame = self.df
        frame = frame[frame["input_tokens"].fillna(0) + frame["output_tokens"].fillna(0) > 0]
        out = frame[
            ["call_id", "ts_start", "model", "agent", "input_tokens", "output_tokens", "cost_usd"]
        ].copy()
        tokens_in = out["input_tokens"].astype("float64")
        tokens_out = out["output_tokens"].astype("float64")
        out["repriced_as"] = model
        out["repriced_cost_usd"] = (
            tokens_in * price.input_per_token + tokens_out * price.output_per_token
        )
        out["price_source"] = price.source
        return out.reset_index(drop=True)

    def merge_into(self, url: str, batch: int = 5000) -> int:
        """Copy every call (and price override and alias) into the ledger at ``url``, e.g. the
        team's PostgreSQL one. Rows already there are skipped: running it twice adds nothing.
        Returns how many calls were new there."""
        from sqlalchemy import select

        target = Ledger(url)
        before = len(target)
        calls = _tables()["calls"]
        with self._engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(
                select(calls).order_by(calls.c.ts_start)
            )
            while chunk := result.fetchmany(batch):
                target.record_many([dict(r._mapping) for r in chunk])
        known = target.prices()
        for model, (i, o) in self.prices().items():
            if model not in known:
                target.set_price(model, i, o)
        theirs = target.aliases()
        for name, model in self.aliases().items():
            if name not in theirs:
                target.set_alias(name, model)
        return len(target) - before

    def to_parquet(self, path: str | Path) -> Path:
        """Export every call to a Parquet file (tags as JSON text)."""
        frame = self.df
        frame["tags"] = frame["tags"].map(lambda t: json.dumps(t, sort_keys=True))
        try:
            frame.to_parquet(path, index=False)
        except ImportError:
            raise UsageProblem("to_parquet needs pyarrow: pip install 'llm_magic[team]'") from None
        return Path(path)

    def close(self) -> None:
        self._engine.dispose()


_ledgers: dict[str, Ledger] = {}
_ledgers_lock = threading.Lock()


def open_ledger(spec: str) -> Ledger:
    """The ledger at ``spec`` (one engine per ledger per process)."""
    with _ledgers_lock:
        if spec not in _ledgers:
            _ledgers[spec] = Ledger(spec)
        return _ledgers[spec]


def ledger(url: str | None = None) -> Ledger:
    """The ledger in use: ``url``, else ``LLM_MAGIC_LEDGER``, else the user-data SQLite file."""
    from .config import settings

    return open_ledger(url or settings().ledger)

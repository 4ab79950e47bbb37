"""The ledger store: one row per call (failures, refusals and interruptions included).

SQLite (WAL) by default, PostgreSQL for a team (``LLM_MAGIC_LEDGER=postgresql+psycopg://…``),
both through SQLAlchemy Core with the same schema and the same frozen migrations
(:mod:`llm_magic._migrations`), recorded in ``_migrations``. A ledger written by a newer
llm_magic, or a file that is not a ledger, is refused with a clear error and never touched.
Writes are idempotent (``call_id`` is unique), so a retried write never duplicates a row.
pandas is imported only when a DataFrame is asked for.

A big SQLite ledger is read by ADBC in a child process (:mod:`llm_magic._fastread`). A row that
cannot be written when its call ends (ledger locked by another process beyond
``LLM_MAGIC_LEDGER_WAIT_S``, disk full) goes to a durable journal (:mod:`llm_magic._journal`)
and into the ledger on the next successful write or open.

The ledger layer: it imports only the base (record, errors, config), never a provider, a
policy (pricing, budget, models) or the notebook face.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from . import _fastread, _otel, _reads, _reserve
from ._journal import Journal, journal_path
from ._migrations import migrate
from ._sql import dialect_insert, make_engine, problem, row_values, tables, to_url, wait_s
from .errors import LedgerError, UsageProblem
from .record import COLUMNS, NAMES, utcnow

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Ledger", "LedgerWarning", "COLUMNS", "NAMES", "ledger", "open_ledger", "utcnow"]


class LedgerWarning(UserWarning):
    """A call's ledger row could not be written when it finished (it waits in the journal)."""


class Ledger:
    """One ledger (an SQLite file or a PostgreSQL database). Thread- and process-safe."""

    #: What-if pricing for :meth:`reprice`, plugged in from above the ledger layer (the
    #: ledger imports no pricing policy): ``llm_magic``'s ``lm.ledger``/``lm.Ledger`` set it
    #: to :func:`llm_magic.pricing.reprice`.
    repricer: ClassVar[Callable[[Ledger, str], pd.DataFrame] | None] = None
    #: What the prompt cache saved, for :meth:`summary`: dollars for each row of a frame of
    #: usage detail by model (``_model``, ``_provider``, the detail columns), plugged in
    #: likewise (:func:`llm_magic.pricing.cache_savings`); without it the saving is NaN.
    saver: ClassVar[Callable[[Ledger, pd.DataFrame], Any] | None] = None

    def __init__(self, spec: str) -> None:
        from sqlalchemy import exc as sa_exc

        self.url = to_url(spec)
        self._engine = make_engine(self.url)
        self.dialect = self._engine.dialect.name
        if self.dialect == "sqlite":
            self.path: Path | str = Path(self.url.split("sqlite:///", 1)[-1])
        else:
            self.path = self._engine.url.render_as_string(hide_password=True)
        try:
            migrate(self._engine, self.dialect, self.path)
            if self.dialect == "sqlite":
                with self._engine.connect() as conn:
                    self.journal_mode = str(conn.exec_driver_sql("PRAGMA journal_mode").scalar())
            else:
                self.journal_mode = "server"
        except sa_exc.DBAPIError as exc:
            self._engine.dispose()
            raise problem(exc, self.path) from None
        self._insert = dialect_insert(self.dialect, tables()["calls"]).on_conflict_do_nothing(
            index_elements=["call_id"]
        )
        self.journal = Journal(journal_path(self.url, self.path))
        self._reserved: set[str] = set()  # reservations this process holds, settled by record
        self._reserved_lock = threading.Lock()
        self._held: dict[str, Any] | None = None  # aliases and prices read once (held_reads)
        self._held_depth = 0
        self.replay_pending(quick=True)  # rows a busy ledger could not take last time

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    # -- schema --------------------------------------------------------------------------------
    def schema_version(self) -> list[str]:
        from sqlalchemy import select

        table = tables()["migrations"]
        with self._engine.connect() as conn:
            return list(conn.execute(select(table.c.name).order_by(table.c.name)).scalars())

    # -- writing -------------------------------------------------------------------------------
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
                            table = tables()["reservations"]
                            conn.execute(table.delete().where(table.c.call_id.in_(ids)))
                finally:
                    if raw is not None:
                        raw.execute(f"PRAGMA busy_timeout = {int(wait_s() * 1000)}")
        except sa_exc.DBAPIError as exc:
            raise problem(exc, self.path) from None
        if settle:
            with self._reserved_lock:
                self._reserved.difference_update(ids)

    def record(self, row: Mapping[str, Any]) -> None:
        """Append one call, durably, in one transaction (all columns or nothing).

        Idempotent: writing the same ``call_id`` again changes nothing. Raises
        :class:`~llm_magic.errors.LedgerBusy` when another process holds the ledger longer
        than ``LLM_MAGIC_LEDGER_WAIT_S`` (see :meth:`keep` for a write that never fails)."""
        self._write([row_values(row)])
        self.replay_pending()

    def record_many(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append many calls in one transaction (idempotent per ``call_id``)."""
        if not rows:
            return
        self._write([row_values(r) for r in rows])

    def keep(
        self, row: Mapping[str, Any], api_base: str | None = None, tries: Sequence[Any] = ()
    ) -> str | None:
        """Write one call's row; if the ledger cannot take it now (locked by another process
        beyond the wait, disk full, unwritable), keep it in the journal instead, to go into the
        ledger on the next successful write or open. Never raises for that: the call's answer
        was paid for. Returns the warning shown to the user (None when the row is in). With
        OpenTelemetry on, the row is also sent as a span (``api_base``: where the call went;
        ``tries``: its HTTP attempts, each a child span when there were several)."""
        values = row_values(row)
        _otel.emit(row, api_base, tries)  # every kept row, once: a no-op unless OTel export is on
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
        from sqlalchemy import exc as sa_exc

        self.replay_pending()
        try:
            held, spent, others = _reserve.hold(
                self._engine, self.dialect, call_id, model, amount, budget, self.journal.cost_on
            )
        except sa_exc.DBAPIError as exc:
            raise problem(exc, self.path) from None
        if not held:
            return False, spent, others
        with self._reserved_lock:
            self._reserved.add(call_id)
        return True, spent, others

    def release(self, call_id: str) -> None:
        """Drop a reservation whose call will write no row (best effort: it expires anyway)."""
        if not _reserve.drop(self._engine, call_id):
            return
        with self._reserved_lock:
            self._reserved.discard(call_id)

    def reservations(self) -> float:
        """Dollars held by calls in flight (all processes)."""
        return _reserve.total(self._engine)

    # -- prices and aliases --------------------------------------------------------------------
    def _upsert(self, table: Any, key: str, values: dict[str, Any]) -> None:
        stmt = dialect_insert(self.dialect, table).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[key], set_={k: v for k, v in values.items() if k != key}
        )
        with self._engine.begin() as conn:
            conn.execute(stmt)
        if self._held is not None:
            self._held.clear()  # read again on next use

    @contextlib.contextmanager
    def held_reads(self) -> Iterator[None]:
        """Within it, :meth:`aliases` and :meth:`prices` are read from the ledger once and then
        served from memory (an experiment's thousands of calls asked for them several times a
        call); this process's own ``set_alias``/``set_price`` still take effect at once."""
        with self._reserved_lock:
            self._held_depth += 1
            if self._held is None:
                self._held = {}
        try:
            yield
        finally:
            with self._reserved_lock:
                self._held_depth -= 1
                if not self._held_depth:
                    self._held = None

    def _held_read(self, what: str, read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        held = self._held
        if held is None:
            return read()
        if what not in held:
            held[what] = read()
        return dict(held[what])

    def set_price(self, model: str, input_per_1m: float, output_per_1m: float) -> None:
        if not all(
            isinstance(p, (int, float)) and 0 <= p < math.inf for p in (input_per_1m, output_per_1m)
        ):
            raise UsageProblem(
                f"Prices for {model} must be finite dollars per 1M tokens >= 0, not "
                f"{input_per_1m!r}, {output_per_1m!r}: e.g. set_price({model!r}, 3, 15)"
            )
        self._upsert(
            tables()["prices"],
            "model",
            {
                "model": model,
                "input_per_1m": float(input_per_1m),
                "output_per_1m": float(output_per_1m),
                "set_at": utcnow().isoformat(),
            },
        )

    def prices(self) -> dict[str, tuple[float, float]]:
        return self._held_read("prices", self._read_prices)

    def _read_prices(self) -> dict[str, tuple[float, float]]:
        from sqlalchemy import select

        t = tables()["prices"]
        with self._engine.connect() as conn:
            rows = conn.execute(select(t.c.model, t.c.input_per_1m, t.c.output_per_1m))
            return {m: (float(i), float(o)) for m, i, o in rows}

    def set_alias(self, name: str, model: str) -> None:
        self._upsert(tables()["aliases"], "name", {"name": name, "model": model})

    def aliases(self) -> dict[str, str]:
        return self._held_read("aliases", self._read_aliases)

    def _read_aliases(self) -> dict[str, str]:
        from sqlalchemy import select

        t = tables()["aliases"]
        with self._engine.connect() as conn:
            return {n: m for n, m in conn.execute(select(t.c.name, t.c.model))}

    # -- reading -------------------------------------------------------------------------------
    def __bool__(self) -> bool:
        return True  # a ledger is a ledger even when empty (and len() is a COUNT(*))

    def _fast_sqlite(self) -> bool:
        """Whether big reads go through ADBC in a child process (see :mod:`._fastread`)."""
        return _fastread.worth_a_child(self._engine, self.dialect, self.path)

    def _df_arrow(self) -> pd.DataFrame:
        assert isinstance(self.path, Path)
        return _fastread.read_frame(self.path)

    def _arrow_frame(self, query: Any, columns: list[str]) -> Callable[[], pd.DataFrame | None]:
        assert isinstance(self.path, Path)
        return _fastread.start_frame(self.path, query, columns)

    def __len__(self) -> int:
        from sqlalchemy import func, select

        with self._engine.connect() as conn:
            count = conn.execute(select(func.count()).select_from(tables()["calls"])).scalar()
            return int(count or 0)

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
        calls = tables()["calls"]
        with self._engine.connect() as conn:
            frame = pd.read_sql(select(calls).order_by(calls.c.ts_start), conn)
        return _reads.typed(frame)

    def cost_today(self) -> float:
        """Dollars spent since midnight UTC (known costs only; rows waiting in the journal for
        a busy ledger count too)."""
        from sqlalchemy import func, select

        calls = tables()["calls"]
        today = utcnow().date().isoformat()
        query = select(func.coalesce(func.sum(calls.c.cost_usd), 0.0)).where(
            calls.c.ts_start >= today
        )
        with self._engine.connect() as conn:
            spent = float(conn.execute(query).scalar() or 0.0)
        return spent + self.journal.cost_on(utcnow())

    def summary(self, by: str = "model", today: bool = False) -> pd.DataFrame:
        """Calls, tokens, cost (NaN if none known), the usage detail (cache reads and writes,
        reasoning tokens), what the prompt cache saved (``cache_saved_usd``, at each model's
        price now), what the response cache saved (``saved_usd``: its ``cached`` calls) and
        latency percentiles of ok calls, grouped by
        ``model|agent|user|day|status|provider|chat``. Aggregated in SQL: a million rows are
        never pulled into pandas."""
        query = _reads.summary_query(by, today)
        fast = None
        if self._fast_sqlite():
            # read (ADBC, in a child process) while SQLite groups the totals here
            fast = self._arrow_frame(query.inputs, ["latency_s", "ttft_s"])
        try:
            out, spread, detail = _reads.summary_parts(self._engine, self.dialect, query, fast)
        finally:
            if fast is not None:
                fast()  # the child is held until its answer is read, whatever happened here
        saver = Ledger.saver
        saved = None if saver is None else (lambda rows: saver(self, rows))
        return _reads.summary_frame(out, spread, detail, saved)

    def reprice(self, model: str) -> pd.DataFrame:
        """What-if: every call's tokens priced as ``model`` would have charged them.

        ``lm.ledger().reprice("gpt-4o").repriced_cost_usd.sum()`` — nothing is sent. Pricing
        is policy the ledger does not hold: :func:`llm_magic.pricing.reprice` does it, plugged
        in as :attr:`repricer` by ``import llm_magic``'s ``lm.ledger``/``lm.Ledger``."""
        if Ledger.repricer is None:
            raise UsageProblem(
                "Ledger.reprice needs llm_magic's pricing: open the ledger with lm.ledger() "
                "or lm.Ledger(...) after `import llm_magic as lm`"
            )
        return Ledger.repricer(self, model)

    def merge_into(self, url: str, batch: int = 5000) -> int:
        """Copy every call (and price override and alias) into the ledger at ``url``, e.g. the
        team's PostgreSQL one. Rows already there are skipped: running it twice adds nothing.
        Returns how many calls were new there."""
        from sqlalchemy import select

        target = Ledger(url)
        before = len(target)
        calls = tables()["calls"]
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

    def to_otel(self, since: Any = None, endpoint: str | None = None) -> int:
        """Send the calls (from ``since``: a datetime, date or ISO text, UTC) as OpenTelemetry
        spans with their own times and trace ids, to ``endpoint`` or where the OTEL_EXPORTER_OTLP_*
        variables point; returns how many the collector took."""
        from sqlalchemy import select

        calls = tables()["calls"]
        query = select(calls).order_by(calls.c.ts_start)
        if since is not None:
            query = query.where(calls.c.ts_start >= _otel.since_text(since))
        with self._engine.connect() as conn:
            found = conn.execution_options(stream_results=True).execute(query)
            return _otel.backfill((dict(r._mapping) for r in found), endpoint)

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

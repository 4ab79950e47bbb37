"""The ledger's schema, as ordered migrations recorded by name in the ``_migrations`` table.

A released migration never changes (simonw/llm's ``migrations.py`` style): each one writes out
its own tables and columns literally and reads nothing of the live code, so a column added to
:class:`~llm_magic.record.CallRecord` reaches old and new ledgers alike through a migration of
its own (``ALTER TABLE calls ADD COLUMN …``), appended to :data:`MIGRATIONS`. The names recorded
in existing ledgers (``m001_calls`` … ``m006_usage_detail``) are kept exactly. The schema all
the migrations make from nothing is written down in ``docs/ledger-schema.md`` and checked by
``tests/test_ledger.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import LedgerError
from .record import utcnow

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

__all__ = ["MIGRATIONS", "migrate"]


def m001_calls(conn: Connection) -> None:
    """The calls table as schema 1 made it: 31 columns, with its two indexes."""
    from sqlalchemy import Column, Float, Index, Integer, MetaData, Table, Text

    Table(
        "calls",
        MetaData(),
        Column("call_id", Text, primary_key=True),
        Column("trace_id", Text, nullable=False),
        Column("ts_start", Text),
        Column("ts_end", Text),
        Column("requested_model", Text),
        Column("model", Text),
        Column("provider", Text),
        Column("fallback_from", Text),
        Column("attempts", Integer),
        Column("status", Text, nullable=False),
        Column("error_type", Text),
        Column("http_status", Integer),
        Column("input_tokens", Integer),
        Column("output_tokens", Integer),
        Column("usage_source", Text),
        Column("cost_usd", Float),
        Column("price_source", Text),
        Column("latency_s", Float),
        Column("ttft_s", Float),
        Column("output_tps", Float),
        Column("max_tokens", Integer),
        Column("temperature", Float),
        Column("agent", Text),
        Column("user", Text),
        Column("tags", Text),
        Column("chat", Text),
        Column("execution_count", Integer),
        Column("key_alias", Text),
        Column("prompt", Text),
        Column("response", Text),
        Column("error_message", Text),
        Index("calls_ts_start", "ts_start"),
        Index("calls_trace", "trace_id"),
    ).create(conn)


def m002_prices_aliases(conn: Connection) -> None:
    """Price overrides (``%llm price``) and aliases (``%llm alias``)."""
    from sqlalchemy import Column, Float, MetaData, Table, Text

    meta = MetaData()
    Table(
        "prices",
        meta,
        Column("model", Text, primary_key=True),
        Column("input_per_1m", Float, nullable=False),
        Column("output_per_1m", Float, nullable=False),
        Column("set_at", Text, nullable=False),
    ).create(conn)
    Table(
        "aliases",
        meta,
        Column("name", Text, primary_key=True),
        Column("model", Text, nullable=False),
    ).create(conn)


def m003_summary_index(conn: Connection) -> None:
    """The columns ``summary()`` reads, in one covering index: its scans read this narrow copy
    (~120 bytes a row) instead of every row's prompt and response text (~1 KB)."""
    from sqlalchemy import text

    conn.execute(
        text(
            'CREATE INDEX IF NOT EXISTS calls_summary ON calls ("status", "ts_start", "model", '
            '"provider", "agent", "user", "chat", "input_tokens", "output_tokens", "cost_usd", '
            '"latency_s", "ttft_s")'
        )
    )


def m004_finish_setup(conn: Connection) -> None:
    """Why an answer stopped (``length`` = cut at max_tokens) and the set-up a call waited for
    before it could be sent (importing litellm, starting the local model)."""
    from sqlalchemy import text

    conn.execute(text("ALTER TABLE calls ADD COLUMN finish_reason TEXT"))
    conn.execute(text("ALTER TABLE calls ADD COLUMN setup_s FLOAT"))


def m005_reservations(conn: Connection) -> None:
    """Budget reservations: the worst-case cost of each call in flight, visible to every
    process (``budget.reserve``). A row lives from just before sending until the call's ledger
    row is written (same transaction), or until it expires (a killed process)."""
    from sqlalchemy import text

    conn.execute(
        text(
            "CREATE TABLE reservations ("
            "call_id TEXT PRIMARY KEY, model TEXT, amount_usd DOUBLE PRECISION NOT NULL, "
            "created_at TEXT NOT NULL, expires_at TEXT NOT NULL, host TEXT, pid INTEGER)"
        )
    )


def m006_usage_detail(conn: Connection) -> None:
    """What a call's usage says beyond input and output tokens, NULL when the provider does not
    report it: prompt tokens read from and written to the provider's cache (the 1-hour cache's
    share of the writes apart, where reported), and the reasoning tokens among the output."""
    from sqlalchemy import text

    conn.execute(text("ALTER TABLE calls ADD COLUMN cache_read_tokens INTEGER"))
    conn.execute(text("ALTER TABLE calls ADD COLUMN cache_write_tokens INTEGER"))
    conn.execute(text("ALTER TABLE calls ADD COLUMN cache_write_1h_tokens INTEGER"))
    conn.execute(text("ALTER TABLE calls ADD COLUMN reasoning_tokens INTEGER"))


def m007_call_shape(conn: Connection) -> None:
    """What kind of call a row is (``chat`` or ``embeddings``; rows written before are chats),
    which count of the prompt the pre-send guards used (``prompt_count_source``), and the tool
    calls the model asked for (a JSON list, NULL when none)."""
    from sqlalchemy import text

    conn.execute(text("ALTER TABLE calls ADD COLUMN operation TEXT DEFAULT 'chat'"))
    conn.execute(text("ALTER TABLE calls ADD COLUMN prompt_count_source TEXT"))
    conn.execute(text("ALTER TABLE calls ADD COLUMN tool_calls TEXT"))


def m008_summary_detail(conn: Connection) -> None:
    """``summary()`` also sums the usage detail (cache reads and writes, reasoning) and prices
    what the cache saved by model: it reads them through this partial covering index of the
    calls that report some detail only (the totals keep reading ``calls_summary`` as before)."""
    from sqlalchemy import text

    conn.execute(
        text(
            "CREATE INDEX IF NOT EXISTS calls_usage_detail ON calls "
            '("ts_start", "status", "model", "provider", "agent", "user", "chat", '
            '"cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens", '
            '"reasoning_tokens") '
            "WHERE cache_read_tokens > 0 OR cache_write_tokens > 0 OR reasoning_tokens > 0"
        )
    )


def m009_response_cache(conn: Connection) -> None:
    """The response cache (``cache=True``): each chat row's ``request_hash`` (the identity of
    its request: model, messages, parameters), ``saved_usd`` on rows answered from the ledger
    (status ``cached``: the original call's cost they avoided), an index for the lookup (the
    newest ``ok`` row of a hash), and ``meta``, a small key/value table (``%llm cache clear``
    keeps its time there: the ledger's rows are never deleted)."""
    from sqlalchemy import text

    conn.execute(text("ALTER TABLE calls ADD COLUMN request_hash TEXT"))
    conn.execute(text("ALTER TABLE calls ADD COLUMN saved_usd FLOAT"))
    conn.execute(
        text(
            "CREATE INDEX IF NOT EXISTS calls_request_hash ON calls "
            '("request_hash", "status", "ts_start")'
        )
    )
    conn.execute(text("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT, set_at TEXT NOT NULL)"))


def m010_experiment(conn: Connection) -> None:
    """Experiments (``lm.experiment``): which experiment a call belongs to, its identity there
    (``prompt_hash``: prompt text, system and parameters) and its repeat index, with an index
    for the re-run's question "which calls of this experiment have an ``ok`` row yet"."""
    from sqlalchemy import text

    conn.execute(text("ALTER TABLE calls ADD COLUMN experiment TEXT"))
    conn.execute(text("ALTER TABLE calls ADD COLUMN prompt_hash TEXT"))
    conn.execute(text('ALTER TABLE calls ADD COLUMN "repeat" INTEGER'))
    conn.execute(
        text('CREATE INDEX IF NOT EXISTS calls_experiment ON calls ("experiment", "status")')
    )


# In order; a new migration goes at the end, under a new name. Never edit one above.
MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("m001_calls", m001_calls),
    ("m002_prices_aliases", m002_prices_aliases),
    ("m003_summary_index", m003_summary_index),
    ("m004_finish_setup", m004_finish_setup),
    ("m005_reservations", m005_reservations),
    ("m006_usage_detail", m006_usage_detail),
    ("m007_call_shape", m007_call_shape),
    ("m008_summary_detail", m008_summary_detail),
    ("m009_response_cache", m009_response_cache),
    ("m010_experiment", m010_experiment),
]


def _create_log(conn: Connection) -> None:
    """The ``_migrations`` table itself: which migrations a ledger has, and when."""
    from sqlalchemy import Column, MetaData, Table, Text

    Table(
        "_migrations",
        MetaData(),
        Column("name", Text, primary_key=True),
        Column("applied_at", Text),
    ).create(conn)


def _applied(conn: Connection) -> set[str]:
    from sqlalchemy import text

    return set(conn.execute(text("SELECT name FROM _migrations")).scalars())


def migrate(engine: Engine, dialect: str, where: object) -> None:
    """Apply the migrations ``engine``'s ledger lacks, in order, in one transaction (one
    process at a time). A ledger with a migration this code does not know was written by a
    newer llm_magic: :class:`LedgerError`, and nothing is touched."""
    from sqlalchemy import inspect, text

    known = {name for name, _ in MIGRATIONS}
    with engine.connect() as conn:  # a read first: works while another process writes
        if inspect(conn).has_table("_migrations"):
            done = _applied(conn)
            if done >= known and not done - known:
                return
    with engine.connect().execution_options(immediate=True) as conn:
        with conn.begin():
            if dialect == "postgresql":
                # one kernel migrates at a time; the others wait, then find it done
                conn.execute(text("SELECT pg_advisory_xact_lock(7419001)"))
            if not inspect(conn).has_table("_migrations"):
                _create_log(conn)
            done = _applied(conn)
            newer = sorted(done - known)
            if newer:
                raise LedgerError(
                    f"{where} was written by a newer llm_magic (schema {newer[-1]}); "
                    "upgrade llm_magic, or set LLM_MAGIC_LEDGER to another file"
                )
            for name, step in MIGRATIONS:
                if name not in done:
                    step(conn)
                    conn.execute(
                        text("INSERT INTO _migrations (name, applied_at) VALUES (:n, :at)"),
                        {"n": name, "at": utcnow().isoformat()},
                    )

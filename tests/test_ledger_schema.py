"""The ledger's schema is frozen: a blank ledger after every migration is exactly the documented
schema (docs/ledger-schema.md), CallRecord's fields are exactly its calls columns, and a ledger
made by an earlier llm_magic opens unchanged with its rows."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from llm_magic import record
from llm_magic._migrations import MIGRATIONS
from llm_magic.store import Ledger, utcnow

DOC = Path(__file__).resolve().parents[1] / "docs" / "ledger-schema.md"

# The schema every migration from nothing makes, written out: table → [(column, type, not
# null, key)], and the indexes. Never derived from the code it checks.
TEXT, INT, FLOAT = "text", "int", "float"
SCHEMA: dict[str, list[tuple[str, str, bool, bool]]] = {
    "calls": [
        ("call_id", TEXT, False, True),
        ("trace_id", TEXT, True, False),
        ("ts_start", TEXT, False, False),
        ("ts_end", TEXT, False, False),
        ("requested_model", TEXT, False, False),
        ("model", TEXT, False, False),
        ("provider", TEXT, False, False),
        ("fallback_from", TEXT, False, False),
        ("attempts", INT, False, False),
        ("status", TEXT, True, False),
        ("error_type", TEXT, False, False),
        ("http_status", INT, False, False),
        ("input_tokens", INT, False, False),
        ("output_tokens", INT, False, False),
        ("usage_source", TEXT, False, False),
        ("cost_usd", FLOAT, False, False),
        ("price_source", TEXT, False, False),
        ("latency_s", FLOAT, False, False),
        ("ttft_s", FLOAT, False, False),
        ("output_tps", FLOAT, False, False),
        ("max_tokens", INT, False, False),
        ("temperature", FLOAT, False, False),
        ("agent", TEXT, False, False),
        ("user", TEXT, False, False),
        ("tags", TEXT, False, False),
        ("chat", TEXT, False, False),
        ("execution_count", INT, False, False),
        ("key_alias", TEXT, False, False),
        ("prompt", TEXT, False, False),
        ("response", TEXT, False, False),
        ("error_message", TEXT, False, False),
        ("finish_reason", TEXT, False, False),
        ("setup_s", FLOAT, False, False),
        ("cache_read_tokens", INT, False, False),
        ("cache_write_tokens", INT, False, False),
        ("cache_write_1h_tokens", INT, False, False),
        ("reasoning_tokens", INT, False, False),
        ("operation", TEXT, False, False),
        ("prompt_count_source", TEXT, False, False),
        ("tool_calls", TEXT, False, False),
        ("request_hash", TEXT, False, False),
        ("saved_usd", FLOAT, False, False),
        ("experiment", TEXT, False, False),
        ("prompt_hash", TEXT, False, False),
        ("repeat", INT, False, False),
    ],
    "prices": [
        ("model", TEXT, False, True),
        ("input_per_1m", FLOAT, True, False),
        ("output_per_1m", FLOAT, True, False),
        ("set_at", TEXT, True, False),
    ],
    "aliases": [("name", TEXT, False, True), ("model", TEXT, True, False)],
    "reservations": [
        ("call_id", TEXT, False, True),
        ("model", TEXT, False, False),
        ("amount_usd", FLOAT, True, False),
        ("created_at", TEXT, True, False),
        ("expires_at", TEXT, True, False),
        ("host", TEXT, False, False),
        ("pid", INT, False, False),
    ],
    "_migrations": [("name", TEXT, False, True), ("applied_at", TEXT, False, False)],
    "meta": [
        ("key", TEXT, False, True),
        ("value", TEXT, False, False),
        ("set_at", TEXT, True, False),
    ],
}
INDEXES: dict[str, dict[str, list[str]]] = {
    "calls": {
        "calls_ts_start": ["ts_start"],
        "calls_trace": ["trace_id"],
        "calls_summary": [
            "status",
            "ts_start",
            "model",
            "provider",
            "agent",
            "user",
            "chat",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "latency_s",
            "ttft_s",
        ],  # fmt: skip
        "calls_usage_detail": [
            "ts_start",
            "status",
            "model",
            "provider",
            "agent",
            "user",
            "chat",
            "cache_read_tokens",
            "cache_write_tokens",
            "cache_write_1h_tokens",
            "reasoning_tokens",
        ],  # fmt: skip (partial: the calls that report some usage detail)
        "calls_request_hash": ["request_hash", "status", "ts_start"],
        "calls_experiment": ["experiment", "status"],
    },
}
APPLIED = [
    "m001_calls",
    "m002_prices_aliases",
    "m003_summary_index",
    "m004_finish_setup",
    "m005_reservations",
    "m006_usage_detail",
    "m007_call_shape",
    "m008_summary_detail",
    "m009_response_cache",
    "m010_experiment",
]


def _kind(sa_type: Any) -> str:
    from sqlalchemy import Float, Integer, Text

    for kind, cls in ((TEXT, Text), (INT, Integer), (FLOAT, Float)):
        if isinstance(sa_type, cls):
            return kind
    return repr(sa_type)


def _found(url: str) -> tuple[dict[str, list[tuple[str, str, bool, bool]]], dict[str, Any]]:
    """The schema of the database at ``url``, read back by SQLAlchemy's inspector."""
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    try:
        insp = inspect(engine)
        tables: dict[str, list[tuple[str, str, bool, bool]]] = {}
        indexes: dict[str, dict[str, list[str]]] = {}
        for name in sorted(insp.get_table_names()):
            key = set(insp.get_pk_constraint(name)["constrained_columns"])
            tables[name] = [
                # a key column is NOT NULL on PostgreSQL and need not say so on SQLite
                (c["name"], _kind(c["type"]), not c["nullable"] and c["name"] not in key,
                 c["name"] in key)
                for c in insp.get_columns(name)
            ]  # fmt: skip
            found = {i["name"]: list(i["column_names"]) for i in insp.get_indexes(name)}
            if found:
                indexes[name] = found
    finally:
        engine.dispose()
    return tables, indexes


def _documented() -> dict[str, list[tuple[str, str, bool, bool]]]:
    """The tables of docs/ledger-schema.md: each ``## name`` heading, then its rows."""
    tables: dict[str, list[tuple[str, str, bool, bool]]] = {}
    current: list[tuple[str, str, bool, bool]] | None = None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            heading = re.match(r"## (\w+) — ", line)
            current = tables.setdefault(heading.group(1), []) if heading else None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if current is not None and len(cells) == 4 and cells[1] in (TEXT, INT, FLOAT):
            current.append((cells[0], cells[1], cells[2] == "not null", cells[3] == "key"))
    return tables


def test_a_blank_ledger_is_exactly_the_documented_schema(ledger_url: str) -> None:
    book = Ledger(ledger_url)
    assert book.schema_version() == APPLIED == [name for name, _ in MIGRATIONS]
    book.close()
    tables, indexes = _found(ledger_url)
    assert tables == SCHEMA
    assert indexes == INDEXES


def test_the_documented_schema_is_the_one_tested() -> None:
    assert _documented() == SCHEMA
    for name, columns in INDEXES["calls"].items():
        assert f"`{name}` ({', '.join(columns)})" in DOC.read_text()


def test_call_record_fields_are_the_calls_columns() -> None:
    """A CallRecord field without a migration (or a migration without a field) fails here."""
    calls = [(name, kind) for name, kind, _, _ in SCHEMA["calls"]]
    assert record.COLUMNS == calls
    assert record.NAMES == [name for name, _ in calls]


# A ledger as llm_magic 0.1 (before the reshape) made it, m001–m005: its DDL as SQLite keeps
# it, "user" quoted so that PostgreSQL takes the same script. Opened now, it gets m006 (the
# usage detail columns) and nothing else changes.
MADE_BY_0_1 = APPLIED[:5]
OLD_LEDGER = [
    """CREATE TABLE _migrations (name TEXT NOT NULL, applied_at TEXT, PRIMARY KEY (name))""",
    """CREATE TABLE calls (
        call_id TEXT, trace_id TEXT NOT NULL, ts_start TEXT, ts_end TEXT,
        requested_model TEXT, model TEXT, provider TEXT, fallback_from TEXT, attempts INTEGER,
        status TEXT NOT NULL, error_type TEXT, http_status INTEGER, input_tokens INTEGER,
        output_tokens INTEGER, usage_source TEXT, cost_usd FLOAT, price_source TEXT,
        latency_s FLOAT, ttft_s FLOAT, output_tps FLOAT, max_tokens INTEGER, temperature FLOAT,
        agent TEXT, "user" TEXT, tags TEXT, chat TEXT, execution_count INTEGER, key_alias TEXT,
        prompt TEXT, response TEXT, error_message TEXT, finish_reason TEXT, setup_s FLOAT,
        PRIMARY KEY (call_id))""",
    "CREATE INDEX calls_trace ON calls (trace_id)",
    "CREATE INDEX calls_ts_start ON calls (ts_start)",
    """CREATE TABLE prices (model TEXT NOT NULL, input_per_1m FLOAT NOT NULL,
        output_per_1m FLOAT NOT NULL, set_at TEXT NOT NULL, PRIMARY KEY (model))""",
    "CREATE TABLE aliases (name TEXT NOT NULL, model TEXT NOT NULL, PRIMARY KEY (name))",
    """CREATE INDEX calls_summary ON calls ("status", "ts_start", "model", "provider", "agent",
        "user", "chat", "input_tokens", "output_tokens", "cost_usd", "latency_s", "ttft_s")""",
    """CREATE TABLE reservations (call_id TEXT PRIMARY KEY, model TEXT,
        amount_usd DOUBLE PRECISION NOT NULL, created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL, host TEXT, pid INTEGER)""",
]


def test_a_ledger_made_before_the_reshape_opens_unchanged_with_its_rows(ledger_url: str) -> None:
    from sqlalchemy import create_engine, text

    now = utcnow().isoformat()
    engine = create_engine(ledger_url)
    with engine.begin() as conn:
        for ddl in OLD_LEDGER:
            conn.execute(text(ddl))
        for name in MADE_BY_0_1:
            conn.execute(
                text("INSERT INTO _migrations VALUES (:n, '2026-01-01T00:00:00+00:00')"),
                {"n": name},
            )
        conn.execute(
            text(
                'INSERT INTO calls (call_id, trace_id, ts_start, status, model, "user", tags, '
                "input_tokens, output_tokens, cost_usd, response, finish_reason, setup_s) VALUES "
                "('old1', 't1', :ts, 'ok', 'gpt-4o', 'ann', '{\"exp\": \"a\"}', 10, 5, 0.5, "
                "'kept', 'stop', 0.25)"
            ),
            {"ts": now},
        )
        conn.execute(text("INSERT INTO prices VALUES ('house', 1.0, 2.0, :ts)"), {"ts": now})
        conn.execute(text("INSERT INTO aliases VALUES ('fast', 'gpt-4o-mini')"))
    engine.dispose()

    book = Ledger(ledger_url)
    assert book.schema_version() == APPLIED
    migrated = _found(ledger_url)
    assert migrated == (SCHEMA, INDEXES)  # m006 added its columns, at the end, and only them
    df = book.df.set_index("call_id")
    old = df.loc["old1"]
    assert (old.model, old.user, old.response, old.finish_reason) == (
        "gpt-4o",
        "ann",
        "kept",
        "stop",
    )
    assert old.tags == {"exp": "a"} and (old.input_tokens, old.output_tokens) == (10, 5)
    assert (old.cost_usd, old.setup_s) == (0.5, 0.25) and math.isnan(old.latency_s)
    assert all(pd.isna(old[name]) for name in record.USAGE_DETAIL)  # never reported: NULL
    assert book.prices() == {"house": (1.0, 2.0)} and book.aliases() == {"fast": "gpt-4o-mini"}
    book.record({"call_id": "new1", "trace_id": "t2", "ts_start": utcnow(), "status": "ok"})
    assert len(book) == 2 and book.cost_today() == pytest.approx(0.5)
    book.close()
    Ledger(ledger_url).close()
    assert _found(ledger_url) == migrated  # nothing migrated again, nothing altered
    engine = create_engine(ledger_url)
    with engine.connect() as conn:
        stamps = dict(conn.execute(text("SELECT name, applied_at FROM _migrations")).all())
    engine.dispose()
    assert {stamps[name] for name in MADE_BY_0_1} == {"2026-01-01T00:00:00+00:00"}
    assert set(stamps) == set(APPLIED) and stamps["m006_usage_detail"] >= now


STANDS_ALONE = """
import sys
from llm_magic.errors import UsageProblem
from llm_magic.store import Ledger, utcnow
book = Ledger(sys.argv[1])
book.record({"call_id": "c1", "trace_id": "t", "ts_start": utcnow(), "status": "ok",
             "input_tokens": 1000, "output_tokens": 500, "cost_usd": 0.0})
assert len(book.df) == 1 and book.summary().loc["—", "calls"] == 1
try:
    book.reprice("gpt-4o")
except UsageProblem as exc:
    print("refused:", exc)
policy = ("gateway", "pricing", "budget", "models", "local", "core", "comparison", "magics")
print(sorted(m for m in sys.modules if m in {f"llm_magic.{p}" for p in policy} | {"litellm"}))
import llm_magic as lm
print(round(lm.ledger(sys.argv[1]).reprice("gpt-4o").repriced_cost_usd.sum(), 9))
"""


def test_the_ledger_stands_alone(tmp_path: Path) -> None:
    """Used on its own, the ledger loads no provider, policy or face; its what-if reprice
    says how to get it; through ``lm.ledger`` pricing is plugged in and it works."""
    import os
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", STANDS_ALONE, str(tmp_path / "l.sqlite")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.splitlines()
    assert (
        out[0].startswith("refused: Ledger.reprice needs llm_magic's pricing")
        and "lm.ledger()" in out[0]
    )
    assert out[1] == "[]"
    assert float(out[2]) == pytest.approx(1000 * 2.5e-6 + 500 * 10e-6)

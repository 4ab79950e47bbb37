"""The SQLite ledger: schema from nothing, durability settings, NaN never 0, refusals."""

from __future__ import annotations

import math
import sqlite3
import uuid
from pathlib import Path

import pytest

from llm_magic.errors import LedgerError
from llm_magic.store import MIGRATIONS, NAMES, Ledger, utcnow


def row(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "call_id": uuid.uuid4().hex,
        "trace_id": uuid.uuid4().hex,
        "ts_start": utcnow(),
        "ts_end": utcnow(),
        "requested_model": "m",
        "model": "m",
        "provider": "openai",
        "attempts": 1,
        "status": "ok",
        "input_tokens": 10,
        "output_tokens": 5,
        "usage_source": "provider",
        "cost_usd": 0.25,
        "latency_s": 1.0,
        "ttft_s": 0.1,
        "agent": "a",
    }
    base.update(over)
    return base


def test_schema_is_built_from_nothing_by_migrations(tmp_path: Path) -> None:
    book = Ledger(str(tmp_path / "new.sqlite"))
    assert book.schema_version() == [name for name, _ in MIGRATIONS]
    assert book.journal_mode == "wal"
    cols = [r[1] for r in sqlite3.connect(book.path).execute("PRAGMA table_info(calls)")]
    assert cols == NAMES
    # opening again applies nothing twice
    again = Ledger(f"sqlite:///{book.path}")
    assert again.schema_version() == book.schema_version()


def test_unknown_cost_is_nan_and_never_summed_as_zero(tmp_path: Path) -> None:
    book = Ledger(str(tmp_path / "l.sqlite"))
    book.record(row(model="priced", cost_usd=0.25))
    book.record(row(model="priced", cost_usd=0.5))
    book.record(row(model="unpriced", cost_usd=math.nan))
    df = book.df
    assert math.isnan(df.loc[df.model == "unpriced", "cost_usd"].iloc[0])
    summary = book.summary(by="model")
    assert summary.loc["priced", "cost_usd"] == pytest.approx(0.75)
    assert math.isnan(summary.loc["unpriced", "cost_usd"])
    assert summary.loc["unpriced", "unpriced_calls"] == 1
    assert book.cost_today() == pytest.approx(0.75)


def test_bad_rows_are_rejected_whole(tmp_path: Path) -> None:
    book = Ledger(str(tmp_path / "l.sqlite"))
    with pytest.raises(ValueError):
        book.record(row(status="weird"))
    with pytest.raises(ValueError):
        book.record(row(api_key="x"))
    assert len(book) == 0


def test_summary_by_day_agent_and_tags_round_trip(tmp_path: Path) -> None:
    book = Ledger(str(tmp_path / "l.sqlite"))
    book.record(row(agent="x", tags={"exp": "1"}))
    book.record(row(agent="y", status="error", cost_usd=0.0))
    assert set(book.summary(by="agent").index) == {"x", "y"}
    assert book.summary(by="day")["calls"].sum() == 2
    assert book.summary(by="agent").loc["y", "errors"] == 1
    assert book.df.tags.iloc[0] == {"exp": "1"}


def test_prices_and_aliases_persist(tmp_path: Path) -> None:
    path = str(tmp_path / "l.sqlite")
    Ledger(path).set_price("my-model", 3, 15)
    Ledger(path).set_alias("fast", "gpt-4o-mini")
    assert Ledger(path).prices() == {"my-model": (3.0, 15.0)}
    assert Ledger(path).aliases() == {"fast": "gpt-4o-mini"}


def test_a_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    Ledger(str(path)).record(row())
    db = sqlite3.connect(path)
    db.execute("INSERT INTO _migrations VALUES ('m999_future', 'x')")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="newer llm_magic"):
        Ledger(str(path))
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 1


def test_a_corrupt_file_is_refused_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    junk = b"this is not a database" * 100
    path.write_bytes(junk)
    with pytest.raises(LedgerError, match="left untouched"):
        Ledger(str(path))
    assert path.read_bytes() == junk


def test_reprice_prices_the_same_tokens_as_another_model(tmp_path: Path) -> None:
    book = Ledger(str(tmp_path / "l.sqlite"))
    book.record(row(model="local/smollm2", input_tokens=1000, output_tokens=500, cost_usd=0.0))
    book.record(row(model="x", input_tokens=0, output_tokens=0, status="error", cost_usd=0.0))
    book.record(row(model="y", input_tokens=2000, output_tokens=0, cost_usd=math.nan))
    what_if = book.reprice("gpt-4o")
    assert len(what_if) == 2  # the failed call carried no tokens
    assert what_if.repriced_cost_usd.tolist() == pytest.approx(
        [1000 * 2.5e-6 + 500 * 10e-6, 2000 * 2.5e-6], abs=1e-12
    )
    book.set_price("house-model", 1, 2)
    assert book.reprice("house-model").repriced_cost_usd.iloc[0] == pytest.approx(
        1000 * 1e-6 + 500 * 2e-6, abs=1e-12
    )
    from llm_magic.errors import UsageProblem

    with pytest.raises(UsageProblem, match="No price known for claude-sonnet-4-20250514"):
        book.reprice("claude-sonnet-4-20250514")

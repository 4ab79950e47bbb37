"""The SQLite ledger: schema from nothing, durability settings, NaN never 0, refusals."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import pytest

from llm_magic._migrations import MIGRATIONS
from llm_magic.errors import LedgerError
from llm_magic.store import COLUMNS, NAMES, Ledger, utcnow


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


def test_schema_is_built_from_nothing_by_migrations(ledger_url: str) -> None:
    from sqlalchemy import create_engine, inspect

    book = Ledger(ledger_url)
    assert book.schema_version() == [name for name, _ in MIGRATIONS]
    if book.dialect == "sqlite":
        assert book.journal_mode == "wal"
    cols = [c["name"] for c in inspect(create_engine(ledger_url)).get_columns("calls")]
    assert cols == NAMES
    # opening again applies nothing twice
    again = Ledger(ledger_url)
    assert again.schema_version() == book.schema_version()


def test_a_blank_ledger_has_exactly_the_documented_columns(ledger_url: str) -> None:
    """Every migration from nothing gives the calls table COLUMNS says: names, order, kinds."""
    from sqlalchemy import Float, Integer, Text, create_engine, inspect

    Ledger(ledger_url)
    engine = create_engine(ledger_url)
    found = inspect(engine).get_columns("calls")
    engine.dispose()
    kinds = {"text": Text, "int": Integer, "float": Float}
    assert [c["name"] for c in found] == [name for name, _ in COLUMNS]
    for column, (name, kind) in zip(found, COLUMNS, strict=True):
        assert isinstance(column["type"], kinds[kind]), (name, column["type"])
    assert NAMES[
        -14:
    ] == [  # each migration's columns appended, in order (m004, m006, m007, m009, m010)
        "finish_reason",
        "setup_s",
        "cache_read_tokens",
        "cache_write_tokens",
        "cache_write_1h_tokens",
        "reasoning_tokens",
        "operation",
        "prompt_count_source",
        "tool_calls",
        "request_hash",
        "saved_usd",
        "experiment",
        "prompt_hash",
        "repeat",
    ]


def test_a_ledger_of_the_old_schema_upgrades_keeping_its_rows(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger made by m001–m003 (31 columns, one row) gains the new columns, keeps the row."""
    from sqlalchemy import create_engine, inspect, text

    from llm_magic import _migrations

    old = [m for m in MIGRATIONS if m[0] < "m004"]
    assert [name for name, _ in old] == ["m001_calls", "m002_prices_aliases", "m003_summary_index"]
    monkeypatch.setattr(_migrations, "MIGRATIONS", old)
    Ledger(ledger_url).close()
    engine = create_engine(ledger_url)
    assert len(inspect(engine).get_columns("calls")) == 31  # m001 no longer follows COLUMNS
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO calls (call_id, trace_id, ts_start, status, model, cost_usd, "
                "response) VALUES ('old1', 't', :ts, 'ok', 'gpt-4o', 0.5, 'kept')"
            ),
            {"ts": utcnow().isoformat()},
        )
    engine.dispose()
    monkeypatch.setattr(_migrations, "MIGRATIONS", MIGRATIONS)
    book = Ledger(ledger_url)
    assert book.schema_version() == [name for name, _ in MIGRATIONS]
    book.record(row(finish_reason="length", setup_s=1.5))
    df = book.df.set_index("call_id")
    assert df.loc["old1", "response"] == "kept" and df.loc["old1", "cost_usd"] == 0.5
    assert df.loc["old1", ["finish_reason", "setup_s"]].isna().all()
    new = df.drop(index="old1").iloc[0]
    assert (new.finish_reason, new.setup_s) == ("length", 1.5)
    assert book.cost_today() == pytest.approx(0.75)


def test_writes_are_idempotent(ledger_url: str) -> None:
    book = Ledger(ledger_url)
    one = row()
    book.record(one)
    book.record(one)  # a retried write
    book.record_many([one, row()])
    assert len(book) == 2


def test_unknown_cost_is_nan_and_never_summed_as_zero(ledger_url: str) -> None:
    book = Ledger(ledger_url)
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


def test_bad_rows_are_rejected_whole(ledger_url: str) -> None:
    book = Ledger(ledger_url)
    with pytest.raises(ValueError):
        book.record(row(status="weird"))
    with pytest.raises(ValueError):
        book.record(row(api_key="x"))
    assert len(book) == 0


def test_summary_by_day_agent_and_tags_round_trip(ledger_url: str) -> None:
    book = Ledger(ledger_url)
    book.record(row(agent="x", tags={"exp": "1"}))
    book.record(row(agent="y", status="error", cost_usd=0.0))
    assert set(book.summary(by="agent").index) == {"x", "y"}
    assert book.summary(by="day")["calls"].sum() == 2
    assert book.summary(by="agent").loc["y", "errors"] == 1
    assert book.df.tags.iloc[0] == {"exp": "1"}


def test_prices_and_aliases_persist(ledger_url: str) -> None:
    Ledger(ledger_url).set_price("my-model", 3, 15)
    Ledger(ledger_url).set_price("my-model", 4, 16)  # a second price replaces the first
    Ledger(ledger_url).set_alias("fast", "gpt-4o-mini")
    assert Ledger(ledger_url).prices() == {"my-model": (4.0, 16.0)}
    assert Ledger(ledger_url).aliases() == {"fast": "gpt-4o-mini"}


def test_a_newer_schema_is_refused_and_left_untouched(ledger_url: str) -> None:
    from sqlalchemy import create_engine, text

    Ledger(ledger_url).record(row())
    engine = create_engine(ledger_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO _migrations VALUES ('m999_future', 'x')"))
    with pytest.raises(LedgerError, match="newer llm_magic"):
        Ledger(ledger_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM calls")).scalar() == 1
    engine.dispose()


def test_a_corrupt_file_is_refused_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    junk = b"this is not a database" * 100
    path.write_bytes(junk)
    with pytest.raises(LedgerError, match="left untouched"):
        Ledger(str(path))
    assert path.read_bytes() == junk


def test_reprice_prices_the_same_tokens_as_another_model(ledger_url: str) -> None:
    import llm_magic as lm

    book = lm.Ledger(ledger_url)  # lm.Ledger: with pricing plugged in (the ledger imports none)
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


SUMMARY_ROWS = [
    dict(model="a", latency_s=1.0, ttft_s=0.1, cost_usd=0.5),
    dict(model="a", latency_s=2.0, ttft_s=0.2, cost_usd=0.25),
    dict(model="a", latency_s=4.0, ttft_s=0.3, cost_usd=math.nan),
    dict(model="a", latency_s=30.0, ttft_s=9.0, status="error", cost_usd=0.0),
    dict(model="b", latency_s=3.0, ttft_s=0.5, cost_usd=math.nan),
]


def test_summary_is_aggregated_in_sql_with_percentiles_of_ok_calls(ledger_url: str) -> None:
    book = Ledger(ledger_url)
    book.record_many([row(**r) for r in SUMMARY_ROWS])  # type: ignore[arg-type]
    s = book.summary(by="model")
    assert s.loc["a", "calls"] == 4 and s.loc["a", "errors"] == 1
    assert s.loc["a", "cost_usd"] == pytest.approx(0.75)
    assert s.loc["a", "unpriced_calls"] == 1
    assert math.isnan(s.loc["b", "cost_usd"])  # no known price: NaN, not 0
    # percentiles of ok calls only (the 30 s error is left out), linear interpolation
    assert s.loc["a", "p50_latency_s"] == pytest.approx(2.0)
    assert s.loc["a", "p95_latency_s"] == pytest.approx(3.8)
    assert s.loc["a", "p50_ttft_s"] == pytest.approx(0.2)
    assert s.loc["a", "p95_ttft_s"] == pytest.approx(0.29)  # the 9 s error's TTFT left out too


def test_merge_into_copies_once(ledger_url: str, tmp_path: Path) -> None:
    local = Ledger(str(tmp_path / "laptop.sqlite"))
    local.record_many([row() for _ in range(120)])
    local.set_price("house-model", 1, 2)
    local.set_alias("fast", "gpt-4o-mini")
    team = Ledger(ledger_url)
    team.record(row())  # someone else's call
    assert local.merge_into(ledger_url, batch=50) == 120
    assert local.merge_into(ledger_url, batch=50) == 0  # again: nothing duplicated
    assert len(team) == 121
    assert team.prices()["house-model"] == (1.0, 2.0) and team.aliases()["fast"] == "gpt-4o-mini"


def test_to_parquet_round_trip(ledger_url: str, tmp_path: Path) -> None:
    import pandas as pd

    book = Ledger(ledger_url)
    book.record(row(tags={"exp": "p"}, cost_usd=math.nan))
    path = book.to_parquet(tmp_path / "calls.parquet")
    back = pd.read_parquet(path)
    assert len(back) == 1 and back.tags.iloc[0] == '{"exp": "p"}'
    assert math.isnan(back.cost_usd.iloc[0])


WRITER = """
import sys, uuid
from llm_magic.store import Ledger, utcnow
book = Ledger(sys.argv[1])
for i in range(int(sys.argv[2])):
    call_id = f"{sys.argv[3]}-{i}"
    row = {"call_id": call_id, "trace_id": sys.argv[3], "ts_start": utcnow(), "status": "ok"}
    book.record(row)
    if i % 10 == 0:
        book.record(row)  # a retried write must not duplicate
"""


def test_several_processes_write_without_loss_or_duplicates(ledger_url: str) -> None:
    import subprocess
    import sys

    Ledger(ledger_url)  # migrate once, then race
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, ledger_url, "150", f"w{i}"])
        for i in range(4)
    ]
    assert all(p.wait(timeout=180) == 0 for p in procs)
    df = Ledger(ledger_url).df
    assert len(df) == 600 and df.call_id.is_unique
    assert df.groupby("trace_id").size().to_dict() == {f"w{i}": 150 for i in range(4)}


def test_fast_sqlite_read_equals_the_general_one(tmp_path: Path, monkeypatch) -> None:
    """A big SQLite ledger is read through ADBC (in a child process) in parallel ts_start
    ranges; the frame (values, dtypes, order, NULLs, tags) and the summary must be those of the
    SQLAlchemy path."""
    import datetime as dt

    import pandas as pd

    from llm_magic import _fastread

    monkeypatch.setattr(_fastread, "ROWS_PER_READER", 150)  # several readers on 700 rows
    monkeypatch.setattr(_fastread, "CHILD_READ_ROWS", 500)  # "big" from 500 rows
    book = Ledger(str(tmp_path / "l.sqlite"))
    t0 = utcnow() - dt.timedelta(days=3)
    rows = []
    for i in range(700):
        late = i >= 600  # columns NULL in the first rows, text later (type inference trap)
        rows.append(
            row(
                ts_start=t0 + dt.timedelta(minutes=(i * 7919) % 5000),  # not in rowid order
                model=f"m{i % 3}",
                status="ok" if i % 10 else "error",
                cost_usd=math.nan if i % 17 == 0 else i / 1000,
                ttft_s=math.nan if i % 10 == 0 else 0.01 * (i % 50),
                http_status=429 if i % 10 == 0 else None,
                fallback_from="gpt-4o" if late else None,
                chat="c1" if late else None,
                tags={"exp": str(i % 4)} if i % 5 == 0 else None,
                prompt=f"prompt {i} {{braces}} ünïcode",
            )
        )
    book.record_many(rows)
    book.record(row(ts_start=rows[5]["ts_start"]))  # a tie in time: rowid order decides
    assert book._fast_sqlite()
    fast = book._df_arrow()  # not .df: it would fall back to the general path on an error
    monkeypatch.setattr(Ledger, "_fast_sqlite", lambda self: False)
    slow = book.df
    pd.testing.assert_frame_equal(fast, slow, check_dtype=True, check_exact=True)
    assert list(fast.ts_start) == sorted(fast.ts_start)
    assert fast.fallback_from.notna().sum() == 100 and fast.tags.map(bool).sum() == 140
    slow_summary = book.summary(by="day")
    monkeypatch.undo()
    monkeypatch.setattr(_fastread, "ROWS_PER_READER", 150)
    monkeypatch.setattr(_fastread, "CHILD_READ_ROWS", 500)
    read_fast: list[bool] = []
    real = Ledger._arrow_frame

    def spy(self: Ledger, query: object, columns: list[str]) -> object:
        pending = real(self, query, columns)

        seen: list[object] = []

        def frame() -> object:
            out = pending()
            if not seen:  # asked again by summary's clean-up: the same answer
                seen.append(out)
                read_fast.append(out is not None)
            return out

        return frame

    monkeypatch.setattr(Ledger, "_arrow_frame", spy)
    pd.testing.assert_frame_equal(book.summary(by="day"), slow_summary)
    pd.testing.assert_frame_equal(book.summary(by="chat"), _slow(book, "chat", monkeypatch))
    assert read_fast == [True, True]  # both fast summaries really read through ADBC
    import sys

    assert "adbc_driver_sqlite" not in sys.modules  # never loaded in this process


def test_a_small_ledger_is_read_in_this_process(tmp_path: Path) -> None:
    book = Ledger(str(tmp_path / "l.sqlite"))
    book.record(row())
    assert not book._fast_sqlite()  # under CHILD_READ_ROWS: no child process to start
    assert len(book.df) == 1


def _slow(book: Ledger, by: str, monkeypatch) -> object:
    with monkeypatch.context() as m:
        m.setattr(Ledger, "_fast_sqlite", lambda self: False)
        return book.summary(by=by)

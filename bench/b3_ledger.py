"""B3 — the ledger: durable append per call, loading a big ledger into pandas, summary by day.

* Append: ``Ledger.record(row)`` for rows shaped like the pipeline's (every column, tags,
  prompt and response text), one transaction each, into a fresh ledger and into the big one.
  Baselines in the same run: plain ``sqlite3`` INSERT + ``commit()`` of the same values into the
  same schema, once with sqlite's defaults (rollback journal, ``synchronous=FULL``) and once with
  the ledger's own pragmas (WAL, ``synchronous=NORMAL``), which isolates llm_magic's Python cost.
* Load: ``Ledger.df`` on a ledger of N rows (1M in the full run) against ``pandas.read_sql``
  of the same query on the same file.
* Summary: ``Ledger.summary(by="day")`` on the same ledger, against the same ``read_sql``
  and against one SQL ``GROUP BY`` (counts and sums only: sqlite has no percentiles).

The big ledger is written once per run with ``executemany`` (its building is not timed as a
result). Rows spread over 90 days, 10 models, 95% ok; ~30% carry tags; prompt and response text
as stored by default (``store_text`` on), ~150 and ~400 characters on average.
"""

from __future__ import annotations

import gc
import json
import random
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

from .common import Ctx, Section, Verdict, fmt_s, fmt_x, log, med, profile, table

TARGET_APPEND_S = 0.001
TARGET_LOAD_S = 3.0
TARGET_SUMMARY_S = 0.5
MODELS = [
    ("gpt-4o", "openai"),
    ("gpt-4o-mini", "openai"),
    ("gpt-4.1", "openai"),
    ("o3-mini", "openai"),
    ("claude-sonnet-4-5", "anthropic"),
    ("claude-haiku-4-5", "anthropic"),
    ("gemini/gemini-2.5-flash", "gemini"),
    ("ollama/llama3.2", "ollama"),
    ("local/smollm2-135m-instruct", "local"),
    ("mistral/mistral-large-latest", "mistral"),
]
LOREM = (
    "Summarise the following notes about tides, budgets and streaming latency in three short "
    "bullet points, then propose one experiment we could run tomorrow to measure the effect. "
) * 40


class _Rows:
    """Deterministic ledger rows, as dicts (for ``record``) or as stored tuples (for sqlite)."""

    def __init__(self, seed: int = 7, days: int = 90) -> None:
        self.rng = random.Random(seed)
        self.end = datetime(2026, 11, 1, tzinfo=timezone.utc)
        self.days = days

    def row(self, ts: datetime | None = None) -> dict[str, Any]:
        rng = self.rng
        model, provider = MODELS[rng.randrange(len(MODELS))]
        ts = ts or self.end - timedelta(seconds=rng.random() * self.days * 86400)
        latency = 0.2 + rng.random() * 8
        ttft = latency * rng.random() * 0.3
        tin, tout = rng.randrange(5, 4000), rng.randrange(1, 1500)
        ok = rng.random() < 0.95
        p0, r0 = rng.randrange(2000), rng.randrange(2000)
        tagged = rng.random() < 0.3
        return {
            "call_id": uuid.UUID(int=rng.getrandbits(128)).hex,
            "trace_id": uuid.UUID(int=rng.getrandbits(128)).hex,
            "ts_start": ts,
            "ts_end": ts + timedelta(seconds=latency),
            "requested_model": model,
            "model": model,
            "provider": provider,
            "fallback_from": None,
            "attempts": 1,
            "status": "ok" if ok else "error",
            "error_type": None if ok else "RateLimited",
            "http_status": None if ok else 429,
            "input_tokens": tin,
            "output_tokens": tout if ok else 0,
            "usage_source": "provider",
            "cost_usd": (tin * 2.5 + tout * 10) / 1e6 if provider != "local" else 0.0,
            "price_source": "litellm 1.110.2",
            "latency_s": latency,
            "ttft_s": ttft if ok else float("nan"),
            "output_tps": tout / max(latency - ttft, 1e-3) if ok else float("nan"),
            "max_tokens": 2048,
            "temperature": 0.0,
            "agent": f"agent-{rng.randrange(5)}",
            "user": f"user-{rng.randrange(20)}",
            "tags": {"experiment": f"exp-{rng.randrange(8)}", "run": str(rng.randrange(100))}
            if tagged
            else None,
            "chat": None,
            "execution_count": rng.randrange(1, 300),
            "key_alias": "OPENAI_API_KEY" if provider == "openai" else None,
            "prompt": LOREM[p0 : p0 + rng.randrange(20, 280)],
            "response": None if not ok else LOREM[r0 : r0 + rng.randrange(50, 750)],
            "error_message": None if ok else "Rate limit reached for requests",
        }


def _stored(row: dict[str, Any], names: list[str]) -> tuple[Any, ...]:
    out = []
    for name in names:
        v = row.get(name)
        if name == "tags" and v is not None:
            v = json.dumps(v, sort_keys=True)
        elif isinstance(v, datetime):
            v = v.astimezone(timezone.utc).isoformat()
        elif isinstance(v, float) and v != v:
            v = None
        out.append(v)
    return tuple(out)


def _insert_sql(names: list[str]) -> str:
    cols = ",".join(f'"{n}"' for n in names)
    return f"INSERT INTO calls ({cols}) VALUES ({','.join('?' * len(names))})"


def _bulk_rows(n: int, names: list[str], seed: int = 11, days: int = 90) -> Iterator[tuple]:
    """``n`` stored rows, like ``_Rows`` but built cheaply (pools of strings, epoch arithmetic):
    a million of them in seconds rather than minutes."""
    rng = random.Random(seed)
    end = datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp()
    span = days * 86400
    prompts = [LOREM[i : i + rng.randrange(20, 280)] for i in range(0, 2000, 7)]
    responses = [LOREM[i : i + rng.randrange(50, 750)] for i in range(0, 2000, 5)]
    tags = [json.dumps({"experiment": f"exp-{e}", "run": str(r)}, sort_keys=True)
            for e in range(8) for r in range(100)]  # fmt: skip
    iso = datetime.fromtimestamp
    index = {name: i for i, name in enumerate(names)}
    base: list[Any] = [None] * len(names)
    for name, value in {
        "attempts": 1, "usage_source": "provider", "price_source": "litellm 1.110.2",
        "max_tokens": 2048, "temperature": 0.0,
    }.items():  # fmt: skip
        base[index[name]] = value
    step = span / max(n, 1)
    for i in range(n):  # in time order, as a ledger is written
        row = list(base)
        model, provider = MODELS[rng.randrange(len(MODELS))]
        start = end - span + (i + rng.random()) * step
        latency = 0.2 + rng.random() * 8
        ttft = latency * rng.random() * 0.3
        tin, tout = rng.randrange(5, 4000), rng.randrange(1, 1500)
        ok = rng.random() < 0.95
        row[index["call_id"]] = f"{rng.getrandbits(128):032x}"
        row[index["trace_id"]] = f"{rng.getrandbits(128):032x}"
        row[index["ts_start"]] = iso(start, timezone.utc).isoformat()
        row[index["ts_end"]] = iso(start + latency, timezone.utc).isoformat()
        row[index["requested_model"]] = row[index["model"]] = model
        row[index["provider"]] = provider
        row[index["status"]] = "ok" if ok else "error"
        row[index["input_tokens"]] = tin
        row[index["output_tokens"]] = tout if ok else 0
        row[index["cost_usd"]] = (tin * 2.5 + tout * 10) / 1e6 if provider != "local" else 0.0
        row[index["latency_s"]] = latency
        row[index["agent"]] = f"agent-{rng.randrange(5)}"
        row[index["user"]] = f"user-{rng.randrange(20)}"
        row[index["execution_count"]] = rng.randrange(1, 300)
        row[index["prompt"]] = prompts[rng.randrange(len(prompts))]
        if rng.random() < 0.3:
            row[index["tags"]] = tags[rng.randrange(len(tags))]
        if provider == "openai":
            row[index["key_alias"]] = "OPENAI_API_KEY"
        if ok:
            row[index["ttft_s"]] = ttft
            row[index["output_tps"]] = tout / max(latency - ttft, 1e-3)
            row[index["response"]] = responses[rng.randrange(len(responses))]
        else:
            row[index["error_type"]] = "RateLimited"
            row[index["http_status"]] = 429
            row[index["error_message"]] = "Rate limit reached for requests"
        yield tuple(row)


class _Builder:
    """Writes a ledger file of up to ``most`` rows in stages (schema by llm_magic, rows by
    executemany), so that the size can be settled after timing a read of the first stage."""

    def __init__(self, path: Path, most: int) -> None:
        from llm_magic.store import NAMES, Ledger

        Ledger(str(path)).close()
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode = OFF")  # a scratch file: Ledger sets WAL on open
        self.db.execute("PRAGMA synchronous = OFF")
        self.db.execute("PRAGMA cache_size = -262144")  # 256 MiB for the random-key indexes
        self.sql = _insert_sql(NAMES)
        self.rows = _bulk_rows(most, NAMES)
        self.done = 0
        self.seconds = 0.0

    def extend_to(self, n: int) -> None:
        from itertools import islice

        t0 = time.perf_counter()
        while self.done < n:
            step = min(100_000, n - self.done)
            self.db.executemany(self.sql, islice(self.rows, step))
            self.db.commit()
            self.done += step
        self.seconds += time.perf_counter() - t0

    def close(self) -> None:
        self.db.close()


def _schema_sql(tmp: Path) -> list[str]:
    """The CREATE statements of the ledger's ``calls`` table and its indexes, as llm_magic
    writes them (read back from a fresh ledger file)."""
    from llm_magic.store import Ledger

    path = tmp / "b3-schema.sqlite"
    Ledger(str(path)).close()
    db = sqlite3.connect(path)
    sql = [
        r[0]
        for r in db.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = 'calls' AND sql IS NOT NULL "
            "ORDER BY type DESC"  # the table before its indexes
        )
    ]
    db.close()
    return sql


def _plain_db(path: Path, schema: list[str], wal: bool) -> sqlite3.Connection:
    """A plain sqlite3 file with the ledger's ``calls`` table (and indexes), no llm_magic."""
    db = sqlite3.connect(path)
    if wal:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
    for statement in schema:
        db.execute(statement)
    db.commit()
    return db


def _append_ledger(book: Any, rows: list[dict[str, Any]]) -> float:
    t0 = time.perf_counter()
    for row in rows:
        book.record(row)
    return (time.perf_counter() - t0) / len(rows)


def _append_plain(db: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> float:
    t0 = time.perf_counter()
    for values in rows:
        db.execute(sql, values)
        db.commit()
    return (time.perf_counter() - t0) / len(rows)


def _appends(ctx: Ctx, per_run: int, big: Path | None) -> dict[str, list[float]]:
    from llm_magic.store import NAMES, Ledger

    sql = _insert_sql(NAMES)
    gen = _Rows(seed=3)
    out: dict[str, list[float]] = {"ledger": [], "plain_wal": [], "plain_default": [], "big": []}
    book = Ledger(str(ctx.tmp / "b3-append.sqlite"))
    schema = _schema_sql(ctx.tmp)
    wal = _plain_db(ctx.tmp / "b3-plain-wal.sqlite", schema, wal=True)
    default = _plain_db(ctx.tmp / "b3-plain-default.sqlite", schema, wal=False)
    big_book = Ledger(str(big)) if big is not None else None
    for r in range(ctx.runs + 1):  # round 0 warms up, not counted
        batch = [gen.row(ts=datetime.now(timezone.utc)) for _ in range(per_run)]
        stored = [_stored(row, NAMES) for row in batch]
        fresh = [{**row, "call_id": uuid.uuid4().hex} for row in batch]
        fresh2 = [{**row, "call_id": uuid.uuid4().hex} for row in batch]
        stored2 = [_stored(row, NAMES) for row in fresh2]
        steps: list[tuple[str, Any, Any, list[Any]]] = [
            ("ledger", _append_ledger, book, batch),
            ("plain_wal", partial(_append_plain, sql=sql), wal, stored),
            ("plain_default", partial(_append_plain, sql=sql), default, stored2),
        ]
        if big_book is not None:
            steps.append(("big", _append_ledger, big_book, fresh))
        steps = steps[r % len(steps) :] + steps[: r % len(steps)]
        for name, fn, target, rows in steps:
            per_row = fn(target, rows=rows)
            if r:
                out[name].append(per_row)
    book.close()
    wal.close()
    default.close()
    if big_book is not None:
        big_book.close()
    return out


def _summary_sql(db: sqlite3.Connection) -> Any:
    return db.execute(
        "SELECT substr(ts_start, 1, 10) AS day, COUNT(*), SUM(status != 'ok'), "
        "SUM(input_tokens), SUM(output_tokens), SUM(cost_usd), "
        "SUM(cost_usd IS NULL) FROM calls GROUP BY day ORDER BY day"
    ).fetchall()


def _loads(ctx: Ctx, path: Path) -> dict[str, Any]:
    import pandas as pd

    from llm_magic.store import Ledger

    book = Ledger(str(path))
    raw = sqlite3.connect(path)
    query = "SELECT * FROM calls ORDER BY ts_start"
    text_cols = {"prompt", "response", "error_message"}
    columns = [r[1] for r in raw.execute("PRAGMA table_info(calls)") if r[1] not in text_cols]
    narrow = (
        f"SELECT {', '.join(chr(34) + c + chr(34) for c in columns)} FROM calls ORDER BY ts_start"
    )
    from llm_magic._fastread import reader

    def cold_child() -> Any:  # a new reader process, then one row: what the first read pays
        reader._stop()
        return reader.submit(path, ["SELECT call_id FROM calls LIMIT 1"])()

    keys = ("df", "read_sql", "summary", "sql_group", "narrow", "child")
    out: dict[str, Any] = {k: [] for k in keys}
    steps = {
        "child": cold_child,
        "read_sql": lambda: pd.read_sql(query, raw),
        "narrow": lambda: pd.read_sql(narrow, raw),
        "df": lambda: book.df,
        "summary": lambda: book.summary(by="day"),
        "sql_group": lambda: _summary_sql(raw),
    }
    names = list(steps)
    for r in range(ctx.runs):
        log(f"B3: load/summary round {r + 1}/{ctx.runs}")
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            t0 = time.perf_counter()
            value = steps[name]()
            out[name].append(time.perf_counter() - t0)
            if name == "summary":
                out["days"] = len(value)
            if name == "df":
                out["rows"] = len(value)
            del value
    out["profile"] = out["profile_df"] = None
    if not ctx.smoke:
        log("B3: profiling Ledger.summary and Ledger.df")
        gc.collect()
        out["profile"] = profile(lambda: book.summary(by="day"))
        gc.collect()
        out["profile_df"] = profile(lambda: book.df, by="cumulative", top=10)
    book.close()
    raw.close()
    return out


def _call_reads(ctx: Ctx, big: Path) -> dict[str, dict[str, list[float]]]:
    """The ledger reads every call makes before it sends anything, on a fresh ledger and on the
    big one: ``prices()`` (pricing) and ``aliases()`` (routing); and ``cost_today()``, read
    when a daily budget is set. None of them may grow with the ledger's size."""
    from llm_magic.store import Ledger

    ops = {
        "prices": lambda b: b.prices(),
        "aliases": lambda b: b.aliases(),
        "cost_today": lambda b: b.cost_today(),
    }
    books = {"fresh": Ledger(str(ctx.tmp / "b3-fresh.sqlite")), "big": Ledger(str(big))}
    out: dict[str, dict[str, list[float]]] = {k: {o: [] for o in ops} for k in books}
    reps = 3 if ctx.smoke else 10
    for _ in range(ctx.runs):
        for which, book in books.items():
            for name, op in ops.items():
                op(book)  # warm
                t0 = time.perf_counter()
                for _ in range(reps):
                    op(book)
                out[which][name].append((time.perf_counter() - t0) / reps)
    for book in books.values():
        book.close()
    return out


def run(ctx: Ctx) -> Section:
    from llm_magic._fastread import CHILD_READ_ROWS

    n_rows = 10_000 if ctx.smoke else 1_000_000
    per_run = 50 if ctx.smoke else 500
    big = ctx.tmp / "b3-big.sqlite"
    builder = _Builder(big, n_rows)
    log(f"B3: writing the {n_rows:,}-row ledger")
    builder.extend_to(n_rows)
    builder.close()
    build_s = builder.seconds
    size_mb = big.stat().st_size / 1e6
    log(f"B3: written in {build_s:.1f} s ({size_mb:.0f} MB)")
    loads = _loads(ctx, big)
    log("B3: appends")
    appends = _appends(ctx, per_run, big)
    log("B3: per-call ledger reads")
    reads = _call_reads(ctx, big)
    ratio_wal = [a / b for a, b in zip(appends["ledger"], appends["plain_wal"], strict=True)]
    ratio_def = [a / b for a, b in zip(appends["ledger"], appends["plain_default"], strict=True)]
    ratio_big = [a / b for a, b in zip(appends["big"], appends["ledger"], strict=True)]
    ratio_df = [a / b for a, b in zip(loads["df"], loads["read_sql"], strict=True)]
    ratio_sum = [a / b for a, b in zip(loads["summary"], loads["read_sql"], strict=True)]
    ratio_sum_sql = [a / b for a, b in zip(loads["summary"], loads["sql_group"], strict=True)]
    lines = [
        f"Ledger of {loads['rows']:,} rows ({size_mb:.0f} MB on disk, {loads['days']} days; "
        f"written in {build_s:.0f} s by executemany, not a result). Runs: {ctx.runs}, steps in "
        f"rotating order; appends: {per_run} rows per run, each its own transaction, after one "
        "warm-up batch. Targets: append ≤ 1 ms/row; load ≤ 3 s; summary ≤ 0.5 s.",
        "",
        "### Append one call",
        "",
        *table(
            ["what", "per row (median, min–max)", "`Ledger.record` ÷ this"],
            [
                [
                    "plain `sqlite3` INSERT + commit, sqlite defaults (rollback journal, "
                    "`synchronous=FULL`)",
                    fmt_s(appends["plain_default"], "us"),
                    fmt_x(ratio_def, 3),
                ],
                [
                    "plain `sqlite3` INSERT + commit, the ledger's pragmas (WAL, "
                    "`synchronous=NORMAL`)",
                    fmt_s(appends["plain_wal"], "us"),
                    fmt_x(ratio_wal),
                ],
                [
                    "**`Ledger.record`, fresh ledger**",
                    f"**{fmt_s(appends['ledger'], 'us')}**",
                    "1×",
                ],
                [
                    f"**`Ledger.record` into the {loads['rows']:,}-row ledger**",
                    f"**{fmt_s(appends['big'], 'us')}**",
                    f"{fmt_x(ratio_big)} the fresh-ledger time",
                ],
            ],
        ),
        "",
        f"Durability: the ledger reports journal mode `{_journal_mode(ctx.tmp)}` and sets "
        "`synchronous=NORMAL`, so a committed "
        "row survives a crash or SIGKILL of the process, but the last commits before an OS "
        "crash or power loss can be lost (no fsync per commit); sqlite's defaults fsync every "
        "commit, which is what the first baseline pays.",
        "",
        f"### Load and summarise {loads['rows']:,} rows",
        "",
        *table(
            ["what", "time (median, min–max)", "vs `pandas.read_sql`"],
            [
                [
                    "**`pandas.read_sql('SELECT * FROM calls ORDER BY ts_start')` (baseline)**",
                    fmt_s(loads["read_sql"]),
                    "1×",
                ],
                [
                    "**`Ledger.df`** (ADBC SQLite → Arrow in a child process, one reader per "
                    "core over `ts_start` ranges, Arrow IPC back through a pipe; UTC "
                    "timestamps, nullable ints, tags parsed)"
                    if loads["rows"] >= CHILD_READ_ROWS
                    else "**`Ledger.df`** (under 50,000 rows: `read_sql` through `sqlite3` in "
                    "this process, then typed)",
                    f"**{fmt_s(loads['df'])}**",
                    f"**{fmt_x(ratio_df)}**",
                ],
                [
                    "the reader process alone: start it and read one row (paid once per "
                    "kernel, by its first big-ledger `.df` or `summary()`; the figures above "
                    "are with it running; below 50,000 rows they read in this process through "
                    "`sqlite3` instead)",
                    fmt_s(loads["child"]),
                    fmt_x([a / b for a, b in zip(loads["child"], loads["read_sql"], strict=True)]),
                ],
                [
                    "**`Ledger.summary(by='day')`**",
                    f"**{fmt_s(loads['summary'])}**",
                    f"**{fmt_x(ratio_sum)}**",
                ],
                [
                    "one SQL `GROUP BY day` (counts and sums only, no percentiles)",
                    fmt_s(loads["sql_group"]),
                    f"summary is {fmt_x(ratio_sum_sql, 0)} this",
                ],
                [
                    "`read_sql` without the text columns (prompt, response, error_message)",
                    fmt_s(loads["narrow"]),
                    fmt_x([a / b for a, b in zip(loads["narrow"], loads["read_sql"], strict=True)]),
                ],
            ],
        ),
        "",
    ]
    lines += [
        "### Ledger reads in every call's path (before anything is sent)",
        "",
        *table(
            ["read", "why", "fresh ledger", f"{loads['rows']:,}-row ledger", "big ÷ fresh"],
            [
                [
                    f"`{label}`",
                    why,
                    fmt_s(reads["fresh"][key], "ms"),
                    fmt_s(reads["big"][key], "ms"),
                    fmt_x(
                        [a / b for a, b in zip(reads["big"][key], reads["fresh"][key], strict=True)]
                    ),
                ]
                for key, label, why in [
                    ("prices", "prices()", "`pricing.price_for`, every call"),
                    ("aliases", "aliases()", "`models.resolve`, every call"),
                    ("cost_today", "cost_today()", "`budget.check_daily`, with a daily budget"),
                ]
            ],
        ),
        "",
    ]
    rows_n = loads["rows"]
    load_limit = TARGET_LOAD_S * rows_n / 1_000_000
    summary_limit = TARGET_SUMMARY_S * rows_n / 1_000_000
    if med(loads["df"]) > load_limit:
        lines += [
            f"**Load missed** ({med(loads['df']):.1f} s against {load_limit:g} s), with "
            f"`pandas.read_sql` of the same rows at {med(loads['read_sql']):.1f} s. The profile "
            "below shows where `Ledger.df` spends it.",
            "",
        ]
    else:
        lines += [
            f"`Ledger.df` reads the ledger in {med(loads['df']):.2f} s, "
            f"{1 / med(ratio_df):.1f}× faster than `pandas.read_sql` of the same query "
            f"({med(loads['read_sql']):.1f} s, which goes through Python objects cell by cell: "
            f"31 columns × {rows_n:,} rows). Most of the bytes are the stored prompt and "
            f"response text: `read_sql` without those columns takes "
            f"{med(loads['narrow']):.1f} s.",
            "",
        ]
    lines += [
        "`Ledger.summary` aggregates counts, tokens and cost in one SQL `GROUP BY` that reads "
        "the ledger's covering index `calls_summary` (migration m003: the columns it reads, "
        "~120 bytes a row, instead of every row's text), and the usage detail by model (what "
        "the cache saved) through the partial index `calls_usage_detail` (m008: only the calls "
        "that report some); SQLite has no percentiles, so the "
        "latency and TTFT of the ok calls are fetched through the same index by ADBC, in a "
        "child process started before the `GROUP BY` runs here (the two overlap), and their "
        "p50/p95 computed in pandas. On PostgreSQL both are one SQL query (`percentile_cont`).",
        "",
        "Why a child process: ADBC's driver carries its own SQLite library (3.53; Python's "
        "`sqlite3` is 3.40), and two SQLite libraries on one file in one process corrupt it "
        "(POSIX locks belong to the process: when one library closes its descriptor, the "
        "other's locks vanish; sqlite.org/howtocorrupt.html §2.2.1). Issue 15 reproduced it: "
        '8 threads writing while `.df` read in-process gave "disk I/O error" and lost rows. '
        "Across processes SQLite's locking is the ordinary, safe case. The trade-off is the "
        f"reader process's start-up ({med(loads['child']):.2f} s, once per kernel) and one "
        "copy of the table through a pipe per read; ledgers under 50,000 rows skip the child "
        "and read through `sqlite3`.",
        "",
    ]
    if med(loads["summary"]) > summary_limit:
        lines += [
            f"**Summary missed** ({med(loads['summary']):.2f} s against {summary_limit:g} s): "
            f"the `GROUP BY` alone takes {med(loads['sql_group']):.2f} s (SQLite sorts every "
            "row into a temporary B-tree to group by day); the percentile inputs are the rest "
            "(profile below).",
            "",
        ]
    for key, what in (("profile", "`Ledger.summary(by='day')`"), ("profile_df", "`Ledger.df`")):
        if loads.get(key):
            lines += [f"Where {what} spends its time (one extra call):", "", *loads[key], ""]
    append_ms = med(appends["ledger"])
    append_big = med(appends["big"])
    worst_append = max(append_ms, append_big)
    verdicts = [
        Verdict(
            "B3",
            "append ≤ 1 ms/row",
            f"{append_ms * 1e3:.2f} ms fresh, {append_big * 1e3:.2f} ms at {loads['rows']:,} rows",
            worst_append <= TARGET_APPEND_S,
            f"{TARGET_APPEND_S / worst_append:.1f}× under"
            if worst_append <= TARGET_APPEND_S
            else f"{worst_append / TARGET_APPEND_S:.1f}× over",
        ),
        _verdict("load", loads["rows"], med(loads["df"]), TARGET_LOAD_S),
        _verdict("summary(by='day')", loads["rows"], med(loads["summary"]), TARGET_SUMMARY_S),
    ]
    return Section("B3", "the ledger", lines, verdicts)


def _journal_mode(tmp: Path) -> str:
    from llm_magic.store import Ledger

    book = Ledger(str(tmp / "b3-append.sqlite"))
    mode = str(getattr(book, "journal_mode", "?"))
    book.close()
    return mode


def _verdict(what: str, rows: int, value: float, per_million: float) -> Verdict:
    """A target given for 1M rows, scaled linearly when the run used another size."""
    limit = per_million * rows / 1_000_000
    target = f"{what} of {rows:,} rows ≤ {limit:g} s"
    if rows != 1_000_000:
        target += f" ({per_million:g} s per 1M, scaled)"
    met = value <= limit
    margin = f"{limit / value:.1f}× under" if met else f"{value / limit:.1f}× over"
    return Verdict("B3", target, f"{value:.2f} s", met, margin)

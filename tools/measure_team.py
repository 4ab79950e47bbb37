"""Measure what a ledger grows by: bytes per million calls on SQLite and PostgreSQL, with and
without prompt/response text, and the write rate of one process. Numbers for docs/team.md.

    LLM_MAGIC_TEST_PG=$(bash tools/pg_throwaway.sh) .venv/bin/python tools/measure_team.py [N]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from llm_magic.store import Ledger, utcnow

PROMPT = "Summarise the following paragraph about tides in two sentences. " * 3  # ~200 chars
ANSWER = "Tides are the rise and fall of sea levels caused by the Moon's gravity. " * 14  # ~1 kB


def rows(n: int, text: bool) -> list[dict[str, object]]:
    start = utcnow()
    out = []
    for i in range(n):
        t = start - timedelta(seconds=i)
        out.append(
            {
                "call_id": uuid.uuid4().hex,
                "trace_id": uuid.uuid4().hex,
                "ts_start": t,
                "ts_end": t,
                "requested_model": "gpt-4o",
                "model": "gpt-4o",
                "provider": "openai",
                "attempts": 1,
                "status": "ok",
                "input_tokens": 250,
                "output_tokens": 400,
                "usage_source": "provider",
                "cost_usd": 0.004625,
                "price_source": "litellm 1.110.2",
                "latency_s": 3.2,
                "ttft_s": 0.41,
                "output_tps": 143.0,
                "max_tokens": 2048,
                "temperature": 0.0,
                "agent": f"agent{i % 7}",
                "user": f"user{i % 23}",
                "tags": {"exp": "tides"},
                "key_alias": "OPENAI_API_KEYS#1:3fa9c2",
                "prompt": PROMPT if text else None,
                "response": ANSWER if text else None,
            }
        )
    return out


def size(book: Ledger) -> int:
    if book.dialect == "sqlite":
        with book._engine.connect() as c:
            c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return sum(
            p.stat().st_size for p in Path(book.path).parent.glob(Path(book.path).name + "*")
        )
    with book._engine.connect() as c:
        return int(c.exec_driver_sql("SELECT pg_total_relation_size('calls')").scalar() or 0)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    targets = {"sqlite": None, "postgresql": os.environ.get("LLM_MAGIC_TEST_PG")}
    print(f"rows per measurement: {n:,} (bytes scaled to 1,000,000 calls)")
    for engine, admin in targets.items():
        for text in (False, True):
            if engine == "sqlite":
                url = f"sqlite:///{tempfile.mkdtemp()}/size.sqlite"
            elif admin:
                import psycopg

                name = f"size_{uuid.uuid4().hex[:8]}"
                with psycopg.connect(admin.replace("+psycopg", ""), autocommit=True) as c:
                    c.execute(f"CREATE DATABASE {name}")
                url = admin.rsplit("/", 1)[0] + "/" + name
            else:
                continue
            book = Ledger(url)
            batch = rows(10_000, text)
            started = time.perf_counter()
            for _ in range(n // 10_000):
                for r in batch:
                    r["call_id"] = uuid.uuid4().hex
                book.record_many(batch)
            bulk = time.perf_counter() - started
            single = rows(200, text)
            started = time.perf_counter()
            for r in single:
                book.record(r)
            per_call = (time.perf_counter() - started) / len(single)
            mb = size(book) / 1e6 * (1_000_000 / (n + len(single)))
            print(
                f"{engine:10s} text={'yes' if text else 'no ':3s} "
                f"{mb:8.0f} MB per 1M calls · bulk {n / bulk:8.0f} rows/s · "
                f"one durable call {per_call * 1000:5.2f} ms"
            )
            book.close()


if __name__ == "__main__":
    main()

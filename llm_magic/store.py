"""The ledger store: one row per call (failures, refusals and interruptions included), in SQLite.

The schema is versioned by ordered migrations recorded in ``_migrations``; a ledger written by a
newer llm_magic, or a file that is not a ledger, is refused with a clear error and never touched.
pandas is imported only when a DataFrame is asked for.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LedgerError, UsageProblem

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Ledger", "COLUMNS", "ledger", "open_ledger"]

# (name, SQL type) in the SPEC's order.
COLUMNS: list[tuple[str, str]] = [
    ("call_id", "TEXT PRIMARY KEY"),
    ("trace_id", "TEXT NOT NULL"),
    ("ts_start", "TEXT NOT NULL"),
    ("ts_end", "TEXT"),
    ("requested_model", "TEXT"),
    ("model", "TEXT"),
    ("provider", "TEXT"),
    ("fallback_from", "TEXT"),
    ("attempts", "INTEGER"),
    ("status", "TEXT NOT NULL"),
    ("error_type", "TEXT"),
    ("http_status", "INTEGER"),
    ("input_tokens", "INTEGER"),
    ("output_tokens", "INTEGER"),
    ("usage_source", "TEXT"),
    ("cost_usd", "REAL"),
    ("price_source", "TEXT"),
    ("latency_s", "REAL"),
    ("ttft_s", "REAL"),
    ("output_tps", "REAL"),
    ("max_tokens", "INTEGER"),
    ("temperature", "REAL"),
    ("agent", "TEXT"),
    ("user", "TEXT"),
    ("tags", "TEXT"),
    ("chat", "TEXT"),
    ("execution_count", "INTEGER"),
    ("key_alias", "TEXT"),
    ("prompt", "TEXT"),
    ("response", "TEXT"),
    ("error_message", "TEXT"),
]
NAMES = [name for name, _ in COLUMNS]
STATUSES = ("ok", "error", "interrupted", "refused_budget", "refused_context")


def _m001_calls(db: sqlite3.Connection) -> None:
    cols = ",\n  ".join(f'"{n}" {t}' for n, t in COLUMNS)
    db.execute(f"CREATE TABLE calls (\n  {cols}\n)")
    db.execute("CREATE INDEX calls_ts_start ON calls(ts_start)")
    db.execute("CREATE INDEX calls_trace ON calls(trace_id)")


def _m002_prices_aliases(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE prices (model TEXT PRIMARY KEY, input_per_1m REAL NOT NULL,"
        " output_per_1m REAL NOT NULL, set_at TEXT NOT NULL)"
    )
    db.execute("CREATE TABLE aliases (name TEXT PRIMARY KEY, model TEXT NOT NULL)")


MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("m001_calls", _m001_calls),
    ("m002_prices_aliases", _m002_prices_aliases),
]


def _sqlite_path(url: str) -> Path:
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    if "://" in url:
        raise UsageProblem(
            f"LLM_MAGIC_LEDGER={url.split('://')[0]}://… is not supported yet: use a file path "
            "or sqlite:///path"
        )
    return Path(url).expanduser()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Ledger:
    """One SQLite ledger file. Thread-safe; several processes may write at once (WAL)."""

    def __init__(self, url: str) -> None:
        self.path = _sqlite_path(url)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                self.path, timeout=30, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA busy_timeout = 30000")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise LedgerError(
                f"{self.path} is not a readable llm_magic ledger ({exc}); it was left untouched: "
                "move it aside or set LLM_MAGIC_LEDGER to another file"
            ) from None
        self.journal_mode = str(mode)

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    # -- schema --------------------------------------------------------------------------------
    def _migrate(self) -> None:
        db = self._db
        with self._lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
                )
                done = {r[0] for r in db.execute("SELECT name FROM _migrations")}
                known = {name for name, _ in MIGRATIONS}
                newer = sorted(done - known)
                if newer:
                    raise LedgerError(
                        f"{self.path} was written by a newer llm_magic (schema {newer[-1]}); "
                        "upgrade llm_magic, or set LLM_MAGIC_LEDGER to another file"
                    )
                for name, fn in MIGRATIONS:
                    if name not in done:
                        fn(db)
                        db.execute(
                            "INSERT INTO _migrations VALUES (?, ?)", (name, utcnow().isoformat())
                        )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def schema_version(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM _migrations ORDER BY name")]

    # -- writing -------------------------------------------------------------------------------
    def record(self, row: Mapping[str, Any]) -> None:
        """Append one call, durably, in one transaction (all columns or nothing)."""
        unknown = set(row) - set(NAMES)
        if unknown:
            raise ValueError(f"unknown ledger columns: {sorted(unknown)}")
        if row.get("status") not in STATUSES:
            raise ValueError(f"bad status {row.get('status')!r}")
        values = []
        for name in NAMES:
            v = row.get(name)
            if name == "tags" and v is not None and not isinstance(v, str):
                v = json.dumps(v, sort_keys=True)
            if isinstance(v, datetime):
                v = v.astimezone(timezone.utc).isoformat()
            if isinstance(v, float) and math.isnan(v):
                v = None  # NaN is stored as NULL and read back as NaN
            values.append(v)
        marks = ",".join("?" * len(NAMES))
        cols = ",".join(f'"{n}"' for n in NAMES)
        with self._lock:
            self._db.execute(f"INSERT INTO calls ({cols}) VALUES ({marks})", values)

    # -- prices and aliases --------------------------------------------------------------------
    def set_price(self, model: str, input_per_1m: float, output_per_1m: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO prices VALUES (?, ?, ?, ?)",
                (model, float(input_per_1m), float(output_per_1m), utcnow().isoformat()),
            )

    def prices(self) -> dict[str, tuple[float, float]]:
        rows = self._db.execute("SELECT model, input_per_1m, output_per_1m FROM prices")
        return {m: (i, o) for m, i, o in rows}

    def set_alias(self, name: str, model: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?)", (name, model))

    def aliases(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT name, model FROM aliases").fetchall())

    # -- reading -------------------------------------------------------------------------------
    def rows(self, where: str = "", params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        cur = self._db.execute(f"SELECT * FROM calls {where} ORDER BY ts_start", tuple(params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    @property
    def df(self) -> pd.DataFrame:
        """Every call as a DataFrame (UTC timestamps, NaN where no cost is known)."""
        import pandas as pd

        frame = pd.read_sql_query("SELECT * FROM calls ORDER BY ts_start", self._db)
        for col in ("ts_start", "ts_end"):
            frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601")
        for col in ("cost_usd", "latency_s", "ttft_s", "output_tps", "temperature"):
            frame[col] = frame[col].astype("float64")
        for col in ("input_tokens", "output_tokens", "attempts", "http_status", "max_tokens"):
            frame[col] = frame[col].astype("Int64")
        frame["tags"] = frame["tags"].map(
            lambda t: json.loads(t) if isinstance(t, str) and t else {}
        )
        return frame

    def cost_today(self) -> float:
        """Dollars spent since midnight UTC (known costs only)."""
        today = utcnow().date().isoformat()
        row = self._db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM calls WHERE ts_start >= ?", (today,)
        ).fetchone()
        return float(row[0])

    def summary(self, by: str = "model", today: bool = False) -> pd.DataFrame:
        """Calls, tokens, cost and latency percentiles grouped by ``model|agent|user|day|status``."""
        import pandas as pd

        keys = {"model", "agent", "user", "day", "status", "provider", "chat"}
        if by not in keys:
            raise UsageProblem(f"cannot group by {by!r}: use one of {', '.join(sorted(keys))}")
        frame = self.df
        if today:
            frame = frame[frame["ts_start"] >= pd.Timestamp(utcnow().date(), tz="UTC")]
        if by == "day":
            frame = frame.assign(day=frame["ts_start"].dt.strftime("%Y-%m-%d"))
        frame = frame.assign(**{by: frame[by].fillna("—")})
        grouped = frame.groupby(by, sort=True)
        out = pd.DataFrame(
            {
                "calls": grouped.size(),
                "errors": grouped["status"].agg(lambda s: int((s != "ok").sum())),
                "input_tokens": grouped["input_tokens"].sum(),
                "output_tokens": grouped["output_tokens"].sum(),
                # min_count=1: a group with no known price stays NaN, never a silent 0
                "cost_usd": grouped["cost_usd"].sum(min_count=1),
                "unpriced_calls": grouped["cost_usd"].agg(lambda s: int(s.isna().sum())),
                "p50_latency_s": grouped["latency_s"].median(),
                "p95_latency_s": grouped["latency_s"].quantile(0.95),
                "p50_ttft_s": grouped["ttft_s"].median(),
            }
        )
        return out

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

    def to_parquet(self, path: str | Path) -> Path:
        try:
            self.df.to_parquet(path)
        except ImportError:
            raise UsageProblem("to_parquet needs pyarrow: pip install pyarrow") from None
        return Path(path)

    def close(self) -> None:
        self._db.close()


_ledgers: dict[str, Ledger] = {}
_ledgers_lock = threading.Lock()


def open_ledger(url: str) -> Ledger:
    """The ledger at ``url`` (one connection per URL per process)."""
    with _ledgers_lock:
        if url not in _ledgers:
            _ledgers[url] = Ledger(url)
        return _ledgers[url]


def ledger(url: str | None = None) -> Ledger:
    """The ledger in use: ``url``, else ``LLM_MAGIC_LEDGER``, else the user-data SQLite file."""
    from .config import settings

    return open_ledger(url or settings().ledger)

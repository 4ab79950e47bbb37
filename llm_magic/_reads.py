"""Reading the ledger into pandas: typed frames and the SQL-aggregated summary."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from ._sql import tables
from .errors import UsageProblem
from .record import COLUMNS, USAGE_DETAIL, utcnow

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine

__all__ = ["GROUPS", "typed", "summary_query", "summary_parts", "summary_frame"]

GROUPS = ("model", "agent", "user", "day", "status", "provider", "chat")
INT_COLUMNS = [name for name, kind in COLUMNS if kind == "int"]


SUMMED = ["calls", "errors", "input_tokens", "output_tokens", "unpriced_calls", *USAGE_DETAIL]


class SummaryQuery(NamedTuple):
    totals: Any  # calls, errors, tokens, cost, usage detail by key, model and provider
    inputs: Any  # key, latency_s, ttft_s of the ok calls (SQLite's percentiles, in pandas)
    ok: list[Any]  # the WHERE of the ok calls
    key: Any  # the grouping expression, labelled ``by``
    by: str


def summary_query(by: str, today: bool) -> SummaryQuery:
    """The queries of ``Ledger.summary(by, today)``; :class:`UsageProblem` for a bad ``by``."""
    from sqlalchemy import case, func, literal, select

    if by not in GROUPS:
        raise UsageProblem(f"cannot group by {by!r}: use one of {', '.join(GROUPS)}")
    c = tables()["calls"].c
    key = func.substr(c.ts_start, 1, 10) if by == "day" else c[by]
    key = func.coalesce(key, literal("—")).label(by)
    where = [c.ts_start >= utcnow().date().isoformat()] if today else []
    totals = (
        select(
            key,
            c.model.label("_model"),  # by model too: what the cache saved is priced per model
            c.provider.label("_provider"),
            func.count().label("calls"),
            func.sum(case((c.status != "ok", 1), else_=0)).label("errors"),
            func.coalesce(func.sum(c.input_tokens), 0).label("input_tokens"),
            func.coalesce(func.sum(c.output_tokens), 0).label("output_tokens"),
            func.sum(c.cost_usd).label("cost_usd"),  # NULL when every cost is unknown
            func.sum(case((c.cost_usd.is_(None), 1), else_=0)).label("unpriced_calls"),
            *(func.coalesce(func.sum(c[part]), 0).label(part) for part in USAGE_DETAIL),
        )
        .where(*where)
        .group_by(key, c.model, c.provider)  # sorted by key when folded (summary_frame)
    )
    ok = [*where, c.status == "ok"]
    inputs = select(key, c.latency_s, c.ttft_s).where(*ok)
    return SummaryQuery(totals, inputs, ok, key, by)


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame read by pandas from the calls table, with the ledger's types: UTC timestamps,
    floats (NaN for NULL), nullable integers, tags as dicts."""
    import pandas as pd

    for col in ("ts_start", "ts_end"):
        if col in frame:
            frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601")
    for col in ("cost_usd", "latency_s", "ttft_s", "output_tps", "temperature", "setup_s"):
        if col in frame:
            frame[col] = frame[col].astype("float64")
    for col in INT_COLUMNS:
        if col in frame:
            frame[col] = frame[col].astype("Int64")
    if "tags" in frame:
        frame["tags"] = frame["tags"].map(
            lambda t: json.loads(t) if isinstance(t, str) and t else {}
        )
    return frame


def summary_parts(
    engine: Engine,
    dialect: str,
    query: SummaryQuery,
    fast: Callable[[], pd.DataFrame | None] | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The totals, and the latency spread of ok calls (PostgreSQL's percentiles; for SQLite
    pandas' over three columns, read by ``fast`` when given)."""
    import pandas as pd
    from sqlalchemy import func, select

    totals, inputs, ok, key, by = query
    c = tables()["calls"].c
    with engine.connect() as conn:
        out = pd.read_sql(totals, conn)
        if dialect == "postgresql":
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


def summary_frame(
    out: pd.DataFrame, spread: pd.DataFrame, by: str, saved: Callable[[pd.DataFrame], Any] | None
) -> pd.DataFrame:
    """Totals (by key, model and provider) folded by key, with what the cache saved
    (``saved``: dollars per totals row; NaN without it), joined to the spread, with fixed
    dtypes (even when empty)."""
    for col in SUMMED:
        out[col] = out[col].astype("int64")
    out["cost_usd"] = out["cost_usd"].astype("float64")
    cached = (out["cache_read_tokens"] > 0) | (out["cache_write_tokens"] > 0)
    out["cache_saved_usd"] = 0.0
    if cached.any():  # priced only where the cache was used (pricing may load litellm)
        out.loc[cached, "cache_saved_usd"] = saved(out[cached]) if saved else float("nan")
    grouped = out.groupby(by, sort=True)
    folded = grouped[SUMMED].sum()
    for col in ("cost_usd", "cache_saved_usd"):  # NaN when no part of it is known
        folded[col] = grouped[col].sum(min_count=1)
    order = ["calls", "errors", "input_tokens", "output_tokens", "cost_usd", "unpriced_calls"]
    folded = folded[[*order, *USAGE_DETAIL, "cache_saved_usd"]].join(spread, how="left")
    for col in ("cost_usd", "cache_saved_usd", "p50_latency_s", "p95_latency_s", "p50_ttft_s"):
        folded[col] = folded[col].astype("float64")
    return folded

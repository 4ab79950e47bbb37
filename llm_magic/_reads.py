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
FLOAT_COLUMNS = [name for name, kind in COLUMNS if kind == "float"]


SUMMED = ["calls", "errors", "input_tokens", "output_tokens", "unpriced_calls", *USAGE_DETAIL]


class SummaryQuery(NamedTuple):
    totals: Any  # calls, errors, tokens, cost, usage detail by key, model and provider
    inputs: Any  # key, latency_s, ttft_s of the ok calls (SQLite's percentiles, in pandas)
    ok: list[Any]  # the WHERE of the ok calls
    key: Any  # the grouping expression, labelled ``by``
    by: str
    detail: Any  # the usage detail by key, model and provider, of the calls that report some
    saved: Any = None  # what the response cache saved by key (the ``cached`` calls only)


def summary_query(by: str, today: bool) -> SummaryQuery:
    """The queries of ``Ledger.summary(by, today)``; :class:`UsageProblem` for a bad ``by``."""
    from sqlalchemy import case, func, literal, literal_column, or_, select

    if by not in GROUPS:
        raise UsageProblem(f"cannot group by {by!r}: use one of {', '.join(GROUPS)}")
    c = tables()["calls"].c
    key = func.substr(c.ts_start, 1, 10) if by == "day" else c[by]
    key = func.coalesce(key, literal("—")).label(by)
    where = [c.ts_start >= utcnow().date().isoformat()] if today else []
    totals = (
        select(
            key,
            func.count().label("calls"),
            func.sum(case((c.status.not_in(("ok", "cached")), 1), else_=0)).label("errors"),
            func.coalesce(func.sum(c.input_tokens), 0).label("input_tokens"),
            func.coalesce(func.sum(c.output_tokens), 0).label("output_tokens"),
            func.sum(c.cost_usd).label("cost_usd"),  # NULL when every cost is unknown
            func.sum(case((c.cost_usd.is_(None), 1), else_=0)).label("unpriced_calls"),
        )
        .where(*where)
        .group_by(key)
        .order_by(key)
    )
    # the usage detail of the calls that report some, by key and model (what the cache saved
    # is priced per model): read through the partial index calls_usage_detail, whose WHERE
    # this repeats literally (a bound parameter would not match it)
    zero: Any = literal_column("0")
    some = or_(*(c[part] > zero for part in ("cache_read_tokens", "cache_write_tokens")),
               c.reasoning_tokens > zero)  # fmt: skip
    detail = (
        select(
            key,
            c.model.label("_model"),
            c.provider.label("_provider"),
            *(func.sum(c[part]).label(part) for part in USAGE_DETAIL),
        )
        .where(*where, some)
        .group_by(key, c.model, c.provider)
    )
    ok = [*where, c.status == "ok"]
    inputs = select(key, c.latency_s, c.ttft_s).where(*ok)
    # the response cache's savings: the cached calls only (found through calls_summary, whose
    # first column is status), so the totals above keep reading their covering index alone
    saved = (
        select(key, func.sum(c.saved_usd).label("saved_usd"))
        .where(*where, c.status == "cached")
        .group_by(key)
    )
    return SummaryQuery(totals, inputs, ok, key, by, detail, saved)


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame read by pandas from the calls table, with the ledger's types: UTC timestamps,
    floats (NaN for NULL), nullable integers, tags as dicts."""
    import pandas as pd

    for col in ("ts_start", "ts_end"):
        if col in frame:
            frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601")
    for col in FLOAT_COLUMNS:
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
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The totals, the usage detail by key and model, and the latency spread of ok calls
    (PostgreSQL's percentiles; for SQLite pandas' over three columns, read by ``fast`` when
    given)."""
    import pandas as pd
    from sqlalchemy import func, select

    totals, inputs, ok, key, by, detail, saved = query
    c = tables()["calls"].c
    with engine.connect() as conn:
        out = pd.read_sql(totals, conn).set_index(by)
        if saved is not None:
            out = out.join(pd.read_sql(saved, conn).set_index(by), how="left")
        used = pd.read_sql(detail, conn)
        if dialect == "postgresql":
            pct = (
                select(
                    key,
                    func.percentile_cont(0.5).within_group(c.latency_s).label("p50_latency_s"),
                    func.percentile_cont(0.95).within_group(c.latency_s).label("p95_latency_s"),
                    func.percentile_cont(0.5).within_group(c.ttft_s).label("p50_ttft_s"),
                    func.percentile_cont(0.95).within_group(c.ttft_s).label("p95_ttft_s"),
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
                    "p95_ttft_s": grouped["ttft_s"].quantile(0.95),
                }
            )
    return out, spread, used


def summary_frame(
    out: pd.DataFrame,
    spread: pd.DataFrame,
    detail: pd.DataFrame,
    saved: Callable[[pd.DataFrame], Any] | None,
) -> pd.DataFrame:
    """Totals, the usage detail summed by key, what the prompt cache saved by key (``saved``:
    dollars for each row of ``detail`` that used the cache; NaN without it), what the response
    cache saved (``saved_usd``, 0 without cached calls) and the spread joined, with fixed dtypes
    (even when empty)."""
    for col in USAGE_DETAIL:
        detail[col] = detail[col].fillna(0).astype("int64")
    used = detail[(detail["cache_read_tokens"] > 0) | (detail["cache_write_tokens"] > 0)]
    detail["cache_saved_usd"] = 0.0
    if len(used):  # pricing (maybe litellm) only if the cache was used
        detail.loc[used.index, "cache_saved_usd"] = saved(used) if saved else float("nan")
    grouped = detail.groupby(str(out.index.name))
    sums = grouped[list(USAGE_DETAIL)].sum()
    sums["cache_saved_usd"] = grouped["cache_saved_usd"].sum(min_count=1)
    out = out.join(sums, how="left").join(spread, how="left")
    for col in USAGE_DETAIL:
        out[col] = out[col].fillna(0)
    out["cache_saved_usd"] = out["cache_saved_usd"].where(out.index.isin(sums.index), 0.0)
    out["saved_usd"] = out["saved_usd"].fillna(0.0) if "saved_usd" in out else 0.0
    for col in SUMMED:
        out[col] = out[col].astype("int64")
    money = ("cost_usd", "cache_saved_usd", "saved_usd")
    for col in (*money, "p50_latency_s", "p95_latency_s", "p50_ttft_s", "p95_ttft_s"):
        out[col] = out[col].astype("float64")
    return out

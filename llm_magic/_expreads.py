"""What an experiment's re-run reads from the ledger: its calls so far, and each model's usual
answer length (for the expected cost).

Ledger layer (imports only the base and the ledger): :mod:`llm_magic.experiments` decides what
to reuse from these rows; nothing about an experiment is kept anywhere but the ledger.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ._reads import typed
from ._sql import problem, tables

if TYPE_CHECKING:
    import pandas as pd

    from .store import Ledger

__all__ = [
    "EXPERIMENT_COLUMNS",
    "experiment_calls",
    "table_calls",
    "answered_ids",
    "calls_by_id",
    "made_by",
    "mean_output_tokens",
]

#: The columns an experiment's table is made of (besides its identity).
EXPERIMENT_COLUMNS = [
    "call_id",
    "ts_start",
    "requested_model",
    "model",
    "status",
    "prompt_hash",
    "repeat",
    "response",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_s",
    "ttft_s",
    "error_message",
    "request_hash",
    "saved_usd",
]


def experiment_calls(book: Ledger, name: str) -> pd.DataFrame:
    """Every call recorded under experiment ``name`` (any status), oldest first."""
    import pandas as pd
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import select

    calls = tables()["calls"]
    query = (
        select(*[calls.c[c] for c in EXPERIMENT_COLUMNS])
        .where(calls.c.experiment == name)
        .order_by(calls.c.ts_start)
    )
    try:
        with book._engine.connect() as conn:
            frame = pd.read_sql(query, conn)
    except sa_exc.DBAPIError as exc:
        raise problem(exc, book.path) from None
    return typed(frame)


def table_calls(book: Ledger, name: str, since: datetime | None = None) -> pd.DataFrame:
    """The calls an experiment's table is made of, oldest first: its ``ok`` calls, and the
    calls of any other status of the identities (prompt_hash, model asked for, repeat) with no
    ``ok`` call; ``since``: written at or after it only (``fresh=True``). A re-run's ``cached``
    rows of answered identities are left in the ledger: each "Restart & Run All" adds as many,
    and the table never shows them."""
    import pandas as pd
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import select, tuple_

    calls = tables()["calls"]
    mine = [calls.c.experiment == name]
    if since is not None:
        mine.append(calls.c.ts_start >= since.astimezone(timezone.utc).isoformat())
    identity = tuple_(calls.c.prompt_hash, calls.c.requested_model, calls.c.repeat)
    ok = select(calls.c.prompt_hash, calls.c.requested_model, calls.c.repeat).where(
        *mine, calls.c.status == "ok"
    )
    columns = [calls.c[c] for c in EXPERIMENT_COLUMNS]
    queries = [
        select(*columns).where(*mine, calls.c.status == "ok"),
        select(*columns).where(*mine, calls.c.status != "ok", identity.not_in(ok)),
    ]
    try:
        with book._engine.connect() as conn:
            parts = [pd.read_sql(q, conn) for q in queries]
    except sa_exc.DBAPIError as exc:
        raise problem(exc, book.path) from None
    both = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
    return typed(both.sort_values("ts_start", kind="stable").reset_index(drop=True))


def answered_ids(book: Ledger, name: str) -> list[tuple[str, str, int, str, float | None]]:
    """``(prompt_hash, model asked for, repeat, call_id, cost_usd)`` of each ``ok`` call of
    experiment ``name``, oldest first (a re-run reuses the newest per identity): only what the
    re-run needs, not the rows (its ``cached`` rows are made from them in the database)."""
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import select

    calls = tables()["calls"]
    c = calls.c
    query = (
        select(c.prompt_hash, c.requested_model, c.repeat, c.call_id, c.cost_usd)
        .where(c.experiment == name, c.status == "ok")
        .order_by(c.ts_start)
    )
    try:
        with book._engine.connect() as conn:
            return [tuple(row) for row in conn.execute(query)]  # type: ignore[misc]
    except sa_exc.DBAPIError as exc:
        raise problem(exc, book.path) from None


def calls_by_id(book: Ledger, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The whole rows of these calls: call_id → row."""
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import select

    calls = tables()["calls"]
    found: dict[str, dict[str, Any]] = {}
    try:
        with book._engine.connect() as conn:
            for i in range(0, len(ids), 500):
                query = select(calls).where(calls.c.call_id.in_(ids[i : i + 500]))
                found |= {row.call_id: dict(row._mapping) for row in conn.execute(query)}
    except sa_exc.DBAPIError as exc:
        raise problem(exc, book.path) from None
    return found


def made_by(book: Ledger, hashes: list[str]) -> pd.DataFrame:
    """Every ``ok`` call (any experiment or none) of these request hashes, oldest first:
    ``request_hash``, ``ts_start``, ``cost_usd``, ``latency_s``, ``ttft_s``. An experiment's
    table shows, for a call the response cache answered, the measurements of the one that made
    the answer (the newest before the ``cached`` row)."""
    import pandas as pd
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import select

    calls = tables()["calls"]
    columns = ["request_hash", "ts_start", "cost_usd", "latency_s", "ttft_s"]
    wanted = sorted(set(hashes))
    parts = [pd.DataFrame(columns=columns)]
    try:
        with book._engine.connect() as conn:
            for i in range(0, len(wanted), 500):
                query = select(*[calls.c[c] for c in columns]).where(
                    calls.c.request_hash.in_(wanted[i : i + 500]), calls.c.status == "ok"
                )
                parts.append(pd.read_sql(query, conn))
    except sa_exc.DBAPIError as exc:
        raise problem(exc, book.path) from None
    found = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return typed(found).sort_values("ts_start", kind="stable").reset_index(drop=True)


def mean_output_tokens(book: Ledger, models: list[str]) -> dict[str, float]:
    """The mean output tokens of each model's ``ok`` chat calls (by the name asked for), for
    the models that have some."""
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import func, select

    calls = tables()["calls"]
    query = (
        select(calls.c.requested_model, func.avg(calls.c.output_tokens))
        .where(calls.c.requested_model.in_(models), calls.c.status == "ok")
        .group_by(calls.c.requested_model)
    )
    try:
        with book._engine.connect() as conn:
            found = conn.execute(query).all()
    except sa_exc.DBAPIError as exc:
        raise problem(exc, book.path) from None
    return {str(m): float(v) for m, v in found if v is not None}

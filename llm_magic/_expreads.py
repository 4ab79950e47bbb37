"""What an experiment's re-run reads from the ledger: its calls so far, and each model's usual
answer length (for the expected cost).

Ledger layer (imports only the base and the ledger): :mod:`llm_magic.experiments` decides what
to reuse from these rows; nothing about an experiment is kept anywhere but the ledger.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._reads import typed
from ._sql import problem, tables

if TYPE_CHECKING:
    import pandas as pd

    from .store import Ledger

__all__ = [
    "EXPERIMENT_COLUMNS",
    "experiment_calls",
    "answered_calls",
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


def answered_calls(book: Ledger, name: str) -> list[dict[str, Any]]:
    """The whole row of each ``ok`` call of experiment ``name``, oldest first (a re-run
    reuses the newest per identity): what its ``cached`` rows are made from."""
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import select

    calls = tables()["calls"]
    query = (
        select(calls)
        .where(calls.c.experiment == name, calls.c.status == "ok")
        .order_by(calls.c.ts_start)
    )
    try:
        with book._engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]
    except sa_exc.DBAPIError as exc:
        raise problem(exc, book.path) from None


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

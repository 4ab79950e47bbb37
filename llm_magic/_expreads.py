"""What an experiment's re-run reads from the ledger: its calls so far, and each model's usual
answer length (for the expected cost).

Ledger layer (imports only the base and the ledger): :mod:`llm_magic.experiments` decides what
to reuse from these rows; nothing about an experiment is kept anywhere but the ledger.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._reads import typed
from ._sql import problem, tables

if TYPE_CHECKING:
    import pandas as pd

    from .store import Ledger

__all__ = ["EXPERIMENT_COLUMNS", "experiment_calls", "mean_output_tokens"]

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

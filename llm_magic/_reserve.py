"""Budget reservations in the ledger: the worst-case cost of each call in flight, held in one
transaction against today's spend so that N processes cannot pass the budget together."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ._sql import tables
from .record import utcnow

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["RESERVATION_TTL_S", "hold", "drop", "total"]

RESERVATION_TTL_S = 900.0  # a reservation left by a killed process on another host expires


def alive(pid: Any) -> bool:
    """Whether process ``pid`` (on this host) still runs."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True


def hold(
    engine: Engine,
    dialect: str,
    call_id: str,
    model: str,
    amount: float,
    budget: float,
    journal_cost: Callable[[datetime], float],
) -> tuple[bool, float, float]:
    """In one transaction: drop expired reservations and those of dead processes on this host;
    then, if today's spend (+ ``journal_cost``) + open reservations + ``amount`` fit in
    ``budget``, hold ``amount`` for ``call_id``. Returns (held, spent, held by others)."""
    from sqlalchemy import func, select, text

    res = tables()["reservations"]
    calls = tables()["calls"]
    now = utcnow()
    host = socket.gethostname()
    with engine.connect().execution_options(immediate=True) as conn:
        with conn.begin():
            if dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(7419005)"))
            conn.execute(res.delete().where(res.c.expires_at < now.isoformat()))
            rows = conn.execute(select(res.c.call_id, res.c.host, res.c.pid)).all()
            dead = [r.call_id for r in rows if r.host == host and not alive(r.pid)]
            if dead:
                conn.execute(res.delete().where(res.c.call_id.in_(dead)))
            spent = conn.execute(
                select(func.coalesce(func.sum(calls.c.cost_usd), 0.0)).where(
                    calls.c.ts_start >= now.date().isoformat()
                )
            ).scalar()
            held = conn.execute(select(func.coalesce(func.sum(res.c.amount_usd), 0.0))).scalar()
            spent = float(spent or 0.0) + journal_cost(now)
            held = float(held or 0.0)
            if spent + held + amount > budget * (1 + 1e-9) + 1e-12:
                return False, spent, held
            conn.execute(
                res.insert().values(
                    call_id=call_id,
                    model=model,
                    amount_usd=float(amount),
                    created_at=now.isoformat(),
                    expires_at=datetime.fromtimestamp(
                        now.timestamp() + RESERVATION_TTL_S, timezone.utc
                    ).isoformat(),
                    host=host,
                    pid=os.getpid(),
                )
            )
    return True, spent, held


def drop(engine: Engine, call_id: str) -> bool:
    """Remove ``call_id``'s reservation; False if the database could not be reached."""
    from sqlalchemy import exc as sa_exc

    res = tables()["reservations"]
    try:
        with engine.begin() as conn:
            conn.execute(res.delete().where(res.c.call_id == call_id))
    except sa_exc.DBAPIError:
        return False
    return True


def total(engine: Engine) -> float:
    """Dollars held by calls in flight (all processes)."""
    from sqlalchemy import func, select

    res = tables()["reservations"]
    with engine.connect() as conn:
        return float(
            conn.execute(select(func.coalesce(func.sum(res.c.amount_usd), 0.0))).scalar() or 0.0
        )

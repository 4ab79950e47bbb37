"""The response cache's reads and writes in the ledger: the newest ``ok`` row of a request
(by ``request_hash``, read through the ``calls_request_hash`` index) and the time of the last
``%llm cache clear``, kept in the ``meta`` table (the ledger's rows are never deleted).

Ledger layer: imports only the base and the ledger's own SQL plumbing. The policy (which
requests may be answered from the ledger, and the row that records it) is
:mod:`llm_magic._respcache`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._sql import dialect_insert, problem, tables
from .record import utcnow

if TYPE_CHECKING:
    from .store import Ledger

__all__ = ["CLEARED_KEY", "newest_ok", "newest_ok_many", "cleared_at", "clear", "counts"]

BATCH = 500  # hashes per query of newest_ok_many (well under every engine's parameter limit)

CLEARED_KEY = "response_cache_cleared_at"
_meta: dict[str, Any] = {}


def _meta_table() -> Any:
    """``meta`` as queries see it (made by migration m009, never here)."""
    if "meta" not in _meta:
        from sqlalchemy import Column, MetaData, Table, Text

        _meta["meta"] = Table(
            "meta",
            MetaData(),
            Column("key", Text, primary_key=True),
            Column("value", Text),
            Column("set_at", Text, nullable=False),
        )
    return _meta["meta"]


def _engine(book: Ledger) -> Any:
    return book._engine  # the ledger layer's own engine


def cleared_at(book: Ledger) -> str | None:
    """When the response cache was last cleared (ISO 8601 UTC), None if never."""
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import select

    meta = _meta_table()
    try:
        with _engine(book).connect() as conn:
            value = conn.execute(select(meta.c.value).where(meta.c.key == CLEARED_KEY)).scalar()
    except sa_exc.DBAPIError as exc:
        raise problem(exc, book.path) from None
    return str(value) if value else None


def newest_ok(book: Ledger, request_hash: str) -> dict[str, Any] | None:
    """The newest ``ok`` row of ``request_hash`` with a stored response, written after the
    last clear; None when there is none."""
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import select

    calls = tables()["calls"]
    since = cleared_at(book)
    where = [
        calls.c.request_hash == request_hash,
        calls.c.status == "ok",
        calls.c.response.is_not(None),
    ]
    if since is not None:
        where.append(calls.c.ts_start > since)
    query = select(calls).where(*where).order_by(calls.c.ts_start.desc()).limit(1)
    try:
        with _engine(book).connect() as conn:
            row = conn.execute(query).first()
    except sa_exc.DBAPIError as exc:
        raise problem(exc, book.path) from None
    return dict(row._mapping) if row is not None else None


def newest_ok_many(book: Ledger, hashes: list[str]) -> dict[str, dict[str, Any]]:
    """:func:`newest_ok` for many hashes at once (a query per :data:`BATCH` of them): hash →
    its newest usable row, for the hashes that have one."""
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import select

    calls = tables()["calls"]
    since = cleared_at(book)
    wanted = sorted(set(hashes))
    found: dict[str, dict[str, Any]] = {}
    try:
        with _engine(book).connect() as conn:
            for i in range(0, len(wanted), BATCH):
                where = [
                    calls.c.request_hash.in_(wanted[i : i + BATCH]),
                    calls.c.status == "ok",
                    calls.c.response.is_not(None),
                ]
                if since is not None:
                    where.append(calls.c.ts_start > since)
                for row in conn.execute(select(calls).where(*where).order_by(calls.c.ts_start)):
                    found[row.request_hash] = dict(row._mapping)  # the newest comes last
    except sa_exc.DBAPIError as exc:
        raise problem(exc, book.path) from None
    return found


def clear(book: Ledger) -> str:
    """Forget every answer so far for the response cache (rows stay); returns the time kept."""
    from sqlalchemy import exc as sa_exc

    now = utcnow().isoformat()
    meta = _meta_table()
    stmt = dialect_insert(book.dialect, meta).values(key=CLEARED_KEY, value=now, set_at=now)
    stmt = stmt.on_conflict_do_update(index_elements=["key"], set_={"value": now, "set_at": now})
    try:
        with _engine(book).begin() as conn:
            conn.execute(stmt)
    except sa_exc.DBAPIError as exc:
        raise problem(exc, book.path) from None
    return now


def counts(book: Ledger) -> tuple[int, int, float]:
    """Since the last clear: (answers the cache can give, rows answered from it, dollars saved)."""
    from sqlalchemy import and_, case, distinct, func, select

    calls = tables()["calls"]
    since = cleared_at(book)
    where = [calls.c.request_hash.is_not(None)]
    if since is not None:
        where.append(calls.c.ts_start > since)
    usable = and_(calls.c.status == "ok", calls.c.response.is_not(None))
    query = select(
        func.count(distinct(case((usable, calls.c.request_hash)))),
        func.sum(case((calls.c.status == "cached", 1), else_=0)),
        func.coalesce(func.sum(calls.c.saved_usd), 0.0),
    ).where(*where)
    with _engine(book).connect() as conn:
        answers, served, saved = conn.execute(query).one()
    return int(answers or 0), int(served or 0), float(saved or 0.0)

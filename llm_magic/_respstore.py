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

__all__ = [
    "CLEARED_KEY",
    "FROM_SOURCE",
    "newest_ok",
    "newest_ok_many",
    "cleared_at",
    "clear",
    "counts",
    "copy_cached",
]

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


#: The columns a ``cached`` row takes from the call that made its answer, as
#: :func:`llm_magic._respcache.cached_record` takes them from ``hit`` (its request's
#: ``requested_model``, ``experiment``, ``prompt_hash`` and ``repeat`` are the source's too: the
#: copy is made for a re-run's identical calls). ``prompt`` and ``response`` only with text kept.
FROM_SOURCE = (
    "requested_model",
    "model",
    "provider",
    "input_tokens",
    "output_tokens",
    "usage_source",
    "price_source",
    "max_tokens",
    "prompt",
    "response",
    "finish_reason",
    "tool_calls",
    "request_hash",
    "saved_usd",
    "experiment",
    "prompt_hash",
    "repeat",
)


def _new_id(dialect: str) -> Any:
    """A random 32-hex-digit id made by the database, one per row (as ``uuid4().hex``)."""
    from sqlalchemy import Text, cast, func

    if dialect == "sqlite":
        return func.lower(func.hex(func.randomblob(16)))
    return func.replace(cast(func.gen_random_uuid(), Text), "-", "")


def copy_cached(
    book: Ledger, sources: list[str], constants: dict[str, Any], store_text: bool
) -> int:
    """One ``cached`` row per call id in ``sources``, made by the database from that call's
    row (``INSERT … SELECT``, :data:`BATCH` ids a statement, all in one transaction): the row
    :func:`llm_magic._respcache.cached_record` builds in Python, for the thousands of reused
    calls of an experiment's re-run, without reading them into Python. The columns of
    :data:`FROM_SOURCE` come from the source (``saved_usd`` is its ``cost_usd``); ``call_id``
    and ``trace_id`` are new random ids; every other column is ``constants[column]`` (a value as
    :func:`llm_magic._sql.row_values` stores it). Returns the rows written."""
    from sqlalchemy import exc as sa_exc
    from sqlalchemy import func, insert, literal, null, select

    from .record import NAMES

    calls = tables()["calls"]
    src = calls.alias("src")
    taken = {name: src.c[name] for name in FROM_SOURCE}
    taken |= {
        "saved_usd": src.c.cost_usd,  # NULL when the original's price was unknown
        "input_tokens": func.coalesce(src.c.input_tokens, 0),
        "output_tokens": func.coalesce(src.c.output_tokens, 0),
        "usage_source": func.coalesce(src.c.usage_source, "provider"),
        "max_tokens": func.coalesce(src.c.max_tokens, constants["max_tokens"]),
        "prompt": src.c.prompt if store_text else null(),
        "response": func.coalesce(src.c.response, "") if store_text else null(),
        "call_id": _new_id(book.dialect),
        "trace_id": _new_id(book.dialect),
    }
    columns = [
        taken[name] if name in taken else literal(constants[name], calls.c[name].type)
        for name in NAMES
    ]
    written = 0
    try:
        with _engine(book).connect() as conn, conn.begin():
            for i in range(0, len(sources), BATCH):
                chunk = sources[i : i + BATCH]
                query = select(*columns).where(src.c.call_id.in_(chunk))
                stmt = insert(calls).from_select(NAMES, query)
                written += conn.execute(
                    stmt, execution_options={"preserve_rowcount": True}
                ).rowcount
    except sa_exc.DBAPIError as exc:
        raise problem(exc, book.path) from None
    return written


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

"""The pages of ``python -m llm_magic serve``: ``/`` (chat, using ``static/client.js``) and
``/spend`` (today's spend against the budget, live), their static files, and the JSON and SSE
routes the spend page reads. The figures are :meth:`Ledger.summary`'s, never recomputed here."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from ..config import Settings, settings
from ..record import utcnow
from ..store import Ledger
from .auth import require_token

__all__ = ["router", "spend_snapshot"]

STATIC = Path(__file__).parent / "static"
FILES = {  # what /static/ serves: these and nothing else
    "client.js": "text/javascript",
    "chat.js": "text/javascript",
    "spend.js": "text/javascript",
    "style.css": "text/css",
}
GROUPS = ("model", "agent", "user")
POLL_S = 1.0  # how often /api/spend/events looks at the ledger (one COUNT(*))
PING_S = 15.0

router = APIRouter(dependencies=[Depends(require_token)])


def _page(name: str) -> FileResponse:
    return FileResponse(
        STATIC / name, media_type="text/html", headers={"Cache-Control": "no-cache"}
    )


@router.get("/", include_in_schema=False)
def chat_page() -> FileResponse:
    return _page("chat.html")


@router.get("/spend", include_in_schema=False)
def spend_page() -> FileResponse:
    return _page("spend.html")


@router.get("/static/{name}", include_in_schema=False)
def static_file(name: str) -> Response:
    kind = FILES.get(name)
    if kind is None:
        return JSONResponse({"error": f"no static file {name!r}"}, status_code=404)
    return FileResponse(STATIC / name, media_type=kind, headers={"Cache-Control": "no-cache"})


def _plain(value: Any) -> Any:
    """A summary cell as JSON: NaN → null, NumPy scalars → Python numbers."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def spend_snapshot(cfg: Settings, book: Ledger) -> dict[str, Any]:
    """Today's spend against the daily budget, and ``book.summary(by, today=True)`` for model,
    agent and user as lists of rows (the group's name under its own key)."""
    by: dict[str, list[dict[str, Any]]] = {}
    for group in GROUPS:
        frame = book.summary(by=group, today=True)
        by[group] = [
            {group: str(key), **{str(col): _plain(v) for col, v in row.items()}}
            for key, row in frame.iterrows()
        ]
    return {
        "day": utcnow().date().isoformat(),
        "spent_usd": book.cost_today(),
        "budget_usd": cfg.daily_budget_usd,
        "alert_threshold": cfg.budget_alert_threshold,
        "calls": sum(int(r["calls"]) for r in by["model"]),
        "rows": len(book),
        "by": by,
    }


def _cfg(request: Request) -> Settings:
    """The app's settings: those given to ``create_app``, else this process's as they are now
    (a notebook's ``%llm budget 2`` shows on its server's page)."""
    state = request.app.state
    cfg: Settings = state.cfg if getattr(state, "cfg_given", True) else settings()
    return cfg


@router.get("/api/spend")
async def spend(request: Request) -> JSONResponse:
    book = request.app.state.book
    return JSONResponse(await asyncio.to_thread(spend_snapshot, _cfg(request), book))


def _marker(book: Ledger) -> tuple[int, int, str]:
    """What changes when a call lands: the row count, the rows waiting in the journal, the day."""
    return len(book), book.pending(), utcnow().date().isoformat()


async def _spend_events(request: Request, book: Ledger) -> AsyncIterator[str]:
    seen: tuple[int, int, str, float | None] | None = None
    quiet = 0.0
    n = 0
    while not await request.is_disconnected():
        cfg = _cfg(request)
        now = (*await asyncio.to_thread(_marker, book), cfg.daily_budget_usd)
        if now != seen:
            snap = await asyncio.to_thread(spend_snapshot, cfg, book)
            seen, quiet = now, 0.0
            yield f"id: {n}\nevent: snapshot\ndata: {json.dumps(snap)}\n\n"
            n += 1
        elif quiet >= PING_S:
            quiet = 0.0
            yield ": ping\n\n"
        await asyncio.sleep(POLL_S)
        quiet += POLL_S


@router.get("/api/spend/events")
async def spend_events(request: Request) -> StreamingResponse:
    """A ``snapshot`` event now and each time the ledger (or the budget) changes, looked at
    once a second."""
    return StreamingResponse(
        _spend_events(request, request.app.state.book),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )

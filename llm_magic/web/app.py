"""The FastAPI app: ``POST /api/chat`` (an answer as server-sent events), ``GET
/api/chat/<sid>`` (the rest of it, after ``Last-Event-ID``), ``DELETE /api/chat/<sid>`` (stop
it), ``GET /api/models``, and the pages of :mod:`llm_magic.web.pages`. Every route needs the
token (:mod:`llm_magic.web.auth`). Wire format: the README's "Serve a chat".
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from .. import core, errors, gateway
from ..config import Settings, check_number, settings
from ..models import ROUTES, all_aliases, resolve
from ..secrets import scrub
from ..store import Ledger, ledger
from . import auth, pages, tuning, turns
from .body import BadBody, read_body
from .chat import ChatRun
from .sse import Replay, Streams

__all__ = ["create_app", "serve_options", "MAX_TOKENS"]

MAX_TOKENS = 16_384  # the largest max_tokens a request may ask for (LLM_MAGIC_SERVE_MAX_TOKENS)
PROVIDER_CONNECTIONS = 1000  # provider streams at once (httpx's default, kept by litellm: 100)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def serve_options() -> dict[str, float]:
    """``heartbeat_s`` and ``max_tokens`` from ``LLM_MAGIC_SERVE_HEARTBEAT_S`` (default 15)
    and ``LLM_MAGIC_SERVE_MAX_TOKENS`` (default 16384)."""
    found: dict[str, float] = {"heartbeat_s": 15.0, "max_tokens": MAX_TOKENS}
    for key, name in (
        ("heartbeat_s", "LLM_MAGIC_SERVE_HEARTBEAT_S"),
        ("max_tokens", "LLM_MAGIC_SERVE_MAX_TOKENS"),
    ):
        raw = os.environ.get(name, "").strip()
        if raw:
            value = check_number(name, raw, where=f"{name}={raw!r}", fix="give a positive number")
            if value is None or value <= 0:
                raise errors.UsageProblem(f"{name}={raw!r}: give a positive number")
            found[key] = value
    return found


def _gone(app: FastAPI) -> JSONResponse:
    kept = app.state.streams.replay_s
    message = f"that answer is no longer kept ({kept:g}s); ask again"
    return JSONResponse({"error": message}, status_code=410)


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's own refusals (404, 405, a bad query) as ``{"error": …}`` under ``/api/``."""
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(400, f"{where}: {first.get('msg', 'invalid request')}")
    code = getattr(exc, "status_code", 500)
    detail = str(getattr(exc, "detail", "")) or "error"
    if request.url.path.startswith("/api/"):
        return _error(code, f"{detail}: {request.method} {request.url.path}")
    return PlainTextResponse(f"{code} {detail}\n", status_code=code)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": scrub(message)}, status_code=status)


def _stream(replay: Replay, after: int, heartbeat_s: float) -> StreamingResponse:
    return StreamingResponse(
        replay.follow(after, heartbeat_s), media_type="text/event-stream", headers=SSE_HEADERS
    )


def _after(last_event_id: str | None) -> int:
    """The event number in ``Last-Event-ID: <sid>:<n>`` (-1: from the start)."""
    _, _, n = (last_event_id or "").rpartition(":")
    return int(n) if n.strip().isdigit() else -1


def _models(cfg: Settings, book: Ledger) -> list[str]:
    """``local`` and the models (and aliases) whose provider has a key here."""
    names = [
        "local",
        cfg.default_model,
        *all_aliases(book),
        *(m for ms in ROUTES.values() for m in ms),
    ]
    found: list[str] = []
    for name in dict.fromkeys(names):
        try:
            resolve(name, cfg, book)
        except errors.UsageProblem:
            continue
        found.append(name)
    return found


def _current(app: FastAPI) -> Settings:
    """The settings a call uses: those given to :func:`create_app`, else this process's
    settings as they are now (a notebook's ``%llm budget 2`` reaches its server)."""
    if not app.state.cfg_given:
        app.state.cfg = settings()
    cfg: Settings = app.state.cfg
    return cfg


def _api(app: FastAPI) -> APIRouter:
    api = APIRouter(prefix="/api", dependencies=[Depends(auth.require_token)])

    @api.post("/chat")
    async def chat(request: Request) -> Response:
        state = app.state
        try:
            body = await read_body(request, state.max_tokens)
        except BadBody as exc:
            return _error(exc.status, str(exc))
        req = body.request(request.headers.get("x-llm-agent"), request.headers.get("x-llm-user"))
        try:
            cfg = _current(app)
            await asyncio.to_thread(core.check_request, req, cfg, state.book)
        except errors.UsageProblem as exc:
            return _error(400, errors.describe(exc))
        sid = uuid.uuid4().hex
        replay = Replay(sid)
        run = ChatRun(req, cfg, state.book, replay, req.model or cfg.default_model)
        state.streams.add(sid, run)
        run.start()
        return _stream(replay, -1, state.heartbeat_s)

    @api.get("/chat/{sid}")
    async def resume(sid: str, request: Request) -> Response:
        run = app.state.streams.get(sid)
        after = _after(request.headers.get("last-event-id"))
        if run is None or run.replay.kept_from() > after + 1:
            return _gone(app)
        return _stream(run.replay, after, app.state.heartbeat_s)

    @api.delete("/chat/{sid}")
    async def stop(sid: str) -> Response:
        run = app.state.streams.get(sid)
        if run is None:
            return _gone(app)
        run.stop()
        return Response(status_code=204)

    @api.get("/models")
    async def models() -> dict[str, Any]:
        state = app.state
        cfg = _current(app)
        found = await asyncio.to_thread(_models, cfg, state.book)
        return {"models": found, "default": cfg.default_model}

    return api


def create_app(
    cfg: Settings | None = None,
    book: Ledger | None = None,
    *,
    token: str,
    heartbeat_s: float = 15.0,
    replay_s: float = 60.0,
    max_tokens: int = MAX_TOKENS,
    provider_connections: int = PROVIDER_CONNECTIONS,
    switch_interval_s: float | None = tuning.SWITCH_INTERVAL_S,
) -> FastAPI:
    """The app serving chats through the pipeline (``cfg``, ``book``: the settings and ledger
    in use by default); ``token`` guards every route; ``: ping`` every ``heartbeat_s`` while a
    provider is silent; an answer is kept ``replay_s`` seconds after its call for reconnects;
    a request may ask for at most ``max_tokens``; up to ``provider_connections`` provider
    streams run at once (in the whole process: :func:`llm_magic.gateway.allow_connections`);
    while it serves, the process's GIL switch interval is at most ``switch_interval_s``
    (:mod:`llm_magic.web.tuning`: heartbeats on time with hundreds of streams)."""
    given = cfg is not None
    cfg = cfg or settings()
    gateway.allow_connections(provider_connections, turns.backend())
    app = FastAPI(
        title="llm_magic",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=tuning.lifespan(switch_interval_s),
    )
    app.state.cfg = cfg
    app.state.cfg_given = given
    app.state.book = book if book is not None else ledger(cfg.ledger)
    app.state.token = token
    app.state.heartbeat_s = heartbeat_s
    app.state.max_tokens = max_tokens
    app.state.streams = Streams(replay_s)
    auth.install(app)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _http_error)
    app.include_router(_api(app))
    app.include_router(pages.router)
    return app

"""The server's one token: every route needs it.

:func:`require_token` is a FastAPI dependency: the token comes as ``Authorization: Bearer <t>``
or in the ``llm_magic_token`` cookie. A page opened as ``/path?token=<t>`` (the URL the server
prints) gets the cookie (HttpOnly, SameSite=Strict) and a 303 redirect to ``/path``, so the token
leaves the address bar. A missing or wrong token is a 401: JSON ``{"error": …}`` under
``/api/``, a plain page naming the fix elsewhere (the handlers are in :func:`install`).
"""

from __future__ import annotations

import secrets
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

__all__ = ["COOKIE", "require_token", "install", "NoToken", "TokenInURL"]

COOKIE = "llm_magic_token"
FIX = (
    "open the URL `python -m llm_magic serve` printed (…/?token=…), or send "
    "'Authorization: Bearer <token>'"
)


class NoToken(Exception):
    """The request has no token, or a wrong one."""

    def __init__(self, wrong: bool) -> None:
        super().__init__("wrong token" if wrong else "no token")
        self.wrong = wrong


class TokenInURL(Exception):
    """The right token in ``?token=``: set the cookie and send the browser to ``path``."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def _same(given: str, token: str) -> bool:
    return secrets.compare_digest(given.encode(), token.encode())


async def require_token(request: Request) -> None:
    """The FastAPI dependency every route has: ``dependencies=[Depends(require_token)]`` (on
    the event loop: no worker thread per request)."""
    token: str = request.app.state.token
    in_url = request.query_params.get("token")
    if in_url is not None and request.method in ("GET", "HEAD"):
        if not _same(in_url, token):
            raise NoToken(wrong=True)
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        query = urlencode(rest)
        raise TokenInURL(request.url.path + (f"?{query}" if query else ""))
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and given:
        if _same(given.strip(), token):
            return
        raise NoToken(wrong=True)
    cookie = request.cookies.get(COOKIE)
    if cookie is not None and _same(cookie, token):
        return
    raise NoToken(wrong=cookie is not None)


async def _no_token(request: Request, exc: Exception) -> Response:
    what = "wrong token" if getattr(exc, "wrong", False) else "this server needs its token"
    message = f"{what}: {FIX}"
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=401)
    return PlainTextResponse(f"401 Unauthorized — {message}\n", status_code=401)


async def _token_in_url(request: Request, exc: Exception) -> Response:
    path = exc.path if isinstance(exc, TokenInURL) else "/"
    response = RedirectResponse(path, status_code=303)
    token: str = request.app.state.token
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
    return response


def install(app: FastAPI) -> None:
    """Answer :class:`NoToken` with a 401 and :class:`TokenInURL` with the cookie's redirect."""
    app.add_exception_handler(NoToken, _no_token)
    app.add_exception_handler(TokenInURL, _token_in_url)

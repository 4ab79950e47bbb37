"""Stand-in for helper srv's ``web/auth.py`` (same name and signature; srv's version replaces it
on merge): every route needs the serve token, as a bearer header or the ``llm_magic_token``
cookie; a page opened with ``?token=`` gets the cookie and a redirect without it."""

from __future__ import annotations

import secrets

from fastapi import HTTPException, Request

COOKIE = "llm_magic_token"


def _given(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.cookies.get(COOKIE, "")


def require_token(request: Request) -> None:
    """A FastAPI dependency: the request carries the app's token, or it is refused."""
    token: str = request.app.state.token
    if secrets.compare_digest(_given(request).encode(), token.encode()):
        return
    asked = request.query_params.get("token", "")
    if asked and secrets.compare_digest(asked.encode(), token.encode()):
        cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
        raise HTTPException(303, headers={"Location": request.url.path, "Set-Cookie": cookie})
    raise HTTPException(401, "no or wrong token: open the URL `python -m llm_magic serve` printed")

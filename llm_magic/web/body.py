"""What ``POST /api/chat`` accepts: the body read with a size limit, checked by pydantic, and
turned into a :class:`~llm_magic.core.Request` — or one line naming the fix (a 4xx)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Request as HTTPRequest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import core

__all__ = ["ChatBody", "BadBody", "read_body", "MAX_BODY"]

MAX_BODY = 256 * 1024  # bytes
EXAMPLE = '{"messages": [{"role": "user", "content": "Hi"}]}'


class BadBody(Exception):
    """The request cannot be taken: ``status`` and one line naming the fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant", "system"]
    content: str


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[Message] = Field(min_length=1)
    model: str | None = None
    max_tokens: int | None = Field(default=None, gt=0, strict=True)
    temperature: float | None = Field(default=None, ge=0, le=2)
    system: str | None = None
    tools: list[dict[str, Any]] | None = None

    def request(self, agent: str | None, user: str | None) -> core.Request:
        return core.Request(
            prompt=[m.model_dump() for m in self.messages],
            model=self.model or None,
            system=self.system,
            max_tokens=self.max_tokens,
            temperature=0.0 if self.temperature is None else self.temperature,
            agent=agent or None,
            user=user or None,
            tools=self.tools or None,
        )


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return f"the body is not valid JSON ({first['msg']}): send e.g. {EXAMPLE}"
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}; send e.g. {EXAMPLE}"


async def read_body(request: HTTPRequest, max_tokens: int) -> ChatBody:
    """The checked body, read no further than :data:`MAX_BODY` bytes; :class:`BadBody`
    otherwise (nothing sent)."""
    too_big = BadBody(413, f"the body is over {MAX_BODY // 1024} KiB: send a shorter conversation")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise too_big
    raw = bytearray()
    async for piece in request.stream():
        raw += piece
        if len(raw) > MAX_BODY:
            raise too_big
    try:
        body = ChatBody.model_validate_json(bytes(raw))
    except ValidationError as exc:
        raise BadBody(400, _one_line(exc)) from None
    if body.max_tokens is not None and body.max_tokens > max_tokens:
        raise BadBody(
            400,
            f"max_tokens={body.max_tokens} is over this server's limit ({max_tokens}): ask for "
            f"fewer, or start it with LLM_MAGIC_SERVE_MAX_TOKENS={body.max_tokens}",
        )
    return body

"""Our own exception types: every provider failure becomes one of these.

They carry what the reliability layer needs (HTTP status, ``Retry-After``) and never a key:
messages pass through :func:`llm_magic.secrets.scrub` before they are built.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LLMError",
    "UsageProblem",
    "ProviderError",
    "RateLimited",
    "ServerError",
    "Overloaded",
    "AuthError",
    "ContextTooLong",
    "BadRequest",
    "NotFound",
    "ConnectionFailed",
    "EmptyResponse",
    "Timeout",
    "StreamInterrupted",
    "InvalidJSON",
    "SchemaMismatch",
    "LocalModelUnavailable",
    "LedgerError",
    "LedgerUnavailable",
    "LedgerBusy",
    "Interrupted",
    "BudgetRefused",
    "for_status",
    "describe",
]


class LLMError(Exception):
    """Base of every error llm_magic raises on purpose."""


class UsageProblem(LLMError):
    """The user asked for something we cannot do (unknown model, missing key, bad value).

    The magics turn it into ``UsageError`` (one line, no traceback)."""


class LocalModelUnavailable(UsageProblem):
    """The embedded local model cannot be started (extra not installed, server failed)."""


class LedgerError(LLMError):
    """The ledger cannot be opened safely (corrupt, or from a newer schema)."""


class LedgerUnavailable(LedgerError):
    """The ledger cannot take a write now (disk full, read-only, unreachable server)."""


class LedgerBusy(LedgerUnavailable):
    """Another process held the ledger's write lock longer than ``LLM_MAGIC_LEDGER_WAIT_S``."""


class ProviderError(LLMError):
    """A call to a provider failed. ``status`` is the HTTP status when there was one."""

    status: int | None = None
    error_type = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        provider: str | None = None,
        model: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.retry_after = retry_after
        self.provider = provider
        self.model = model
        self.url = url  # the URL that failed, password masked (connection errors, 404s)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, message={str(self)!r})"


class RateLimited(ProviderError):
    status = 429
    error_type = "rate_limited"


class ServerError(ProviderError):
    status = 500
    error_type = "server_error"


class Overloaded(ServerError):
    status = 529
    error_type = "overloaded"


class AuthError(ProviderError):
    status = 401
    error_type = "auth"


class ContextTooLong(ProviderError):
    status = 400
    error_type = "context_length"


class BadRequest(ProviderError):
    status = 400
    error_type = "bad_request"


class NotFound(BadRequest):
    """HTTP 404: a wrong base URL path, or a model the provider does not have."""

    status = 404
    error_type = "not_found"


class ConnectionFailed(ProviderError):
    """No connection was made: refused, unknown host (DNS), or an invalid base URL."""

    error_type = "connection"


class EmptyResponse(ProviderError):
    """HTTP 200, but the stream carried no text (and no tool call)."""

    error_type = "empty_response"


class Timeout(ProviderError):
    error_type = "timeout"


class BudgetRefused(ProviderError):
    """Refused before sending: over the daily budget, or the worst case over the per-request cap."""

    error_type = "budget"


class StreamInterrupted(ProviderError):
    """The stream broke after text had arrived; the partial text is kept."""

    error_type = "stream_interrupted"


class InvalidJSON(ProviderError):
    """With ``schema=``: the answer is not JSON (or was cut at ``max_tokens``); the call was
    paid for, its row says so, ``.result.text`` keeps the raw answer."""

    error_type = "invalid_json"


class SchemaMismatch(ProviderError):
    """With ``schema=``: the answer is JSON but does not validate against the schema."""

    error_type = "schema_mismatch"


_BY_STATUS: dict[int, type[ProviderError]] = {
    400: BadRequest,
    401: AuthError,
    403: AuthError,
    404: NotFound,
    408: Timeout,
    429: RateLimited,
    529: Overloaded,
}


def for_status(
    status: int | None,
    message: str,
    *,
    retry_after: float | None = None,
    provider: str | None = None,
    model: str | None = None,
    url: str | None = None,
) -> ProviderError:
    """The error an HTTP ``status`` (and its message) means: the one status mapping, for
    litellm's errors (``gateway.translate_error``) and the local model's direct stream.

    A context-length complaint is :class:`ContextTooLong` (status 400); else 401/403 auth, 404
    not found, 408 timeout, 429 rate limited, 529 overloaded, other 5xx server error, other
    4xx bad request; no status (or below 400): a plain :class:`ProviderError`."""
    low = message.lower()
    kind: type[ProviderError]
    if (
        "context length" in low
        or "prompt is too long" in low
        or (status == 400 and "context" in low)
    ):
        status, kind = 400, ContextTooLong
    elif status is None or status < 400:
        kind = ProviderError
    else:
        kind = _BY_STATUS.get(status, ServerError if status >= 500 else BadRequest)
    return kind(
        message, status=status, retry_after=retry_after, provider=provider, model=model, url=url
    )


class Interrupted(KeyboardInterrupt):
    """A call stopped by Ctrl-C / a kernel interrupt; ``.result`` keeps the partial answer
    (already in the ledger with status ``interrupted``)."""

    def __init__(self, result: Any) -> None:
        super().__init__("response interrupted")
        self.result = result


def describe(exc: BaseException) -> str:
    """The one line a failed call shows, in a notebook cell and in the server's ``error`` event:
    ``StreamInterrupted: response interrupted: …`` for a provider failure, the message alone
    for a usage mistake, ``response interrupted`` for a stopped call."""
    if isinstance(exc, (UsageProblem, Interrupted)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"

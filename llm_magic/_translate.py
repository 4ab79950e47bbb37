"""Provider failures → :mod:`llm_magic.errors` (the gateway's half that reads exceptions).

litellm's exception classes, HTTP statuses (through :func:`errors.for_status`), Anthropic's 529,
refused connections and ``Retry-After``; messages scrubbed of keys, URLs masked. Imports no
litellm: it reads the exceptions litellm raises by their attributes.
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import Any

from . import errors
from .secrets import mask_url, scrub

__all__ = ["translate_error"]


def _exceptions() -> Any:
    """litellm's exception classes (litellm itself is imported by the gateway alone)."""
    from .gateway import _litellm

    return _litellm().exceptions


_PREFIX = re.compile(r"^(litellm\.)?[A-Za-z]+(Error|Exception|Timeout)?:\s*")


_JSON_MESSAGE = re.compile(r'"message"\s*:\s*"((?:[^"\\]|\\.)+)"')


def _clean(message: str) -> str:
    """One short line: the provider's own error message where its JSON body has one."""
    message = scrub(message)
    found = _JSON_MESSAGE.search(message)
    if found:
        message = found.group(1)
    message = message.strip().splitlines()[0] if message.strip() else ""
    for _ in range(3):
        message = _PREFIX.sub("", message, count=1)
    return message[:300]


def _retry_after(exc: Exception) -> float | None:
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        raw = headers.get("retry-after") or headers.get("Retry-After")
    except Exception:
        return None
    if not raw:
        return None
    raw = str(raw).strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception behind it (causes and contexts), each once."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _refused(exc: BaseException) -> bool:
    """Whether a connection was never made (refused, DNS, unreachable, a URL httpx cannot
    use): the cause chain says."""
    import httpx

    never = (
        ConnectionRefusedError,
        httpx.ConnectError,
        httpx.UnsupportedProtocol,
        httpx.InvalidURL,
        httpx.ProxyError,
    )
    if any(isinstance(e, never) for e in _chain(exc)):
        return True
    return "connection refused" in str(exc).lower()


def _failed_url(exc: BaseException, api_base: str | None) -> str | None:
    """The URL the failed request went to (password masked), else ``api_base``: the innermost
    exception that knows it (litellm's own carry a placeholder ``api.openai.com`` request)."""
    for e in reversed(_chain(exc)):
        if type(e).__module__.startswith("litellm"):
            continue
        for holder in (e, getattr(e, "response", None)):
            try:
                request = getattr(holder, "request", None)  # httpx raises when it has none
            except Exception:
                request = None
            url = getattr(request, "url", None)
            if url is not None and str(url):
                return mask_url(str(url))
    return mask_url(api_base) if api_base else None


def _reason(exc: BaseException) -> str:
    """The innermost low-level reason (``[Errno -2] Name or service not known``), one line."""
    for e in reversed(_chain(exc)):
        text = _clean(str(e))
        if text:
            return text
    return type(exc).__name__


def _status_of(exc: Exception) -> int | None:
    """The HTTP status litellm's exception carries (Anthropic's 529 arrives as a 500 whose
    ``provider_status_code`` says 529)."""
    status = getattr(exc, "provider_status_code", None) or getattr(exc, "status_code", None)
    try:
        return int(status) if status is not None else None
    except (TypeError, ValueError):
        return None


def _class_status(exc: Exception, status: int | None, text: str) -> int | None:
    """The status litellm's exception class (or Anthropic's overload) means, when it says more
    than the status code does."""
    ex = _exceptions()
    if isinstance(exc, ex.RateLimitError):
        return 429
    if isinstance(exc, (ex.AuthenticationError, ex.PermissionDeniedError)):
        return status if status in (401, 403) else 401
    lowered = text.lower()
    from_anthropic = getattr(exc, "llm_provider", None) == "anthropic" or "anthropic" in lowered
    if status == 500 and "overloaded" in lowered and from_anthropic:
        # Anthropic's in-stream `overloaded_error` event (after HTTP 200) reaches us as a 500
        return 529
    return status


# What the status (or the class) settles before asking whether a connection was ever made.
_SETTLED = (
    errors.ContextTooLong,
    errors.RateLimited,
    errors.AuthError,
    errors.Overloaded,
    errors.Timeout,
)


def translate_error(
    exc: Exception, *, model: str | None = None, api_base: str | None = None
) -> errors.ProviderError:
    """Map a litellm/httpx exception to our small set of types (status and Retry-After kept,
    and the URL for connection failures and 404s): :func:`errors.for_status`, after what
    litellm's exception classes say."""
    ex = _exceptions()
    text = _clean(str(exc)) or type(exc).__name__
    kw: dict[str, Any] = {"retry_after": _retry_after(exc), "model": model}
    if isinstance(exc, ex.ContextWindowExceededError):
        return errors.ContextTooLong(text, status=400, **kw)
    status = _class_status(exc, _status_of(exc), text)
    url = _failed_url(exc, api_base) if status == 404 else None
    failure = errors.for_status(status, text, url=url, **kw)
    if isinstance(failure, _SETTLED):
        return failure
    if isinstance(exc, ex.Timeout):
        return errors.Timeout(text, status=status, **kw)
    if _refused(exc):
        # litellm reports a refused connection, an unknown host or a URL without http(s)://
        # as a 500 for OpenAI and Anthropic: it is not a server error, and never retried
        url = _failed_url(exc, api_base)
        return errors.ConnectionFailed(
            f"cannot connect to {url or 'the provider'}: {_reason(exc)}", url=url, **kw
        )
    if isinstance(exc, ex.APIConnectionError) and type(failure) in (
        errors.BadRequest,
        errors.ProviderError,
    ):
        return errors.ConnectionFailed(text, **kw)
    return failure

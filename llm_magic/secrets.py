"""API keys: held in :class:`Secret`, shown only as a masked alias, scrubbed from any text.

Every key llm_magic reads is registered here, so :func:`scrub` can remove it from provider
error messages, logs and ledger text before anything is shown or stored.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["Secret", "MaskedURL", "scrub", "register", "fingerprint", "mask_url", "register_url"]

_known: set[str] = set()
# Things that look like keys even when we were never told of them.
_KEYLIKE = re.compile(r"\b(sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,})")
# A password in a URL (scheme://user:password@host) and secrets in a query string (?key=…).
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)([^@\s/]+)(@)")
_SECRET_PARAMS = ("key", "api_key", "api-key", "apikey", "token", "access_token", "password",
                  "secret", "sig", "signature", "auth")  # fmt: skip
_URL_QUERY_SECRET = re.compile(
    r"([?&](?:" + "|".join(re.escape(p) for p in _SECRET_PARAMS) + r")=)[^&\s#'\"]+", re.I
)


def fingerprint(value: str) -> str:
    """A short, non-reversible tag for a key (for telling keys apart in the ledger)."""
    return hashlib.sha256(value.encode()).hexdigest()[:6]


class Secret:
    """A key that never shows itself: ``repr``/``str`` give only its alias."""

    __slots__ = ("_value", "alias")

    def __init__(self, value: str, alias: str) -> None:
        self._value = value
        self.alias = f"{alias}:{fingerprint(value)}"
        register(value)

    def reveal(self) -> str:
        """The raw key, for the HTTP request only."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.alias})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self.alias)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


def register(value: str) -> None:
    """Remember a key so that :func:`scrub` removes it from text."""
    if value and len(value) >= 6:
        _known.add(value)


def scrub(text: str | None, *, keylike: bool = True) -> str:
    """Replace every known key (and, with ``keylike``, anything shaped like one, and URL
    passwords and query-string secrets) with ``***``."""
    if not text:
        return text or ""
    for value in sorted(_known, key=len, reverse=True):
        if value in text:
            text = text.replace(value, "***")
    if not keylike:
        return text
    text = _URL_PASSWORD.sub(r"\1***\3", text)
    text = _URL_QUERY_SECRET.sub(r"\1***", text)
    return _KEYLIKE.sub("***", text)


def mask_url(url: str | None) -> str:
    """``url`` as it may be shown: its password and query-string secrets replaced by ``***``
    (``postgresql+psycopg://u:***@h/db``). Text that is not a URL comes back scrubbed."""
    if not url:
        return url or ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return scrub(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*"
        )
    return scrub(urlunsplit(parts._replace(netloc=netloc, query=query)))


class MaskedURL(str):
    """A URL that is itself everywhere (``str()``, f-strings, httpx) except in its ``repr``,
    which masks its password and query-string secrets: ``%xmode Verbose`` prints the
    arguments of every frame, ``api_base`` among them."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(mask_url(str(self)))


def register_url(url: str | None) -> None:
    """Remember the password and query-string secrets of ``url`` so :func:`scrub` removes
    them from any text (an error quoting the URL, a log line)."""
    if not url:
        return
    try:
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        password = parts.password
    except ValueError:
        return
    if password:
        register(password)
    for k, v in pairs:
        if k.lower() in _SECRET_PARAMS:
            register(v)

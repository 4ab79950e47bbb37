"""API keys: held in :class:`Secret`, shown only as a masked alias, scrubbed from any text.

Every key llm_magic reads is registered here, so :func:`scrub` can remove it from provider
error messages, logs and ledger text before anything is shown or stored.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["Secret", "scrub", "register", "fingerprint"]

_known: set[str] = set()
# Things that look like keys even when we were never told of them.
_KEYLIKE = re.compile(r"\b(sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,})")


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
    """Replace every known key (and, with ``keylike``, anything shaped like one) with ``***``."""
    if not text:
        return text or ""
    for value in sorted(_known, key=len, reverse=True):
        if value in text:
            text = text.replace(value, "***")
    return _KEYLIKE.sub("***", text) if keylike else text

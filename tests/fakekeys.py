"""Recognisable fake API keys for the tests, put together at run time: the repository then
holds no string shaped like a provider key (secret scanners flag those, and a real key pasted
beside them would not stand out). Each test names its keys, so a leak says whose it was."""

from __future__ import annotations

TAIL = "0123456789abcdefghij"


def fake_key(label: str = "", kind: str = "test", tail: int = len(TAIL)) -> str:
    """``sk-{kind}-{label}-`` and the first ``tail`` characters of :data:`TAIL` (no label part
    when ``label`` is empty); ``kind`` is ``test``, ``ant-test``, ``proxy``, …"""
    middle = f"{kind}-{label}" if label else kind
    return f"sk-{middle}-{TAIL[:tail]}"

"""Brace-safe ``{name}`` interpolation of a cell body from the user namespace."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def interpolate(text: str, namespace: Mapping[str, Any]) -> str:
    """Replace ``{name}`` with ``str(namespace[name])``.

    Unknown names, code and JSON braces are left as written; ``{{`` and ``}}`` give literal
    braces. Never raises."""

    def sub(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        name = match.group(1)
        if name in namespace and not name.startswith("_"):
            try:
                return str(namespace[name])
            except Exception:
                return token
        return token

    return _TOKEN.sub(sub, text)

"""The words llm_magic accepts and the way it writes money: each listed once, here.

Display modes, task names, answer formats and the per-task ``max_tokens`` defaults are spelled
here and imported by the magics, the display, the routing table and the pipeline; call
statuses are :data:`llm_magic.record.STATUSES` (the ledger's own vocabulary). The money
formats are the three ways a dollar amount is shown (a budget, one call's cost, a chart label).

Base layer: imports nothing of llm_magic.
"""

from __future__ import annotations

import math
from html import escape

__all__ = [
    "DISPLAY_MODES",
    "TASKS",
    "FORMATS",
    "DEFAULT_MAX_TOKENS",
    "usd",
    "cost",
    "usd_label",
    "NO_MATH",
    "no_math",
]

# How an answer streams: ``auto`` picks ``handle`` in a kernel and ``text`` elsewhere.
DISPLAY_MODES = ("auto", "widget", "handle", "text")

# ``-t/--task``: what the routing table picks a model for (and the default max_tokens).
TASKS = ("reason", "standard", "classify", "private", "generate")

# ``-f/--format``: how the finished answer is rendered.
FORMATS = ("markdown", "text", "code", "json")

# max_tokens when none is given, by kind of call (never unbounded); ``tools`` is tool calling.
DEFAULT_MAX_TOKENS = {"standard": 2048, "tools": 1024, "generate": 4096}


def usd(amount: float) -> str:
    """A budget or a limit: cents from a dollar up ($2.00), more digits below ($0.05)."""
    return f"${amount:.2f}" if amount >= 1 else f"${amount:.6f}".rstrip("0").rstrip(".")


def cost(value: float | None) -> str:
    """One call's cost in its footer: ``cost unknown`` (no price), ``$0``, $0.000123, $0.1234."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "cost unknown"
    if value == 0:
        return "$0"
    return f"${value:.6f}" if value < 0.01 else f"${value:.4f}"


def usd_label(value: float) -> str:
    """A chart label: $1,234.50, $2.50, $0.0123, $0 (``unpriced`` when not finite)."""
    if not math.isfinite(value):
        return "unpriced"
    if value == 0:
        return "$0"
    if abs(value) >= 1 or (abs(value) >= 0.01 and round(value, 2) == value):
        return f"${value:,.2f}"
    return f"${value:.3g}"


# MathJax 2 (nbconvert, nbviewer) and MathJax 3 (JupyterLab 4, Notebook 7) leave elements of
# these classes alone. Without them, two amounts on one line ("$0.006 · … saved $0.027") are
# typeset as LaTeX math between the dollar signs, in Markdown and HTML output alike.
NO_MATH = "tex2jax_ignore mathjax_ignore"


def no_math(text: str, tag: str = "span") -> str:
    """Our own words (a footer, a note, an error line) for Markdown or HTML output: escaped,
    in a ``tag`` that MathJax does not typeset, so ``$`` stays a dollar sign."""
    return f'<{tag} class="{NO_MATH}">{escape(text, quote=False)}</{tag}>'

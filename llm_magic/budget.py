"""The daily budget and the per-request cost cap, decided before anything is sent.

Spend comes from the ledger (so it survives kernel restarts). At ``BUDGET_ALERT_THRESHOLD`` of
``DAILY_BUDGET_USD`` an alert is given once per day (a note in the cell and a Python warning);
at 100% calls go to ``BUDGET_DOWNGRADE_MODEL``, or are refused when none is set.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass

from .config import Settings
from .pricing import Price
from .store import Ledger, utcnow

__all__ = ["BudgetWarning", "Verdict", "check_daily", "crossed", "worst_case_cost", "usd"]


def usd(amount: float) -> str:
    """Dollars, with cents for budgets of a dollar or more and more digits below."""
    return f"${amount:.2f}" if amount >= 1 else f"${amount:.6f}".rstrip("0").rstrip(".")


class BudgetWarning(UserWarning):
    """Spending today has reached the alert threshold of the daily budget."""


_alerted: set[tuple[str, str]] = set()
_lock = threading.Lock()


@dataclass(frozen=True)
class Verdict:
    action: str  # "ok", "downgrade" or "refuse"
    spent: float
    budget: float | None
    note: str | None = None


def check_daily(cfg: Settings, book: Ledger, model: str) -> Verdict:
    """What the daily budget says about a call to ``model`` now."""
    budget = cfg.daily_budget_usd
    if budget is None:
        return Verdict("ok", 0.0, None)
    spent = book.cost_today()
    if spent >= budget:
        down = cfg.budget_downgrade_model
        if down and down != model:
            return Verdict(
                "downgrade",
                spent,
                budget,
                f"Over the daily budget (${spent:.4f} of {usd(budget)}): using {down} instead of {model}",
            )
        return Verdict(
            "refuse",
            spent,
            budget,
            f"Over the daily budget (${spent:.4f} of {usd(budget)}): refused. Raise it with "
            "%llm budget USD, or set BUDGET_DOWNGRADE_MODEL to a cheaper model",
        )
    threshold = cfg.budget_alert_threshold
    if spent >= threshold * budget:
        key = (str(book.path), utcnow().date().isoformat())
        with _lock:
            first = key not in _alerted
            _alerted.add(key)
        if first:
            note = f"Budget alert: ${spent:.4f} spent today, {spent / budget:.0%} of {usd(budget)}"
            warnings.warn(note, BudgetWarning, stacklevel=3)
            return Verdict("ok", spent, budget, note)
    return Verdict("ok", spent, budget)


def crossed(cfg: Settings, book: Ledger, spent_before: float, cost: float) -> str | None:
    """After a call: the alert note if its ``cost`` took today's spend from below the alert
    threshold to at or above it (straight past 100% too), once a day, like ``check_daily``'s."""
    budget = cfg.daily_budget_usd
    if budget is None or not cost or cost != cost:  # no budget, free, or NaN (price unknown)
        return None
    line = cfg.budget_alert_threshold * budget
    spent = spent_before + cost
    if not spent_before < line <= spent:
        return None
    key = (str(book.path), utcnow().date().isoformat())
    with _lock:
        if key in _alerted:
            return None
        _alerted.add(key)
    note = f"Budget alert: ${spent:.4f} spent today, {spent / budget:.0%} of {usd(budget)}"
    warnings.warn(note, BudgetWarning, stacklevel=4)
    return note


def worst_case_cost(price: Price | None, input_tokens: int, max_tokens: int) -> float | None:
    """Input tokens × input price + max_tokens × output price (None if no price is known)."""
    if price is None:
        return None
    return input_tokens * price.input_per_token + max_tokens * price.output_per_token

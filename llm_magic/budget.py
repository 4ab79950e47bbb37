"""The daily budget and the per-request cost cap, decided before anything is sent.

Spend comes from the ledger (so it survives kernel restarts). At ``BUDGET_ALERT_THRESHOLD`` of
``DAILY_BUDGET_USD`` an alert is given once per day (a note in the cell and a Python warning);
at 100% calls go to ``BUDGET_DOWNGRADE_MODEL``, or are refused when none is set.

Budgets hold across processes: before sending, a priced call reserves its worst-case cost in
the ledger (:func:`reserve`); the check is spend + every open reservation + this call's worst
case against the budget, in one transaction, so N kernels cannot pass it together. The
reservation is settled (removed) in the transaction that writes the call's row.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass

from .config import Settings
from .errors import LedgerError
from .pricing import Price
from .record import Book, utcnow
from .vocab import usd

__all__ = [
    "BudgetWarning",
    "Verdict",
    "check_daily",
    "crossed",
    "reserve",
    "unpriced_over_cap",
    "worst_case_cost",
    "usd",
]


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


def check_daily(cfg: Settings, book: Book, model: str) -> Verdict:
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


def crossed(cfg: Settings, book: Book, spent_before: float, cost: float) -> str | None:
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


def over_cap(
    cfg: Settings,
    price: Price | None,
    model: str,
    worst: float | None,
    *,
    what: str,
    detail: str,
    fix: str,
) -> str | None:
    """A refusal when a request's worst case (``worst``: ``what`` could cost that, ``detail``
    says of which tokens) is over ``MAX_COST_PER_REQUEST_USD``, naming ``fix``; or when the cap
    is set and ``model`` has no known price (:func:`unpriced_over_cap`)."""
    cap = cfg.max_cost_per_request_usd
    if cap is not None and worst is not None and worst > cap:
        return (
            f"Refused: this {what} could cost up to ${worst:.4f} ({detail}), over "
            f"MAX_COST_PER_REQUEST_USD=${cap:.4f}: {fix}"
        )
    return unpriced_over_cap(cfg, price, model)


def unpriced_over_cap(cfg: Settings, price: Price | None, model: str) -> str | None:
    """A refusal when ``MAX_COST_PER_REQUEST_USD`` is set and ``model`` has no known price:
    its worst case cannot be held under the cap."""
    cap = cfg.max_cost_per_request_usd
    if cap is None or price is not None:
        return None
    return (
        f"Refused: no price is known for {model}, so its worst case cannot be held under "
        f"MAX_COST_PER_REQUEST_USD={usd(cap)}: set one with %llm price {model} IN_PER_1M "
        "OUT_PER_1M, or unset the cap"
    )


def reserve(
    cfg: Settings, book: Book, call_id: str, model: str, worst: float | None, name: str = ""
) -> Verdict:
    """Hold ``worst`` dollars of today's budget for this call, in the ledger, before it is sent.

    ``ok`` when spend + open reservations (every process) + ``worst`` fit in the daily budget
    (the hold then stays until the call's row is written); else ``downgrade`` (when
    ``BUDGET_DOWNGRADE_MODEL`` is another model) or ``refuse``, with the note saying why.
    Nothing is held without a daily budget, for a free call, or for the downgrade model itself
    (``name``/``model``): it is what runs once the budget is spent."""
    budget = cfg.daily_budget_usd
    down = cfg.budget_downgrade_model
    if budget is None or worst is None or worst <= 0 or (down and down in (model, name)):
        return Verdict("ok", 0.0, budget)
    try:
        held, spent, others = book.reserve(call_id, model, worst, budget)
    except LedgerError as exc:
        return Verdict(
            "refuse",
            0.0,
            budget,
            f"Refused: the daily budget cannot be held while the ledger is unavailable. {exc}",
        )
    if held:
        return Verdict("ok", spent, budget)
    left = max(budget - spent - others, 0.0)
    why = (
        f"this request could cost up to ${worst:.4f} on {model}, and ${left:.4f} of the daily "
        f"budget {usd(budget)} is left (${spent:.4f} spent, ${others:.4f} held by calls in "
        "flight)"
    )
    if down:
        return Verdict("downgrade", spent, budget, f"Over budget: {why}; using {down} instead")
    return Verdict(
        "refuse",
        spent,
        budget,
        f"Refused: {why}. Lower --max-tokens, use a cheaper model, raise the budget with "
        "%llm budget USD, or set BUDGET_DOWNGRADE_MODEL",
    )

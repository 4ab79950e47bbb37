"""Prices: user overrides (``%llm price``, kept in the ledger), $0 for local models, else the
price map bundled with the pinned litellm. No known price ⇒ ``None`` ⇒ cost NaN, never 0."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from . import gateway
from .errors import UsageProblem
from .models import all_aliases
from .record import Book

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Price", "price_for", "cost", "no_price_note", "reprice"]

FREE_PROVIDERS = {"local", "ollama", "ollama_chat"}


@dataclass(frozen=True)
class Price:
    input_per_token: float
    output_per_token: float
    source: str

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return input_tokens * self.input_per_token + output_tokens * self.output_per_token


def price_for(
    model: str, provider: str, ledger: Book, *, also: tuple[str, ...] = ()
) -> Price | None:
    """The price of ``model`` (or of any name in ``also``, e.g. the alias the user typed)."""
    overrides = ledger.prices()
    for name in (model, *also):
        if name in overrides:
            i, o = overrides[name]
            return Price(i / 1e6, o / 1e6, "override")
    if provider in FREE_PROVIDERS:
        return Price(0.0, 0.0, "local")
    for name in (model, *also):
        info = gateway.price_entry(name)
        if info is not None:
            return Price(
                float(info["input_cost_per_token"]),
                float(info.get("output_cost_per_token") or 0.0),
                f"litellm {gateway.litellm_version()}",
            )
    return None


def cost(price: Price | None, input_tokens: int, output_tokens: int) -> float:
    return math.nan if price is None else price.cost(input_tokens, output_tokens)


def no_price_note(model: str) -> str:
    return (
        f"No price known for {model}: cost recorded as NaN. "
        f"Set one with %llm price {model} IN_PER_1M OUT_PER_1M"
    )


class Calls(Book, Protocol):
    """A book whose calls can be read as a DataFrame (what :func:`reprice` needs)."""

    @property
    def df(self) -> Any: ...


def reprice(book: Calls, model: str) -> pd.DataFrame:
    """What-if: every call's tokens in ``book`` priced as ``model`` would have charged them
    (``Ledger.reprice``). Nothing is sent; calls that carried no tokens are left out."""
    name = all_aliases(book).get(model, model)
    try:
        provider = "local" if name == "local" else gateway.provider_of(name)
    except UsageProblem:
        provider = "unknown"  # a price set with %llm price needs no provider
    price = price_for(name, provider, book, also=(model,))
    if price is None:
        raise UsageProblem(
            f"No price known for {model}: set one with %llm price {model} IN_PER_1M OUT_PER_1M"
        )
    frame = book.df
    frame = frame[frame["input_tokens"].fillna(0) + frame["output_tokens"].fillna(0) > 0]
    out = frame[
        ["call_id", "ts_start", "model", "agent", "input_tokens", "output_tokens", "cost_usd"]
    ].copy()
    tokens_in = out["input_tokens"].astype("float64")
    tokens_out = out["output_tokens"].astype("float64")
    out["repriced_as"] = model
    out["repriced_cost_usd"] = (
        tokens_in * price.input_per_token + tokens_out * price.output_per_token
    )
    out["price_source"] = price.source
    return out.reset_index(drop=True)

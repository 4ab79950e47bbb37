"""Prices: user overrides (``%llm price``, kept in the ledger), $0 for local models, else the
price map bundled with the pinned litellm. No known price ⇒ ``None`` ⇒ cost NaN, never 0."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from . import gateway
from .errors import UsageProblem
from .models import all_aliases
from .record import USAGE_DETAIL, Book

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Price",
    "price_for",
    "cost",
    "cache_saving",
    "cache_savings",
    "no_price_note",
    "reprice",
]

FREE_PROVIDERS = {"local", "ollama", "ollama_chat"}


@dataclass(frozen=True)
class Price:
    """Dollars per token of each part of a call's usage. A part the price map (or a
    ``%llm price`` override, which sets input and output only) has no price for is priced as
    the tokens it is a part of: cache reads and writes at the input price, 1-hour cache writes
    at the (5-minute) cache-write price, reasoning at the output price."""

    input_per_token: float
    output_per_token: float
    source: str
    cache_read_per_token: float | None = None  # cache_read_input_token_cost
    cache_write_per_token: float | None = None  # cache_creation_input_token_cost
    cache_write_1h_per_token: float | None = None  # cache_creation_input_token_cost_above_1hr
    reasoning_per_token: float | None = None  # output_cost_per_reasoning_token

    def cache_saving(
        self, cache_read_tokens: Any, cache_write_tokens: Any = 0, cache_write_1h_tokens: Any = 0
    ) -> Any:
        """What the prompt cache saved: the cache reads at the plain input price minus what
        they cost, minus the premium the cache writes paid over the plain input price
        (negative when the writes cost more than the reads saved). Numbers or Series alike."""
        write_p = _or(self.cache_write_per_token, self.input_per_token)
        write_1h_p = _or(self.cache_write_1h_per_token, write_p)
        read_p = _or(self.cache_read_per_token, self.input_per_token)
        return (
            cache_read_tokens * (self.input_per_token - read_p)
            - (cache_write_tokens - cache_write_1h_tokens) * (write_p - self.input_per_token)
            - cache_write_1h_tokens * (write_1h_p - self.input_per_token)
        )

    def cost(
        self,
        input_tokens: Any,
        output_tokens: Any,
        cache_read_tokens: Any = 0,
        cache_write_tokens: Any = 0,
        cache_write_1h_tokens: Any = 0,
        reasoning_tokens: Any = 0,
    ) -> Any:
        """Each part × its price. ``input_tokens`` counts every prompt token (cache reads and
        writes included), ``output_tokens`` the reasoning ones: the plain part of each is what
        is left. Numbers or pandas Series alike (a part not reported: pass 0)."""
        read_p = _or(self.cache_read_per_token, self.input_per_token)
        write_p = _or(self.cache_write_per_token, self.input_per_token)
        write_1h_p = _or(self.cache_write_1h_per_token, write_p)
        reason_p = _or(self.reasoning_per_token, self.output_per_token)
        plain_in = input_tokens - cache_read_tokens - cache_write_tokens
        return (
            plain_in * self.input_per_token
            + cache_read_tokens * read_p
            + (cache_write_tokens - cache_write_1h_tokens) * write_p
            + cache_write_1h_tokens * write_1h_p
            + (output_tokens - reasoning_tokens) * self.output_per_token
            + reasoning_tokens * reason_p
        )


def _or(value: float | None, otherwise: float) -> float:
    return otherwise if value is None else value


def _per_token(entry: dict[str, Any], key: str) -> float | None:
    value = entry.get(key)
    return None if value is None else float(value)


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
                _per_token(info, "cache_read_input_token_cost"),
                _per_token(info, "cache_creation_input_token_cost"),
                _per_token(info, "cache_creation_input_token_cost_above_1hr"),
                _per_token(info, "output_cost_per_reasoning_token"),
            )
    return None


def cost(
    price: Price | None,
    input_tokens: int,
    output_tokens: int,
    *,
    cache_read_tokens: int | None = None,
    cache_write_tokens: int | None = None,
    cache_write_1h_tokens: int | None = None,
    reasoning_tokens: int | None = None,
) -> float:
    """What a call's usage cost at ``price`` (NaN when no price is known); a part the
    provider did not report (None) counts as none of its tokens."""
    if price is None:
        return math.nan
    return float(
        price.cost(
            input_tokens,
            output_tokens,
            cache_read_tokens or 0,
            cache_write_tokens or 0,
            cache_write_1h_tokens or 0,
            reasoning_tokens or 0,
        )
    )


def cache_saving(
    price: Price | None,
    cache_read_tokens: int | None = None,
    cache_write_tokens: int | None = None,
    cache_write_1h_tokens: int | None = None,
) -> float:
    """What the prompt cache saved a call at ``price`` (:meth:`Price.cache_saving`; NaN when no
    price is known, 0 when nothing was read from or written to the cache)."""
    if price is None:
        return math.nan
    return float(
        price.cache_saving(
            cache_read_tokens or 0, cache_write_tokens or 0, cache_write_1h_tokens or 0
        )
    )


def cache_savings(book: Book, rows: pd.DataFrame) -> list[float]:
    """What the prompt cache saved each row of ``rows`` (a model's usage detail: columns
    ``_model``, ``_provider``, ``cache_read_tokens``, ``cache_write_tokens``,
    ``cache_write_1h_tokens``), at the model's price now (``Ledger.summary``'s saver)."""
    prices: dict[tuple[str, str], Price | None] = {}
    out = []
    for model, provider, read, write, write_1h in zip(
        rows["_model"],
        rows["_provider"],
        rows["cache_read_tokens"],
        rows["cache_write_tokens"],
        rows["cache_write_1h_tokens"],
        strict=True,
    ):
        key = (str(model), str(provider))
        if key not in prices:
            prices[key] = price_for(key[0], key[1], book) if model is not None else None
        out.append(cache_saving(prices[key], int(read), int(write), int(write_1h)))
    return out


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
    (``Ledger.reprice``), each part (cache reads and writes, reasoning) at its own price. Nothing
    is sent; calls that carried no tokens are left out."""
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
        ["call_id", "ts_start", "model", "agent", "input_tokens", "output_tokens", *USAGE_DETAIL]
        + ["cost_usd"]
    ].copy()
    tokens = {  # a part not reported (NULL): none of its tokens
        col: out[col].astype("float64").fillna(0.0)
        for col in ("input_tokens", "output_tokens", *USAGE_DETAIL)
    }
    out["repriced_as"] = model
    out["repriced_cost_usd"] = price.cost(**tokens)
    out["price_source"] = price.source
    return out.reset_index(drop=True)

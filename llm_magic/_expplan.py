"""An experiment before it sends anything: its prompts, each call's identity, and its price.

:func:`inputs` turns a list, a Series or a DataFrame (with a template) into one prompt per row;
:func:`identity` is a call's ``prompt_hash`` (prompt, system, parameters); :func:`estimate`
counts every prompt's tokens (the pipeline's own counting) and prices the calls still to make,
expected and worst case, per model; :func:`refusal` says why the estimate may not run.

Pipeline layer, no IPython: the :class:`Estimate` shows itself as HTML by ``_repr_html_``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _counts, gateway, pricing
from .config import Settings
from .errors import UsageProblem
from .models import Route
from .vocab import usd

if TYPE_CHECKING:
    import pandas as pd

    from .store import Ledger

__all__ = ["Job", "Estimate", "inputs", "identity", "estimate", "refusal", "EXPECTED_OUTPUT"]

#: The answer length the expected cost assumes for a model with no ``ok`` call in the ledger
#: yet (capped at ``max_tokens``); once it has some, their mean output is used.
EXPECTED_OUTPUT = 256


@dataclass
class Job:
    """One call of an experiment: a prompt (by its input row) on one model, one repeat."""

    row: int  # position in the input frame
    model: str
    repeat: int
    prompt: str
    prompt_hash: str
    worst_usd: float = 0.0  # its worst case (all max_tokens); 0 when free or unpriced


def inputs(prompts: Any, template: str | None) -> pd.DataFrame:
    """The experiment's input rows, with a ``prompt`` column: a list of prompts, a Series
    (named after it, or ``prompt``), or a DataFrame whose rows fill ``template``
    (``"Classify: {text}"``), or which has a ``prompt`` column."""
    import pandas as pd

    if isinstance(prompts, str):
        raise UsageProblem(
            "prompts is one string: pass a list of prompts (e.g. ['Hi', 'Bye']), a Series, "
            "or a DataFrame with template='…{column}…'"
        )
    if isinstance(prompts, pd.DataFrame):
        frame = prompts.reset_index(drop=True).copy()
        if template is not None:
            frame["prompt"] = _fill(frame, template)
        elif "prompt" not in frame.columns:
            raise UsageProblem(
                "a DataFrame of prompts needs a template naming its columns, e.g. "
                f"template='Classify: {{{frame.columns[0] if len(frame.columns) else 'text'}}}', "
                "or a 'prompt' column"
            )
    else:
        series = prompts if isinstance(prompts, pd.Series) else pd.Series(list(prompts))
        column = series.name if isinstance(series.name, str) and series.name else "prompt"
        frame = pd.DataFrame({column: series.reset_index(drop=True)})
        if template is not None:
            frame["prompt"] = [template.format_map({column: v, "prompt": v}) for v in series]
        else:
            frame["prompt"] = frame[column]
    if frame.empty:
        raise UsageProblem("no prompts: pass at least one, e.g. ['Name a colour.']")
    bad = [i for i, p in enumerate(frame["prompt"]) if not isinstance(p, str) or not p.strip()]
    if bad:
        raise UsageProblem(
            f"prompt {bad[0]} is empty or not text ({len(bad)} such): give every row a prompt"
        )
    return frame


def _fill(frame: pd.DataFrame, template: str) -> list[str]:
    """``template`` filled with each row's columns; a column it names that the frame lacks is
    a usage error naming the columns there are."""
    out = []
    for row in frame.to_dict("records"):
        try:
            out.append(template.format_map(row))
        except KeyError as missing:
            raise UsageProblem(
                f"template names {{{missing.args[0]}}}, which is not a column: the columns are "
                f"{', '.join(map(str, frame.columns))}"
            ) from None
        except (IndexError, ValueError) as exc:
            raise UsageProblem(
                f"template {template!r} cannot be filled ({exc}): write literal braces as {{{{ }}}}"
            ) from None
    return out


def identity(prompt: str, system: str | None, temperature: float, max_tokens: int) -> str:
    """A call's ``prompt_hash``: what it sends besides the model (prompt text, system prompt,
    temperature, max_tokens). Equal hashes ask the same thing."""
    key = json.dumps(
        {"prompt": prompt, "system": system, "temperature": temperature, "max_tokens": max_tokens},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:24]


@dataclass
class Estimate:
    """What an experiment's calls still to make should cost, per model, before any is sent.

    ``table``: one row per model (calls, reused, cached, to_run, input_tokens, expected_usd,
    worst_usd, price_source); ``cached``: calls the response cache answers from other
    requests' answers (cost 0). ``expected_usd`` and ``worst_usd`` are the totals (NaN when a
    model has no known price)."""

    name: str
    max_tokens: int
    table: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def expected_usd(self) -> float:
        return float(self.table["expected_usd"].sum(min_count=1)) if self._priced() else math.nan

    @property
    def worst_usd(self) -> float:
        return float(self.table["worst_usd"].sum(min_count=1)) if self._priced() else math.nan

    @property
    def to_run(self) -> int:
        return int(self.table["to_run"].sum())

    @property
    def reused(self) -> int:
        return int(self.table["reused"].sum())

    @property
    def cached(self) -> int:
        return int(self.table["cached"].sum())

    def _priced(self) -> bool:
        return bool(self.table["expected_usd"].notna().all())

    def headline(self) -> str:
        return (
            f"Experiment {self.name!r}: {self.to_run} call(s) to make, {self.reused} reused"
            + (f", {self.cached} from the response cache (cost 0)" if self.cached else "")
            + "; "
            f"expected {_money(self.expected_usd)}, worst case {_money(self.worst_usd)} "
            f"(every answer {self.max_tokens} tokens)"
        )

    def text(self) -> str:
        shown = self.table.copy()
        for col in ("expected_usd", "worst_usd"):
            shown[col] = shown[col].map(_money)
        lines = [self.headline(), shown.to_string(index=False), *self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        import html

        shown = self.table.copy()
        for col in ("expected_usd", "worst_usd"):
            shown[col] = shown[col].map(_money)
        notes = "".join(f"<p>{html.escape(n)}</p>" for n in self.notes)
        return f"<p>{html.escape(self.headline())}</p>{shown.to_html(index=False)}{notes}"


def _money(value: float) -> str:
    return "unpriced" if not math.isfinite(value) else usd(value)


def estimate(
    name: str,
    models: list[str],
    jobs: list[Job],
    routes: dict[str, Route],
    messages: Callable[[str], list[dict[str, str]]],
    max_tokens: int,
    book: Ledger,
    reused: dict[str, int],
    cached: dict[str, int] | None = None,
) -> Estimate:
    """Count every pending call's prompt (each distinct prompt once per tokenizer), price it
    expected and worst case, and set each job's ``worst_usd``. ``routes``: the models with
    calls to make; ``reused``: per model, the calls an earlier run already answered;
    ``cached``: per model, the calls the response cache answers (priced at 0)."""
    import pandas as pd

    from ._expreads import mean_output_tokens

    usual = mean_output_tokens(book, list(routes))
    counted: dict[tuple[str, str], int] = {}
    notes: list[str] = []
    rows = []
    cached = cached or {}
    for model in models:
        route = routes.get(model)
        if route is None:  # every call answered already: nothing to price
            rows.append(_all_reused(model, reused.get(model, 0), cached.get(model, 0)))
            continue
        price = pricing.price_for(route.model, route.provider, book, also=(model,))
        cap = min(max_tokens, route.max_output or max_tokens)
        mine = [j for j in jobs if j.model == model]
        tokens = 0
        for job in mine:
            key = (route.litellm_model, job.prompt_hash)
            if key not in counted:
                sent = messages(job.prompt)
                guess = gateway.count_tokens(route.litellm_model, sent)
                counted[key] = _counts.prompt_count(route, sent, guess, notes)[0]
            tokens += counted[key]
            job.worst_usd = _cost(price, counted[key], cap) if price is not None else 0.0
        out = min(usual.get(model, EXPECTED_OUTPUT), cap)
        rows.append(
            {
                "model": model,
                "calls": len(mine) + reused.get(model, 0) + cached.get(model, 0),
                "reused": reused.get(model, 0),
                "cached": cached.get(model, 0),
                "to_run": len(mine),
                "input_tokens": tokens,
                "expected_usd": _cost(price, tokens, out * len(mine)),
                "worst_usd": _cost(price, tokens, cap * len(mine)),
                "price_source": price.source if price is not None else "no price",
            }
        )
    return Estimate(name, max_tokens, pd.DataFrame(rows), sorted(set(notes)))


def _all_reused(model: str, reused: int, cached: int) -> dict[str, Any]:
    return {
        "model": model,
        "calls": reused + cached,
        "reused": reused,
        "cached": cached,
        "to_run": 0,
        "input_tokens": 0,
        "expected_usd": 0.0,
        "worst_usd": 0.0,
        "price_source": "all reused",
    }


def _cost(price: pricing.Price | None, input_tokens: float, output_tokens: float) -> float:
    if price is None:
        return math.nan
    return input_tokens * price.input_per_token + output_tokens * price.output_per_token


def refusal(est: Estimate, max_cost_usd: float | None, cfg: Settings, book: Ledger) -> str | None:
    """Why ``est`` may not run: its expected cost over ``max_cost_usd`` or over what is left of
    today's budget, or an unpriced model under a cap. None when it may."""
    options = (
        "fewer prompts or repeats, cheaper models (by model: "
        + ", ".join(
            f"{m} {_money(c)}"
            for m, c in zip(est.table["model"], est.table["expected_usd"], strict=True)
        )
        + f"), or a lower max_tokens (now {est.max_tokens})"
    )
    figures = (
        f"{est.to_run} call(s) expected to cost {_money(est.expected_usd)}, worst case "
        f"{_money(est.worst_usd)}"
    )
    unpriced = [
        m for m, c in zip(est.table["model"], est.table["expected_usd"], strict=True) if c != c
    ]
    limits: list[tuple[str, float]] = []
    if max_cost_usd is not None:
        limits.append((f"max_cost_usd={usd(max_cost_usd)}", max_cost_usd))
    if cfg.daily_budget_usd is not None:
        left = max(cfg.daily_budget_usd - book.cost_today() - book.reservations(), 0.0)
        limits.append((f"the {usd(left)} left of today's budget {usd(cfg.daily_budget_usd)}", left))
    for what, limit in limits:
        if unpriced:
            return (
                f"Refused, nothing sent: no price is known for {', '.join(unpriced)}, so "
                f"experiment {est.name!r} cannot be held under {what}: set one with %llm price "
                f"{unpriced[0]} IN_PER_1M OUT_PER_1M, or leave that model out"
            )
        if est.expected_usd > limit:
            return (
                f"Refused, nothing sent: experiment {est.name!r} has {figures}, over {what}. "
                f"Options: {options}"
            )
    return None

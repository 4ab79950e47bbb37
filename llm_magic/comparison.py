"""Several models on one prompt, concurrently: ``lm.compare`` and the comparison cell.

Each call is an ordinary call (its own ledger row); they share nothing but a bounded thread
pool, so the wall time is that of the slowest model, not the sum.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import errors
from .config import Settings
from .core import Request, _execute
from .result import Result
from .store import Ledger

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["compare", "run_concurrently", "Outcome", "ROUTES", "route_for_task", "TABLE_COLUMNS"]

TABLE_COLUMNS = [
    "model",
    "status",
    "ttft_s",
    "latency_s",
    "output_tokens",
    "output_tps",
    "cost_usd",
]

# The decision framework: the first model of a task's list that has a key answers; else local.
ROUTES: dict[str, list[str]] = {
    "reason": ["claude-opus-4-5", "o1"],
    "standard": ["claude-sonnet-4-5", "gpt-4o"],
    "classify": ["claude-haiku-4-5", "gpt-4o-mini"],
    "private": ["local"],
    "generate": ["claude-sonnet-4-5", "gpt-4o"],
}


def _routes() -> dict[str, list[str]]:
    table = {task: list(models) for task, models in ROUTES.items()}
    for task in table:
        raw = os.environ.get(f"LLM_MAGIC_ROUTE_{task.upper()}", "")
        if raw.strip():
            table[task] = [m.strip() for m in raw.split(",") if m.strip()]
    return table


def route_for_task(task: str) -> str:
    """The model the routing table picks for ``task`` (first with a key present, else local)."""
    from . import gateway
    from .config import KEYLESS, settings

    cfg = settings()
    table = _routes()
    if task not in table:
        raise errors.UsageProblem(f"Unknown task {task!r}: use one of {', '.join(table)}")
    for model in table[task]:
        if model == "local":
            return model
        try:
            provider = gateway.provider_of(model)
        except errors.UsageProblem:
            continue
        if provider in KEYLESS or cfg.api_base or cfg.keys(provider):
            return model
    return "local"


def routing_table() -> list[dict[str, str]]:
    """The task → models table, with the model each task would use now."""
    return [
        {"task": t, "models": ", ".join(ms), "chosen now": route_for_task(t)}
        for t, ms in _routes().items()
    ]


@dataclass
class Outcome:
    """One model's answer in a comparison: a Result, or the one-line error that stopped it."""

    model: str
    repeat: int
    result: Result | None
    error: str | None

    def row(self) -> dict[str, Any]:
        r = self.result
        base: dict[str, Any] = {"model": self.model, "repeat": self.repeat}
        if r is None:
            return {
                **base,
                "answered_by": None,
                "status": "error",
                "ttft_s": math.nan,
                "latency_s": math.nan,
                "input_tokens": 0,
                "output_tokens": 0,
                "output_tps": math.nan,
                "cost_usd": math.nan,
                "text": "",
                "error": self.error,
                "call_id": None,
            }
        gen = r.latency_s - (r.ttft_s if not math.isnan(r.ttft_s) else 0.0)
        tps = r.output_tokens / gen if r.output_tokens and gen > 0 else math.nan
        return {
            **base,
            "answered_by": r.model,
            "status": r.status,
            "ttft_s": r.ttft_s,
            "latency_s": r.latency_s,
            "input_tokens": r.input_tokens,
            "output_tokens": r.output_tokens,
            "output_tps": tps,
            "cost_usd": r.cost_usd,
            "text": r.text,
            "error": self.error,
            "call_id": r.call_id,
        }


def _one(
    request: Request,
    repeat: int,
    on_chunk: Callable[[str, str], None] | None,
    stop: threading.Event,
    cfg: Settings | None,
    book: Ledger | None,
    waited_s: float = 0.0,
) -> Outcome:
    model = str(request.model)
    # The embedded model serves one request at a time: queue its calls here, so that each
    # call's time to first token is the model's own, not time spent waiting behind another.
    gate = _local_gate if _is_local(model, book) else contextlib.nullcontext()
    with gate:
        gen = _execute(request, cfg, book, waited_s=waited_s)
        return _drive(model, repeat, gen, on_chunk, stop)


_local_gate = threading.Lock()


def _is_local(model: str, book: Ledger | None) -> bool:
    """``local``, or an alias of it (``%llm alias smollm2-b local``)."""
    if model == "local":
        return True
    from .models import all_aliases
    from .store import ledger

    try:
        return all_aliases(book if book is not None else ledger()).get(model) == "local"
    except errors.LLMError:
        return False


def _drive(
    model: str,
    repeat: int,
    gen: Any,
    on_chunk: Callable[[str, str], None] | None,
    stop: threading.Event,
) -> Outcome:
    if stop.is_set():  # interrupted while queued: nothing was sent
        gen.close()
        return Outcome(model, repeat, None, "interrupted before it started")
    try:
        while True:
            if stop.is_set():
                gen.throw(KeyboardInterrupt)
            try:
                chunk = next(gen)
            except StopIteration as done:
                return Outcome(model, repeat, done.value, None)
            if on_chunk is not None:
                on_chunk(model, chunk)
    except errors.Interrupted as cut:
        return Outcome(model, repeat, cut.result, "response interrupted")
    except errors.ProviderError as exc:
        return Outcome(model, repeat, getattr(exc, "result", None), f"{type(exc).__name__}: {exc}")
    except errors.UsageProblem as exc:
        return Outcome(model, repeat, None, str(exc))


def run_concurrently(
    requests: list[tuple[Request, int]],
    *,
    concurrency: int | None = None,
    on_chunk: Callable[[str, str], None] | None = None,
    on_done: Callable[[Outcome], None] | None = None,
    stop: threading.Event | None = None,
    cfg: Settings | None = None,
    book: Ledger | None = None,
    waited_s: float = 0.0,
) -> list[Outcome]:
    """Run every request at once (at most ``concurrency`` in flight); outcomes in input order.
    ``waited_s``: set-up already waited for on their behalf (counted in each call's setup_s)."""
    stop = stop or threading.Event()
    width = max(1, min(concurrency or 8, len(requests)))
    outcomes: dict[int, Outcome] = {}
    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="llm-compare") as pool:
        futures = {
            pool.submit(_one, req, repeat, on_chunk, stop, cfg, book, waited_s): i
            for i, (req, repeat) in enumerate(requests)
        }
        try:
            for future in as_completed(futures):
                outcome = future.result()
                outcomes[futures[future]] = outcome
                if on_done is not None:
                    on_done(outcome)
        except KeyboardInterrupt:
            stop.set()  # every stream stops at its next chunk and records itself interrupted
            for future in futures:
                if future not in outcomes:
                    outcomes[futures[future]] = future.result()
    return [outcomes[i] for i in range(len(requests))]


def compare(
    prompt: str | list[dict[str, str]],
    models: list[str] | str,
    repeats: int = 1,
    max_tokens: int | None = None,
    concurrency: int | None = None,
    progress: bool = True,
    **options: Any,
) -> pd.DataFrame:
    """Ask every model (``repeats`` times each) concurrently; one DataFrame row per call.

    ``lm.compare("Name a colour.", ["local", "gpt-4o"], repeats=3)`` — every call is also in
    the ledger. A model that fails gives a row with its error and does not stop the others."""
    import pandas as pd

    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    if not models:
        raise errors.UsageProblem("compare needs at least one model, e.g. ['local', 'gpt-4o']")
    if repeats < 1:
        raise errors.UsageProblem("repeats must be >= 1")
    tags = dict(options.pop("tags", None) or {})
    jobs = [
        (Request(prompt=prompt, model=m, max_tokens=max_tokens, tags=tags, **options), k)
        for k in range(repeats)
        for m in models
    ]
    bar: Any = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="compare", unit="call")
    try:
        outcomes = run_concurrently(
            jobs, concurrency=concurrency, on_done=(lambda _o: bar.update(1)) if bar else None
        )
    finally:
        if bar is not None:
            bar.close()
    return pd.DataFrame([o.row() for o in outcomes])

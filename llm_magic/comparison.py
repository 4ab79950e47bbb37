"""Several models on one prompt, concurrently: ``lm.compare`` and the comparison cell.

Each call is an ordinary call (its own ledger row), driven through :func:`llm_magic.core.start`;
they share nothing but a bounded thread pool, so the wall time is that of the slowest model,
not the sum. The comparison cell's loop (:func:`show_comparison`) runs the calls in a worker
thread and shows their chunks in the notebook's thread as they come.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from . import errors
from .config import Settings
from .core import Request, Stream, check_request, start
from .models import all_aliases
from .record import tokens_per_second
from .result import Result
from .store import Ledger

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "compare",
    "run_concurrently",
    "Outcome",
    "TABLE_COLUMNS",
    "prepare",
    "show_comparison",
]

TABLE_COLUMNS = [
    "model",
    "status",
    "ttft_s",
    "latency_s",
    "output_tokens",
    "output_tps",
    "cost_usd",
]

# A comparison row for a model that never got to a call (no key, unknown model): no record.
_NO_RECORD: dict[str, Any] = {
    "status": "error",
    "ttft_s": math.nan,
    "latency_s": math.nan,
    "input_tokens": 0,
    "output_tokens": 0,
    "output_tps": math.nan,
    "cost_usd": math.nan,
}


@dataclass
class Outcome:
    """One model's answer in a comparison: a Result, or the one-line error that stopped it."""

    model: str
    repeat: int
    result: Result | None
    error: str | None

    def row(self) -> dict[str, Any]:
        """The table's row: ``model`` as asked, ``answered_by`` as recorded, then the call's
        measures under the ledger's column names (``output_tps`` by the ledger's one rule)."""
        r = self.result
        if r is None:
            return {
                "model": self.model,
                "repeat": self.repeat,
                "answered_by": None,
                **_NO_RECORD,
                "text": "",
                "error": self.error,
                "call_id": None,
            }
        return {
            "model": self.model,
            "repeat": self.repeat,
            "answered_by": r.model,
            "status": r.status,
            "ttft_s": r.ttft_s,
            "latency_s": r.latency_s,
            "input_tokens": r.input_tokens,
            "output_tokens": r.output_tokens,
            "output_tps": tokens_per_second(r.output_tokens, r.latency_s, r.ttft_s),
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
        if stop.is_set():  # interrupted while queued: nothing was sent
            return Outcome(model, repeat, None, "interrupted before it started")
        try:
            stream = start(request, cfg, book, waited_s=waited_s)
            return _drive(model, repeat, stream, on_chunk, stop)
        except errors.Interrupted as cut:
            return Outcome(model, repeat, cut.result, "response interrupted")
        except errors.ProviderError as exc:
            failed = getattr(exc, "result", None)
            return Outcome(model, repeat, failed, f"{type(exc).__name__}: {exc}")
        except errors.UsageProblem as exc:
            return Outcome(model, repeat, None, str(exc))


_local_gate = threading.Lock()


def _is_local(model: str, book: Ledger | None) -> bool:
    """``local``, or an alias of it (``%llm alias smollm2-b local``)."""
    if model == "local":
        return True
    from .store import ledger

    try:
        return all_aliases(book if book is not None else ledger()).get(model) == "local"
    except errors.LLMError:
        return False


def _drive(
    model: str,
    repeat: int,
    stream: Stream,
    on_chunk: Callable[[str, str], None] | None,
    stop: threading.Event,
) -> Outcome:
    """Read ``stream`` to its end, passing each chunk on; a ``stop`` (the cell's Ctrl-C) cuts
    it at its next chunk, recorded as interrupted."""
    for chunk in stream:
        if on_chunk is not None:
            on_chunk(model, chunk)
        if stop.is_set():
            return Outcome(model, repeat, stream.interrupt(), "response interrupted")
    return Outcome(model, repeat, stream.result, None)


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
            for future, i in futures.items():
                if i not in outcomes:
                    outcomes[i] = future.result()
    return [outcomes[i] for i in range(len(requests))]


def prepare(
    jobs: list[tuple[Request, int]],
    cfg: Settings,
    book: Ledger,
    say: Callable[[str], None],
) -> float:
    """Before a comparison sends anything: every model's one-time set-up (said through
    ``say`` as it begins), and every request checked — unknown model, no key, more
    ``max_tokens`` than the model can write: :class:`errors.UsageProblem`, nothing sent.
    Returns the seconds this took (each call waited for it: its ``setup_s``).

    The embedded model comes last, so a mistake elsewhere is reported before its server is
    started for nothing."""
    began = time.perf_counter()
    ordered = sorted(jobs, key=lambda job: _is_local(str(job[0].model), book))
    for request, _ in ordered:
        check_request(request, cfg, book, say)
    return time.perf_counter() - began


class Columns(Protocol):
    """What :func:`show_comparison` needs of the view (``display.CompareView`` is one)."""

    interval: float

    def status(self, message: str | None) -> None: ...

    def add(self, model: str, chunk: str) -> None: ...

    def flush(self) -> None: ...

    def finish_one(self, model: str, result: Result | None, error: str | None) -> None: ...

    def close(self) -> None: ...

    def finish(self, table: Any) -> None: ...


def show_comparison(
    jobs: list[tuple[Request, int]],
    view: Columns,
    cfg: Settings,
    book: Ledger,
    waited_s: float = 0.0,
) -> pd.DataFrame | None:
    """The comparison cell: every request at once, streamed side by side into ``view``, then
    its table; returns the table (one row per call), or None when there is none.

    The calls run in a worker thread; this thread (the kernel's) shows their chunks as they
    come, at most at the view's rate, and turns a Ctrl-C into a stop of every stream (each is
    recorded as interrupted)."""
    import pandas as pd

    view.status("waiting for the first tokens…")
    events: queue.Queue[tuple[Any, ...]] = queue.Queue()
    stop = threading.Event()
    box: dict[str, list[Outcome]] = {}

    def work() -> None:
        try:
            box["outcomes"] = run_concurrently(
                jobs,
                on_chunk=lambda m, c: events.put(("chunk", m, c)),
                on_done=lambda o: events.put(("done", o)),
                stop=stop,
                cfg=cfg,
                book=book,
                waited_s=waited_s,
            )
        finally:
            events.put(("end",))

    worker = threading.Thread(target=work, name="llm-compare", daemon=True)
    worker.start()
    _show_events(events, view, stop, worker)
    worker.join()
    frame = pd.DataFrame([o.row() for o in box.get("outcomes", [])])
    if frame.empty:
        view.close()
        return None
    view.finish(frame.set_index("model")[TABLE_COLUMNS[1:] + ["error"]])
    return frame


def _show_events(
    events: queue.Queue[tuple[Any, ...]],
    view: Columns,
    stop: threading.Event,
    worker: threading.Thread,
) -> None:
    """Show the worker's events in ``view`` until it has ended; a Ctrl-C sets ``stop``."""
    wait = view.interval or 0.05
    while True:
        try:
            try:
                event = events.get(timeout=wait)
            except queue.Empty:
                view.flush()
                if not worker.is_alive() and events.empty():
                    return  # its "end" came and went (a Ctrl-C may have cut it short)
                continue
            if event[0] == "end":
                return
            if event[0] == "chunk":
                view.add(event[1], event[2])
            else:
                outcome = event[1]
                view.finish_one(outcome.model, outcome.result, outcome.error)
        except KeyboardInterrupt:
            stop.set()  # each stream stops at its next chunk, recorded as interrupted


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

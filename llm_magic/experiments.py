"""Many prompts × many models: ``lm.experiment``, priced before it runs and resumable.

    exp = lm.experiment(df, ["local", "gpt-4o-mini"], name="sentiment-v1",
                        template="Classify as positive or negative: {text}", score="exact")
    exp.df          # one row per prompt × model × repeat, joined to df's columns
    exp.summary()   # per model: calls, errors, cost, mean score, p50/p95 latency

Every prompt's tokens are counted and the calls priced (expected and worst case, per model)
before the first is sent; ``dry_run=True`` stops there. The ledger is the experiment's only
record: each call is an ordinary ledger row carrying ``experiment``, ``prompt_hash`` (its
prompt, system and parameters) and ``repeat``, so a re-run of the same cell — after a kernel
restart, a Ctrl-C or a SIGKILL — makes only the calls that have no ``ok`` row yet and reuses
the rest; ``fresh=True`` starts over. Pipeline layer: no IPython (the object shows itself in a
notebook through ``_repr_html_``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Container
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import _expplan, _expreuse, _exprun, _otel, errors
from ._expplan import Estimate, Job
from ._expreads import made_by, table_calls
from .comparison import Outcome, _is_local
from .config import Settings, check_number, settings
from .core import Request, check_request
from .models import Route, resolve
from .record import utcnow
from .store import Ledger, ledger
from .vocab import DEFAULT_MAX_TOKENS, usd

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["experiment", "Experiment", "Estimate", "SCORES"]

SCORES = ("exact", "contains")
NOT_RUN = "not run"  # the status of a call the run never made (stopped, or at the cap)
Score = Callable[[str, Any], float] | str | None


def experiment(
    prompts: Any,
    models: list[str] | str,
    *,
    name: str,
    repeats: int = 1,
    system: str | None = None,
    score: Score = None,
    max_cost_usd: float | None = None,
    concurrency: int | None = None,
    dry_run: bool = False,
    fresh: bool = False,
    template: str | None = None,
    max_tokens: int | None = None,
    temperature: float = 0.0,
    progress: bool = True,
    agent: str | None = None,
    user: str | None = None,
    tags: dict[str, str] | None = None,
    cache: bool | None = None,
) -> Experiment | Estimate:
    """Ask every model every prompt (``repeats`` times); returns an :class:`Experiment`
    (``dry_run=True``: the :class:`Estimate` only, nothing sent).

    ``prompts``: a list, a Series, or a DataFrame filled into ``template`` per row. ``score``: a
    function ``(answer, row) -> number`` or ``"exact"``/``"contains"`` against an ``expected``
    column. ``max_cost_usd``: refused up front when the expected cost is over it; while running,
    no call starts whose worst case could pass it. A re-run with the same ``name`` makes only
    the calls with no ``ok`` row yet; ``fresh=True`` makes them all again. ``progress``: the
    estimate and a progress bar per model. ``agent``, ``user``, ``tags`` go to every row.

    Every reused answer is recorded as a ``cached`` row (cost 0, ``saved_usd``), written in
    one transaction; nothing is sent for it. ``cache``: ``True`` also answers a new call from
    an identical earlier ``ok`` request anywhere in the ledger (repeat 0 only: repeats measure
    variance); ``None`` (default) does so when the session's response cache is on
    (``LLMMagics.cache``, ``LLM_MAGIC_CACHE``) and ``temperature`` is 0; ``False`` never (nor
    with ``fresh=True``, which makes every call again)."""
    cfg = settings()
    book = ledger(cfg.ledger)
    models = _models(models)
    _check(name, repeats, score, concurrency)
    cap = (
        None
        if max_cost_usd is None
        else check_number(
            "MAX_COST_PER_REQUEST_USD",
            max_cost_usd,
            where=f"max_cost_usd={max_cost_usd!r}",
            fix="pass a number of dollars, e.g. 5",
        )
    )
    frame = _expplan.inputs(prompts, template)
    if score in SCORES and "expected" not in frame.columns:
        raise errors.UsageProblem(
            f"score={score!r} compares answers with an 'expected' column: add one to the "
            "prompts' DataFrame, or pass a function (answer, row) -> number"
        )
    max_tokens = max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS["standard"]
    base = Request(
        prompt="x",
        system=system,
        max_tokens=max_tokens,
        temperature=temperature,
        agent=agent,
        user=user,
        tags=dict(tags or {}),
    )
    base.validate()
    hashes = [_expplan.identity(p, system, temperature, max_tokens) for p in frame["prompt"]]
    frame["prompt_hash"] = hashes
    since = utcnow() if fresh else None
    reuse = _expreuse.Reuse(request=lambda job: _request(base, job, name))
    done = {} if fresh else _expreuse.answered(book, name)
    jobs, again = _jobs(frame, hashes, models, repeats, done)
    reuse.own = [(j, *done[(j.prompt_hash, j.model, j.repeat)]) for j in again]
    reused = {m: sum(1 for j in again if j.model == m) for m in models}
    cached: dict[str, int] = dict.fromkeys(models, 0)
    if not fresh and _expreuse.cache_wanted(cache, cfg, temperature):  # fresh: all made again
        hits = _expreuse.from_cache(jobs, reuse.request, cfg, book)
        for i in hits:
            cached[jobs[i].model] += 1
        reuse.served += list(hits.values())
        jobs = [job for i, job in enumerate(jobs) if i not in hits]
    pending = list(dict.fromkeys(j.model for j in jobs))  # all reused: no key, no server
    routes = _routes(pending, base, cfg, book, ready=not dry_run)

    def messages(prompt: str) -> list[dict[str, str]]:
        return ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]

    est = _expplan.estimate(name, models, jobs, routes, messages, max_tokens, book, reused, cached)
    if dry_run:
        return est
    refused = _expplan.refusal(est, cap, cfg, book)
    if refused:
        raise errors.UsageProblem(refused)
    if progress:
        print(est.text(), flush=True)
    work = [
        (_request(base, job, name), job.repeat, job.worst_usd, routes[job.model].provider)
        for job in jobs
    ]
    guard = _exprun.SpendGuard(cap)
    with _otel.parent(f"experiment {name}", {"llm_magic.experiment": name}):  # OTel on: a span
        reuse.write(book, cfg.store_text)  # before any call: a Ctrl-C keeps them
        outcomes = _run(work, jobs, models, concurrency, guard, cfg, book, progress)
    exp = Experiment(name, frame, models, repeats, score, book, since=since)
    exp.cached, exp.saved_usd = reuse.written, reuse.saved_usd
    exp._note_run(outcomes, guard)
    return exp


def _models(models: list[str] | str) -> list[str]:
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",")]
    out = list(dict.fromkeys(m.strip() for m in models if isinstance(m, str) and m.strip()))
    if not out:
        raise errors.UsageProblem("experiment needs at least one model, e.g. ['local', 'gpt-4o']")
    return out


def _check(name: str, repeats: int, score: Score, concurrency: int | None) -> None:
    if not isinstance(name, str) or not name.strip():
        raise errors.UsageProblem(
            "an experiment needs a name, e.g. name='sentiment-v1': a re-run under the same name "
            "reuses its answers"
        )
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise errors.UsageProblem(f"repeats must be a positive whole number, not {repeats!r}")
    if score is not None and not callable(score) and score not in SCORES:
        raise errors.UsageProblem(
            f"score={score!r}: use 'exact', 'contains' or a function (answer, row) -> number"
        )
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise errors.UsageProblem(
            f"concurrency must be a positive whole number, not {concurrency!r}"
        )


def _jobs(
    frame: pd.DataFrame,
    hashes: list[str],
    models: list[str],
    repeats: int,
    done: Container[tuple[str, str, int]],
) -> tuple[list[Job], list[Job]]:
    """The calls still to make, interleaved by model (so every provider is busy at once), each
    identity once; and the calls answered already (in ``done``)."""
    jobs: list[Job] = []
    again: list[Job] = []
    seen: set[tuple[str, str, int]] = set()
    for k in range(repeats):
        for row, (prompt, h) in enumerate(zip(frame["prompt"], hashes, strict=True)):
            for model in models:
                key = (h, model, k)
                if key in seen:
                    continue
                seen.add(key)
                job = Job(row, model, k, str(prompt), h)
                (again if key in done else jobs).append(job)
    return jobs, again


def _routes(
    models: list[str], base: Request, cfg: Settings, book: Ledger, ready: bool
) -> dict[str, Route]:
    """Each model checked (unknown, no key, max_tokens over its maximum: a usage error, nothing
    sent) and routed; the embedded model last, and started only when the calls will be made."""
    routes: dict[str, Route] = {}
    for model in sorted(models, key=lambda m: _is_local(m, book)):
        req = Request(prompt="x", model=model, max_tokens=base.max_tokens)
        routes[model] = check_request(req, cfg, book) if ready else resolve(model, cfg, book)
    return {m: routes[m] for m in models}


def _request(base: Request, job: Job, name: str) -> Request:
    return Request(
        prompt=job.prompt,
        model=job.model,
        system=base.system,
        max_tokens=base.max_tokens,
        temperature=base.temperature,
        agent=base.agent,
        user=base.user,
        tags=dict(base.tags),
        experiment=name,
        prompt_hash=job.prompt_hash,
        repeat=job.repeat,
    )


def _run(
    work: list[tuple[Request, int, float, str]],
    jobs: list[Job],
    models: list[str],
    concurrency: int | None,
    guard: _exprun.SpendGuard,
    cfg: Settings,
    book: Ledger,
    progress: bool,
) -> list[Outcome]:
    """The calls, with a tqdm bar per model showing its calls done and its live cost."""
    bars: dict[str, Any] = {}
    spent: dict[str, float] = dict.fromkeys(models, 0.0)
    if progress and work:
        from tqdm.auto import tqdm

        for i, model in enumerate(models):
            total = sum(1 for j in jobs if j.model == model)
            bars[model] = tqdm(total=total, desc=model, unit="call", position=i, leave=True)

    def done(i: int, outcome: Outcome) -> None:
        model = jobs[i].model
        if outcome.result is not None and math.isfinite(outcome.result.cost_usd):
            spent[model] += outcome.result.cost_usd
        bar = bars.get(model)
        if bar is not None:
            bar.set_postfix_str(usd(spent[model]), refresh=False)
            bar.update(1)

    try:
        return _exprun.run(
            work, concurrency=concurrency, guard=guard, cfg=cfg, book=book, on_done=done
        )
    finally:
        for bar in bars.values():
            bar.close()


class Experiment:
    """An experiment's answers as the ledger has them: ``.df`` (one row per prompt × model ×
    repeat, joined to the input columns), ``.summary()`` (per model), ``.refresh()``.

    ``reused``: how many calls the last run found answered already; ``made``: how many it made;
    ``cached``: the ``cached`` rows it wrote for the reused ones, and ``saved_usd`` what they
    would have cost; ``note``: why it stopped early (Ctrl-C, the cost cap), if it did.

    A reused call shows the measurements of the call that made its answer (answer, tokens,
    cost, latency, TTFT: the experiment's data) with ``reused`` True; its status is ``ok``
    when that call is the experiment's own, ``cached`` when the response cache found it
    elsewhere in the ledger."""

    def __init__(
        self,
        name: str,
        inputs: pd.DataFrame,
        models: list[str],
        repeats: int,
        score: Score,
        book: Ledger,
        *,
        since: datetime | None = None,
    ) -> None:
        self.name = name
        self.inputs = inputs
        self.models = models
        self.repeats = repeats
        self.score = score
        self.book = book
        self.since = since  # fresh=True: rows before this run are not this experiment's answers
        self.made = 0
        self.reused = 0
        self.cached = 0
        self.saved_usd = 0.0
        self.note: str | None = None
        self._texts: dict[str, str] = {}  # this run's answers (the ledger may not keep text)
        self._made_ids: set[str] = set()
        self._df: pd.DataFrame | None = None

    def _note_run(self, outcomes: list[Outcome], guard: _exprun.SpendGuard) -> None:
        for o in outcomes:
            if o.result is not None and o.result.call_id:
                self._made_ids.add(o.result.call_id)
                self._texts[o.result.call_id] = o.result.text
        self.made = len(self._made_ids)
        skipped = sum(1 for o in outcomes if o.result is None)
        if guard.stopped:
            self.note = (
                f"Stopped at max_cost_usd={usd(guard.cap or 0)}: {skipped} call(s) not made; "
                "raise it and re-run (what was made is reused)"
            )
        elif any(o.error == _exprun.NOT_STARTED for o in outcomes):
            self.note = f"Interrupted: {skipped} call(s) not made; re-run to finish"
        self.refresh()
        self.reused = int(self.df["reused"].sum())

    def refresh(self) -> pd.DataFrame:
        """Read the experiment's rows from the ledger again and rebuild :attr:`df`."""
        from ._expframe import build

        calls = table_calls(self.book, self.name, self.since)
        # the calls the response cache answered from outside the experiment (the only cached
        # rows table_calls gives): their measurements are their original's
        elsewhere = calls[calls["status"] == "cached"]
        origins = made_by(self.book, list(elsewhere["request_hash"].dropna()))
        self._df = build(
            self.inputs,
            self.models,
            self.repeats,
            calls,
            self._texts,
            self._made_ids,
            self.score,
            origins,
        )
        return self._df

    @property
    def df(self) -> pd.DataFrame:
        return self._df if self._df is not None else self.refresh()

    def summary(self) -> pd.DataFrame:
        """Per model: calls, errors, not_run, reused, cost_usd, cost_per_100_usd, mean_score,
        latency p50/p95 (ok calls), from :attr:`df`."""
        from ._expframe import summarize

        return summarize(self.df, self.models)

    def headline(self) -> str:
        df = self.df
        cost = float(df["cost_usd"].sum(min_count=1))
        line = (
            f"Experiment {self.name!r}: {len(df)} call(s), {self.made} made now, "
            f"{self.reused} reused"
            + (f", saved {usd(self.saved_usd)}" if self.cached else "")
            + f"; cost {'unpriced' if math.isnan(cost) else usd(cost)}"
        )
        return f"{line}. {self.note}" if self.note else line

    def __repr__(self) -> str:
        return f"{self.headline()}\n{self.summary().to_string()}"

    def _repr_html_(self) -> str:
        return f"<p>{html.escape(self.headline())}</p>{self.summary().to_html()}"

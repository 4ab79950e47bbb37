"""``lm.embed``: texts to vectors, through the same guards and ledger as a chat call.

One request per batch (at most ``batch_size`` texts and ``max_batch_tokens`` estimated tokens),
each one ledger row (``operation='embeddings'``): input tokens as the provider reports them,
cost = tokens × the map's ``input_cost_per_token``, latency, status — failures too. Before each
request the daily budget, ``MAX_COST_PER_REQUEST_USD`` and the budget hold are checked as for a
chat call (:mod:`llm_magic.budget`); retries and key rotation are the chat call's
(:mod:`llm_magic.retry`, the key pool, the error translation in :mod:`llm_magic._attempt`).
Models: any LiteLLM embedding id, or ``local-embed`` (all-MiniLM-L6-v2 in-process, free).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import _attempt, _embedrun, _otel, budget, errors, gateway, pricing, retry
from ._embedrun import LOCAL_EMBED_ALIAS
from .config import Settings, settings
from .embeddings import Embeddings
from .errors import UsageProblem
from .models import Route, all_aliases, resolve
from .record import CallRecord, utcnow
from .result import Result
from .secrets import scrub
from .store import Ledger, ledger

BATCH_SIZE = 256  # texts per request (OpenAI takes 2,048)
MAX_BATCH_TOKENS = 100_000  # estimated tokens per request (OpenAI takes 300,000)
_ATTRIBUTION = {"agent", "user", "tags", "execution_count", "store_text"}


@dataclass
class EmbedRequest:
    """One ``lm.embed`` call, before routing."""

    texts: list[str]
    model: str
    agent: str | None = None
    user: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    execution_count: int | None = None
    store_text: bool | None = None


def texts_of(texts: Any) -> list[str]:
    """``texts`` (a str or a list of str) as a list; :class:`UsageProblem` otherwise."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)) or not texts:
        raise UsageProblem("lm.embed needs a text or a non-empty list of texts")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise UsageProblem(
            f"lm.embed: text #{bad[0]} is {'empty' if isinstance(texts[bad[0]], str) else 'not a str'}"
            f" ({len(bad)} such): pass non-empty strings only"
        )
    return list(texts)


def route_for(name: str, cfg: Settings, book: Ledger) -> Route:
    """Where an embeddings request for ``name`` goes (``local-embed``: in-process)."""
    target = all_aliases(book).get(name, name)
    if target == LOCAL_EMBED_ALIAS:
        return Route(name, _embedrun.LOCAL_EMBED_MODEL, "local", _embedrun.LOCAL_EMBED_MODEL)
    route = resolve(name, cfg, book)
    if route.provider == "local":
        raise UsageProblem(
            f"{name} is the local chat model: embed with model='{LOCAL_EMBED_ALIAS}' "
            "(all-MiniLM-L6-v2) or an embedding model such as text-embedding-3-small"
        )
    return route


def batches(
    texts: list[str], counts: list[int], size: int, max_tokens: int
) -> list[tuple[int, int]]:
    """(start, end) slices of at most ``size`` texts and ``max_tokens`` tokens (a longer
    text goes alone)."""
    out: list[tuple[int, int]] = []
    start, tokens = 0, 0
    for i, n in enumerate(counts):
        if i > start and (i - start >= size or tokens + n > max_tokens):
            out.append((start, i))
            start, tokens = i, 0
        tokens += n
    out.append((start, len(texts)))
    return out


class Batch:
    """One embeddings request: its retries and exactly one ledger row."""

    def __init__(self, job: Job, texts: list[str], estimate: int) -> None:
        self.job, self.texts, self.estimate = job, texts, estimate
        self.call_id = uuid.uuid4().hex
        self.ts_start = utcnow()
        self.t0 = time.perf_counter()
        self.attempts = 0
        self.answer: gateway.Embedded | None = None

    def send(self) -> gateway.Embedded:
        route, cfg = self.job.route, self.job.cfg
        if route.provider == "local":
            return _embedrun.embed_local(self.texts)
        return gateway.embed(
            model=route.litellm_model,
            texts=self.texts,
            api_base=route.base_url(),
            api_key=route.key,  # a Secret: revealed only inside the litellm call
            timeout=cfg.timeout_s,
        )

    def finish(self, status: str, err: errors.ProviderError | None) -> Result:
        """Price the request, write its row, and return its Result."""
        latency = time.perf_counter() - self.t0
        job, answer = self.job, self.answer
        reported = answer is not None and answer.input_tokens is not None
        tin = answer.input_tokens if answer is not None and reported else 0
        if not reported and status == "ok":
            tin = self.estimate
        refused = status.startswith("refused")
        amount = 0.0 if refused else pricing.cost(job.price, tin or 0, 0)
        req = job.req
        rec = CallRecord(
            call_id=self.call_id,
            trace_id=job.trace_id,
            ts_start=self.ts_start,
            ts_end=utcnow(),
            requested_model=req.model,
            model=job.route.model,
            provider=job.route.provider,
            attempts=self.attempts,
            status=status,
            error_type=err.error_type if err is not None else None,
            http_status=err.status if err is not None else None,
            input_tokens=int(tin or 0),
            output_tokens=0,
            usage_source="provider" if reported else "estimated",
            cost_usd=amount,
            price_source=job.price.source if job.price else None,
            latency_s=latency,
            agent=req.agent,
            user=req.user,
            tags=dict(req.tags) if req.tags else None,
            execution_count=req.execution_count,
            key_alias=job.route.key_alias,
            prompt=scrub("\n\n".join(self.texts), keylike=False) if job.store_text else None,
            error_message=scrub(str(err)) if err is not None else None,
            operation="embeddings",
            prompt_count_source=None if job.route.provider == "local" else "estimate",
        )
        kept = job.book.keep(rec.row(), job.route.api_base)
        if kept:
            job.notes.append(kept)
        return Result.from_record(rec, text="", notes=list(job.notes))


@dataclass
class Job:
    """One ``lm.embed`` call, planned: its route, price, budget verdict and batches."""

    req: EmbedRequest
    cfg: Settings
    book: Ledger
    route: Route
    price: pricing.Price | None
    verdict: budget.Verdict
    store_text: bool
    spent: float = 0.0  # today's spend before the request being sent (the alert's base)
    trace_id: str = field(default_factory=_otel.trace_id)  # an open parent span's, else new
    notes: list[str] = field(default_factory=list)

    def refusal(self, batch: Batch) -> str | None:
        """Why ``batch`` may not be sent (the chat call's guards, for input tokens only)."""
        if self.verdict.action != "ok":  # over the daily budget: no embedding downgrade
            return self.verdict.note
        worst = budget.worst_case_cost(self.price, batch.estimate, 0)
        over = budget.over_cap(
            self.cfg,
            self.price,
            self.route.model,
            worst,
            what="embeddings request",
            detail=f"{batch.estimate} input tokens on {self.route.model}",
            fix="pass fewer texts or a smaller batch_size",
        )
        if over:
            return over
        held = budget.reserve(self.cfg, self.book, batch.call_id, self.route.model, worst)
        return None if held.action == "ok" else held.note

    def _answered(self, result: Result) -> Result:
        """The budget alert, once, when this request took today's spend over its line."""
        crossed = budget.crossed(self.cfg, self.book, self.spent, result.cost_usd)
        if crossed:
            self.notes.append(crossed)
            result.notes.append(crossed)
        if result.cost_usd == result.cost_usd:  # not NaN
            self.spent += result.cost_usd
        return result

    def run(self, batch: Batch) -> Result:
        """Send ``batch`` until it answers (retries and keys as a chat call's)."""
        refused = self.refusal(batch)
        if refused is not None:
            no = errors.BudgetRefused(refused, model=self.route.model)
            raise _attempt._attach(no, batch.finish("refused_budget", no))
        route, cfg = self.route, self.cfg
        pool = _attempt._key_pool(cfg, route)
        limited: set[str] = set()
        while True:
            batch.attempts += 1
            _attempt._pick_key(pool, route, batch.attempts)
            try:
                batch.answer = batch.send()
                return self._answered(batch.finish("ok", None))
            except KeyboardInterrupt:
                self.notes.append("embeddings interrupted")
                raise errors.Interrupted(batch.finish("interrupted", None)) from None
            except errors.ProviderError as exc:
                err: errors.ProviderError = _attempt._translate(exc, route, cfg)
            decision = retry.decide(err, batch.attempts)
            err = _attempt._cool(pool, route, err, decision, limited, cfg)
            if not decision.retry:
                raise _attempt._attach(err, batch.finish("error", err))
            if not (isinstance(err, errors.RateLimited) and pool is not None and pool.any_free()):
                self._wait(batch, decision.wait_s, err)

    def _wait(self, batch: Batch, seconds: float, err: errors.ProviderError) -> None:
        """Back off before the next attempt; stopped while waiting, the request is still
        recorded, as interrupted."""
        try:
            _attempt._sleep(seconds)
        except KeyboardInterrupt:
            self.notes.append("interrupted while waiting to retry")
            raise errors.Interrupted(batch.finish("interrupted", err)) from None


def plan(
    texts: Any,
    model: str | None,
    attribution: dict[str, Any],
    cfg: Settings | None = None,
    book: Ledger | None = None,
) -> Job:
    """Validate and route an ``lm.embed`` call; nothing is sent."""
    items = texts_of(texts)
    unknown = sorted(set(attribution) - _ATTRIBUTION)
    if unknown:
        raise UsageProblem(
            f"lm.embed got an unknown argument {unknown[0]!r}: use "
            + ", ".join(sorted(_ATTRIBUTION))
        )
    tags = attribution.pop("tags", None) or {}
    if not isinstance(tags, dict):
        raise UsageProblem("tags must be a dict of str → str, e.g. tags={'project': 'search'}")
    req = EmbedRequest(items, (model or LOCAL_EMBED_ALIAS).strip(), tags=dict(tags), **attribution)
    cfg = cfg or settings()
    book = book if book is not None else ledger(cfg.ledger)
    route = route_for(req.model, cfg, book)
    price = pricing.price_for(route.model, route.provider, book, also=(req.model,))
    verdict = budget.check_daily(cfg, book, route.model)
    if route.provider == "local" and verdict.action != "ok":
        verdict = budget.Verdict("ok", verdict.spent, verdict.budget)  # free: never refused
    store = cfg.store_text if req.store_text is None else req.store_text
    job = Job(req, cfg, book, route, price, verdict, store, spent=verdict.spent)
    if verdict.note and verdict.action == "ok":
        job.notes.append(verdict.note)
    if price is None:
        job.notes.append(pricing.no_price_note(route.model))
    return job


def _counts(job: Job) -> list[int]:
    """Each text's tokens before sending, for the batches and the guards: litellm's estimate
    for the model; none for local-embed (free, and it reports its own count)."""
    if job.route.provider == "local":
        return [0] * len(job.req.texts)
    return [gateway.count_text_tokens(job.route.litellm_model, t) for t in job.req.texts]


def _progress(n: int, show: bool | None, model: str) -> Any:
    """A tqdm bar over ``n`` batches when there are several (quiet for one), else None."""
    if show is False or (show is None and n <= 1):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=n, desc=f"embed {model}", unit="batch")


def run(
    job: Job,
    *,
    batch_size: int = BATCH_SIZE,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
    progress: bool | None = None,
) -> Embeddings:
    """Send ``job``'s texts batch by batch; the vectors, in order, with every request's row."""
    import numpy as np

    if not isinstance(batch_size, int) or batch_size <= 0:
        raise UsageProblem(f"batch_size must be a positive integer, not {batch_size!r}")
    if job.route.provider == "local":
        _embedrun.model()  # the one-time conversion and load, before the first row's clock
    texts = job.req.texts
    counts = _counts(job)
    slices = batches(texts, counts, batch_size, max_batch_tokens)
    bar = _progress(len(slices), progress, job.route.model)
    calls: list[Result] = []
    rows: list[list[float]] = []
    try:
        for start, end in slices:
            batch = Batch(job, texts[start:end], sum(counts[start:end]))
            calls.append(job.run(batch))
            assert batch.answer is not None
            rows.extend(_checked(batch.answer.vectors, end - start, job.route.model))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    vectors = np.asarray(rows, dtype=np.float32)
    return Embeddings(vectors, job.route.model, job.req.model, calls, list(job.notes))


def _checked(vectors: list[list[float]], n: int, model: str) -> Iterator[list[float]]:
    if len(vectors) != n:
        raise errors.BadRequest(f"{model} returned {len(vectors)} vectors for {n} texts")
    return iter(vectors)


def embed(
    texts: Any,
    model: str | None = None,
    *,
    batch_size: int = BATCH_SIZE,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
    progress: bool | None = None,
    cfg: Settings | None = None,
    book: Ledger | None = None,
    **attribution: Any,
) -> Embeddings:
    """Embed ``texts`` (a str or a list of str) with ``model`` (default ``local-embed``:
    all-MiniLM-L6-v2, 384 dimensions, in-process and free; or any LiteLLM embedding id such
    as ``text-embedding-3-small``) → :class:`~llm_magic.embeddings.Embeddings` (``.vectors``:
    float32, shape (n, dim)). Attribution: ``agent``, ``user``, ``tags``. Large inputs go in
    several requests (``batch_size`` texts, ``max_batch_tokens`` tokens), each its own ledger
    row, with a progress bar (``progress``: None shows it for several batches). Raises
    :class:`~llm_magic.errors.UsageProblem` (nothing sent) or
    :class:`~llm_magic.errors.ProviderError` (``.result``: the failed request's row)."""
    job = plan(texts, model, dict(attribution), cfg, book)
    return run(job, batch_size=batch_size, max_batch_tokens=max_batch_tokens, progress=progress)

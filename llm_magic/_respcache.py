"""The response cache for notebooks: ``cache=True`` (``%%llm --cache``, ``%config
LLMMagics.cache = True``, ``LLM_MAGIC_CACHE=1``) answers a request identical to an earlier
``ok`` call from the ledger, at once: nothing is sent, nothing reserved, and the answer is
recorded as a row of its own, status ``cached``, ``cost_usd`` 0 and ``saved_usd`` = the
original call's cost, with the original's tokens and the lookup's own latency.

A request's identity is :func:`request_hash`: the sha256 of the canonical JSON of its model
(aliases followed), its messages (system prompt and chat history included), ``max_tokens``,
``temperature``, its tools and its ``schema=``. Every chat row carries it (``request_hash``),
so any earlier call can answer a later one; ``%llm cache clear`` (:func:`clear`) keeps the time
in the ledger and the cache looks only at rows written after it (rows are never deleted).

When it answers: off by default. Asked on the call (``cache=True``, ``--cache``) it answers
any request, whatever its temperature: the user asked for the same answer again. Switched on
for the session (``LLMMagics.cache``, ``LLM_MAGIC_CACHE``) it answers only ``temperature`` 0
requests: a sampled answer is meant to differ. ``cache=False`` on a call turns it off for that
call. Requests that run tools (``run_tools=True``) are always sent (the tools must run), and
without stored text (``LLM_MAGIC_STORE_TEXT=0``) there is nothing to answer from: said once.

Pipeline layer: :func:`answer` is called by :class:`llm_magic.core.Stream` with the plan;
:func:`leg_hash` by :class:`llm_magic._attempt.Call` for the row it writes.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections.abc import Generator
from datetime import datetime
from typing import Any

from . import _plan, _respstore, _structured
from .config import Settings, settings
from .models import Route, all_aliases, follow_alias
from .record import NAMES, CallRecord, utcnow
from .result import Result
from .secrets import scrub
from .store import Ledger, ledger
from .vocab import DEFAULT_MAX_TOKENS

__all__ = [
    "request_hash",
    "hash_of",
    "lookup",
    "lookup_many",
    "request_hash_of",
    "answer",
    "wanted",
    "clear",
    "status",
    "CachedRun",
    "cached_record",
    "record_of",
    "HASH_VERSION",
]

HASH_VERSION = 1  # in every hash: a change of what identifies a request starts a new cache
NO_TEXT = (
    "The response cache cannot answer: the ledger keeps no answer text (LLM_MAGIC_STORE_TEXT "
    "is off). Turn it on (LLM_MAGIC_STORE_TEXT=1, or %config LLMMagics.store_text = True) to "
    "cache answers; until then every request is sent"
)
NO_TOOLS = "cache=True does not answer requests that run tools (run_tools): sent"
_told_no_text: set[str] = set()  # ledgers whose users were told (once per process)


def request_hash(
    model: str,
    messages: list[dict[str, Any]],
    max_tokens: int,
    temperature: float,
    tools: list[dict[str, Any]] | None = None,
    schema: dict[str, Any] | None = None,
) -> str:
    """The identity of a request: sha256 (hex) of the canonical JSON of what changes its
    answer. ``model`` is the model id with aliases followed (``local`` for the embedded
    model); ``messages`` as sent, system prompt and history included; ``tools`` their JSON
    schemas; ``schema`` the structured-output schema sent (name, JSON schema, strict)."""
    identity = {
        "v": HASH_VERSION,
        "model": model,
        "messages": messages,
        "max_tokens": int(max_tokens),
        "temperature": float(temperature),
        "tools": tools or None,
        "schema": schema or None,
    }
    canonical = json.dumps(
        identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _hash_parts(
    model: str,
    messages: list[dict[str, Any]],
    max_tokens: int,
    temperature: float,
    tools: list[Any],
    schema: _structured.Schema | None,
) -> str:
    return request_hash(
        model,
        messages,
        max_tokens,
        temperature,
        [t.schema for t in tools] or None,
        {"name": schema.name, "sent": schema.sent, "strict": schema.strict} if schema else None,
    )


def _plan_hash(plan: _plan.Plan, model: str) -> str:
    messages = [*plan.history, *plan.new]
    req = plan.req
    return _hash_parts(model, messages, plan.max_tokens, req.temperature, plan.tools, plan.schema)


def leg_hash(plan: _plan.Plan, route: Route) -> str:
    """The hash written on the row of a call to ``route`` (before any proxy renames it)."""
    return _plan_hash(plan, "local" if route.provider == "local" else route.model)


def hash_of(plan: _plan.Plan) -> str:
    """The hash of a planned request to the model the user asked for (aliases followed)."""
    name = str(plan.req.model)
    return _plan_hash(plan, follow_alias(name, all_aliases(plan.book)))


def request_hash_of(
    req: _plan.Request,
    cfg: Settings | None = None,
    book: Ledger | None = None,
    aliases: dict[str, str] | None = None,
) -> str:
    """The hash of ``req`` as it would be sent now (default model and ``max_tokens`` filled
    in, the ``--chat`` history included): what :func:`lookup` takes. Nothing is sent and no
    guard runs (no budget alert). Raises :class:`~llm_magic.errors.UsageProblem` for a bad
    request (bad ``max_tokens``, ``temperature``, tools or schema). ``aliases``: the ledger's
    aliases read once for many requests (read here when not given)."""
    req.validate()
    cfg = cfg or settings()
    book = book if book is not None else ledger(cfg.ledger)
    tools = _plan._tools(req)
    schema = _structured.parse(req.schema)
    history, new = _plan.messages(req)
    name = (req.model or cfg.default_model).strip()
    max_tokens = req.max_tokens or DEFAULT_MAX_TOKENS.get("tools" if tools else req.task, 2048)
    model = follow_alias(name, aliases if aliases is not None else all_aliases(book))
    return _hash_parts(model, [*history, *new], max_tokens, req.temperature, tools, schema)


_NAN_FLOATS = {"cost_usd", "latency_s", "ttft_s", "output_tps", "saved_usd"}


def record_of(row: dict[str, Any]) -> CallRecord:
    """A ledger row read back as the :class:`CallRecord` that wrote it."""
    values: dict[str, Any] = {name: row.get(name) for name in NAMES}
    for name in ("ts_start", "ts_end"):
        if isinstance(values[name], str):
            values[name] = datetime.fromisoformat(values[name])
    for name in ("tags", "tool_calls"):
        if isinstance(values[name], str):
            values[name] = json.loads(values[name])
    for name in _NAN_FLOATS:
        if values[name] is None:
            values[name] = math.nan
    for name, default in (("attempts", 0), ("input_tokens", 0), ("output_tokens", 0)):
        if values[name] is None:
            values[name] = default
    values["setup_s"] = values["setup_s"] or 0.0
    values["operation"] = values["operation"] or "chat"
    values["usage_source"] = values["usage_source"] or "provider"
    return CallRecord(**values)


def lookup(book: Ledger, hash_: str) -> CallRecord | None:
    """The call that answers a request of hash ``hash_`` from the ledger: the newest ``ok``
    row with that hash and a stored response, written after the last ``%llm cache clear``;
    None when there is none. What ``lm.experiment`` reuses."""
    row = _respstore.newest_ok(book, hash_)
    return record_of(row) if row is not None else None


def lookup_many(book: Ledger, hashes: list[str]) -> dict[str, CallRecord]:
    """:func:`lookup` for many requests in a few queries (an experiment's re-run): hash → the
    call that answers it, for the hashes the ledger can answer."""
    rows = _respstore.newest_ok_many(book, hashes)
    return {h: record_of(row) for h, row in rows.items()}


def wanted(plan: _plan.Plan) -> bool:
    """Whether ``plan`` may be answered from the ledger (see the module's rules)."""
    req = plan.req
    if req.cache is False or (req.cache is None and not plan.cfg.cache):
        return False
    if req.cache is None and req.temperature > 0:
        return False  # the session's switch: temperature 0 only
    if req.run_tools:
        if req.cache:
            plan.notes.append(NO_TOOLS)
        return False
    if not plan.store_text:
        where = str(plan.book.path)
        if where not in _told_no_text:
            _told_no_text.add(where)
            plan.notes.append(NO_TEXT)
        return False
    return True


def answer(plan: _plan.Plan) -> CachedRun | None:
    """A run answering ``plan`` from the ledger, or None (not wanted, or nothing to answer
    from: the request is sent as usual)."""
    if not wanted(plan):
        return None
    t0 = time.perf_counter()
    start = utcnow()
    hash_ = hash_of(plan)
    hit = lookup(plan.book, hash_)
    if hit is None:
        return None
    return CachedRun(plan, hit, hash_, t0, start)


def cached_record(
    hit: CallRecord,
    req: _plan.Request,
    *,
    request_hash: str | None,
    trace_id: str,
    start: datetime,
    latency_s: float,
    max_tokens: int | None,
    prompt: str | None,
    store_text: bool = True,
    setup_s: float = 0.0,
) -> CallRecord:
    """The row recording that ``req`` was answered by ``hit`` from the ledger: status
    ``cached``, cost 0, ``saved_usd`` = ``hit``'s cost (NaN when its price was unknown), its
    tokens and answer, the lookup's own latency, and ``req``'s attribution (experiment,
    prompt_hash, repeat, agent, tags…). Nothing was sent: ``attempts`` 0. The one builder of a
    cached row, for :class:`CachedRun` and ``lm.experiment``'s reuse."""
    return CallRecord(
        call_id=uuid.uuid4().hex,
        trace_id=trace_id,
        ts_start=start,
        ts_end=utcnow(),
        requested_model=req.model,
        model=hit.model,
        provider=hit.provider,
        attempts=0,  # nothing was sent
        status="cached",
        input_tokens=hit.input_tokens,
        output_tokens=hit.output_tokens,
        usage_source=hit.usage_source,
        cost_usd=0.0,
        price_source=hit.price_source,
        latency_s=latency_s,
        ttft_s=latency_s,
        output_tps=math.nan,  # nothing was generated
        max_tokens=max_tokens,
        prompt=scrub(prompt, keylike=False) if prompt is not None else None,
        response=(hit.response or "") if store_text else None,
        finish_reason=hit.finish_reason,
        setup_s=setup_s,
        operation="chat",
        tool_calls=hit.tool_calls,
        request_hash=request_hash,
        saved_usd=hit.cost_usd,  # NaN (NULL) when the original's price was unknown
        **req.attribution(),
    )


class CachedRun:
    """A planned request answered from the ledger: iterated, ``interrupted()``, ``reading``
    and ``result`` as a :class:`~llm_magic._attempt.Run` is. The answer comes as one chunk;
    its row is written before it is yielded."""

    reading = None  # no HTTP stream is ever read

    def __init__(
        self, plan: _plan.Plan, hit: CallRecord, hash_: str, t0: float, start: datetime
    ) -> None:
        self.plan = plan
        self.hit = hit
        self.hash = hash_
        self.t0 = t0
        self.start = start
        self.result: Result | None = None

    def interrupted(self) -> Result | None:
        return self.result

    def chunks(self) -> Generator[str, None, None]:
        self.result = self._finish()
        if self.result.text:
            yield self.result.text

    def _finish(self) -> Result:
        plan, req, hit = self.plan, self.plan.req, self.hit
        text = hit.response or ""
        latency = time.perf_counter() - self.t0
        rec = cached_record(
            hit,
            req,
            request_hash=self.hash,
            trace_id=plan.trace_id,
            start=self.start,
            latency_s=latency,
            max_tokens=plan.max_tokens,
            prompt=plan.prompt_text if plan.store_text else None,
            store_text=plan.store_text,
            setup_s=max(0.0, self.t0 - plan.prepared_at),
        )
        kept = plan.book.keep(rec.row())
        if kept:
            plan.notes.append(kept)
        result = Result.from_record(rec, text=text, notes=list(plan.notes))
        data, bad = _structured.validated(plan.schema, text, hit.finish_reason, plan.max_tokens)
        result.data = data if bad is None else None
        _plan.remember(req, plan.new, text)
        return result


def clear(book: Ledger) -> str:
    """``%llm cache clear``: from now on the cache answers only from calls made after this
    moment (no row is deleted: the ledger is the record). Returns what was done, in a line."""
    answers, _, _ = _respstore.counts(book)
    when = _respstore.clear(book)
    return (
        f"Response cache cleared at {when[:19].replace('T', ' ')} UTC: {answers} answer(s) "
        "will not be reused (their rows stay in the ledger)"
    )


def status(book: Ledger, cfg: Settings | None = None) -> str:
    """``%llm cache status``: on or off, what the cache holds and what it saved."""
    answers, served, saved = _respstore.counts(book)
    since = _respstore.cleared_at(book)
    when = f"since {since[:19].replace('T', ' ')} UTC" if since else "never cleared"
    switch = ""
    if cfg is not None:
        switch = "on for temperature 0 calls" if cfg.cache else "off (--cache or cache=True asks)"
        switch = f"Response cache: {switch}; "
    return (
        f"{switch}{answers} answer(s) to reuse, {served} call(s) answered from the ledger, "
        f"saved ${saved:.6f} ({when})"
    )

"""Sending a planned call: each model of the chain in turn, each with its retries.

:class:`Run` walks a :class:`~llm_magic._plan.Plan`'s fallback chain and yields text chunks;
:class:`Call` is one model tried (possibly several HTTP attempts) and writes exactly one ledger
row, a :class:`~llm_magic.record.CallRecord`, when it ends. Error translation (which setting to
fix), retries with back-off and key rotation live here; :class:`llm_magic.core.Stream` drives it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Generator, Iterator

from . import _plan, _respcache, _structured, budget, errors, gateway, keys, pricing, retry
from ._otelspan import Tries
from ._toolcalls import ToolCalls, ToolDelta, ToolEvent
from .config import Settings
from .keys import KeyPool
from .models import Route
from .record import CallRecord, UsageDetail, tokens_per_second, utcnow
from .result import Result
from .secrets import scrub


class Call:
    """One call: one model, possibly several HTTP attempts, and exactly one ledger row."""

    def __init__(self, plan: _plan.Plan, leg: _plan.Leg, fallback_from: str | None) -> None:
        self.plan = plan
        self.leg = leg
        self.route = leg.route
        self.price = leg.price
        self.fallback_from = fallback_from
        self.call_id = uuid.uuid4().hex
        self.ts_start = utcnow()
        self.t0 = time.perf_counter()  # latency and TTFT are the provider's: counted from here
        self.setup_s = max(0.0, self.t0 - plan.prepared_at)  # waited before it could be sent
        self.ttft: float | None = None
        self.parts: list[str] = []
        self.attempts = 0
        self.tries = Tries()  # each HTTP attempt's times and error: spans, not ledger columns
        self.usage: gateway.Usage | None = None
        self.tools = ToolCalls()  # the tool calls of the answer, gathered from their pieces
        self.pieces: Iterator[str | ToolDelta | gateway.Usage] | None = None  # being read
        self.request_hash = _respcache.leg_hash(plan, leg.route)  # the row's request identity

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def send(self) -> Iterator[str | ToolDelta | gateway.Usage]:
        plan, route = self.plan, self.route
        self.pieces = gateway.stream_chat(
            model=route.litellm_model,
            messages=self.leg.messages,
            max_tokens=self.leg.max_tokens,
            temperature=plan.req.temperature,
            api_base=route.base_url(),  # the embedded model's server: its URL asked for now
            api_key=route.key,  # a Secret: revealed only inside the litellm call
            timeout=plan.cfg.timeout_s,
            direct=route.provider == "local",  # no litellm on the embedded model's path
            extra=self.leg.extra,
        )
        return self.pieces

    def read(self) -> Iterator[str]:
        """Send once and yield the answer's text as it arrives."""
        for piece in self.send():
            if isinstance(piece, gateway.Usage):
                self.usage = piece
                continue
            if self.ttft is None:
                self.ttft = time.perf_counter() - self.t0
            if isinstance(piece, ToolDelta):  # a tool call forming: the display hears it
                draft = self.tools.add(piece)
                tool_round = self.plan.tool_round
                self.plan.on_tool(
                    ToolEvent(tool_round, piece.index, draft.name, draft.arguments, id=draft.id)
                )
                continue
            self.parts.append(piece)
            yield piece
        if not self.parts and not self.tools:
            raise errors.EmptyResponse(
                f"{self.route.model} sent an empty answer (HTTP 200, no text and no tool "
                "call): try again, rephrase the prompt, or use another model",
                model=self.route.model,
            )

    def stop(self) -> None:
        """Close the HTTP stream being read (an interrupt)."""
        close = getattr(self.pieces, "close", None)
        if close is not None:
            close()

    def finish(self, status: str, err: errors.ProviderError | None) -> Result:
        """Price the call, write its ledger row, and return the Result."""
        latency = time.perf_counter() - self.t0  # the last byte, before counting and pricing
        plan = self.plan
        refused = status.startswith("refused")
        self._answered_model()
        tin, tout, source = self._tokens(status, err, refused)
        detail = self.usage.detail() if source == "provider" and self.usage else UsageDetail()
        amount = 0.0 if refused else pricing.cost(self.price, tin, tout, **detail)
        if self.price is None and not refused:
            plan.notes.append(pricing.no_price_note(self.route.model))
        ttft = self.ttft if self.ttft is not None else float("nan")
        req, store = plan.req, plan.store_text
        rec = CallRecord(
            call_id=self.call_id,
            trace_id=plan.trace_id,
            ts_start=self.ts_start,
            ts_end=utcnow(),
            requested_model=req.model,
            model=self.route.model,
            provider=self.route.provider,
            fallback_from=self.fallback_from,
            attempts=self.attempts,
            status=status,
            error_type=err.error_type if err is not None else None,
            http_status=err.status if err is not None else None,
            input_tokens=tin,
            output_tokens=tout,
            usage_source=source,
            cost_usd=amount,
            price_source=self.price.source if self.price else None,
            latency_s=latency,
            ttft_s=ttft,
            output_tps=tokens_per_second(tout, latency, ttft),
            max_tokens=self.leg.max_tokens,
            key_alias=self.route.key_alias,
            prompt=scrub(plan.prompt_text, keylike=False) if store else None,
            response=scrub(self.text, keylike=False) if store else None,
            error_message=scrub(str(err)) if err is not None else None,
            finish_reason=self._finish_reason(status, err),
            setup_s=self.setup_s,
            tool_calls=self.tools.parsed(),
            prompt_count_source=self.leg.count_source,
            request_hash=self.request_hash,
            **req.attribution(),
            **detail,  # NULL when the provider's usage did not report them
        )
        # a row the ledger cannot take now waits in its journal; api_base: the span's server
        answer_id = self.usage.response_id if self.usage and not self.route.via_proxy else None
        tries = self.tries.closed(answer_id, self.route.provider)  # each a span (OTel on)
        kept = plan.book.keep(rec.row(), self.route.api_base, tries)
        if kept:
            plan.notes.append(kept)
        result = Result.from_record(rec, text=self.text, notes=list(plan.notes))
        result.cache_saved_usd = pricing.cache_saving(
            self.price, rec.cache_read_tokens, rec.cache_write_tokens, rec.cache_write_1h_tokens
        )
        return result

    def _answered_model(self) -> None:
        """Through a proxy, record (and price) the model that answered, as it reports it."""
        if not (self.route.via_proxy and self.usage is not None and self.usage.model):
            return
        answered = self.usage.model.removeprefix("openai/")
        if answered != self.route.model:
            self.route.model = answered
            book = self.plan.book
            self.price = pricing.price_for(answered, self.route.provider, book) or self.price

    def _tokens(
        self, status: str, err: errors.ProviderError | None, refused: bool
    ) -> tuple[int, int, str]:
        """(input, output, usage_source): the provider's count, or our estimate."""
        if self.usage is not None and self.usage.reported:
            return self.usage.input_tokens, self.usage.output_tokens, "provider"
        if not self.parts and (status == "error" or err is not None):
            return 0, 0, "estimated"  # nothing was processed, nothing is billed
        tin = self.leg.input_estimate if self.attempts > 0 and not refused else 0
        written = self.text + self.tools.arguments()  # tool calls' arguments are output too
        return tin, gateway.count_text_tokens(self.route.litellm_model, written), "estimated"

    def _finish_reason(self, status: str, err: errors.ProviderError | None = None) -> str | None:
        if status == "error" and not _structured.answered(err):
            return "error"
        if status not in ("ok", "error"):
            return None  # refused (never sent) or interrupted (the provider never said)
        # answered (an answer that failed its schema too): the provider's reason
        return self.usage.finish_reason if self.usage is not None else None


class Run:
    """One planned request sent: its chain's models in turn until one answers.

    :meth:`chunks` yields the answer's text; ``result`` holds the :class:`Result` once it is
    exhausted; ``reading`` is the call whose HTTP stream is being read (the one an interrupt
    records). Failures raise :class:`errors.ProviderError` with ``.result`` attached."""

    def __init__(self, plan: _plan.Plan) -> None:
        self.plan = plan
        self.reading: Call | None = None
        self.result: Result | None = None
        self.failed: list[tuple[str, errors.ProviderError]] = []  # every model that failed
        self.fell_back: Result | None = None  # the last model that failed over to the next

    def chunks(self) -> Generator[str, None, None]:
        plan = self.plan
        fallback_from: str | None = None
        for index, name in enumerate(plan.chain):
            leg = _plan.prepare(plan, index, name)
            if leg is None:
                continue
            call = Call(plan, leg, fallback_from)
            if not _plan.guard(plan, leg, call.call_id):
                continue  # downgraded: the downgrade model is next
            if leg.refusal is not None:
                refused = leg.refusal
                ctx = isinstance(refused, errors.ContextTooLong)
                status = "refused_context" if ctx else "refused_budget"
                raise _attach(refused, call.finish(status, refused))
            yield from self._attempts(call, last=index == len(plan.chain) - 1)
            if self.result is not None:
                return
            fallback_from = call.route.model
        # the fallbacks left were skipped (no key, unknown model): the last failure stands
        assert self.failed and self.fell_back is not None
        self.fell_back.notes = list(plan.notes)  # with the skips noted after it was written
        raise _attach(_every_failure(self.failed), self.fell_back)

    def interrupted(self) -> Result | None:
        """Record the call being read as ``interrupted`` (None when none is being read)."""
        call, self.reading = self.reading, None
        if call is None:
            return None
        call.stop()
        self.plan.notes.append("response interrupted")
        self.result = call.finish("interrupted", None)
        _plan.remember(self.plan.req, self.plan.new, self.result.text)
        return self.result

    def _read(self, call: Call) -> Iterator[str]:
        self.reading = call
        try:
            yield from call.read()
        except errors.ProviderError:
            self.reading = None
            raise
        self.reading = None

    def _attempts(self, call: Call, *, last: bool) -> Iterator[str]:
        """Send ``call`` until it answers (``self.result`` set), fails over to the next model
        (returns without a result) or fails for good (raises)."""
        plan, route = self.plan, call.route
        pool = _key_pool(plan.cfg, route)
        limited: set[str] = set()  # the keys that got a 429 during this call
        plan.say(f"waiting for {route.model}…")
        while True:
            call.attempts += 1
            _pick_key(pool, route, call.attempts)
            call.tries.begin()
            try:
                yield from self._read(call)
            except errors.ProviderError as exc:
                err: errors.ProviderError = exc
                call.tries.end(exc)
            else:
                call.tries.end()
                self._answered(call)
                return
            if isinstance(err, errors.StreamInterrupted):  # kept, not retried
                plan.notes.append("response interrupted")
                raise _attach(err, call.finish("interrupted", err))
            err = _translate(err, route, plan.cfg)
            decision = retry.decide(err, call.attempts)
            err = _cool(pool, route, err, decision, limited, plan.cfg)
            if decision.retry:
                _wait_to_retry(call, err, decision, pool)
                call.parts.clear()
                call.tools.clear()
                continue
            self.failed.append((route.model, err))
            if decision.fallback and not last:
                self.fell_back = call.finish("error", err)
                return
            raise _attach(_every_failure(self.failed), call.finish("error", err))

    def _answered(self, call: Call) -> None:
        plan = self.plan
        for failed_model, why in self.failed:  # said only now that a fallback has answered
            answered = failed_model == call.fallback_from
            plan.notes.append(
                f"{failed_model} failed ({why.error_type}"
                f"{f' {why.status}' if why.status else ''})"
                + (f": answered by the next fallback, {call.route.model}" if answered else "")
            )
        finish = call.usage.finish_reason if call.usage is not None else None
        data, bad = _structured.validated(plan.schema, call.text, finish, call.leg.max_tokens)
        if bad is not None:  # paid for, and kept: an error row, the raw answer in .result.text
            raise _attach(bad, call.finish("error", bad))
        result = call.finish("ok", None)
        result.data = data
        crossed = budget.crossed(plan.cfg, plan.book, plan.verdict.spent, result.cost_usd)
        if crossed:
            result.notes.append(crossed)
        if not (plan.req.run_tools and result.tool_calls):  # a tool round: its loop remembers
            _plan.remember(plan.req, plan.new, result.text)
        self.result = result


def _key_pool(cfg: Settings, route: Route) -> KeyPool | None:
    """The provider's rotating keys (none through a proxy or for a keyless provider)."""
    return keys.pool(cfg, route.provider) if route.key is not None and not cfg.api_base else None


def _pick_key(pool: KeyPool | None, route: Route, attempt: int) -> None:
    """A retry takes the pool's next key; every key told to wait: honour it."""
    if pool is None:
        return
    if attempt > 1:
        route.key = pool.next() or route.key
    if route.key is not None:
        _sleep(pool.wait_time(route.key))


def _cool(
    pool: KeyPool | None,
    route: Route,
    err: errors.ProviderError,
    decision: retry.Decision,
    limited: set[str],
    cfg: Settings,
) -> errors.ProviderError:
    """A key that got a 429 cools down (even when no retry follows); when every key did, the
    error says so and how to get more room."""
    if not isinstance(err, errors.RateLimited) or pool is None or route.key is None:
        return err
    pool.cool(route.key, decision.wait_s)
    limited.add(route.key.alias)
    if not decision.retry and len(limited) >= len(pool.keys):
        return _all_keys_limited(err, route, cfg, len(pool.keys))
    return err


def _wait_to_retry(
    call: Call, err: errors.ProviderError, decision: retry.Decision, pool: KeyPool | None
) -> None:
    """Back off before the next attempt (at once when another key is free); stopped while
    waiting, the call is still recorded, as interrupted."""
    if isinstance(err, errors.RateLimited) and pool is not None and pool.any_free():
        return  # another key is free: retry on it at once
    try:
        _sleep(decision.wait_s)
    except KeyboardInterrupt:
        call.plan.notes.append("interrupted while waiting to retry")
        raise errors.Interrupted(call.finish("interrupted", err)) from None


def _sleep(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))  # stays interruptible


def _translate(err: errors.ProviderError, route: Route, cfg: Settings) -> errors.ProviderError:
    """The provider's error, saying which setting to check: the key's variable for a 401/403,
    how to start Ollama, which URL failed."""
    if isinstance(err, errors.AuthError) and route.provider != "local":
        env = "LLM_MAGIC_API_KEY" if cfg.api_base else cfg.key_env_name(route.provider)
        return errors.AuthError(
            f"{err} — check {env} in .env or the environment",
            status=err.status,
            model=route.model,
        )
    if isinstance(err, errors.ConnectionFailed) and route.provider.startswith("ollama"):
        base = (route.api_base or cfg.ollama_api_base).rstrip("/")
        return errors.ConnectionFailed(
            f"Ollama is not answering at {base}: check it with `curl {base}/api/tags`, start "
            "it with `ollama serve` (or set OLLAMA_API_BASE)",
            model=route.model,
        )
    if isinstance(err, (errors.ConnectionFailed, errors.NotFound)):
        return _name_the_url(err, route, cfg)
    return err


def _name_the_url(err: errors.ProviderError, route: Route, cfg: Settings) -> errors.ProviderError:
    """A connection failure or a 404, saying which URL failed and which setting to fix."""
    if route.via_proxy:
        where = "LLM_MAGIC_API_BASE"
    else:
        where = cfg.key_env_name(route.provider).replace("_API_KEY", "_API_BASE")
    if route.provider == "local":
        fix = "check the local model with %llm local status (start it with %llm local start)"
    elif isinstance(err, errors.NotFound):
        fix = f"check the model name, and {where} (an OpenAI-compatible base URL ends in /v1)"
    else:
        fix = f"check {where} (scheme, host and port) and the network"
    if isinstance(err, errors.NotFound):
        message = f"{route.model}: HTTP 404 from {err.url or 'the provider'} ({err}): {fix}"
    else:
        message = f"{route.model}: {err}: {fix}"
    return type(err)(message, status=err.status, model=route.model, url=err.url)


def _all_keys_limited(
    err: errors.ProviderError, route: Route, cfg: Settings, n: int
) -> errors.ProviderError:
    env = cfg.key_env_name(route.provider)
    who = (
        f"All {n} keys for {route.provider} were" if n > 1 else f"The key for {route.provider} was"
    )
    return errors.RateLimited(
        f"{who} rate-limited (429): wait a minute, add keys ({env}S=k1,k2,…) or set "
        f"FALLBACK_MODELS ({err})",
        retry_after=err.retry_after,
        model=route.model,
    )


def _every_failure(failed: list[tuple[str, errors.ProviderError]]) -> errors.ProviderError:
    """The error to raise when no model answered: the last one alone, or, after fallbacks,
    one of the last one's type whose message gives each model's error in turn."""
    model, last = failed[-1]
    if len(failed) == 1:
        return last
    each = "; ".join(
        f"{m}: {type(e).__name__}{f' {e.status}' if e.status else ''} ({e})" for m, e in failed
    )
    return type(last)(
        f"Every model failed — {each}",
        status=last.status,
        retry_after=last.retry_after,
        model=model,
        url=last.url,
    )


def _attach(err: errors.ProviderError, result: Result) -> errors.ProviderError:
    err.result = result  # type: ignore[attr-defined]
    return err

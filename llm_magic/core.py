"""The call pipeline: resolve → guard → stream (with retries and fallbacks) → price → ledger.

``complete``, ``stream`` and ``acomplete`` all run :func:`_execute`, a generator that yields
text chunks as they arrive and returns the :class:`Result`. Every call that reached the point
of sending writes exactly one ledger row per model tried — failures and interruptions too.
No IPython here: this works in a plain script.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import budget, errors, gateway, local, pricing, retry
from .config import Settings, settings
from .errors import UsageProblem
from .models import Route, all_aliases, resolve
from .result import Result
from .secrets import scrub
from .store import Ledger, ledger, utcnow
from .vocab import DEFAULT_MAX_TOKENS

__all__ = [
    "Request",
    "complete",
    "stream",
    "acomplete",
    "Stream",
    "start",
    "reset_chat",
    "chats",
    "get_ready",
]

CONTEXT_SHARE = 0.8  # over this share of the context window, old chat turns are dropped
MAX_TOKENS_CEILING = 2**31 - 1  # beyond every model's output (and a 32-bit integer)

_chats: dict[str, list[dict[str, str]]] = {}
_chats_lock = threading.Lock()


def chats() -> dict[str, list[dict[str, str]]]:
    """Conversation histories kept by ``--chat NAME`` (in this process)."""
    return _chats


def reset_chat(name: str | None = None) -> list[str]:
    """Forget one conversation, or all of them; returns the names forgotten."""
    with _chats_lock:
        names = [name] if name else list(_chats)
        for n in names:
            _chats.pop(n, None)
    return names


@dataclass
class Request:
    """One user request, before routing."""

    prompt: str | list[dict[str, str]]
    model: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float = 0.0
    agent: str | None = None
    user: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    chat: str | None = None
    execution_count: int | None = None
    task: str = "standard"
    store_text: bool | None = None

    def validate(self) -> None:
        if self.max_tokens is not None and (
            not isinstance(self.max_tokens, int) or self.max_tokens <= 0
        ):
            raise UsageProblem(f"max_tokens must be a positive integer, not {self.max_tokens!r}")
        if not isinstance(self.temperature, (int, float)) or not 0 <= self.temperature <= 2:
            raise UsageProblem(f"temperature must be between 0 and 2, not {self.temperature!r}")
        if isinstance(self.prompt, str) and not self.prompt.strip():
            raise UsageProblem("The prompt is empty: write it in the cell body or pass it as text")


def _messages(req: Request) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(history, new messages) for this request."""
    history = list(_chats.get(req.chat, [])) if req.chat else []
    if isinstance(req.prompt, str):
        new = [{"role": "user", "content": req.prompt}]
    else:
        new = [dict(m) for m in req.prompt]
    if req.system and not any(m.get("role") == "system" for m in history + new):
        history = [{"role": "system", "content": req.system}, *history]
    return history, new


def _fit_context(
    route: Route, history: list[dict[str, str]], new: list[dict[str, str]], notes: list[str]
) -> tuple[list[dict[str, str]], int]:
    """Drop the oldest chat turns while over 80% of the window; returns (messages, tokens)."""
    messages = history + new
    tokens = gateway.count_tokens(route.litellm_model, messages)
    window = route.context_window
    if not window:
        return messages, tokens
    limit = int(window * CONTEXT_SHARE)
    dropped = 0
    system = [m for m in history if m.get("role") == "system"]
    turns = [m for m in history if m.get("role") != "system"]
    while tokens > limit and turns:
        turns = turns[2:] if len(turns) >= 2 else []
        dropped += 1
        messages = system + turns + new
        tokens = gateway.count_tokens(route.litellm_model, messages)
    if dropped:
        notes.append(
            f"Dropped the {dropped} oldest chat turn(s) to stay under 80% of the context window"
        )
    return messages, tokens


def _noop(_message: str) -> None:
    pass


def get_ready(name: str, book: Ledger, say: Callable[[str], None] = _noop) -> None:
    """The one-time set-up a call to ``name`` needs before it can be sent (import litellm; for
    the local model, start its server and load its tokenizer), saying each step through ``say``
    as it begins. Instant once done (or done in the background since ``%load_ext``)."""
    if all_aliases(book).get(name, name) != local.LOCAL_ALIAS:
        if not gateway.loaded():
            say("loading providers…")
            gateway._litellm()
        return
    if not local.server().running():
        say("starting the local model…")
        with contextlib.suppress(errors.LLMError):  # resolve() reports it, in its place
            local.server().url()
    if not local.tokenizer_loaded():
        say("loading the local tokenizer…")
        with contextlib.suppress(Exception):  # token counts fall back to an estimate
            local._tokenizer()


class _Call:
    """One call: one model, possibly several HTTP attempts, and exactly one ledger row."""

    def __init__(
        self,
        route: Route,
        req: Request,
        *,
        trace_id: str,
        max_tokens: int,
        price: pricing.Price | None,
        input_estimate: int,
        fallback_from: str | None,
        prompt: str,
        store_text: bool,
        notes: list[str],
        prepared_at: float,
    ) -> None:
        self.route = route
        self.req = req
        self.trace_id = trace_id
        self.call_id = uuid.uuid4().hex
        self.max_tokens = max_tokens
        self.price = price
        self.input_estimate = input_estimate
        self.fallback_from = fallback_from
        self.prompt = prompt
        self.store_text = store_text
        self.notes = notes
        self.ts_start = utcnow()
        self.t0 = time.perf_counter()  # latency and TTFT are the provider's: counted from here
        self.setup_s = max(0.0, self.t0 - prepared_at)  # waited before it could be sent
        self.ttft: float | None = None
        self.parts: list[str] = []
        self.attempts = 0
        self.usage: gateway.Usage | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def finish(self, book: Ledger, status: str, err: errors.ProviderError | None) -> Result:
        """Price the call, write its ledger row, and return the Result."""
        latency = time.perf_counter() - self.t0  # the last byte, before counting and pricing
        refused = status.startswith("refused")
        if self.route.via_proxy and self.usage is not None and self.usage.model:
            # through a proxy, record (and price) the model that answered, as it reports it
            answered = self.usage.model.removeprefix("openai/")
            if answered != self.route.model:
                self.route.model = answered
                self.price = pricing.price_for(answered, self.route.provider, book) or self.price
        if self.usage is not None and self.usage.reported:
            tin, tout, source = self.usage.input_tokens, self.usage.output_tokens, "provider"
        elif not self.parts and (status == "error" or err is not None):
            tin, tout, source = 0, 0, "estimated"  # nothing was processed, nothing is billed
        else:
            tin = self.input_estimate if self.attempts > 0 and not refused else 0
            tout = gateway.count_text_tokens(self.route.litellm_model, self.text)
            source = "estimated"
        amount = 0.0 if refused else pricing.cost(self.price, tin, tout)
        if self.price is None and not refused:
            self.notes.append(pricing.no_price_note(self.route.model))
        gen_time = latency - (self.ttft or 0.0)
        tps = tout / gen_time if self.ttft is not None and gen_time > 0 else math.nan
        ttft = self.ttft if self.ttft is not None else math.nan
        req = self.req
        message = scrub(str(err)) if err is not None else None
        finish = self.usage.finish_reason if self.usage is not None else None
        if status == "error":
            finish = "error"
        elif status != "ok":
            finish = None  # refused (never sent) or interrupted (the provider never said)
        kept = book.keep(  # a row the ledger cannot take now waits in its journal, with a note
            {
                "call_id": self.call_id,
                "trace_id": self.trace_id,
                "ts_start": self.ts_start,
                "ts_end": utcnow(),
                "requested_model": req.model,
                "model": self.route.model,
                "provider": self.route.provider,
                "fallback_from": self.fallback_from,
                "attempts": self.attempts,
                "status": status,
                "error_type": err.error_type if err is not None else None,
                "http_status": err.status if err is not None else None,
                "input_tokens": tin,
                "output_tokens": tout,
                "usage_source": source,
                "cost_usd": amount,
                "price_source": self.price.source if self.price else None,
                "latency_s": latency,
                "ttft_s": ttft,
                "output_tps": tps,
                "max_tokens": self.max_tokens,
                "temperature": float(req.temperature),
                "agent": req.agent,
                "user": req.user,
                "tags": dict(req.tags) if req.tags else None,
                "chat": req.chat,
                "execution_count": req.execution_count,
                "key_alias": self.route.key_alias,
                "prompt": scrub(self.prompt, keylike=False) if self.store_text else None,
                "response": scrub(self.text, keylike=False) if self.store_text else None,
                "error_message": message,
                "finish_reason": finish,
                "setup_s": self.setup_s,
            }
        )
        if kept:
            self.notes.append(kept)
        return Result(
            text=self.text,
            model=self.route.model,
            requested_model=str(req.model),
            input_tokens=tin,
            output_tokens=tout,
            cost_usd=amount,
            latency_s=latency,
            ttft_s=ttft,
            attempts=self.attempts,
            fallback_from=self.fallback_from,
            status=status,
            call_id=self.call_id,
            trace_id=self.trace_id,
            usage_source=source,
            error=message,
            notes=list(self.notes),
            finish_reason=finish,
            setup_s=self.setup_s,
            max_tokens=self.max_tokens,
        )


def _sleep(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))  # stays interruptible


def _execute(
    req: Request,
    cfg: Settings | None = None,
    book: Ledger | None = None,
    *,
    status: Callable[[str], None] | None = None,
    waited_s: float = 0.0,
) -> Generator[str, None, Result]:
    """Run one request; yields text chunks, returns the Result; raises ProviderError on failure.

    ``status`` hears what the call is doing before its first chunk (one-time set-up, then
    waiting for the model); ``waited_s`` is set-up the caller already did on its behalf, counted
    in the call's ``setup_s``."""
    prepared_at = time.perf_counter() - waited_s
    say = status or _noop
    req.validate()
    cfg = cfg or settings()
    book = book if book is not None else ledger(cfg.ledger)  # not bool(): a COUNT(*)
    store_text = cfg.store_text if req.store_text is None else req.store_text
    req.model = (req.model or cfg.default_model).strip()
    max_tokens = req.max_tokens or DEFAULT_MAX_TOKENS.get(req.task, 2048)
    trace_id = uuid.uuid4().hex
    history, new = _messages(req)
    prompt_text = "\n\n".join(str(m.get("content", "")) for m in new)
    notes: list[str] = []

    verdict = budget.check_daily(cfg, book, req.model)
    if verdict.note:
        notes.append(verdict.note)
    first = req.model
    if verdict.action == "downgrade" and cfg.budget_downgrade_model:
        first = cfg.budget_downgrade_model
    chain = [first] + [m for m in cfg.fallback_models if m not in (first, req.model)]
    fallback_from: str | None = None
    failed: list[tuple[str, errors.ProviderError]] = []  # every model that failed, in order
    last_result: Result | None = None
    for index, name in enumerate(chain):
        if index:
            prepared_at = time.perf_counter()  # a fallback's own set-up
        get_ready(name, book, say)
        try:
            route = resolve(name, cfg, book)
        except UsageProblem:
            if index == 0:
                raise  # the user's own model: a usage error, nothing sent
            notes.append(f"Skipped fallback {name}: no key or unknown model")
            continue
        call_max = _bounded_max_tokens(
            route, req, max_tokens, index == 0 and name == req.model, notes
        )
        messages, input_estimate = _fit_context(route, history, new, notes)
        price = pricing.price_for(route.model, route.provider, book, also=(name,))
        call = _Call(
            route,
            req,
            trace_id=trace_id,
            max_tokens=call_max,
            price=price,
            input_estimate=input_estimate,
            fallback_from=fallback_from,
            prompt=prompt_text,
            store_text=store_text,
            notes=notes,
            prepared_at=prepared_at,
        )

        if route.context_window and input_estimate > route.context_window * CONTEXT_SHARE:
            err = errors.ContextTooLong(
                f"The prompt is ~{input_estimate} tokens, over 80% of {route.model}'s "
                f"{route.context_window}-token window: shorten it or use a larger model"
            )
            result = call.finish(book, "refused_context", err)
            raise _attach(err, result)

        refusal = None
        if verdict.action == "refuse":
            refusal = verdict.note
        worst = budget.worst_case_cost(price, input_estimate, call_max)
        cap = cfg.max_cost_per_request_usd
        if refusal is None and cap is not None and worst is not None and worst > cap:
            refusal = (
                f"Refused: this request could cost up to ${worst:.4f} ({input_estimate} input "
                f"tokens + {call_max} max_tokens on {route.model}), over "
                f"MAX_COST_PER_REQUEST_USD=${cap:.4f}: lower --max-tokens or use a cheaper model"
            )
        if refusal is None:
            refusal = budget.unpriced_over_cap(cfg, price, route.model)
        if refusal is None:  # hold the worst case in the ledger, visible to every process
            held = budget.reserve(cfg, book, call.call_id, route.model, worst, name)
            down = cfg.budget_downgrade_model
            if held.action == "downgrade" and index == 0 and down:
                notes.append(str(held.note))
                chain[1:] = [down] + [m for m in chain[1:] if m != down]
                continue
            if held.action != "ok":
                refusal = held.note
        if refusal is not None:
            refused = errors.BudgetRefused(refusal, model=route.model)
            result = call.finish(book, "refused_budget", refused)
            raise _attach(refused, result)

        pool = cfg.keys(route.provider) if route.key is not None and not cfg.api_base else None
        limited_keys: set[str] = set()  # the keys that got a 429 during this call
        say(f"waiting for {route.model}…")
        while True:
            call.attempts += 1
            if pool is not None and call.attempts > 1:
                route.key = pool.next() or route.key
            if pool is not None and route.key is not None:
                _sleep(pool.wait_time(route.key))  # every key told to wait: honour it
            pieces = gateway.stream_chat(
                model=route.litellm_model,
                messages=messages,
                max_tokens=call_max,
                temperature=req.temperature,
                api_base=route.api_base,
                api_key=route.key,  # a Secret: revealed only inside the litellm call
                timeout=cfg.timeout_s,
                direct=route.provider == "local",  # no litellm on the embedded model's path
            )
            failure: errors.ProviderError | None = None
            try:
                for piece in pieces:
                    if isinstance(piece, gateway.Usage):
                        call.usage = piece
                        continue
                    if call.ttft is None:
                        call.ttft = time.perf_counter() - call.t0
                    call.parts.append(piece)
                    yield piece
                if not call.parts:
                    raise errors.EmptyResponse(
                        f"{route.model} sent an empty answer (HTTP 200, no text and no tool "
                        "call): try again, rephrase the prompt, or use another model",
                        model=route.model,
                    )
            except (KeyboardInterrupt, GeneratorExit) as stop:
                pieces.close()
                notes.append("response interrupted")
                result = call.finish(book, "interrupted", None)
                _remember(req, new, result)
                if isinstance(stop, GeneratorExit):
                    raise
                raise errors.Interrupted(result) from None
            except errors.StreamInterrupted as err:
                notes.append("response interrupted")
                result = call.finish(book, "interrupted", err)
                failure = _attach(err, result)
            except errors.ProviderError as err:
                if isinstance(err, errors.AuthError) and route.provider != "local":
                    env = "LLM_MAGIC_API_KEY" if cfg.api_base else cfg.key_env_name(route.provider)
                    err = errors.AuthError(
                        f"{err} — check {env} in .env or the environment",
                        status=err.status,
                        model=route.model,
                    )
                if isinstance(err, errors.ConnectionFailed) and route.provider.startswith("ollama"):
                    base = (route.api_base or cfg.ollama_api_base).rstrip("/")
                    err = errors.ConnectionFailed(
                        f"Ollama is not answering at {base}: check it with "
                        f"`curl {base}/api/tags`, start it with `ollama serve` "
                        "(or set OLLAMA_API_BASE)",
                        model=route.model,
                    )
                elif isinstance(err, (errors.ConnectionFailed, errors.NotFound)):
                    err = _name_the_url(err, route, cfg)
                decision = retry.decide(err, call.attempts)
                limited = isinstance(err, errors.RateLimited) and pool is not None
                if limited and pool is not None and route.key is not None:
                    pool.cool(route.key, decision.wait_s)  # even when no retry follows
                    limited_keys.add(route.key.alias)
                    if not decision.retry and len(limited_keys) >= len(pool.keys):
                        err = _all_keys_limited(err, route, cfg, len(pool.keys))
                if decision.retry:
                    if limited and pool is not None and pool.any_free():
                        call.parts.clear()  # another key is free: retry on it at once
                        continue
                    try:
                        _sleep(decision.wait_s)
                    except KeyboardInterrupt:  # stopped while waiting to retry: still a row
                        notes.append("interrupted while waiting to retry")
                        raise errors.Interrupted(call.finish(book, "interrupted", err)) from None
                    call.parts.clear()
                    continue
                failed.append((route.model, err))
                is_last = index == len(chain) - 1
                if decision.fallback and not is_last:
                    last_result = call.finish(book, "error", err)
                    fallback_from = route.model
                    break
                result = call.finish(book, "error", err)
                failure = _attach(_every_failure(failed), result)
            if failure is not None:
                raise failure  # outside the handler: nothing chained behind it
            for failed_model, why in failed:  # said only now that a fallback has answered
                notes.append(
                    f"{failed_model} failed ({why.error_type}"
                    f"{f' {why.status}' if why.status else ''})"
                    + (
                        f": answered by the next fallback, {route.model}"
                        if failed_model == fallback_from
                        else ""
                    )
                )
            result = call.finish(book, "ok", None)
            crossed = budget.crossed(cfg, book, verdict.spent, result.cost_usd)
            if crossed:
                result.notes.append(crossed)
            _remember(req, new, result)
            return result
    # the fallbacks left were skipped (no key, unknown model): the last failure stands
    assert failed and last_result is not None
    last_result.notes = list(notes)  # with the skips noted after it was written
    raise _attach(_every_failure(failed), last_result)


def _bounded_max_tokens(
    route: Route, req: Request, max_tokens: int, own_model: bool, notes: list[str]
) -> int:
    """``max_tokens`` within what ``route``'s model can write (litellm's ``max_output_tokens``).

    Over it: refused when the user asked for that many from the model they named (a usage
    error, nothing sent); otherwise (a default, a fallback, a downgrade) lowered, with a note."""
    most = route.max_output
    if not most and max_tokens > MAX_TOKENS_CEILING:
        raise UsageProblem(  # no model writes that much; providers reject it as a 400
            f"max_tokens {max_tokens} is beyond any model's output: refused, nothing sent; "
            f"ask for at most {route.model}'s maximum (e.g. --max-tokens 4096)"
        )
    if not most or max_tokens <= most:
        return max_tokens
    if own_model and req.max_tokens is not None:
        raise UsageProblem(
            f"max_tokens {req.max_tokens} is over {route.model}'s maximum output of {most} "
            f"tokens: refused, nothing sent; ask for at most {most} (--max-tokens {most})"
        )
    notes.append(f"max_tokens lowered from {max_tokens} to {most}, {route.model}'s maximum")
    return most


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


def _remember(req: Request, new: list[dict[str, str]], result: Result) -> None:
    if req.chat and result.text:
        with _chats_lock:
            history = _chats.setdefault(req.chat, [])
            if req.system and not history:
                history.append({"role": "system", "content": req.system})
            history.extend(new)
            history.append({"role": "assistant", "content": result.text})


def _request(prompt: Any, model: str | None, max_tokens: int | None, **kw: Any) -> Request:
    tags = kw.pop("tags", None) or {}
    return Request(prompt=prompt, model=model, max_tokens=max_tokens, tags=dict(tags), **kw)


class Stream:
    """An iterator of text chunks; ``.result`` holds the :class:`Result` once it is exhausted.

    A ``KeyboardInterrupt`` while iterating (or ``close()``) records the partial call as
    ``interrupted``."""

    def __init__(self, gen: Generator[str, None, Result]) -> None:
        self._gen = gen
        self.result: Result | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        try:
            return next(self._gen)
        except StopIteration as stop:
            self.result = stop.value
            raise StopIteration from None

    def interrupt(self) -> Result | None:
        """Stop the stream now, recording the partial answer as ``interrupted``."""
        try:
            self._gen.throw(KeyboardInterrupt)
        except errors.Interrupted as stop:
            self.result = stop.result
        except StopIteration as stop:
            self.result = stop.value
        return self.result

    def close(self) -> None:
        self._gen.close()

    def __repr__(self) -> str:
        return f"Stream(done={self.result is not None})"


def start(
    req: Request,
    cfg: Settings | None = None,
    book: Ledger | None = None,
    *,
    status: Callable[[str], None] | None = None,
    waited_s: float = 0.0,
) -> Stream:
    """The one way to drive a call: a :class:`Stream` over ``req``.

    Iterate it for text chunks; ``.result`` once it is exhausted; ``.interrupt()`` stops it and
    records the partial answer. While iterating it raises :class:`errors.Interrupted` (a kernel
    interrupt; ``.result`` holds the record), :class:`errors.ProviderError` (``.result`` holds the
    failed call's record) or :class:`errors.UsageProblem` (nothing sent). ``status`` hears the
    one-time set-up and the wait for the model; ``waited_s`` is set-up the caller already did."""
    return Stream(_execute(req, cfg, book, status=status, waited_s=waited_s))


def stream(
    prompt: str | list[dict[str, str]],
    model: str | None = None,
    max_tokens: int | None = None,
    **options: Any,
) -> Stream:
    """Stream an answer: ``for chunk in lm.stream("Hi"): print(chunk, end="")``."""
    return Stream(_execute(_request(prompt, model, max_tokens, **options)))


def complete(
    prompt: str | list[dict[str, str]],
    model: str | None = None,
    max_tokens: int | None = None,
    stream: bool = True,
    on_text: Callable[[str], None] | None = None,
    **options: Any,
) -> Result:
    """Ask ``model`` (default: ``DEFAULT_MODEL`` or ``local``) and return the :class:`Result`.

    Attribution (``agent``, ``user``, ``tags``, ``chat``), ``system`` and ``temperature`` go in
    ``options``. Streams underneath whatever ``stream`` says; ``on_text`` sees each chunk.
    Provider failures raise :class:`llm_magic.errors.ProviderError` (its ``.result`` holds the
    ledger's view of the call)."""
    gen = _execute(_request(prompt, model, max_tokens, **options))
    while True:
        try:
            chunk = next(gen)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if on_text is not None:
            try:
                on_text(chunk)
            except KeyboardInterrupt:
                gen.throw(KeyboardInterrupt)  # records the partial call, raises Interrupted


async def acomplete(
    prompt: str | list[dict[str, str]],
    model: str | None = None,
    max_tokens: int | None = None,
    **options: Any,
) -> Result:
    """``complete`` for asyncio code: runs the call in a worker thread."""
    return await asyncio.to_thread(complete, prompt, model, max_tokens, **options)

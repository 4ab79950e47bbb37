"""Planning a call: everything decided before the first byte is sent.

:func:`make` plans one user request (validation, defaults, messages and chat history, the daily
budget's verdict, the fallback chain); :func:`prepare` readies one model of that chain (set-up,
routing, a bounded ``max_tokens``, the context fit, the price); :func:`guard` says whether it may
be sent (context, per-request cap, unpriced-over-cap, budget reservation, downgrade). Nothing
here sends anything or writes a ledger row: :mod:`llm_magic._attempt` does.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import _caching, _counts, _otel, _structured, budget, errors, gateway, local, pricing
from ._toolcalls import Tool, ToolEvent, tools_of
from .config import Settings, settings
from .errors import UsageProblem
from .models import Route, all_aliases, resolve
from .store import Ledger, ledger
from .vocab import DEFAULT_MAX_TOKENS

CONTEXT_SHARE = 0.8  # over this share of the context window, old chat turns are dropped
MAX_TOKENS_CEILING = 2**31 - 1  # beyond every model's output (and a 32-bit integer)

Messages = list[dict[str, str]]

_chats: dict[str, Messages] = {}
_chats_lock = threading.Lock()


@dataclass
class Request:
    """One user request, before routing."""

    prompt: str | Messages
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
    # issue 11: what a real call carries beyond text (each feature validates its own)
    tools: list[Any] | None = None  # JSON-schema tools or plain Python functions
    run_tools: bool = False  # run the Python functions and send results back
    max_tool_rounds: int = 5
    schema: Any = None  # a pydantic model class or a JSON schema (dict): structured output
    cache_prompt: bool = False  # mark the system prompt and long context for the prompt cache
    cache: bool | None = None  # answer from the ledger (None: the session's switch; _respcache)
    # issue 13: an lm.experiment call's identity (recorded as is; see llm_magic.experiments)
    experiment: str | None = None
    prompt_hash: str | None = None
    repeat: int | None = None

    def attribution(self) -> dict[str, Any]:
        """The ledger fields a row takes from its request as they are, whatever answered it
        (a provider, or the response cache)."""
        return {
            "temperature": float(self.temperature),
            "agent": self.agent,
            "user": self.user,
            "tags": dict(self.tags) if self.tags else None,
            "chat": self.chat,
            "execution_count": self.execution_count,
            "experiment": self.experiment,
            "prompt_hash": self.prompt_hash,
            "repeat": self.repeat,
        }

    def validate(self) -> None:
        if self.max_tokens is not None and (
            not isinstance(self.max_tokens, int) or self.max_tokens <= 0
        ):
            raise UsageProblem(f"max_tokens must be a positive integer, not {self.max_tokens!r}")
        if not isinstance(self.temperature, (int, float)) or not 0 <= self.temperature <= 2:
            raise UsageProblem(f"temperature must be between 0 and 2, not {self.temperature!r}")
        if isinstance(self.prompt, str) and not self.prompt.strip():
            raise UsageProblem("The prompt is empty: write it in the cell body or pass it as text")


@dataclass
class Plan:
    """One request, planned: what every model of its fallback chain shares."""

    req: Request
    cfg: Settings
    book: Ledger
    say: Callable[[str], None]
    prepared_at: float  # when the set-up of the model being readied began
    trace_id: str
    max_tokens: int
    store_text: bool
    history: Messages
    new: Messages
    verdict: budget.Verdict
    chain: list[str]  # the models to try, in order (a budget downgrade rewrites its tail)
    notes: list[str] = field(default_factory=list)  # said with the answer, shared by its calls
    tools: list[Tool] = field(default_factory=list)  # offered to the model (``tools=``)
    on_tool: Callable[[ToolEvent], None] = field(default=lambda _event: None)  # a display's
    tool_round: int = 1  # which request of a ``run_tools`` loop is being sent
    schema: _structured.Schema | None = None  # ``req.schema`` checked (structured output)

    @property
    def prompt_text(self) -> str:
        return "\n\n".join(str(m.get("content") or "") for m in self.new)


@dataclass
class Leg:
    """One model of the chain, readied: where it goes, what it is sent, what it may cost."""

    index: int
    name: str
    route: Route
    max_tokens: int
    messages: Messages
    input_estimate: int
    price: pricing.Price | None
    refusal: errors.ProviderError | None = None  # set by guard(): refused before sending
    # request parameters beyond the chat basics, as the gateway sends them (``tools``,
    # ``response_format``, …): filled in by prepare() for this leg's provider
    extra: dict[str, Any] = field(default_factory=dict)
    count_source: str = "estimate"  # which count input_estimate is (record.PROMPT_COUNTS)


def _noop(_message: str) -> None:
    pass


def make(
    req: Request,
    cfg: Settings | None,
    book: Ledger | None,
    say: Callable[[str], None] | None = None,
    waited_s: float = 0.0,
) -> Plan:
    """Plan ``req``; ``waited_s`` is set-up the caller already did on its behalf."""
    prepared_at = time.perf_counter() - waited_s
    req.validate()
    schema = _structured.parse(req.schema)  # a bad schema: a usage error, nothing sent
    cfg = cfg or settings()
    book = book if book is not None else ledger(cfg.ledger)  # not bool(): a COUNT(*)
    req.model = (req.model or cfg.default_model).strip()
    tools = _tools(req)
    history, new = messages(req)
    notes: list[str] = []
    verdict = budget.check_daily(cfg, book, req.model)
    if verdict.note:
        notes.append(verdict.note)
    first = req.model
    if verdict.action == "downgrade" and cfg.budget_downgrade_model:
        first = cfg.budget_downgrade_model
    return Plan(
        req=req,
        cfg=cfg,
        book=book,
        say=say or _noop,
        prepared_at=prepared_at,
        trace_id=_otel.trace_id(),  # an open parent span's (an experiment's), else new
        max_tokens=req.max_tokens or DEFAULT_MAX_TOKENS.get("tools" if tools else req.task, 2048),
        store_text=cfg.store_text if req.store_text is None else req.store_text,
        history=history,
        new=new,
        verdict=verdict,
        chain=[first] + [m for m in cfg.fallback_models if m not in (first, req.model)],
        notes=notes,
        tools=tools,
        schema=schema,
    )


def prepare(plan: Plan, index: int, name: str) -> Leg | None:
    """Ready ``name``, the chain's ``index``-th model; None when a fallback is skipped (no key,
    unknown model). The user's own model raises :class:`UsageProblem` instead."""
    if index:
        plan.prepared_at = time.perf_counter()  # a fallback's own set-up
    if not does_tools(plan, index, name):
        return None
    get_ready(name, plan.book, plan.say)
    try:
        route = resolve(name, plan.cfg, plan.book)
        route.base_url()  # the embedded model's server (started by get_ready): its URL now
    except UsageProblem:
        if index == 0:
            raise  # the user's own model: a usage error, nothing sent
        plan.notes.append(f"Skipped fallback {name}: no key or unknown model")
        return None
    own = index == 0 and name == plan.req.model
    call_max = bounded_max_tokens(route, plan.req, plan.max_tokens, own, plan.notes)
    sent, estimate = fit_context(route, plan.history, plan.new, plan.notes)
    estimate, counted_by = _counts.prompt_count(route, sent, estimate, plan.notes)
    if plan.req.cache_prompt:
        sent = _caching.mark(route, sent, plan.notes)
    price = pricing.price_for(route.model, route.provider, plan.book, also=(name,))
    leg = Leg(
        index,
        name,
        route,
        call_max,
        sent,
        estimate,
        price,
        count_source=counted_by,
        extra=tool_extra(plan),
    )
    _schema_extra(plan, leg)
    return leg


def _tools(req: Request) -> list[Tool]:
    """The request's tools, checked (:class:`UsageProblem` naming the fix, nothing sent)."""
    tools = tools_of(req.tools, runnable=req.run_tools)
    if req.run_tools and not tools:
        raise UsageProblem("run_tools=True runs tools: pass them too, e.g. tools=[get_weather]")
    rounds = req.max_tool_rounds
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise UsageProblem(f"max_tool_rounds must be a positive integer, not {rounds!r}")
    return tools


def does_tools(plan: Plan, index: int, name: str) -> bool:
    """Whether ``name`` can take the request's tools, checked before its set-up: the embedded
    SmolLM2 cannot (llama.cpp's server ignores ``tools`` unless ``tool_choice`` forces one
    function): :class:`UsageProblem` for the user's own model, a skipped fallback otherwise."""
    if not plan.tools or not is_local(plan.book, name):
        return True
    if index == 0:
        raise UsageProblem(NO_LOCAL_TOOLS)
    plan.notes.append(f"Skipped fallback {name}: the local model does not do tool calling")
    return False


NO_LOCAL_TOOLS = (
    "the local model (SmolLM2-135M) does not do tool calling: use a provider model, "
    "e.g. -m gpt-4o-mini"
)


def is_local(book: Ledger, name: str) -> bool:
    """Whether ``name`` (a model or an alias) is the embedded model."""
    return all_aliases(book).get(name, name) == local.LOCAL_ALIAS


def tool_extra(plan: Plan) -> dict[str, Any]:
    """``tools`` as the request sends them (OpenAI's shape: litellm translates for Anthropic)."""
    return {"tools": [t.schema for t in plan.tools]} if plan.tools else {}


def _schema_extra(plan: Plan, leg: Leg) -> None:
    """``schema=``: the leg's ``response_format`` (and, for a model without schema support,
    JSON mode with the schema in its system prompt, noted)."""
    if plan.schema is None:
        return
    route = leg.route
    params, leg.messages, note = _structured.extra(
        plan.schema, route.provider, route.litellm_model, leg.messages
    )
    leg.extra.update(params)
    if note and note not in plan.notes:
        plan.notes.append(note)


def guard(plan: Plan, leg: Leg, call_id: str) -> bool:
    """Whether ``leg`` stays in the chain: False when the budget downgraded it (the downgrade
    model is next). A refusal before sending is left in ``leg.refusal``; otherwise the worst
    case is held in the ledger under ``call_id``, visible to every process."""
    route, cfg = leg.route, plan.cfg
    if route.context_window and leg.input_estimate > route.context_window * CONTEXT_SHARE:
        leg.refusal = errors.ContextTooLong(
            f"The prompt is ~{leg.input_estimate} tokens, over 80% of {route.model}'s "
            f"{route.context_window}-token window: shorten it or use a larger model"
        )
        return True
    worst = budget.worst_case_cost(leg.price, leg.input_estimate, leg.max_tokens)
    refusal = _cost_refusal(plan, leg, worst)
    if refusal is None:
        held = budget.reserve(cfg, plan.book, call_id, route.model, worst, leg.name)
        down = cfg.budget_downgrade_model
        if held.action == "downgrade" and leg.index == 0 and down:
            plan.notes.append(str(held.note))
            plan.chain[1:] = [down] + [m for m in plan.chain[1:] if m != down]
            return False
        if held.action != "ok":
            refusal = held.note
    if refusal is not None:
        leg.refusal = errors.BudgetRefused(refusal, model=route.model)
    return True


def _cost_refusal(plan: Plan, leg: Leg, worst: float | None) -> str | None:
    """Why ``leg`` may not cost what it could: over the daily budget (refuse configured), its
    worst case over ``MAX_COST_PER_REQUEST_USD``, or no price known while a cap is set."""
    if plan.verdict.action == "refuse":
        return plan.verdict.note
    return budget.over_cap(
        plan.cfg,
        leg.price,
        leg.route.model,
        worst,
        what="request",
        detail=f"{leg.input_estimate} input tokens + {leg.max_tokens} max_tokens on "
        f"{leg.route.model}",
        fix="lower --max-tokens or use a cheaper model",
    )


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


def bounded_max_tokens(
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


def fit_context(
    route: Route, history: Messages, new: Messages, notes: list[str]
) -> tuple[Messages, int]:
    """Drop the oldest chat turns while over 80% of the window; returns (messages, tokens)."""
    sent = history + new
    tokens = gateway.count_tokens(route.litellm_model, sent)
    window = route.context_window
    if not window:
        return sent, tokens
    limit = int(window * CONTEXT_SHARE)
    dropped = 0
    system = [m for m in history if m.get("role") == "system"]
    turns = [m for m in history if m.get("role") != "system"]
    while tokens > limit and turns:
        turns = turns[2:] if len(turns) >= 2 else []
        dropped += 1
        sent = system + turns + new
        tokens = gateway.count_tokens(route.litellm_model, sent)
    if dropped:
        notes.append(
            f"Dropped the {dropped} oldest chat turn(s) to stay under 80% of the context window"
        )
    return sent, tokens


def messages(req: Request) -> tuple[Messages, Messages]:
    """(history, new messages) for this request."""
    history = list(_chats.get(req.chat, [])) if req.chat else []
    if isinstance(req.prompt, str):
        new = [{"role": "user", "content": req.prompt}]
    else:
        new = [dict(m) for m in req.prompt]
    if req.system and not any(m.get("role") == "system" for m in history + new):
        history = [{"role": "system", "content": req.system}, *history]
    return history, new


def remember(req: Request, new: Messages, answer: str) -> None:
    """Keep the turn in the ``--chat`` history (when there is an answer to keep)."""
    if req.chat and answer:
        with _chats_lock:
            history = _chats.setdefault(req.chat, [])
            if req.system and not history:
                history.append({"role": "system", "content": req.system})
            history.extend(new)
            history.append({"role": "assistant", "content": answer})

"""A ledger row as an OpenTelemetry GenAI span: its name, attributes, status and times.

Plain Python (no OpenTelemetry import), so that the same function serves a call as it ends and
a backfill of old rows (:meth:`llm_magic.store.Ledger.to_otel`). The names are the GenAI
semantic conventions' (Development status; the older names are kept where they were renamed),
the cost ones those of the conventions' open cost proposal (``gen_ai.usage.cost.*``), plus the
OpenInference names Arize Phoenix reads (``llm.*``, ``openinference.span.kind``) and the
ledger's own (``llm_magic.*``).

Base layer: imports only the base.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from .secrets import scrub

__all__ = [
    "span_name",
    "attributes",
    "error_line",
    "times_ns",
    "capture_content",
    "server",
    "Try",
    "Tries",
    "try_attributes",
]

#: The OpenTelemetry provider names (``gen_ai.provider.name``) of our providers, where they differ.
PROVIDER_NAMES = {
    "anthropic": "anthropic",
    "openai": "openai",
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "azure": "azure.ai.openai",
    "mistral": "mistral_ai",
    "groq": "groq",
    "deepseek": "deepseek",
    "xai": "x_ai",
    "cohere": "cohere",
    "perplexity": "perplexity",
}
#: Where a provider answers when no base URL is configured (``server.address``).
DEFAULT_HOSTS = {
    "openai": ("api.openai.com", 443),
    "anthropic": ("api.anthropic.com", 443),
    "gemini": ("generativelanguage.googleapis.com", 443),
    "mistral": ("api.mistral.ai", 443),
    "groq": ("api.groq.com", 443),
    "deepseek": ("api.deepseek.com", 443),
    "xai": ("api.x.ai", 443),
}
FAILED = ("error", "refused_budget", "refused_context")
#: The providers whose stream's ``id`` reaches us as they sent it (``gen_ai.response.id``):
#: OpenAI's through litellm, the embedded model's read directly. litellm gives other streams
#: (Anthropic's, whose ``msg_…`` id it drops) an id of its own, which is no provider's.
RESPONSE_IDS = ("openai", "local")


def capture_content() -> bool:
    """Prompts and answers go on spans only when the standard switch says so (and the row
    kept them: ``LLM_MAGIC_STORE_TEXT``)."""
    flag = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
    return flag.strip().lower() == "true"


def span_name(row: Mapping[str, Any]) -> str:
    """``{operation} {model}``: the model the request went to (a fallback's, an alias's target),
    as ``gen_ai.request.model``."""
    return f"{row.get('operation') or 'chat'} {_sent_model(row)}"


def _sent_model(row: Mapping[str, Any]) -> Any:
    return row.get("model") or row.get("requested_model")


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _int(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _ns(value: Any) -> int | None:
    """A row's timestamp (datetime, pandas Timestamp, ISO text) as Unix nanoseconds."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        micros = round(value.timestamp() * 1e6)
        return micros * 1000 + int(getattr(value, "nanosecond", 0) or 0)
    if isinstance(value, date):
        return _ns(datetime(value.year, value.month, value.day, tzinfo=timezone.utc))
    return None


def times_ns(row: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(start, end) of the call in Unix nanoseconds, as the row has them."""
    start = _ns(row.get("ts_start"))
    end = _ns(row.get("ts_end"))
    return start, end if end is not None and start is not None and end >= start else start


def server(api_base: str | None, provider: str | None) -> tuple[str, int] | None:
    """``server.address`` and ``server.port`` from the base URL the call went to (else the
    provider's base URL variable, which LiteLLM reads, else its public API)."""
    name = (provider or "").upper()
    api_base = api_base or os.environ.get(f"{name}_API_BASE") or os.environ.get(f"{name}_BASE_URL")
    if api_base:
        try:
            parts = urlsplit(api_base)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return None
        return (parts.hostname, port) if parts.hostname else None
    return DEFAULT_HOSTS.get(provider or "")


def error_line(row: Mapping[str, Any]) -> str:
    """The failed row's error, one line, with any key scrubbed out."""
    text = row.get("error_message") or row.get("error_type") or row.get("status") or "error"
    return scrub(str(text).splitlines()[0] if str(text).strip() else str(text))


def _tags(value: Any) -> dict[str, str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def _put(out: dict[str, Any], names: tuple[str, ...], value: Any) -> None:
    if value is not None:
        for name in names:
            out[name] = value


def _usage(row: Mapping[str, Any], out: dict[str, Any]) -> None:
    tin, tout = _int(row.get("input_tokens")) or 0, _int(row.get("output_tokens")) or 0
    embeddings = row.get("operation") == "embeddings"
    _put(out, ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"), tin)
    _put(out, ("llm.token_count.prompt",), tin)
    if not embeddings:
        _put(out, ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"), tout)
        _put(out, ("llm.token_count.completion",), tout)
    _put(out, ("llm.token_count.total",), tin + tout)
    read, write = _int(row.get("cache_read_tokens")), _int(row.get("cache_write_tokens"))
    reasoning = _int(row.get("reasoning_tokens"))
    _put(
        out,
        ("gen_ai.usage.cache_read.input_tokens", "llm.token_count.prompt_details.cache_read"),
        read,
    )
    _put(
        out,
        (
            "gen_ai.usage.cache_creation.input_tokens",
            "llm.token_count.prompt_details.cache_write",
        ),
        write,
    )
    _put(
        out,
        (
            "gen_ai.usage.reasoning.output_tokens",
            "llm.token_count.completion_details.reasoning",
        ),
        reasoning,
    )
    cost = _number(row.get("cost_usd"))
    if cost is not None:  # an unpriced model: no cost at all, never 0
        out["gen_ai.usage.cost.amount"] = cost
        out["gen_ai.usage.cost.currency"] = "USD"
        out["gen_ai.usage.cost.source"] = "local"  # priced by llm_magic (the proposal's enum)
        out["llm.cost.total"] = cost
    _put(out, ("llm_magic.price_source",), row.get("price_source"))


def _request(row: Mapping[str, Any], out: dict[str, Any], api_base: str | bool | None) -> None:
    operation = row.get("operation") or "chat"
    provider = row.get("provider") or None
    name = PROVIDER_NAMES.get(provider or "", provider)
    out["gen_ai.operation.name"] = operation
    out["openinference.span.kind"] = "EMBEDDING" if operation == "embeddings" else "LLM"
    _put(out, ("gen_ai.provider.name", "gen_ai.system", "llm.system", "llm.provider"), name)
    _put(out, ("gen_ai.request.model",), _sent_model(row))  # what was sent to the provider
    _put(out, ("llm_magic.requested_model",), row.get("requested_model"))  # what the user named
    _put(out, ("gen_ai.response.model", "llm.model_name"), row.get("model"))
    if operation == "embeddings":
        _put(out, ("embedding.model_name",), row.get("model"))
    _put(out, ("gen_ai.request.max_tokens",), _int(row.get("max_tokens")))
    _put(out, ("gen_ai.request.temperature",), _number(row.get("temperature")))
    if operation == "chat":
        out["gen_ai.request.stream"] = True  # every chat call is streamed underneath
    reason = row.get("finish_reason")
    if reason:
        out["gen_ai.response.finish_reasons"] = [str(reason)]
    ttft = _number(row.get("ttft_s"))
    _put(out, ("gen_ai.response.time_to_first_chunk",), ttft)
    where = (
        None
        if api_base is False
        else server(api_base if isinstance(api_base, str) else None, provider)
    )
    if where is not None:
        out["server.address"], out["server.port"] = where


def _ledger(row: Mapping[str, Any], out: dict[str, Any]) -> None:
    for name in (
        "call_id",
        "agent",
        "user",
        "status",
        "usage_source",
        "fallback_from",
        "experiment",
        "chat",
        "key_alias",
    ):
        _put(out, (f"llm_magic.{name}",), row.get(name) or None)
    _put(out, ("llm_magic.attempts",), _int(row.get("attempts")))
    _put(out, ("llm_magic.latency_s",), _number(row.get("latency_s")))
    _put(out, ("user.id",), row.get("user") or None)
    _put(out, ("gen_ai.agent.name",), row.get("agent") or None)
    _put(out, ("gen_ai.conversation.id", "session.id"), row.get("chat") or None)
    tags = _tags(row.get("tags"))
    if tags:
        out["llm_magic.tags"] = json.dumps(tags, sort_keys=True)
        for key, value in tags.items():
            out[f"llm_magic.tag.{key}"] = value
        out["tag.tags"] = [f"{k}={v}" for k, v in sorted(tags.items())]


def _content(row: Mapping[str, Any], out: dict[str, Any]) -> None:
    prompt, answer = row.get("prompt"), row.get("response")
    if prompt:
        message = [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
        out["gen_ai.input.messages"] = json.dumps(message)
        out["input.value"] = prompt
        out["input.mime_type"] = "text/plain"
        out["llm.input_messages.0.message.role"] = "user"
        out["llm.input_messages.0.message.content"] = prompt
    if answer:
        reason = row.get("finish_reason") or "stop"
        message = [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": answer}],
                "finish_reason": reason,
            }
        ]
        out["gen_ai.output.messages"] = json.dumps(message)
        out["output.value"] = answer
        out["output.mime_type"] = "text/plain"
        out["llm.output_messages.0.message.role"] = "assistant"
        out["llm.output_messages.0.message.content"] = answer


def attributes(
    row: Mapping[str, Any], api_base: str | bool | None = None, content: bool | None = None
) -> dict[str, Any]:
    """The span attributes of one ledger row (no None values; lists of strings only).
    ``api_base``: where the call went (None: as configured now; False: unknown, a backfill)."""
    out: dict[str, Any] = {}
    _request(row, out, api_base)
    _usage(row, out)
    _ledger(row, out)
    if row.get("status") in FAILED:
        out["error.type"] = row.get("error_type") or row.get("status")
        _put(out, ("http.response.status_code",), _int(row.get("http_status")))
    if capture_content() if content is None else content:
        _content(row, out)
    return out


# -- the HTTP tries of one row's call (live spans only: the ledger keeps just their count) ------
@dataclass
class Try:
    """One HTTP attempt of a call: its wall times (the ledger's time base, UTC) and, when it
    failed, the error's type and HTTP status."""

    start: datetime
    end: datetime | None = None
    error_type: str | None = None
    http_status: int | None = None
    response_id: str | None = None  # the provider's id of the answer this try received
    stopped: bool = False  # still being read when the call ended (an interrupt): no status


class Tries(list[Try]):
    """A call's tries, in order (``Call.tries``): one begun before each HTTP attempt, ended
    when its stream ends or fails."""

    def begin(self) -> None:
        self.append(Try(datetime.now(timezone.utc)))

    def end(self, error: Exception | None = None) -> None:
        if self and self[-1].end is None:
            last = self[-1]
            last.end = datetime.now(timezone.utc)
            if error is not None:
                last.error_type = getattr(error, "error_type", None) or type(error).__name__
                last.http_status = getattr(error, "status", None)

    def closed(self, response_id: str | None = None, provider: str | None = None) -> list[Try]:
        """The tries, the one still open (an interrupt while reading) ended now;
        ``response_id``: the id of the answer the last try received, kept when it is the
        ``provider``'s own (:data:`RESPONSE_IDS`)."""
        if self and self[-1].end is None:
            self[-1].stopped = True
        self.end(None)
        if self and response_id and provider in RESPONSE_IDS and self[-1].error_type is None:
            self[-1].response_id = response_id
        return list(self)


def try_attributes(row: Mapping[str, Any], number: int, one: Try) -> dict[str, Any]:
    """A try's span attributes: the HTTP client conventions' (``http.request.resend_count``
    from the second try on), the operation's GenAI names, and which row it belongs to."""
    out: dict[str, Any] = {
        "http.request.method": "POST",
        "gen_ai.operation.name": row.get("operation") or "chat",
        "llm_magic.attempt": number,
    }
    if number > 1:
        out["http.request.resend_count"] = number - 1
    _put(out, ("gen_ai.request.model",), _sent_model(row))
    _put(out, ("llm_magic.call_id",), row.get("call_id") or None)
    if one.error_type is not None:
        out["error.type"] = one.error_type
    _put(out, ("http.response.status_code",), one.http_status)
    _put(out, ("gen_ai.response.id",), one.response_id)
    return out

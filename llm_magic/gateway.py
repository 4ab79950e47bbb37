"""The one module that imports litellm.

Everything that talks to a provider goes through here: streaming chat calls (always streamed,
always bounded by ``max_tokens``, always asking for usage), token counting, the bundled price
map, and the translation of provider failures into :mod:`llm_magic.errors`.

litellm is imported lazily, on the first call that needs it (it costs ~3 s and ~190 MB).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import warnings
from collections.abc import Generator
from typing import Any

from . import errors
from ._embedrun import Embedded, from_litellm
from ._toolcalls import ToolDelta
from ._translate import translate_error
from ._usage import Usage, usage_detail
from .secrets import Secret

__all__ = [
    "Usage",
    "ToolDelta",
    "usage_detail",
    "stream_chat",
    "embed",
    "Embedded",
    "count_tokens",
    "count_text_tokens",
    "model_info",
    "supports_response_schema",
    "price_entry",
    "provider_of",
    "litellm_version",
    "translate_error",
    "allow_connections",
]

_lock = threading.Lock()
_module: Any = None
_connections: int | None = None  # allow_connections(): provider requests at once, per process
_backend: Any = None  # allow_connections(): the httpcore network backend under those pools

# Warnings that importing litellm (and pydantic building litellm's types) prints: noise about
# library internals, not for users' cells. Filtered by the module that warns, so a user's own
# warnings, and pydantic's about the user's own models, still show.
_QUIET_MODULES = r"(litellm|tiktoken|tokenizers|huggingface_hub)(\..*)?$"
_QUIET_PYDANTIC = r".*(ReadOnly`? qualifier|shadows an attribute in parent|protected namespace)"


def _quieten_import_warnings() -> None:
    """Module-scoped filters (not ``catch_warnings``, whose save-and-restore of the global list
    is unsafe while the import runs in a background thread and the user's cell runs)."""
    warnings.filterwarnings("ignore", module=_QUIET_MODULES)
    warnings.filterwarnings("ignore", message=_QUIET_PYDANTIC, module=r"pydantic(\..*)?$")


def loaded() -> bool:
    """Whether litellm is imported already (then a call has nothing to wait for)."""
    return _module is not None


def _prime(litellm: Any) -> None:
    """One offline streamed completion (litellm's ``mock_response``: nothing is sent), so that
    the lazy imports and pydantic schema builds litellm does on its first call (~1 s; pydantic
    warns about litellm's ReadOnly TypedDicts as it builds them) happen here, in set-up, not
    inside a user's first call: its time to first token stays the provider's."""
    with contextlib.suppress(Exception):
        for _ in litellm.completion(
            model="openai/gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            mock_response="ok",
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=1,
            api_key="unused",
        ):
            pass


def _litellm() -> Any:
    """Import and quieten litellm once: bundled price map, no banners, no debug logging, none
    of its import-time warnings; then prime it (:func:`_prime`)."""
    global _module
    if _module is not None:
        return _module
    with _lock:
        if _module is None:
            # Offline-safe: use the price map bundled with the pinned version.
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            os.environ.setdefault("LITELLM_LOG", "ERROR")
            _quieten_import_warnings()
            # On the main thread, a cell's own catch_warnings(record=True) + simplefilter(
            # "always") would still see them: hide them here too (safe on the main thread; a
            # background thread relies on the module filters alone).
            on_main = threading.current_thread() is threading.main_thread()
            with warnings.catch_warnings() if on_main else contextlib.nullcontext():
                if on_main:
                    _quieten_import_warnings()
                import litellm

                litellm.suppress_debug_info = True
                litellm.set_verbose = False
                litellm.drop_params = True  # providers that reject stream_options still work
                litellm.telemetry = False
                # No litellm callbacks here (the ledger is ours): without this, its synchronous
                # stream hands every chunk to a logging thread that runs a new asyncio loop for
                # it, ~9 ms of CPU a call (benchmark B10; its async path does no such thing).
                # The end-of-stream success handler still runs.
                litellm.disable_streaming_logging = True
                for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm", "httpx"):
                    logging.getLogger(name).setLevel(logging.ERROR)
                _prime(litellm)
                if _connections is not None:
                    _pools(litellm, _connections)
            _module = litellm
    return _module


def allow_connections(limit: int, network_backend: Any = None) -> None:
    """Let up to ``limit`` provider requests (streams) run at once in this process, instead of
    httpx's default 100 per client (litellm's synchronous clients keep that default: past 100
    streams to one provider the others wait for a connection). For a server; applied when
    litellm is imported (now, if it is): see :func:`_pools`. ``network_backend``: an httpcore
    network backend for those pools' connections (the web server's turns, ``web/turns.py``)."""
    global _connections, _backend
    with _lock:
        same = network_backend is None or network_backend is _backend
        if _connections is not None and _connections >= limit and same:
            return
        _connections = max(int(limit), _connections or 0)
        _backend = network_backend if network_backend is not None else _backend
        if _module is not None:
            _pools(_module, _connections)


def _pools(litellm: Any, limit: int) -> None:
    """litellm's two synchronous HTTP paths, built as litellm builds them (its SSL context from
    ``ssl_verify``/``SSL_CERT_FILE``, its client certificate, HTTP/2 setting) but with room for
    ``limit`` connections: ``litellm.client_session`` (the OpenAI SDK's http client, which
    litellm never closes) and ``litellm.sync_transport`` (the transport of the ``HTTPHandler``
    behind Anthropic and most others; it is shared, so its ``close`` is a no-op); the cached
    handlers get a client on it now (their old one is left to finish its streams). OpenAI SDK
    clients litellm made before keep their pools until its client cache lets them go
    (``litellm.force_ipv4`` builds its own transport, without this)."""
    import httpx
    from litellm.llms.custom_httpx import http_handler as hh

    class _Shared(httpx.HTTPTransport):
        def close(self) -> None:  # litellm closes a client it evicts: not the shared pool
            pass

    http2 = hh.http2_enabled()
    limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
    litellm.client_session = httpx.Client(
        verify=hh.get_ssl_configuration(), follow_redirects=True, http2=http2, limits=limits
    )
    verify = hh.get_ssl_configuration(None, http2=http2)
    cert = os.getenv("SSL_CERTIFICATE", litellm.ssl_certificate)
    litellm.sync_transport = _Shared(verify=verify, cert=cert, http2=http2, limits=limits)
    if _backend is not None:  # httpx takes no backend: set on the pools before any connection
        for client in (litellm.client_session._transport, litellm.sync_transport):
            client._pool._network_backend = _backend
    for params in ({"ssl_verify": None}, None):  # the keys litellm's chat handlers ask for
        handler = hh.get_httpx_client(params)
        handler.client = handler.create_client()


@functools.cache
def litellm_version() -> str:
    """The installed litellm's version (read once: a metadata lookup costs ~0.5 ms)."""
    from importlib.metadata import version

    return version("litellm")


def provider_of(model: str) -> str:
    """The LiteLLM provider name of ``model``; :class:`UsageProblem` if none is known."""
    litellm = _litellm()
    provider = None
    try:
        _, provider, _, _ = litellm.get_llm_provider(model=model)
    except Exception:
        pass  # raised below, outside the handler: nothing chained behind our error
    if provider is None:
        raise errors.UsageProblem(
            f"Unknown model {model!r}: use a LiteLLM id such as openai/gpt-4o or "
            "anthropic/claude-sonnet-4-5, or define one with %llm alias NAME MODEL"
        )
    return str(provider)


def model_info(model: str) -> dict[str, Any] | None:
    """The bundled price-map entry of ``model`` (prices per token, context window), or None."""
    litellm = _litellm()
    try:
        info = litellm.get_model_info(model=model)
    except Exception:
        return None
    return dict(info) if info else None


def supports_response_schema(model: str) -> bool:
    """Whether litellm's map says ``model`` takes a JSON schema (``response_format``
    ``json_schema``); False for a model it does not know."""
    litellm = _litellm()
    try:
        return bool(litellm.supports_response_schema(model=model))
    except Exception:
        return False


def price_entry(model: str) -> dict[str, Any] | None:
    """The entry of ``model`` in the bundled price map, or None when it is not there.

    Not ``get_model_info``: for a model missing from the map it invents an entry priced at 0,
    and a silent 0 is exactly what the ledger must never record."""
    table = _litellm().model_cost
    names = [model]
    if "/" in model:
        names.append(model.split("/", 1)[1])
    for name in names:
        entry = table.get(name)
        if entry and entry.get("input_cost_per_token") is not None:
            return dict(entry)
    return None


def _local_tokenizer(model: str) -> bool:
    from . import local

    return model == f"openai/{local.SERVED_NAME}"


def count_tokens(model: str, messages: list[dict[str, str]]) -> int:
    """Tokens of ``messages`` with the model's tokenizer where it is known (the embedded model's
    own, or litellm's), else o200k."""
    if _local_tokenizer(model):
        from . import local

        with contextlib.suppress(Exception):
            return local.count_messages(messages)
    litellm = _litellm()
    try:
        return int(litellm.token_counter(model=model, messages=messages))
    except Exception:
        return int(litellm.token_counter(model="gpt-4o", messages=messages))


def count_text_tokens(model: str, text: str) -> int:
    """Tokens of a plain completion text."""
    if not text:
        return 0
    if _local_tokenizer(model):
        from . import local

        with contextlib.suppress(Exception):
            return local.count_text(text)
    litellm = _litellm()
    try:
        return int(litellm.token_counter(model=model, text=text, count_response_tokens=True))
    except Exception:
        return int(litellm.token_counter(model="gpt-4o", text=text, count_response_tokens=True))


def _credentials(api_key: Secret | str | None, api_base: str | None) -> dict[str, str]:
    """The ``api_key`` argument for litellm, built inside the call expression so that no frame
    of ours holds the raw key in a named local (``%xmode Verbose`` prints those)."""
    if isinstance(api_key, Secret):
        return {"api_key": api_key.reveal()}
    if api_key:
        return {"api_key": api_key}
    return {"api_key": "no-key"} if api_base else {}  # OpenAI-compatible servers want one


def stream_chat(
    *,
    model: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    temperature: float,
    api_base: str | None = None,
    api_key: Secret | str | None = None,
    timeout: float = 600.0,
    first_byte_timeout: float | None = None,
    direct: bool = False,
    extra: dict[str, Any] | None = None,
) -> Generator[str | ToolDelta | Usage, None, None]:
    """Stream one chat completion: yields text chunks (and :class:`ToolDelta` pieces of tool
    calls), then one :class:`Usage` (with the
    finish reason, which OpenAI-style streams carry on the last choice chunk and litellm maps
    Anthropic's ``stop_reason`` onto: ``max_tokens`` → ``length``).

    Raises :mod:`llm_magic.errors` types only, with no exception chain behind them (the
    provider's exception can carry the request, key included). ``max_tokens`` is mandatory:
    no call is unbounded. Pass the key as a :class:`Secret`: it is revealed only inside the
    litellm call. ``direct``: the embedded model, read straight from its server without litellm
    (see :mod:`llm_magic._direct`). ``extra``: further request parameters (``tools``,
    ``response_format``, …), sent as they are."""
    if not max_tokens or max_tokens <= 0:
        raise errors.UsageProblem("max_tokens must be a positive integer, e.g. --max-tokens 512")
    if direct and api_base:
        from ._direct import stream_openai

        yield from stream_openai(
            usage_type=Usage,
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            api_base=api_base,
            timeout=timeout,
            extra=extra,
        )
        return
    litellm = _litellm()
    kwargs = _litellm_kwargs(model, messages, max_tokens, temperature, timeout, api_base)
    kwargs.update(extra or {})
    if first_byte_timeout:
        kwargs["stream_timeout"] = first_byte_timeout
    got_text = False
    response: Any = None
    failure: errors.ProviderError | None = None
    try:
        response = litellm.completion(**kwargs, **_credentials(api_key, api_base))
        for piece in _read(response):
            got_text = got_text or isinstance(piece, (str, ToolDelta))
            yield piece
    except (errors.LLMError, KeyboardInterrupt):
        raise
    except Exception as exc:  # every provider failure becomes one of ours
        failure = translate_error(exc, model=model, api_base=api_base)
        if got_text and not isinstance(failure, (errors.AuthError, errors.RateLimited)):
            failure = errors.StreamInterrupted(
                f"response interrupted: {failure}", status=failure.status, model=model
            )
    finally:
        _close(response)  # an interrupted or abandoned stream closes its connection at once
    if failure is not None:
        # Raised here, outside the handler: no __context__ (nor __cause__) links it to the
        # provider's exception, whose request and headers carry the key.
        raise failure


def embed(
    *,
    model: str,
    texts: list[str],
    api_base: str | None = None,
    api_key: Secret | str | None = None,
    timeout: float = 600.0,
) -> Embedded:
    """One embeddings request through ``litellm.embedding`` (no retries: ours). Raises
    :mod:`llm_magic.errors` types only, with no exception chain (as :func:`stream_chat`)."""
    litellm = _litellm()
    # litellm's OpenAI embedding reads ``max_retries or litellm.DEFAULT_MAX_RETRIES``: a 0 we
    # pass becomes 2 hidden SDK retries unless its default is 0 too (the retries are ours)
    litellm.DEFAULT_MAX_RETRIES = 0
    kwargs: dict[str, Any] = {"model": model, "input": texts, "timeout": timeout}
    kwargs.update(num_retries=0, max_retries=0)
    if api_base:
        kwargs["api_base"] = api_base
    failure: errors.ProviderError | None = None
    try:
        return from_litellm(litellm.embedding(**kwargs, **_credentials(api_key, api_base)))
    except (errors.LLMError, KeyboardInterrupt):
        raise
    except Exception as exc:  # every provider failure becomes one of ours
        failure = translate_error(exc, model=model, api_base=api_base)
    raise failure  # outside the handler: nothing chained behind it


def _litellm_kwargs(
    model: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    temperature: float,
    timeout: float,
    api_base: str | None,
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": int(max_tokens),
        "temperature": float(temperature),
        "timeout": timeout,
        "num_retries": 0,  # retries are ours (llm_magic.retry), not litellm's
        "max_retries": 0,
    }
    if api_base:
        kwargs["api_base"] = api_base
    return kwargs


def _read(response: Any) -> Generator[str | ToolDelta | Usage, None, None]:
    """litellm's stream → text chunks and :class:`ToolDelta` pieces (``delta.tool_calls``),
    then one :class:`Usage` (with the finish reason)."""
    final_usage = None
    answered_by = None
    finish: str | None = None
    response_id = None
    for chunk in response:
        answered_by = getattr(chunk, "model", None) or answered_by
        response_id = getattr(chunk, "id", None) or response_id
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            final_usage = usage
        for choice in getattr(chunk, "choices", None) or ():
            finish = getattr(choice, "finish_reason", None) or finish
            delta = getattr(choice, "delta", None)
            text = getattr(delta, "content", None) if delta is not None else None
            if text:
                yield text
            yield from _tool_deltas(getattr(delta, "tool_calls", None) if delta else None)
    reported = any(getattr(c, "usage", None) is not None for c in getattr(response, "chunks", ()))
    yield Usage.read(
        final_usage,
        reported=reported,
        model=str(answered_by) if answered_by else None,
        finish=str(finish) if finish else None,
        response_id=str(response_id) if response_id else None,
    )


def _tool_deltas(calls: Any) -> Generator[ToolDelta, None, None]:
    """The pieces of ``delta.tool_calls`` (litellm's objects): index, id, name, arguments."""
    for position, call in enumerate(calls or ()):
        function = getattr(call, "function", None)
        index = getattr(call, "index", None)
        yield ToolDelta(
            index=int(index) if index is not None else position,
            id=getattr(call, "id", None) or None,
            name=getattr(function, "name", None) or None,
            arguments=getattr(function, "arguments", None) or "",
        )


def _close(response: Any) -> None:
    close = getattr(response, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()

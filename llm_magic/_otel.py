"""OpenTelemetry, opt-in: every ledger row as a GenAI span (and metrics), sent over OTLP/HTTP.

On when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, or
``LLM_MAGIC_OTEL=1``; ``LLM_MAGIC_OTEL=0`` turns it off whatever else is set. When off, nothing
of OpenTelemetry is imported: this module is the light half (enablement, the parent spans'
trace ids, the hook the ledger calls), :mod:`llm_magic._otelsdk` the half that imports the SDK,
and :mod:`llm_magic._otelspan` turns a row into attributes.

Export never slows or breaks a call: spans go through a bounded background queue; drops and a
collector that does not answer are counted (``%llm config``) and said once, as an
:class:`OtelWarning`.

Base layer: imports only the base.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from .config import OFF_WORDS, ON_WORDS

__all__ = [
    "OtelWarning",
    "enabled",
    "endpoint",
    "trace_id",
    "emit",
    "parent",
    "within",
    "carried",
    "flush",
    "status_line",
]

T = TypeVar("T")

ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
DEFAULT_ENDPOINT = "http://localhost:4318"

#: The trace id of the parent span open in this context (an experiment, a served chat
#: request): a request planned inside it takes it as its ledger ``trace_id``.
_TRACE: contextvars.ContextVar[str | None] = contextvars.ContextVar("llm_magic_otel_trace")


class OtelWarning(UserWarning):
    """Spans could not be sent (the collector did not answer, or the queue was full)."""


def enabled() -> bool:
    """Whether calls are exported (read from the environment each time: cheap)."""
    flag = os.environ.get("LLM_MAGIC_OTEL", "").strip().lower()
    if flag in OFF_WORDS:
        return False
    return flag in ON_WORDS or any(os.environ.get(name, "").strip() for name in ENDPOINTS)


def endpoint(explicit: str | None = None) -> str:
    """Where spans go: ``explicit`` (a base URL or the full ``…/v1/traces``), else the
    standard variables, else the OTLP/HTTP default."""
    if explicit:
        base = explicit.rstrip("/")
        return base if base.endswith("/v1/traces") else f"{base}/v1/traces"
    traces = os.environ.get(ENDPOINTS[0], "").strip()
    if traces:
        return traces
    base = os.environ.get(ENDPOINTS[1], "").strip() or DEFAULT_ENDPOINT
    return f"{base.rstrip('/')}/v1/traces"


def trace_id() -> str:
    """The trace id of a new request: the open parent span's, else a new one (uuid4 hex)."""
    return _TRACE.get(None) or uuid.uuid4().hex


def _say(message: str | None) -> None:
    """The one warning; even warnings-as-errors never turn it into a failed call."""
    if message:
        with contextlib.suppress(Exception):
            warnings.warn(message, OtelWarning, stacklevel=4)


def emit(row: Mapping[str, Any], api_base: str | None = None, tries: Sequence[Any] = ()) -> None:
    """The ledger's hook: ``row`` (just kept) as a span, when export is on; ``tries``: its
    call's HTTP attempts (:class:`llm_magic._otelspan.Try`), each a child span when there were
    several. Never raises for the export: a problem is counted, and said once."""
    if not enabled():
        return
    message = None
    try:
        from . import _otelsdk

        message = _otelsdk.live().emit(row, api_base, tries)
    except Exception as exc:  # the call was made and kept: telemetry never breaks it
        message = _otelsdk_failed(exc)
    _say(message)


_failed_once: list[str] = []


def _otelsdk_failed(exc: Exception) -> str | None:
    """Said once per process: the exporter could not even be set up."""
    if _failed_once:
        return None
    from .secrets import scrub

    _failed_once.append(type(exc).__name__)
    return scrub(
        f"OpenTelemetry export is on but could not start ({type(exc).__name__}: {exc}); calls "
        "go on without spans. Install the extra (pip install 'llm_magic[otel]') or set "
        "LLM_MAGIC_OTEL=0"
    )


@contextmanager
def parent(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[str | None]:
    """A parent span (``experiment {name}``, ``chat request``) around the calls made inside:
    they take its trace id. Yields that trace id; when export is off, nothing happens (None)."""
    if not enabled():
        yield None
        return
    try:
        from . import _otelsdk

        handle = _otelsdk.live().open_parent(name, dict(attributes or {}))
    except Exception as exc:
        _say(_otelsdk_failed(exc))
        yield None
        return
    token = _TRACE.set(handle.trace_hex)
    failed = False
    try:
        yield handle.trace_hex
    except BaseException:
        failed = True
        raise
    finally:
        _TRACE.reset(token)
        handle.close(failed)


def within(
    name: str, fn: Callable[[], T], attributes: Mapping[str, Any] | None = None
) -> Callable[[], T]:
    """``fn`` to run in another thread under a parent span ``name`` (``fn`` itself when
    export is off)."""
    if not enabled():
        return fn

    def run() -> T:
        with parent(name, attributes):
            return fn()

    return run


def carried(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` run in this context (its open parent span) from a worker thread."""
    context = contextvars.copy_context()

    def run(*args: Any, **kwargs: Any) -> T:
        return context.copy().run(fn, *args, **kwargs)

    return run


def flush(timeout_s: float = 5.0) -> bool:
    """Send what is queued now (tests, the end of a script). False when export is off."""
    import sys

    sdk = sys.modules.get("llm_magic._otelsdk")
    if sdk is None:
        return False
    message = sdk.flush_live(timeout_s)
    _say(message)
    return True


def status_line() -> str:
    """``%llm config``'s line: ``otel: on → <endpoint>, N spans sent, M dropped`` or
    ``otel: off``."""
    import sys

    from .secrets import mask_url

    if not enabled():
        return "otel: off"
    sdk = sys.modules.get("llm_magic._otelsdk")
    sent, dropped = sdk.counts() if sdk is not None else (0, 0)
    return f"otel: on → {mask_url(endpoint())}, {sent} spans sent, {dropped} dropped"


def since_text(since: Any) -> str:
    """``since`` (datetime, date or ISO text; naive means UTC) as the ledger's ISO text."""
    from datetime import date, datetime, timezone

    from .errors import UsageProblem

    if isinstance(since, str):
        try:
            since = datetime.fromisoformat(since.strip().replace("Z", "+00:00"))
        except ValueError:
            raise UsageProblem(
                f"since={since!r} is not a date or time: use ISO text such as '2026-11-30' or "
                "'2026-11-30T08:00', a date or a datetime"
            ) from None
    if isinstance(since, datetime):
        if since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)
        return since.astimezone(timezone.utc).isoformat()
    if isinstance(since, date):
        return since.isoformat()
    raise UsageProblem(f"since={since!r}: pass a datetime, a date or ISO text such as '2026-11-30'")


def backfill(rows: Iterator[Mapping[str, Any]], url: str | None = None) -> int:
    """Rows of the ledger sent as spans (``Ledger.to_otel``); how many the collector took."""
    from .errors import UsageProblem

    if url is None and not any(os.environ.get(name, "").strip() for name in ENDPOINTS):
        raise UsageProblem(
            "to_otel needs a collector: pass endpoint='http://host:4318' or set "
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
    try:
        from . import _otelsdk
    except ImportError:
        raise UsageProblem("to_otel needs OpenTelemetry: pip install 'llm_magic[otel]'") from None
    sent, message = _otelsdk.backfill(rows, url)
    _say(message)
    return sent

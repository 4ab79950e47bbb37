"""The OpenTelemetry SDK side of :mod:`llm_magic._otel`: imported only when export is on.

A :class:`TracerProvider` whose trace ids are the ledger's (so retries and fallbacks of one
request, and the calls of an experiment, are one trace), a :class:`BatchSpanProcessor` (bounded
queue, ``OTEL_BSP_*`` honoured) that counts what it drops, an OTLP/HTTP exporter that counts
what it sent and what the collector did not take (the SDK's exporter reads
``OTEL_EXPORTER_OTLP_*``: endpoint, headers such as Langfuse's auth, timeout), and the GenAI
client metrics. Flushed, briefly, when the process exits.

Base layer: imports only the base.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode

from . import _otel, _otelspan
from .secrets import scrub

__all__ = ["Export", "live", "flush_live", "counts", "backfill"]

#: The trace id the next root span must have (the ledger row's), read by the id generator.
_WANTED: contextvars.ContextVar[int | None] = contextvars.ContextVar("llm_magic_otel_want")
#: The SDK's own complaints about exporting (one per failed batch): counted and said once by
#: us instead. The loggers named here are the exporters' and the batch queue's.
_QUIET = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.metrics._internal.export",
)
EXIT_FLUSH_S = 3.0
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304]
SECOND_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                  40.96, 81.92]  # fmt: skip


class _LedgerIds(RandomIdGenerator):
    """Random ids, except a root span's trace id: the ledger row's, when one is wanted."""

    def generate_trace_id(self) -> int:
        wanted = _WANTED.get(None)
        return wanted if wanted else super().generate_trace_id()


class _Quiet(logging.Filter):
    """Keeps the SDK's export complaints off the notebook; the last one is kept as the
    reason said in our one warning."""

    def __init__(self) -> None:
        super().__init__()
        self.last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            try:
                self.last = record.getMessage().splitlines()[0][:300]
            except Exception:
                self.last = record.msg if isinstance(record.msg, str) else None
        return False


_quiet = _Quiet()
for _name in _QUIET:
    logging.getLogger(_name).addFilter(_quiet)


class _Counting(SpanExporter):
    """The OTLP exporter, counting what went and what the collector did not take."""

    def __init__(self, inner: SpanExporter, owner: Export) -> None:
        self.inner = inner
        self.owner = owner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # never into the SDK's worker as an exception
            self.owner.failure(len(spans), f"{type(exc).__name__}: {exc}")
            return SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            with self.owner._lock:
                self.owner.sent += len(spans)
        else:
            self.owner.failure(len(spans), _quiet.last)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _Queue(BatchSpanProcessor):
    """The SDK's batch processor, counting the spans a full queue drops."""

    def __init__(self, exporter: SpanExporter, owner: Export) -> None:
        size = BatchSpanProcessor._default_max_queue_size()
        batch = min(BatchSpanProcessor._default_max_export_batch_size(), size)
        super().__init__(exporter, max_queue_size=size, max_export_batch_size=batch)
        self.owner = owner
        self.size = size

    def on_end(self, span: ReadableSpan) -> None:
        queue = self._batch_processor
        if len(queue._queue) >= queue._max_queue_size:
            with self.owner._lock:
                self.owner.dropped += 1  # the oldest queued span goes to make room
        super().on_end(span)


@dataclass
class Parent:
    """An open parent span (an experiment, a served chat request)."""

    export: Export
    span: Any
    trace_hex: str

    def close(self, failed: bool) -> None:
        if failed:
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()
        self.export.parents.pop(self.trace_hex, None)


def _metrics_wanted() -> bool:
    """Metrics go where OTEL_EXPORTER_OTLP_ENDPOINT (or its metrics variant) points; a
    traces-only endpoint (Langfuse's) gets none; ``OTEL_METRICS_EXPORTER=none`` turns them off."""
    if os.environ.get("OTEL_METRICS_EXPORTER", "").strip().lower() == "none":
        return False
    only_traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip() and not (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "").strip()
    )
    return not only_traces


def _resource() -> Resource:
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    name = str(resource.attributes.get("service.name", ""))
    if not name or name.startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "llm_magic"}))
    return resource


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llm_magic")
    except PackageNotFoundError:
        return "0"


class Export:
    """One exporter: a tracer provider, its queue, its counts (and, live, the metrics)."""

    def __init__(self, url: str | None = None, metrics: bool = True) -> None:
        self.endpoint = _otel.endpoint(url)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.problem: str | None = None
        self._said = False
        self._lock = threading.Lock()
        self.parents: dict[str, SpanContext] = {}
        resource = _resource()
        self.provider = TracerProvider(  # flushed at exit by us, briefly (EXIT_FLUSH_S)
            resource=resource, id_generator=_LedgerIds(), shutdown_on_exit=False
        )
        self.processor = _Queue(
            _Counting(OTLPSpanExporter(endpoint=url and self.endpoint), self), self
        )
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("llm_magic", _version())
        self.meters: Any = None
        if metrics and _metrics_wanted():
            self.meters = _Meters(resource)

    # -- counts and the one warning -------------------------------------------------------------
    def failure(self, count: int, reason: str | None) -> None:
        with self._lock:
            self.failed += count
            if self.problem is None:
                self.problem = reason or "no answer"

    def said(self) -> str | None:
        """The one warning, once there is something to say (then never again)."""
        with self._lock:
            if self._said or (self.problem is None and not self.dropped):
                return None
            self._said = True
        why = f"({scrub(self.problem)})" if self.problem else "(the export queue was full)"
        return (
            f"OpenTelemetry: spans could not be sent to {self.endpoint} "
            f"{why}. Calls go on and stay in the ledger; `%llm config` counts what was dropped, "
            "and lm.ledger().to_otel() sends the rows later. Check OTEL_EXPORTER_OTLP_ENDPOINT "
            "or set LLM_MAGIC_OTEL=0. (Said once.)"
        )

    # -- spans ----------------------------------------------------------------------------------
    def span(
        self,
        row: Mapping[str, Any],
        api_base: str | bool | None = None,
        tries: Sequence[_otelspan.Try] = (),
    ) -> None:
        """One row as one span, with the row's own times and trace id; when its call took more
        than one HTTP try, one child span per try (``tries``: live calls only)."""
        start, end = _otelspan.times_ns(row)
        trace_hex = str(row.get("trace_id") or "")
        parent = self.parents.get(trace_hex)
        context = Context()
        token = None
        if parent is not None:
            context = trace.set_span_in_context(NonRecordingSpan(parent), context)
        else:
            token = _WANTED.set(_trace_int(trace_hex))
        attributes = _otelspan.attributes(row, api_base)
        if tries and tries[-1].response_id:  # live only: the ledger does not keep it
            attributes["gen_ai.response.id"] = tries[-1].response_id
        try:
            span = self.tracer.start_span(
                _otelspan.span_name(row),
                context=context,
                kind=SpanKind.CLIENT,
                attributes=attributes,
                start_time=start,
            )
        finally:
            if token is not None:
                _WANTED.reset(token)
        if row.get("status") in _otelspan.FAILED:
            span.set_status(Status(StatusCode.ERROR, _otelspan.error_line(row)))
        elif row.get("status") in ("ok", "cached"):
            span.set_status(Status(StatusCode.OK))
        if len(tries) > 1:
            self._tries(span, row, tries)
        span.end(end_time=end)

    def _tries(self, span: Any, row: Mapping[str, Any], tries: Sequence[_otelspan.Try]) -> None:
        """Each HTTP try of the row's call, a CLIENT span under the row's span."""
        context = trace.set_span_in_context(span, Context())
        name = _otelspan.span_name(row)
        for number, one in enumerate(tries, 1):
            child = self.tracer.start_span(
                f"attempt {number} {name}",
                context=context,
                kind=SpanKind.CLIENT,
                attributes=_otelspan.try_attributes(row, number, one),
                start_time=_otelspan._ns(one.start),
            )
            if one.error_type is not None:
                status = f" {one.http_status}" if one.http_status else ""
                child.set_status(Status(StatusCode.ERROR, f"{one.error_type}{status}"))
            elif not one.stopped:
                child.set_status(Status(StatusCode.OK))
            child.end(end_time=_otelspan._ns(one.end or one.start))

    def emit(
        self,
        row: Mapping[str, Any],
        api_base: str | None = None,
        tries: Sequence[_otelspan.Try] = (),
    ) -> str | None:
        """A call just kept: its span (and its tries') and its metrics. Returns the one
        warning, when due."""
        self.span(row, api_base, tries)
        if self.meters is not None:
            self.meters.record(row)
        return self.said()

    def open_parent(self, name: str, attributes: dict[str, Any]) -> Parent:
        attributes.setdefault("openinference.span.kind", "CHAIN")
        token = _WANTED.set(None)
        try:
            span = self.tracer.start_span(
                name, context=Context(), kind=SpanKind.INTERNAL, attributes=attributes
            )
        finally:
            _WANTED.reset(token)
        context = span.get_span_context()
        trace_hex = f"{context.trace_id:032x}"
        self.parents[trace_hex] = context
        return Parent(self, span, trace_hex)

    def flush(self, timeout_s: float) -> None:
        self.processor.force_flush(int(timeout_s * 1000))
        if self.meters is not None:
            self.meters.provider.force_flush(int(timeout_s * 1000))

    def shutdown(self, timeout_s: float = EXIT_FLUSH_S) -> None:
        """Send what is queued (at most ``timeout_s``), then stop."""
        self.processor._batch_processor.shutdown(timeout_millis=int(timeout_s * 1000))
        if self.meters is not None:
            self.meters.provider.shutdown(timeout_millis=int(timeout_s * 1000))


def _trace_int(trace_hex: str) -> int | None:
    """The ledger's trace id (uuid4 hex, 32 digits) as an OTel trace id; None when it is not one."""
    try:
        value = int(trace_hex, 16)
    except ValueError:
        return None
    return value if len(trace_hex) == 32 and value else None


class _Meters:
    """The GenAI client metrics: token usage, operation duration, time to first chunk."""

    def __init__(self, resource: Resource) -> None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        reader = PeriodicExportingMetricReader(OTLPMetricExporter())
        self.provider = MeterProvider(
            resource=resource, metric_readers=[reader], shutdown_on_exit=False
        )
        meter = self.provider.get_meter("llm_magic", _version())
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=SECOND_BUCKETS,
        )
        self.first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk of a streamed answer",
            explicit_bucket_boundaries_advisory=SECOND_BUCKETS,
        )

    def record(self, row: Mapping[str, Any]) -> None:
        status = row.get("status")
        if status == "cached" or str(status).startswith("refused"):
            return  # nothing was sent
        span = _otelspan.attributes(row, content=False)
        keys = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
                "gen_ai.response.model", "server.address", "server.port", "error.type")  # fmt: skip
        attrs = {k: span[k] for k in keys if k in span}
        if "gen_ai.usage.input_tokens" in span:
            self.tokens.record(
                span["gen_ai.usage.input_tokens"], {**attrs, "gen_ai.token.type": "input"}
            )
        if "gen_ai.usage.output_tokens" in span:
            self.tokens.record(
                span["gen_ai.usage.output_tokens"], {**attrs, "gen_ai.token.type": "output"}
            )
        latency = _otelspan._number(row.get("latency_s"))
        if latency is not None:
            self.duration.record(latency, attrs)
        ttft = span.get("gen_ai.response.time_to_first_chunk")
        if ttft is not None:
            self.first_chunk.record(ttft, attrs)


# -- the live exporter (one per process, rebuilt when the environment's settings change) ----------
_live: Export | None = None
_live_key: tuple[str, ...] | None = None
_live_lock = threading.Lock()
_ENV = (
    "LLM_MAGIC_OTEL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_METRICS_EXPORTER",
)


def live() -> Export:
    """The process's exporter, as the environment now configures it."""
    global _live, _live_key
    key = tuple(os.environ.get(name, "") for name in _ENV)
    with _live_lock:
        if _live is None or key != _live_key:
            old, _live = _live, None
            if old is not None:
                old.shutdown(0.5)
            _live, _live_key = Export(), key
        return _live


def flush_live(timeout_s: float) -> str | None:
    if _live is None:
        return None
    _live.flush(timeout_s)
    return _live.said()


def counts() -> tuple[int, int]:
    """(spans sent, spans dropped: a full queue's and those the collector did not take)."""
    if _live is None:
        return 0, 0
    return _live.sent, _live.dropped + _live.failed


@atexit.register
def _at_exit() -> None:
    if _live is not None:
        _live.shutdown(EXIT_FLUSH_S)


def backfill(rows: Iterable[Mapping[str, Any]], url: str | None = None) -> tuple[int, str | None]:
    """Send ``rows`` as spans (their own times and trace ids) through a new exporter, waiting
    until they are sent. Returns (spans sent, the warning to say if some were not)."""
    export = Export(url, metrics=False)
    made = 0
    for row in rows:
        export.span(row, api_base=False)  # where an old call went is not in its row
        made += 1
        if made % min(256, export.processor.size) == 0:
            export.flush(30.0)  # the queue never fills: nothing dropped
    export.shutdown(30.0)
    return export.sent, export.said()

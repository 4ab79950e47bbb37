"""A real OTLP/HTTP receiver for tests: an ``http.server`` on 127.0.0.1 that decodes what an
exporter sends (``ExportTraceServiceRequest`` and ``ExportMetricsServiceRequest`` protobuf, with
opentelemetry-proto) into plain dicts.

Usage::

    with OtlpSink() as sink:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.url
        ...                         # calls
        sink.wait_for_spans(3)      # [{"name", "trace_id", "span_id", "parent_span_id", "kind",
                                    #   "start_ns", "end_ns", "status", "status_message",
                                    #   "attributes", "resource"}, ...]
        sink.metrics()              # {"gen_ai.client.token.usage": [datapoint dicts], ...}
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return attrs(v.kvlist_value.values)
    return getattr(v, which) if which else None


def attrs(pairs: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


class OtlpSink:
    """The receiver; ``status`` (default 200) is what it answers, to play a broken collector."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.metric_points: list[dict[str, Any]] = []
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, headers)
        self.status = 200
        # cleared: a traces request waits (the exporter's worker is stuck) until it is set
        self.gate = threading.Event()
        self.gate.set()
        self._cond = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                with sink._cond:
                    sink.requests.append((self.path, dict(self.headers.items())))
                    sink._cond.notify_all()
                if self.path.endswith("/v1/traces"):
                    sink.gate.wait()
                if sink.status != 200:
                    self.send_response(sink.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path.endswith("/v1/traces"):
                    sink._traces(body)
                    answer = ExportTraceServiceResponse().SerializeToString()
                elif self.path.endswith("/v1/metrics"):
                    sink._metrics(body)
                    answer = ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _traces(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        found = []
        for rs in request.resource_spans:
            resource = attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    found.append(
                        {
                            "name": s.name,
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex() or None,
                            "kind": KINDS.get(s.kind, str(s.kind)),
                            "start_ns": s.start_time_unix_nano,
                            "end_ns": s.end_time_unix_nano,
                            "status": STATUS.get(s.status.code, str(s.status.code)),
                            "status_message": s.status.message,
                            "attributes": attrs(s.attributes),
                            "resource": resource,
                            "scope": ss.scope.name,
                        }
                    )
        with self._cond:
            self.spans.extend(found)
            self._cond.notify_all()

    def _metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        found = []
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    points = getattr(m, kind).data_points if kind else []
                    for p in points:
                        point = {"name": m.name, "unit": m.unit, "attributes": attrs(p.attributes)}
                        for field in ("count", "sum", "as_int", "as_double"):
                            if hasattr(p, field):
                                point[field] = getattr(p, field)
                        found.append(point)
        with self._cond:
            self.metric_points.extend(found)
            self._cond.notify_all()

    def wait_for_spans(self, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The spans received, once there are at least ``n`` (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.spans) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.spans)} spans received, {n} expected")
                self._cond.wait(left)
            return list(self.spans)

    def wait_for_requests(self, path_end: str, n: int, timeout: float = 20.0) -> None:
        """Until ``n`` requests to a path ending in ``path_end`` arrived (answered or not)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(p.endswith(path_end) for p, _ in self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"fewer than {n} requests to {path_end}")
                self._cond.wait(left)

    def metrics(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        with self._cond:
            for point in self.metric_points:
                out.setdefault(point["name"], []).append(point)
        return out

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> OtlpSink:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

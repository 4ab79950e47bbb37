"""Observability against a real backend: Arize Phoenix (its own venv from a hashed lock, served on
127.0.0.1, offline) receives llm_magic's OTLP spans; read back through Phoenix's client, they
match the ledger row for row."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._phoenix import Phoenix

ROOT = Path(__file__).resolve().parent.parent

# Building the venv (first run) and starting Phoenix take minutes on a busy 2-core machine.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    server = Phoenix(tmp_path_factory.mktemp("phoenix"))
    server.start()
    yield server
    server.stop()


def _project() -> str:
    return f"llm-magic-{uuid.uuid4().hex[:10]}"


# A span made with the plain OpenTelemetry SDK, in a child process (the SDK's global state stays
# out of this one).
_PLAIN_SPAN = """
import sys
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

endpoint, project = sys.argv[1], sys.argv[2]
provider = TracerProvider(resource=Resource.create({"openinference.project.name": project}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
attributes = {
    "gen_ai.request.model": "probe-model",
    "gen_ai.usage.input_tokens": 11,
    "gen_ai.usage.output_tokens": 7,
    "gen_ai.usage.cost.amount": 0.00123,
    "llm_magic.call_id": "probe-call",
}
span = provider.get_tracer("probe").start_span("chat probe-model", kind=SpanKind.CLIENT,
                                               attributes=attributes)
span.set_status(Status(StatusCode.ERROR, "probe failed"))
span.end()
provider.shutdown()
print(format(span.get_span_context().trace_id, "032x"))
"""


def test_the_harness_reads_back_a_plain_sdk_span(phoenix: Phoenix) -> None:
    """The harness itself: a span from the plain OTel SDK lands in its project, attributes,
    status and trace id intact."""
    project = _project()
    done = subprocess.run(
        [sys.executable, "-c", _PLAIN_SPAN, phoenix.traces_endpoint, project],
        capture_output=True, text=True, timeout=120, check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    trace_id = done.stdout.strip()
    [span] = phoenix.wait_spans(project, 1)
    assert span["name"] == "chat probe-model"
    assert span["context"]["trace_id"] == trace_id
    assert span["status_code"] == "ERROR" and span["status_message"] == "probe failed"
    got = span["attributes"]
    assert (got["gen_ai.usage.input_tokens"], got["gen_ai.usage.output_tokens"]) == (11, 7)
    assert got["gen_ai.usage.cost.amount"] == pytest.approx(0.00123)
    assert got["llm_magic.call_id"] == "probe-call"

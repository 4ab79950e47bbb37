"""Observability against a real backend: Arize Phoenix (its own venv from a hashed lock, served on
127.0.0.1, offline) receives llm_magic's OTLP spans; read back through its REST API, they match
the ledger row for row."""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import llm_magic as lm
from tests._browser import BUILD, launch_chromium, need_chromium
from tests._phoenix import Phoenix
from tests.fakeprovider import FakeProvider, ok, status

ROOT = Path(__file__).resolve().parent.parent
# The docs' screenshot is taken again with LLM_MAGIC_DOC_SHOTS=1; otherwise into build/.
IMG = ROOT / "docs" / "img" if os.environ.get("LLM_MAGIC_DOC_SHOTS") else BUILD

# Building the venv (first run: ~25 s from uv's cache) and starting Phoenix (~35 s of CPU: 1-2
# minutes on 2 cores, 5-10 under a load of 15-50) happen in the first test's setup.
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    """Phoenix started for the session (or, while working on these tests, one already running
    from build/phoenix-venv whose URL is in LLM_MAGIC_TEST_PHOENIX)."""
    server = Phoenix(tmp_path_factory.mktemp("phoenix"), os.environ.get("LLM_MAGIC_TEST_PHOENIX"))
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
    status and trace id intact, read back through Phoenix's REST API."""
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


# ---------------------------------------------------------------------------------------------
# llm_magic's own spans (issue 14): calls through the scripted provider, read back from Phoenix


def _export_to(phoenix: Phoenix, monkeypatch: pytest.MonkeyPatch, project: str) -> None:
    """OTel export on, as a user turns it on: the standard variables, pointed at Phoenix."""
    from llm_magic import config

    monkeypatch.delenv("LLM_MAGIC_OTEL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", phoenix.url)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"openinference.project.name={project}")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")  # Phoenix keeps traces, not metrics
    config.reload_settings()


def _flush() -> None:
    from llm_magic import _otel

    assert _otel.flush(30.0), "OTel export is not on"


def _calls(provider: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four requests, five ledger rows: an answer with scripted usage, one retried after a 429,
    one refused (401, no retry), and one whose model failed twice so the fallback answered."""
    from llm_magic import config

    provider.script(ok("Hello there", input_tokens=12, output_tokens=3, cache_read_tokens=4))
    lm.complete("Say hello", model="gpt-4o", max_tokens=16)
    provider.script(
        status(429, retry_after=0), ok("After a wait.", input_tokens=20, output_tokens=4)
    )
    lm.complete("Try again", model="gpt-4o-mini", max_tokens=16)
    provider.script(status(401))
    with pytest.raises(lm.errors.ProviderError):
        lm.complete("Refused", model="gpt-4o", max_tokens=16)
    monkeypatch.setenv("FALLBACK_MODELS", "claude-haiku-4-5")
    config.reload_settings()
    provider.script(status(503), status(503), ok("From haiku.", input_tokens=7, output_tokens=2))
    lm.complete("Fall back", model="gpt-4o", max_tokens=16)


def _by_call(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rows = [s for s in spans if "llm_magic.attempt" not in s["attributes"]]  # not HTTP tries
    found = {s["attributes"].get("llm_magic.call_id"): s for s in rows}
    assert None not in found, "a span without llm_magic.call_id"
    return found


def _ns(text: str) -> int:
    """An ISO time (Phoenix's microseconds, or the ledger's) as Unix microseconds."""
    moment = datetime.fromisoformat(str(text))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return round(moment.timestamp() * 1e6)


def _assert_span_is_row(span: dict[str, Any], row: Any) -> None:
    got = span["attributes"]
    call = row.call_id
    assert span["name"] == f"chat {row.model}", call  # the model the request went to
    assert span["span_kind"] == "LLM", call
    assert span["context"]["trace_id"] == row.trace_id, call
    assert got["gen_ai.request.model"] == row.model, call
    assert got["llm.model_name"] == row.model and got["gen_ai.response.model"] == row.model, call
    assert (got["gen_ai.usage.input_tokens"], got["gen_ai.usage.output_tokens"]) == (
        row.input_tokens,
        row.output_tokens,
    ), call
    assert (got["llm.token_count.prompt"], got["llm.token_count.completion"]) == (
        row.input_tokens,
        row.output_tokens,
    ), call
    if math.isnan(row.cost_usd):
        assert "gen_ai.usage.cost.amount" not in got, call  # unpriced: no cost, never 0
    else:
        assert got["gen_ai.usage.cost.amount"] == pytest.approx(row.cost_usd, rel=1e-9), call
        assert got["gen_ai.usage.cost.currency"] == "USD", call
    assert got["llm_magic.status"] == row.status, call
    if row.status == "error":
        assert span["status_code"] == "ERROR", call
        assert got["error.type"] == row.error_type, call
    else:
        assert span["status_code"] != "ERROR", call
    assert _ns(span["start_time"]) == _ns(row.ts_start), call
    assert _ns(span["end_time"]) == _ns(row.ts_end), call


def test_every_call_is_a_span_in_phoenix_matching_its_ledger_row(
    phoenix: Phoenix, provider: FakeProvider, book: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project()
    _export_to(phoenix, monkeypatch, project)
    _calls(provider, monkeypatch)
    _flush()
    df = book.df
    assert len(df) == 5  # the fallback request is two rows: gpt-4o failed, haiku answered
    # every row's span, and a child span per HTTP try of the rows that took more than one
    tries = int(df.attempts[df.attempts > 1].sum())
    everything = phoenix.wait_spans(project, len(df) + tries)
    spans = _by_call(everything)
    assert len(everything) == len(df) + tries
    assert sorted(spans) == sorted(df.call_id)
    for row in df.itertuples():
        _assert_span_is_row(spans[row.call_id], row)

    # what each row is, so the checks above compared something
    answered, retried, refused, failed, fell_back = df.itertuples()
    assert (answered.input_tokens, answered.output_tokens, answered.status) == (12, 3, "ok")
    assert spans[answered.call_id]["attributes"]["gen_ai.usage.cache_read.input_tokens"] == 4
    assert (retried.attempts, retried.status, retried.output_tokens) == (2, "ok", 4)
    assert refused.status == "error" and refused.http_status == 401
    assert (failed.status, fell_back.status) == ("error", "ok")
    assert (failed.model, fell_back.model) == ("gpt-4o", "claude-haiku-4-5")
    assert spans[refused.call_id]["status_message"]  # the error line, shown in Phoenix

    # trace grouping: one trace per request; the fallback's two rows share one
    traces = {s["context"]["trace_id"] for s in spans.values()}
    assert traces == set(df.trace_id) and len(traces) == 4
    assert failed.trace_id == fell_back.trace_id
    grouped = [s["attributes"]["llm_magic.call_id"] for s in spans.values()
               if s["context"]["trace_id"] == failed.trace_id]  # fmt: skip
    assert sorted(grouped) == sorted([failed.call_id, fell_back.call_id])


def test_backfill_sends_old_rows_with_their_own_times(
    phoenix: Phoenix, provider: FakeProvider, book: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls made with export off, sent later by ``Ledger.to_otel``: from ``since`` on, each
    row a span with the call's own start and end, trace id, tokens and cost."""
    from llm_magic import config

    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    config.reload_settings()
    _calls(provider, monkeypatch)
    df = book.df
    project = _project()
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"openinference.project.name={project}")
    since = df.ts_start.iloc[1]
    assert book.to_otel(since=since.isoformat(), endpoint=phoenix.url) == len(df) - 1
    spans = _by_call(phoenix.wait_spans(project, len(df) - 1))
    assert sorted(spans) == sorted(df.call_id.iloc[1:])  # the first row is before ``since``
    for row in df.iloc[1:].itertuples():
        _assert_span_is_row(spans[row.call_id], row)


@pytest.mark.browser
def test_phoenix_shows_the_calls_in_its_ui(
    phoenix: Phoenix, provider: FakeProvider, book: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a person sees: Phoenix's traces view of the project lists the calls by name, with
    the failed ones marked. The screenshot is docs/img/phoenix-traces.png with
    LLM_MAGIC_DOC_SHOTS=1 (else build/)."""
    need_chromium()
    project = _project()
    _export_to(phoenix, monkeypatch, project)
    _calls(provider, monkeypatch)
    _flush()
    phoenix.wait_spans(project, len(book.df))
    with contextlib.closing(launch_chromium()) as browsers:
        browser = next(browsers)
        page = browser.new_page(viewport={"width": 2300, "height": 620})
        page.set_default_timeout(180_000)  # a busy 2-core machine renders slowly
        page.goto(f"{phoenix.url}/redirects/projects/{project}")
        page.get_by_text("chat gpt-4o-mini", exact=True).wait_for()
        for button in ("Hide aside panel", "Collapse side navigation"):  # room for the columns
            page.get_by_role("button", name=button).click()
        page.get_by_role("button", name="Reorder cumulative cost column").wait_for()
        page.wait_for_load_state("networkidle")
        names = page.get_by_text("chat gpt-4o", exact=True).count()
        minis = page.get_by_text("chat gpt-4o-mini", exact=True).count()
        haikus = page.get_by_text("chat claude-haiku-4-5", exact=True).count()
        errors = page.get_by_text("OpenAIException", exact=False).count()
        shot = IMG / "phoenix-traces.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot))
    # the five spans: gpt-4o answered, refused, failed before the fallback (haiku) answered;
    # the retry of gpt-4o-mini is one row span (its tries are children, not listed at the
    # root); the two failed calls show their error
    assert (names, minis, haikus) == (3, 1, 1), f"{names} + {minis} + {haikus} listed: {shot}"
    assert errors == 2, f"{errors} errors shown: {shot}"

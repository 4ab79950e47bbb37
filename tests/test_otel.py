"""OpenTelemetry (issue 14): every ledger row as a GenAI span, received by a real OTLP/HTTP
receiver in this process (tests/otlpsink.py decodes the protobuf the SDK's exporter sends), for
calls through the scripted provider — retries, a fallback, an error, usage detail, an unpriced
model, an experiment; content capture; nothing imported when off; a collector that is not
there; a full queue; the backfill of old rows."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import llm_magic as lm
from llm_magic import _otel, config, errors
from tests._servers import free_port
from tests.fakekeys import fake_key
from tests.fakeprovider import FakeProvider, ok, status
from tests.otlpsink import OtlpSink

ROOT = Path(__file__).resolve().parents[1]
GPT4O = dict(input_tokens=2_000, cache_read_tokens=1_500, reasoning_tokens=200)
GPT4O_COST = 500 * 2.5e-6 + 1_500 * 1.25e-6 + 300 * 10e-6  # = 0.006125
OTEL_ENV = (
    "LLM_MAGIC_OTEL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
)


def _stop_live() -> None:
    sdk = sys.modules.get("llm_magic._otelsdk")
    if sdk is not None and sdk._live is not None:
        sdk._live.shutdown(1.0)
        sdk._live = None


@pytest.fixture(autouse=True)
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in OTEL_ENV:
        monkeypatch.delenv(name, raising=False)
    yield
    _stop_live()  # each test's exporter ends with it


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpSink]:
    """A receiver, with this process's OTLP endpoint pointing at it (export on)."""
    with OtlpSink() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        yield receiver


def sent(receiver: OtlpSink, n: int) -> list[dict[str, Any]]:
    """The spans the receiver has once ``n`` came, after sending what is queued."""
    _otel.flush()
    return receiver.wait_for_spans(n)


def by_call(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rows' spans by call id (not their HTTP tries' child spans)."""
    return {
        s["attributes"]["llm_magic.call_id"]: s
        for s in spans
        if s["kind"] == "CLIENT" and "llm_magic.attempt" not in s["attributes"]
    }


def tries_of(spans: list[dict[str, Any]], row_span: dict[str, Any]) -> list[dict[str, Any]]:
    """The try spans under a row's span, in order."""
    children = [s for s in spans if s["parent_span_id"] == row_span["span_id"]]
    return sorted(children, key=lambda s: s["attributes"]["llm_magic.attempt"])


def ns(ts: pd.Timestamp) -> int:
    return int(ts.value)  # UTC nanoseconds


def rows(book: Any) -> pd.DataFrame:
    return book.df.set_index("call_id")


# -- one span per ledger row ------------------------------------------------------------------
def test_spans_match_the_ledger_row_for_row(
    provider: FakeProvider, book: Any, sink: OtlpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1) usage detail, after a 429 retried on the same call
    provider.script(
        status(429, retry_after=0.01), ok("Thought it through.", output_tokens=300, **GPT4O)
    )
    first = lm.complete(
        "Hi", model="gpt-4o", max_tokens=500, agent="bot", user="ann", tags={"team": "x"}
    )
    # 2) a fallback: gpt-4o fails twice, claude-haiku answers (one trace, two rows)
    monkeypatch.setenv("FALLBACK_MODELS", "claude-haiku-4-5")
    config.reload_settings()
    provider.script(status(503), status(503), ok("From haiku.", input_tokens=7, output_tokens=2))
    second = lm.complete("Hello", model="gpt-4o", max_tokens=50)
    monkeypatch.delenv("FALLBACK_MODELS")
    config.reload_settings()
    # 3) an error, whose message must carry no key
    provider.script(status(401))
    with pytest.raises(errors.ProviderError):
        lm.complete("Hey", model="gpt-4o", max_tokens=50)
    # 4) an unpriced model: no cost attribute at all (never 0)
    provider.script(ok("house answer", 3, 1))
    lm.complete("Yo", model="openai/house-model-7", max_tokens=5)

    df = rows(book)
    assert len(df) == 5
    # 5 rows, and the tries of the two rows that took two: 2 + 2 child spans
    every = sent(sink, 9)
    spans = by_call(every)
    assert set(spans) == set(df.index)
    for call_id, row in df.iterrows():
        span, a = spans[call_id], spans[call_id]["attributes"]
        assert span["name"] == f"chat {row.model}" and span["kind"] == "CLIENT"  # sent to
        assert span["trace_id"] == row.trace_id  # the ledger's trace id is the OTel one
        assert span["parent_span_id"] is None
        assert (span["start_ns"], span["end_ns"]) == (ns(row.ts_start), ns(row.ts_end))
        assert a["gen_ai.operation.name"] == "chat" and a["openinference.span.kind"] == "LLM"
        assert a["gen_ai.request.model"] == row.model
        assert a["llm_magic.requested_model"] == row.requested_model
        assert a["gen_ai.response.model"] == a["llm.model_name"] == row.model
        assert a["gen_ai.provider.name"] == a["gen_ai.system"] == row.provider
        assert a["gen_ai.usage.input_tokens"] == a["gen_ai.usage.prompt_tokens"] == row.input_tokens
        assert (
            a["gen_ai.usage.output_tokens"] == a["llm.token_count.completion"] == row.output_tokens
        )
        assert a["llm.token_count.total"] == row.input_tokens + row.output_tokens
        assert a["llm_magic.status"] == row.status and a["llm_magic.attempts"] == row.attempts
        assert a["server.address"] == "127.0.0.1" and a["server.port"] == provider.port
        if math.isnan(row.cost_usd):
            assert not any("cost" in k for k in a)
        else:
            assert a["gen_ai.usage.cost.amount"] == pytest.approx(row.cost_usd, abs=1e-12)
            assert a["llm.cost.total"] == pytest.approx(row.cost_usd, abs=1e-12)
            assert a["gen_ai.usage.cost.currency"] == "USD"
        if row.status == "error":
            assert span["status"] == "ERROR" and a["error.type"] == row.error_type
            assert span["status_message"] and "\n" not in span["status_message"]
        else:
            assert span["status"] == "OK" and "error.type" not in a
        if row.attempts < 2:
            assert tries_of(every, span) == []  # one try: the row's span is the call

    a = spans[first.call_id]["attributes"]
    assert a["gen_ai.usage.cost.amount"] == pytest.approx(GPT4O_COST, abs=1e-9)
    assert a["gen_ai.usage.cache_read.input_tokens"] == 1500
    assert a["llm.token_count.prompt_details.cache_read"] == 1500
    assert a["gen_ai.usage.reasoning.output_tokens"] == 200
    assert a["llm_magic.attempts"] == 2  # the 429 and the answer: one row, one span …
    row_span, first_row = spans[first.call_id], df.loc[first.call_id]
    limited, answered = tries_of(every, row_span)  # … with one child span per HTTP try
    for number, one in enumerate((limited, answered), 1):
        assert one["name"] == f"attempt {number} chat gpt-4o" and one["kind"] == "CLIENT"
        assert one["trace_id"] == row_span["trace_id"] == first_row.trace_id
        assert one["attributes"]["llm_magic.call_id"] == first.call_id
        assert one["attributes"]["http.request.method"] == "POST"
        assert ns(first_row.ts_start) <= one["start_ns"] <= one["end_ns"] <= ns(first_row.ts_end)
    assert limited["status"] == "ERROR" and limited["status_message"] == "rate_limited 429"
    assert limited["attributes"]["error.type"] == "rate_limited"
    assert limited["attributes"]["http.response.status_code"] == 429
    assert "http.request.resend_count" not in limited["attributes"]
    assert answered["status"] == "OK" and "error.type" not in answered["attributes"]
    assert "http.response.status_code" not in answered["attributes"]
    assert answered["attributes"]["http.request.resend_count"] == 1
    assert limited["end_ns"] <= answered["start_ns"]  # the back-off between them
    # the provider's id of the answer (the stream chunks' "id"), on the row and the try that got it
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{29}", a["gen_ai.response.id"])
    assert answered["attributes"]["gen_ai.response.id"] == a["gen_ai.response.id"]
    assert "gen_ai.response.id" not in limited["attributes"]
    ledger = book.df.to_json(date_format="iso")
    assert a["gen_ai.response.id"] not in ledger  # spans only, not the ledger
    assert (a["llm_magic.agent"], a["llm_magic.user"]) == ("bot", "ann")
    assert json.loads(a["llm_magic.tags"]) == {"team": "x"}
    assert a["gen_ai.request.max_tokens"] == 500 and a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.response.time_to_first_chunk"] == pytest.approx(first.ttft_s)
    assert "gen_ai.usage.cache_creation.input_tokens" not in a  # OpenAI reports no writes

    fallback = df[df.trace_id == second.trace_id]
    assert list(fallback.status) == ["error", "ok"]
    pair = [spans[c] for c in fallback.index]
    assert {s["trace_id"] for s in pair} == {second.trace_id}
    assert pair[1]["attributes"]["llm_magic.fallback_from"] == "gpt-4o"
    failed_tries = tries_of(every, pair[0])  # gpt-4o: two 503s, each a failed try
    assert [t["attributes"]["http.response.status_code"] for t in failed_tries] == [503, 503]
    assert {t["status"] for t in failed_tries} == {"ERROR"}
    assert {t["trace_id"] for t in failed_tries} == {second.trace_id}
    assert "gen_ai.response.id" not in pair[0]["attributes"]  # no answer, no id
    # litellm replaces Anthropic's msg_ id by one of its own: no provider's id, so none
    assert "gen_ai.response.id" not in pair[1]["attributes"]

    secret = os.environ["OPENAI_API_KEY"]
    assert all(secret not in json.dumps(s) for s in spans.values())
    assert all(s["resource"]["service.name"] == "llm_magic" for s in spans.values())


def test_metrics_add_up_to_the_ledger(provider: FakeProvider, book: Any, sink: OtlpSink) -> None:
    provider.script(
        ok("one two", input_tokens=11, output_tokens=2), ok("x", input_tokens=5, output_tokens=1)
    )
    lm.complete("a", model="gpt-4o", max_tokens=20)
    lm.complete("b", model="gpt-4o-mini", max_tokens=20)
    sent(sink, 2)
    metrics = sink.metrics()
    usage = metrics["gen_ai.client.token.usage"]
    by_type: dict[str, float] = {}
    for point in usage:
        kind = point["attributes"]["gen_ai.token.type"]
        by_type[kind] = by_type.get(kind, 0) + point["sum"]
    assert by_type == {"input": 16, "output": 3}
    duration = metrics["gen_ai.client.operation.duration"]
    assert sum(p["count"] for p in duration) == 2 and duration[0]["unit"] == "s"
    assert sum(p["count"] for p in metrics["gen_ai.client.operation.time_to_first_chunk"]) == 2
    assert {p["attributes"]["gen_ai.request.model"] for p in duration} == {"gpt-4o", "gpt-4o-mini"}


def test_embeddings_and_cached_rows_are_spans_too(
    provider: FakeProvider, book: Any, sink: OtlpSink
) -> None:
    lm.embed(["one two three"], model="text-embedding-3-small", progress=False)
    provider.script(ok("same answer", 4, 2))
    lm.complete("same", model="gpt-4o", max_tokens=10, cache=True)
    lm.complete("same", model="gpt-4o", max_tokens=10, cache=True)
    df = rows(book)
    spans = by_call(sent(sink, 3))
    assert set(spans) == set(df.index)
    embed = next(
        s for s in spans.values() if s["attributes"]["gen_ai.operation.name"] == "embeddings"
    )
    assert embed["name"] == "embeddings text-embedding-3-small"
    assert embed["attributes"]["openinference.span.kind"] == "EMBEDDING"
    assert embed["attributes"]["gen_ai.usage.input_tokens"] == 3
    assert "gen_ai.usage.output_tokens" not in embed["attributes"]
    statuses = sorted(s["attributes"]["llm_magic.status"] for s in spans.values())
    assert statuses == ["cached", "ok", "ok"]


# -- trace grouping: an experiment is a parent span -------------------------------------------
def test_an_experiments_calls_are_children_of_its_span(
    provider: FakeProvider, book: Any, sink: OtlpSink
) -> None:
    book.set_price("gpt-4o-mini", 1.0, 2.0)
    provider.default = ok("Paris is the capital", input_tokens=12, output_tokens=3)
    lm.experiment(["a", "b", "c"], ["gpt-4o-mini"], name="capitals", progress=False, max_tokens=20)
    spans = sent(sink, 4)
    parents = [s for s in spans if s["name"] == "experiment capitals"]
    assert len(parents) == 1 and parents[0]["kind"] == "INTERNAL"
    parent = parents[0]
    calls = [s for s in spans if s["kind"] == "CLIENT"]
    assert len(calls) == 3
    assert {s["parent_span_id"] for s in calls} == {parent["span_id"]}
    assert {s["trace_id"] for s in calls} == {parent["trace_id"]}
    assert set(book.df.trace_id) == {parent["trace_id"]}  # the ledger's trace id too
    assert all(s["attributes"]["llm_magic.experiment"] == "capitals" for s in calls)
    assert parent["start_ns"] <= min(s["start_ns"] for s in calls)
    assert parent["end_ns"] >= max(s["end_ns"] for s in calls)

    # its re-run reuses the three answers: three cached rows, built in Python (not copied by
    # the database) so that each is a span too, children of the re-run's own span
    again = lm.experiment(
        ["a", "b", "c"], ["gpt-4o-mini"], name="capitals", progress=False, max_tokens=20
    )
    assert again.cached == 3 and len(provider.completions()) == 3  # type: ignore[union-attr]
    spans = sent(sink, 8)
    (rerun,) = [
        s for s in spans if s["name"] == "experiment capitals" and s["span_id"] != parent["span_id"]
    ]
    reused = [s for s in spans if s["trace_id"] == rerun["trace_id"] and s["kind"] == "CLIENT"]
    assert sorted(s["attributes"]["llm_magic.status"] for s in reused) == ["cached"] * 3
    assert {s["parent_span_id"] for s in reused} == {rerun["span_id"]}
    cached = book.df.query("status == 'cached'")
    assert set(cached["trace_id"]) == {rerun["trace_id"]}
    assert set(cached["call_id"]) == {s["attributes"]["llm_magic.call_id"] for s in reused}


def test_a_served_chat_request_is_a_parent_span(
    provider: FakeProvider, book: Any, sink: OtlpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm_magic import core
    from llm_magic.web.chat import ChatRun
    from llm_magic.web.sse import Replay

    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # the parent ends after the call
    provider.script(ok("Served.", 4, 2))
    req = core.Request(prompt="Hi", model="gpt-4o", max_tokens=5)
    ChatRun(req, config.settings(), book, Replay("s" * 16), "gpt-4o").start()  # its own thread
    spans = sink.wait_for_spans(2, timeout=120)
    (parent,) = [s for s in spans if s["name"] == "chat request"]
    (call,) = [s for s in spans if s["kind"] == "CLIENT"]
    assert call["parent_span_id"] == parent["span_id"]
    assert call["trace_id"] == parent["trace_id"] == book.df.trace_id.iloc[0]


# -- content capture --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("capture", "store", "shown"),
    [("true", "1", True), (None, "1", False), ("true", "0", False)],
)
def test_prompts_and_answers_only_when_capture_and_store_text_allow(
    provider: FakeProvider,
    book: Any,
    sink: OtlpSink,
    monkeypatch: pytest.MonkeyPatch,
    capture: str | None,
    store: str,
    shown: bool,
) -> None:
    if capture:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", capture)
    monkeypatch.setenv("LLM_MAGIC_STORE_TEXT", store)
    config.reload_settings()
    provider.script(ok("The secret plan", 5, 3))
    lm.complete("What is the plan?", model="gpt-4o", max_tokens=20)
    (span,) = sent(sink, 1)
    text = json.dumps(span["attributes"])
    assert ("What is the plan?" in text) is shown and ("The secret plan" in text) is shown
    if shown:
        messages = json.loads(span["attributes"]["gen_ai.input.messages"])
        assert messages[0]["parts"][0]["content"] == "What is the plan?"
        assert span["attributes"]["output.value"] == "The secret plan"


# -- off: nothing imported; %llm config says where spans go -----------------------------------
CHILD = """
import os, sys
from tests.fakeprovider import FakeProvider, ok
with FakeProvider() as fp:
    os.environ["OPENAI_API_BASE"] = fp.openai_base
    fp.script(ok("hi", 3, 1))
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "llm_magic")
    import llm_magic as lm
    assert lm.complete("Hi", model="gpt-4o", max_tokens=5).status == "ok"
    shell.run_line_magic("llm", "config")
print("IMPORTED", sorted({m.split(".")[1] for m in sys.modules if m.startswith("opentelemetry.")}))
"""


@pytest.mark.parametrize(
    ("env", "imported"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "LLM_MAGIC_OTEL": "0"}, False),
        ({"LLM_MAGIC_OTEL": "1", "OTEL_EXPORTER_OTLP_TIMEOUT": "0.5"}, True),
    ],
)
def test_off_nothing_of_opentelemetry_is_imported(
    tmp_path: Path, env: dict[str, str], imported: bool
) -> None:
    child_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLM_MAGIC_OTEL"))
    }
    child_env.update(env)
    child_env.update(
        PYTHONPATH=str(ROOT),
        LLM_MAGIC_LEDGER=str(tmp_path / "ledger.sqlite"),
        OPENAI_API_KEY=fake_key("CHILD"),
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD)],
        cwd=tmp_path,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=600,  # a loaded machine: the child imports litellm and IPython
    )
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("IMPORTED"))
    assert (line != "IMPORTED []") is imported, line
    assert ("otel: off" in done.stdout) is not imported
    assert ("otel: on → http://localhost:4318/v1/traces" in done.stdout) is imported


def test_config_shows_where_spans_go_and_how_many(
    provider: FakeProvider, ip_ledger: Any, sink: OtlpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    provider.script(ok("hi", 3, 1), ok("again", 3, 1))
    lm.complete("a", model="gpt-4o", max_tokens=5)
    lm.complete("b", model="gpt-4o", max_tokens=5)
    sent(sink, 2)
    capsys.readouterr()
    ip_ledger.run_line_magic("llm", "config")
    out = capsys.readouterr().out
    assert f"otel: on → {sink.url}/v1/traces, 2 spans sent, 0 dropped" in out


# -- export never breaks a call ---------------------------------------------------------------
def test_an_unreachable_collector_is_one_warning_and_calls_go_on(
    provider: FakeProvider, book: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.5")
    provider.default = ok("fine", 3, 1)
    with pytest.warns(_otel.OtelWarning) as said:
        for _ in range(3):
            assert lm.complete("Hi", model="gpt-4o", max_tokens=5).status == "ok"
            _otel.flush()  # the failed export is known now; the next call says it
    ours = [w for w in said if issubclass(w.category, _otel.OtelWarning)]
    assert len(ours) == 1
    message = str(ours[0].message)
    assert "could not be sent" in message and "127.0.0.1" in message
    df = book.df
    assert list(df.status) == ["ok"] * 3 and df.cost_usd.notna().all()
    line = _otel.status_line()
    assert line.endswith("0 spans sent, 3 dropped"), line


def test_a_full_queue_drops_are_counted(
    provider: FakeProvider, book: Any, sink: OtlpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "600")  # the stuck export never gives up
    provider.default = ok("fine", 3, 1)
    sink.gate.clear()  # the collector takes the first span and does not answer yet
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        first = lm.complete("Hi", model="gpt-4o", max_tokens=5)
        sink.wait_for_requests("/v1/traces", 1)  # the worker is stuck sending it
        calls = [lm.complete("Hi", model="gpt-4o", max_tokens=5) for _ in range(3)]
    assert [r.status for r in calls] == ["ok"] * 3  # the calls never waited for the queue
    assert len([w for w in said if issubclass(w.category, _otel.OtelWarning)]) == 1
    sink.gate.set()
    spans = sent(sink, 2)
    ids = [s["attributes"]["llm_magic.call_id"] for s in spans]
    assert ids == [first.call_id, calls[-1].call_id]  # the 2 between: dropped by the full queue
    assert _otel.status_line().endswith("2 spans sent, 2 dropped")


# -- backfill ---------------------------------------------------------------------------------
def test_to_otel_sends_old_rows_with_their_own_times(
    provider: FakeProvider, book: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider.default = ok("old answer", 6, 2)
    lm.complete("first", model="gpt-4o", max_tokens=5)
    between = datetime.now(timezone.utc)
    lm.complete("second", model="gpt-4o", max_tokens=5)
    df = rows(book)
    with OtlpSink() as receiver:
        assert book.to_otel(endpoint=receiver.url) == 2
        spans = by_call(receiver.wait_for_spans(2))
        for call_id, row in df.iterrows():
            assert spans[call_id]["trace_id"] == row.trace_id
            assert spans[call_id]["start_ns"] == ns(row.ts_start)
            assert spans[call_id]["end_ns"] == ns(row.ts_end)
            assert spans[call_id]["attributes"]["gen_ai.usage.cost.amount"] == pytest.approx(
                row.cost_usd
            )
            assert "server.address" not in spans[call_id]["attributes"]  # not in the row
        assert book.to_otel(since=between, endpoint=receiver.url) == 1
        assert (
            book.to_otel(since=between.date().isoformat(), endpoint=receiver.url + "/v1/traces")
            == 2
        )
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)  # configured by env
        assert book.to_otel(since=between) == 1
        assert len(receiver.wait_for_spans(6)) == 6  # 2 + 1 + 2 + 1


def test_to_otel_bad_input_is_one_line(book: Any) -> None:
    with pytest.raises(errors.UsageProblem, match="pass endpoint="):
        book.to_otel()
    with pytest.raises(errors.UsageProblem, match="not a date or time"):
        book.to_otel(since="yesterday", endpoint="http://127.0.0.1:9")

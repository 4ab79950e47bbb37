"""The one object that drives a call (``core.start`` → ``Stream``) against a scripted OpenAI
provider on 127.0.0.1: it keeps its chunks, its Result is a view of the call's ledger row, an
interrupt records the partial answer once, and ``check_request`` checks without sending."""

from __future__ import annotations

import gc
import math
from dataclasses import fields

import pytest

import llm_magic as lm
from llm_magic import core
from llm_magic.record import tokens_per_second
from tests.fakekeys import fake_key
from tests.fakeprovider import FakeProvider, ok, status

KEY = fake_key("STREAMKEY")


@pytest.fixture
def provider_keys() -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY}


def posts(server: FakeProvider) -> list:  # type: ignore[type-arg]
    return [r for r in server.requests if r.method == "POST"]


def rows(path: object) -> list[dict]:  # type: ignore[type-arg]
    return lm.ledger(str(path)).df.to_dict("records")


def test_a_stream_keeps_its_chunks_and_its_result_is_its_ledger_row(provider, clean_env) -> None:
    provider.script(ok(chunks=("Hel", "lo", " there"), input_tokens=7, output_tokens=3))
    s = lm.stream("Hi", model="gpt-4o", max_tokens=8, agent="a1")
    assert s.result is None and not posts(provider)  # nothing is sent before it is iterated
    got = list(s)
    assert got == ["Hel", "lo", " there"] and s.chunks == got and s.text == "Hello there"
    result = s.result
    assert result is not None and result.record is not None
    [row] = rows(clean_env)
    assert row["call_id"] == result.call_id == result.record.call_id
    assert (row["input_tokens"], row["output_tokens"], row["agent"]) == (7, 3, "a1")
    for f in fields(result):  # every Result field the row also has: the same value
        if f.name in row and f.name not in ("text", "notes", "record"):
            mine, theirs = getattr(result, f.name), row[f.name]
            if isinstance(mine, float) and math.isnan(mine):
                assert theirs is None or math.isnan(theirs), f.name
            else:
                assert mine == theirs, f.name
    tps = tokens_per_second(3, result.latency_s, result.ttft_s)
    assert row["output_tps"] == pytest.approx(tps)
    assert list(s) == [] and s.result is result  # exhausted: stays done


def test_interrupt_mid_answer_records_the_partial_answer_once(provider, clean_env) -> None:
    words = [f"w{i} " for i in range(200)]
    provider.script(ok(chunks=words, input_tokens=5, output_tokens=200, chunk_delay=0.02))
    s = core.start(core.Request("Tell me a story", model="gpt-4o", max_tokens=400))
    first = next(s)
    result = s.interrupt()
    assert result is not None and result.status == "interrupted"
    assert result.text.startswith(first) and "response interrupted" in result.notes
    assert s.interrupt() is result and list(s) == []  # once: a second stop changes nothing
    [row] = rows(clean_env)
    assert (row["status"], row["call_id"]) == ("interrupted", result.call_id)
    assert 1 <= row["output_tokens"] < 200


def test_a_stream_stopped_before_it_was_sent_records_nothing(provider, clean_env) -> None:
    s = lm.stream("Hi", model="gpt-4o", max_tokens=8)
    assert s.interrupt() is None and list(s) == []
    assert posts(provider) == [] and rows(clean_env) == []


def test_ctrl_c_in_on_text_records_the_partial_call_and_raises_interrupted(
    provider, clean_env
) -> None:
    provider.script(ok(chunks=("one ", "two ", "three"), input_tokens=5, output_tokens=3))
    seen: list[str] = []

    def show(chunk: str) -> None:
        seen.append(chunk)
        raise KeyboardInterrupt

    with pytest.raises(lm.errors.Interrupted) as caught:
        lm.complete("Count", model="gpt-4o", max_tokens=8, on_text=show)
    result = caught.value.result
    assert seen == ["one "] and result.status == "interrupted" and result.text == "one "
    assert [r["status"] for r in rows(clean_env)] == ["interrupted"]


def test_a_dropped_stream_mid_answer_is_recorded_interrupted(provider, clean_env) -> None:
    provider.script(ok(chunks=[f"w{i} " for i in range(100)], output_tokens=100, chunk_delay=0.02))
    s = lm.stream("Hi", model="gpt-4o", max_tokens=200)
    for _ in s:
        break  # the loop is left: nobody reads the rest
    del s
    gc.collect()
    assert [r["status"] for r in rows(clean_env)] == ["interrupted"]


def test_a_failed_call_raises_with_its_record_and_the_stream_keeps_it(provider, clean_env) -> None:
    provider.script(status(401))
    s = lm.stream("Hi", model="gpt-4o", max_tokens=8)
    with pytest.raises(lm.errors.AuthError) as caught:
        list(s)
    assert s.result is caught.value.result  # type: ignore[attr-defined]
    assert s.result is not None and s.result.status == "error"
    assert KEY not in str(caught.value) and "OPENAI_API_KEY" in str(caught.value)
    assert [r["status"] for r in rows(clean_env)] == ["error"]


def test_check_request_checks_without_sending(provider, clean_env) -> None:
    route = core.check_request(core.Request("Hi", model="gpt-4o", max_tokens=100))
    assert route.model == "gpt-4o" and KEY not in repr(route)
    with pytest.raises(lm.errors.UsageProblem, match="maximum output"):
        core.check_request(core.Request("Hi", model="gpt-4o", max_tokens=10**6))
    with pytest.raises(lm.errors.UsageProblem):
        core.check_request(core.Request("Hi", model="no-such-model-xyz"))
    with pytest.raises(lm.errors.UsageProblem, match="empty"):
        core.check_request(core.Request("  ", model="gpt-4o"))
    assert posts(provider) == [] and rows(clean_env) == []

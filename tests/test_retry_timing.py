"""Retry timing as the provider sees it: the SPEC's reliability table checked against the
arrival times of the requests on the wire (``provider.requests[i].t``), not against our own clock.

Every wait is multiplied by ``LLM_MAGIC_RETRY_SCALE`` (set per test); the code path is the
production one. ``retry.decide`` is wrapped by a spy that only records what the policy chose
(the real function still decides), so each gap can be checked against the wait actually drawn:
the gap is never shorter than the wait, and only a little longer (client-side overhead).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import llm_magic as lm
from llm_magic import config, gateway, retry
from tests.fakekeys import fake_key
from tests.fakeprovider import (
    FakeProvider,
    Hang,
    RecordedRequest,
    cut_after,
    hang,
    http_date,
    malformed,
    ok,
    refused_url,
    status,
    stream_error,
)

OPENAI_KEY = fake_key("TIMINGOPENAI")
ANTHROPIC_KEY = fake_key("TIMINGANTHROPIC", kind="ant-test", tail=14)
PRIMARY = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-5"}
KEY_OF = {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY}
# A fallback on the *other* provider: it has its own key, so "same key" below means "a retry".
OTHER = {"openai": "claude-haiku-4-5", "anthropic": "gpt-4o-mini"}

# The shortest wait anywhere in the reliability table (429 after attempt 1, and 500): 2 s.
MIN_POLICY_WAIT_S = 2.0
# Client-side time between a failed response and the next request leaving (litellm raising,
# our translation, the ledger, building the next call): 20-125 ms seen once warm on a quiet
# machine. The upper bounds allow this much, or more on a loaded machine: see `allowance`.
SLACK_S = 0.3


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Decided:
    """One call of the real ``retry.decide``, as seen by the spy."""

    error_type: str
    status: int | None
    attempt: int
    retry: bool
    wait_s: float
    fallback: bool


@pytest.fixture(scope="module", autouse=True)
def _warm_error_paths() -> None:
    """litellm loads its error machinery on the first failure of each kind (0.9-2.6 s seen):
    pay that here, not inside a measured gap."""
    with FakeProvider() as server:
        for model, base in (
            ("openai/gpt-4o", server.openai_base),
            ("anthropic/claude-sonnet-4-5", server.anthropic_base),
        ):
            behaviours: list[Any] = [status(429), status(500), cut_after(0), stream_error(0)]
            behaviours += [hang(1.0), ok("warm")]
            for behaviour in behaviours:
                server.script(behaviour)
                timeout = 0.1 if isinstance(behaviour, Hang) else 10.0
                with contextlib.suppress(lm.errors.ProviderError):
                    for _ in gateway.stream_chat(
                        model=model,
                        messages=[{"role": "user", "content": "warm up"}],
                        max_tokens=4,
                        temperature=0.0,
                        api_base=base,
                        api_key=fake_key("WARMUP"),
                        timeout=timeout,
                    ):
                        pass


@pytest.fixture
def provider_keys() -> dict[str, str]:
    """Both wire formats on one fake provider, one key each (no rotation skipping a wait)."""
    return {"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}


@pytest.fixture
def decisions(monkeypatch: pytest.MonkeyPatch) -> list[Decided]:
    """Record every decision of the retry policy (the real ``decide`` still makes it)."""
    seen: list[Decided] = []
    real = retry.decide

    def spy(err: lm.errors.ProviderError, attempt: int, rng: Any = None) -> retry.Decision:
        decision = real(err, attempt, rng)
        seen.append(
            Decided(
                err.error_type,
                err.status,
                attempt,
                decision.retry,
                decision.wait_s,
                decision.fallback,
            )
        )
        return decision

    monkeypatch.setattr(retry, "decide", spy)
    return seen


def use_scale(monkeypatch: pytest.MonkeyPatch, scale: float) -> float:
    monkeypatch.setenv("LLM_MAGIC_RETRY_SCALE", str(scale))
    config.reload_settings()
    return scale


def use_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config.reload_settings()


def allowance(started: float, first: RecordedRequest) -> float:
    """How much later than its chosen wait a request may leave: SLACK_S on a quiet machine,
    else 3x the time this same test took to get its first request out (``first.t - started``:
    planning, the ledger, building the call), a baseline that a loaded machine slows alike.
    The upper bounds are thus ratios to the test's own pace, never a fixed wall-clock time."""
    return max(SLACK_S, 3 * (first.t - started))


def gaps(calls: Sequence[RecordedRequest]) -> list[float]:
    return [b.t - a.t for a, b in zip(calls, calls[1:], strict=False)]


def rows(path: Path):  # type: ignore[no-untyped-def]
    return lm.ledger(str(path)).df


def assert_paced(calls: Sequence[RecordedRequest], scale: float) -> None:
    """Never a tight loop: two consecutive requests on the same key are at least the policy's
    shortest wait apart."""
    last: dict[str | None, float] = {}
    for call in calls:
        if call.api_key in last:
            gap = call.t - last[call.api_key]
            assert gap >= MIN_POLICY_WAIT_S * scale, (
                f"two requests on the same key {gap * 1000:.1f} ms apart "
                f"(minimum {MIN_POLICY_WAIT_S * scale * 1000:.0f} ms)"
            )
        last[call.api_key] = call.t


def fail(model: str, **options: Any) -> tuple[lm.errors.ProviderError, list[str]]:
    """Run a request that must fail; returns the error and the text chunks shown."""
    shown: list[str] = []
    with pytest.raises(lm.errors.ProviderError) as caught:
        lm.complete("Hi", model=model, max_tokens=8, on_text=shown.append, **options)
    return caught.value, shown


# --------------------------------------------------------------------------- 1. 429 backoff


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_429_backoff_doubles_with_jitter_then_stops_after_three_retries(
    provider, clean_env, monkeypatch, decisions, wire
) -> None:
    scale = use_scale(monkeypatch, 0.05)  # waits 0.1-0.2, 0.2-0.4, 0.4-0.8 s
    provider.script(*[status(429)] * 4, ok("never reached"))
    started = time.monotonic()
    err, shown = fail(PRIMARY[wire])
    elapsed = time.monotonic() - started

    assert isinstance(err, lm.errors.RateLimited) and err.status == 429 and not shown
    calls = provider.completions()
    assert len(calls) == 4 and provider.pending() == 1  # 1 try + 3 retries, then stop
    assert {c.api_key for c in calls} == {KEY_OF[wire]}
    # the policy: 2^k x (1 + U[0,1)) after attempt k, nothing after the 4th
    assert [(d.attempt, d.retry) for d in decisions] == [
        (1, True),
        (2, True),
        (3, True),
        (4, False),
    ]
    jitter = []
    for k, d in enumerate(decisions[:3], start=1):
        assert 2**k * scale <= d.wait_s < 2 ** (k + 1) * scale
        jitter.append(d.wait_s / (2**k * scale) - 1)
    assert len({round(j, 9) for j in jitter}) > 1  # a fresh draw each time, not a constant
    # the wire: each gap is the drawn wait (never less), plus a little client overhead
    slack = allowance(started, calls[0])
    for k, (gap, d) in enumerate(zip(gaps(calls), decisions[:3], strict=True), start=1):
        assert gap >= d.wait_s >= 2**k * scale
        assert gap < d.wait_s + slack
        assert gap < 2 ** (k + 1) * scale + slack
    # the 4th decision's wait is only its key's cool-down: nobody waits for it
    assert elapsed >= sum(d.wait_s for d in decisions if d.retry)
    assert elapsed < sum(d.wait_s for d in decisions if d.retry) + 4 * slack
    assert_paced(calls, scale)

    row = rows(clean_env).iloc[-1]
    assert (row.status, row.error_type, row.http_status, row.attempts) == (
        "error",
        "rate_limited",
        429,
        4,
    )
    assert len(rows(clean_env)) == 1


# --------------------------------------------------------------------------- 2. Retry-After


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [
        pytest.param(lambda: 30, 30.0, 30.0, id="seconds"),
        # an HTTP date has whole seconds: 30 s from now parses as 29-30 s
        pytest.param(lambda: http_date(30), 28.5, 30.0, id="http-date"),
        pytest.param(lambda: 120, 60.0, 60.0, id="capped-at-60"),
    ],
)
def test_retry_after_longer_than_the_backoff_is_honoured(
    provider, clean_env, monkeypatch, decisions, wire, retry_after, low, high
) -> None:
    scale = use_scale(monkeypatch, 0.01)  # backoff 0.02-0.04 s; Retry-After 0.3 or 0.6 s
    provider.script(status(429, retry_after=retry_after()), ok("After the wait."))
    started = time.monotonic()
    result = lm.complete("Hi", model=PRIMARY[wire], max_tokens=8)
    assert (result.status, result.text, result.attempts) == ("ok", "After the wait.", 2)

    (decided,) = decisions
    assert decided.retry and low * scale - 1e-9 <= decided.wait_s <= high * scale + 1e-9
    first, second = provider.completions()
    gap = second.t - first.t
    assert gap >= low * scale  # not the 2-4 s backoff: the provider's longer Retry-After
    assert gap < high * scale + allowance(started, first)  # capped: 120 s is waited as 60 s
    assert_paced([first, second], scale)


# --------------------------------------------------------------------------- 3. 5xx waits


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("code", "wait", "retries", "error_type"),
    [
        (500, 2.0, 2, "server_error"),
        (503, 5.0, 1, "server_error"),
        # Anthropic's 529 reaches litellm as a 500 whose provider_status_code is 529
        (529, 10.0, 1, "overloaded"),
    ],
)
def test_server_errors_wait_the_table_time_then_stop(
    provider, clean_env, monkeypatch, decisions, wire, code, wait, retries, error_type
) -> None:
    scale = use_scale(monkeypatch, 0.03)  # 0.06 / 0.15 / 0.3 s
    provider.script(*[status(code)] * (retries + 1), ok("never reached"))
    started = time.monotonic()
    err, _ = fail(PRIMARY[wire])
    assert (err.error_type, err.status) == (error_type, code)

    calls = provider.completions()
    assert len(calls) == retries + 1 and provider.pending() == 1
    assert [d.retry for d in decisions] == [True] * retries + [False]
    for gap, d in zip(gaps(calls), decisions[:-1], strict=True):
        assert d.wait_s == pytest.approx(wait * scale)
        assert wait * scale <= gap < wait * scale + allowance(started, calls[0])
    assert_paced(calls, scale)
    row = rows(clean_env).iloc[-1]
    assert (row.status, row.http_status, row.attempts) == ("error", code, retries + 1)


def test_anthropic_overloaded_event_before_the_first_token_is_a_529(
    provider, clean_env, monkeypatch, decisions
) -> None:
    scale = use_scale(monkeypatch, 0.03)
    provider.script(*[stream_error(after_chunks=0, code=529)] * 3, ok("never reached"))
    err, shown = fail("claude-sonnet-4-5")
    assert not shown
    calls = provider.completions()
    assert len(calls) == 2  # one retry, as for an HTTP 529
    assert gaps(calls)[0] >= 10 * scale
    assert (err.error_type, err.status) == ("overloaded", 529)


# --------------------------------------------------------------------------- 4. no retry


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("code", "error_type"),
    [(400, "context_length"), (401, "auth"), (403, "auth")],
)
def test_context_length_and_auth_errors_are_sent_once_and_never_fall_back(
    provider, clean_env, monkeypatch, decisions, wire, code, error_type
) -> None:
    scale = use_scale(monkeypatch, 0.01)
    use_env(monkeypatch, FALLBACK_MODELS=OTHER[wire])
    provider.script(status(code), ok("fallback must not answer"))
    err, _ = fail(PRIMARY[wire])
    assert (err.error_type, err.status) == (error_type, code)

    calls = provider.completions()
    assert len(calls) == 1 and calls[0].model == PRIMARY[wire]
    assert not [c for c in calls if c.model == OTHER[wire]]  # the fallback got nothing
    assert [(d.retry, d.fallback) for d in decisions] == [(False, False)]
    df = rows(clean_env)
    assert len(df) == 1
    row = df.iloc[0]
    assert (row.model, row.status, row.error_type, row.http_status, row.attempts) == (
        PRIMARY[wire],
        "error",
        error_type,
        code,
        1,
    )
    assert_paced(calls, scale)


# --------------------------------------------------------------------------- 5. fallbacks


def assert_fell_back(
    result: lm.Result, df: Any, *, error_type: str, attempts: int, http_status: int | None
) -> None:
    assert (result.status, result.text) == ("ok", "Fallback answer.")
    assert (result.model, result.fallback_from, result.attempts) == (
        "claude-haiku-4-5",
        "gpt-4o",
        1,
    )
    assert any(
        n.startswith(f"gpt-4o failed ({error_type}") and "answered by the next fallback" in n
        for n in result.notes
    ), result.notes
    assert list(df.model) == ["gpt-4o", "claude-haiku-4-5"]
    assert df.trace_id.nunique() == 1 and df.trace_id.iloc[0] == result.trace_id
    failed, answered = df.iloc[0], df.iloc[1]
    assert (failed.status, failed.error_type, failed.attempts) == ("error", error_type, attempts)
    if http_status is not None:
        assert failed.http_status == http_status
    assert pd.isna(failed.fallback_from)  # the first model tried falls back from nothing
    assert (answered.status, answered.fallback_from, answered.attempts) == ("ok", "gpt-4o", 1)
    assert answered.requested_model == "gpt-4o" and answered.call_id == result.call_id


@pytest.mark.parametrize(
    ("script", "error_type", "http_status", "attempts", "wait"),
    [
        pytest.param([status(429)] * 4, "rate_limited", 429, 4, None, id="429-exhausted"),
        pytest.param([status(500)] * 3, "server_error", 500, 3, 2.0, id="500-exhausted"),
        pytest.param([status(503)] * 2, "server_error", 503, 2, 5.0, id="503-after-retry"),
        pytest.param([status(529)] * 2, "overloaded", 529, 2, 10.0, id="529-after-retry"),
        pytest.param([hang(3)], "timeout", None, 1, None, id="timeout"),
    ],
)
def test_the_next_model_answers_when_retries_are_spent(
    provider, clean_env, monkeypatch, decisions, script, error_type, http_status, attempts, wait
) -> None:
    scale = use_scale(monkeypatch, 0.02)
    use_env(monkeypatch, FALLBACK_MODELS="claude-haiku-4-5", LLM_MAGIC_TIMEOUT_S="0.5")
    provider.script(*script, ok("Fallback answer."))
    started = time.monotonic()
    result = lm.complete("Hi", model="gpt-4o", max_tokens=8)
    assert_fell_back(
        result,
        rows(clean_env),
        error_type=error_type,
        attempts=attempts,
        http_status=http_status,
    )

    calls = provider.completions()
    assert [c.model for c in calls] == ["gpt-4o"] * attempts + ["claude-haiku-4-5"]
    assert [c.api_key for c in calls] == [OPENAI_KEY] * attempts + [ANTHROPIC_KEY]
    spacing = gaps(calls)
    slack = allowance(started, calls[0])
    for gap, d in zip(spacing[:-1], decisions[:-1], strict=True):  # the retries on gpt-4o
        assert d.retry and d.wait_s <= gap < d.wait_s + slack
        if wait is not None:
            assert d.wait_s == pytest.approx(wait * scale)
    assert decisions[-1].retry is False and decisions[-1].fallback is True
    # the fallback goes out at once after the last failure (or the 0.5 s timeout)
    timeout = 0.5 if error_type == "timeout" else 0.0
    assert timeout <= spacing[-1] < timeout + slack
    assert_paced(calls, scale)


def test_connection_refused_falls_back_at_once(provider, clean_env, monkeypatch, decisions) -> None:
    scale = use_scale(monkeypatch, 0.02)
    use_env(
        monkeypatch,
        OPENAI_API_BASE=refused_url() + "/v1",  # nothing listens: gpt-4o is refused
        FALLBACK_MODELS="claude-haiku-4-5",
    )
    provider.script(ok("Fallback answer."))
    result = lm.complete("Hi", model="gpt-4o", max_tokens=8)
    # refused: no retry, no wait, straight to the fallback
    assert [(d.error_type, d.retry, d.wait_s, d.fallback) for d in decisions] == [
        ("connection", False, 0.0, True)
    ]
    assert_fell_back(result, rows(clean_env), error_type="connection", attempts=1, http_status=None)
    calls = provider.completions()
    assert [(c.model, c.api_key) for c in calls] == [("claude-haiku-4-5", ANTHROPIC_KEY)]
    assert_paced(calls, scale)


# --------------------------------------------------------------------------- 6. broken streams


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("broken", "extra"),
    [
        pytest.param(cut_after(0), 0.0, id="cut-before-first-token"),
        pytest.param(hang(0.1), 0.1, id="closed-without-a-byte"),
    ],
)
def test_a_break_before_the_first_token_is_retried_like_a_500(
    provider, clean_env, monkeypatch, decisions, wire, broken, extra
) -> None:
    scale = use_scale(monkeypatch, 0.03)
    provider.script(broken, ok("Second try."))
    shown: list[str] = []
    started = time.monotonic()
    result = lm.complete("Hi", model=PRIMARY[wire], max_tokens=8, on_text=shown.append)
    assert (result.status, result.text, result.attempts) == ("ok", "Second try.", 2)
    assert "".join(shown) == "Second try."  # nothing of the broken attempt leaks in
    (decided,) = decisions
    assert (decided.error_type, decided.status) == ("server_error", 500)
    assert decided.wait_s == pytest.approx(2.0 * scale)
    first, second = provider.completions()
    gap = second.t - first.t
    assert extra + 2.0 * scale <= gap < extra + 2.0 * scale + allowance(started, first)
    assert_paced([first, second], scale)
    df = rows(clean_env)
    assert len(df) == 1 and (df.status.iloc[0], df.attempts.iloc[0]) == ("ok", 2)


def test_breaks_before_the_first_token_fall_back_when_retries_are_spent(
    provider, clean_env, monkeypatch, decisions
) -> None:
    scale = use_scale(monkeypatch, 0.02)
    use_env(monkeypatch, FALLBACK_MODELS="claude-haiku-4-5")
    provider.script(*[cut_after(0)] * 3, ok("Fallback answer."))
    started = time.monotonic()
    result = lm.complete("Hi", model="gpt-4o", max_tokens=8)
    assert_fell_back(
        result, rows(clean_env), error_type="server_error", attempts=3, http_status=500
    )
    calls = provider.completions()
    assert [c.model for c in calls] == ["gpt-4o"] * 3 + ["claude-haiku-4-5"]
    slack = allowance(started, calls[0])
    assert all(2.0 * scale <= g < 2.0 * scale + slack for g in gaps(calls)[:2])
    assert_paced(calls, scale)


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(cut_after(2, text="one two three four"), id="cut"),
        pytest.param(cut_after(2, text="one two three four", reset=True), id="reset"),
        pytest.param(malformed(after_chunks=2, text="one two three four"), id="malformed"),
        pytest.param(stream_error(after_chunks=2, text="one two three four"), id="error-event"),
    ],
)
def test_a_break_after_the_first_token_is_never_retried_and_keeps_the_text(
    provider, clean_env, monkeypatch, decisions, wire, broken
) -> None:
    scale = use_scale(monkeypatch, 0.01)
    use_env(monkeypatch, FALLBACK_MODELS=OTHER[wire])
    provider.script(broken, ok("must not be asked"), ok("must not be asked"))
    err, shown = fail(PRIMARY[wire])

    assert isinstance(err, lm.errors.StreamInterrupted)
    calls = provider.completions()
    assert len(calls) == 1 and calls[0].model == PRIMARY[wire]  # no retry, no fallback
    assert decisions == []  # not even offered to the retry policy: the text was shown
    text = "".join(shown)
    assert text == "one two"  # what the user saw...
    result = err.result  # type: ignore[attr-defined]
    assert (result.status, result.text, result.attempts) == ("interrupted", text, 1)
    assert "response interrupted" in result.notes
    df = rows(clean_env)
    assert len(df) == 1
    row = df.iloc[0]
    assert (row.status, row.response, row.attempts) == ("interrupted", text, 1)  # ...is kept
    assert row.output_tokens >= 1
    assert_paced(calls, scale)


# --------------------------------------------------------------------------- 7. pacing


@pytest.mark.parametrize("keys", [1, 3], ids=["one-key", "three-keys"])
@pytest.mark.parametrize(
    "script",
    [
        # Retry-After shorter than the backoff (0, or a date in the past) must not shorten it
        pytest.param(lambda: [status(429, retry_after=0)] * 4, id="429-retry-after-0"),
        pytest.param(
            lambda: [status(429, retry_after=http_date(-5)), status(429), ok("x")],
            id="429-date-in-the-past",
        ),
        # a key told to wait 10 s is not asked again before that, even when others rotate in
        pytest.param(
            lambda: [status(429, retry_after=10), status(429), status(429), ok("x")],
            id="429-retry-after-10",
        ),
        pytest.param(
            lambda: [status(500, retry_after=0), status(429, retry_after=0), ok("x")],
            id="500-then-429",
        ),
        pytest.param(lambda: [cut_after(0), cut_after(0), ok("x")], id="cuts"),
        pytest.param(lambda: [status(503, retry_after=0), status(503)], id="503"),
    ],
)
def test_never_a_tight_loop_on_one_key(
    provider, clean_env, monkeypatch, decisions, keys, script
) -> None:
    scale = use_scale(monkeypatch, 0.05)
    pool = [fake_key(f"PACING{i}") for i in range(keys)]
    monkeypatch.delenv("OPENAI_API_KEY")
    use_env(monkeypatch, OPENAI_API_KEYS=",".join(pool))
    provider.script(*script())
    with contextlib.suppress(lm.errors.ProviderError):
        lm.complete("Hi", model="gpt-4o", max_tokens=8)
    calls = provider.completions()
    assert len(calls) >= 2 and {c.api_key for c in calls} <= set(pool)
    assert len(decisions) in (len(calls), len(calls) - 1)  # one per failed attempt
    for d in decisions:  # no retry is ever scheduled below the policy's shortest wait
        assert not d.retry or d.wait_s >= MIN_POLICY_WAIT_S * scale
    # the wait chosen after attempt i holds for that key: rotation may only go to another one
    for i, d in enumerate(decisions):
        later = [c for c in calls[i + 1 :] if c.api_key == calls[i].api_key]
        if d.retry and later:
            assert later[0].t - calls[i].t >= d.wait_s
    assert_paced(calls, scale)


def test_a_key_told_to_wait_by_the_last_429_is_not_used_at_once_by_the_next_request(
    provider, clean_env, monkeypatch
) -> None:
    scale = use_scale(monkeypatch, 0.05)
    provider.script(
        status(429), status(429), status(429), status(429, retry_after=20), ok("Later.")
    )
    fail("gpt-4o")
    lm.complete("Again", model="gpt-4o", max_tokens=8)
    calls = provider.completions()
    assert len(calls) == 5 and {c.api_key for c in calls} == {OPENAI_KEY}
    assert calls[4].t - calls[3].t >= 20 * scale  # the provider said: not before 20 s

"""lm.experiment's reuse through the response cache: a re-run records one ``cached`` row per
reused call (copied by the database in one INSERT … SELECT, one transaction; cost 0, ``saved_usd``), sends nothing and reserves
nothing, while ``.df`` keeps the original calls' measurements; ``cache=True`` (or the session's
switch at temperature 0) answers a new experiment from earlier calls anywhere in the ledger,
repeat 0 only. SQLite and PostgreSQL (``ledger_url``)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
import pytest

import llm_magic as lm
from llm_magic import config
from llm_magic._expplan import Estimate
from llm_magic.experiments import Experiment
from llm_magic.store import Ledger
from tests.fakeprovider import FakeProvider, ok

IN_PRICE, OUT_PRICE = 1.0, 2.0  # $ per 1M tokens
COST = (12 * IN_PRICE + 3 * OUT_PRICE) / 1e6  # each answer: 12 tokens in, 3 out
CITIES = pd.DataFrame({"city": ["Paris", "Rome", "Oslo"]})


@pytest.fixture
def on_ledger(ledger_url: str, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    """The calls recorded in ``ledger_url`` (SQLite or PostgreSQL), gpt-4o-mini priced."""
    monkeypatch.setenv("LLM_MAGIC_LEDGER", ledger_url)
    config.reload_settings()
    book = lm.ledger(ledger_url)
    book.set_price("gpt-4o-mini", IN_PRICE, OUT_PRICE)
    provider.default = ok("Paris is the capital", input_tokens=12, output_tokens=3)
    return book


def run(name: str, **kw: Any) -> Experiment:
    kw.setdefault("progress", False)
    kw.setdefault("max_tokens", 100)
    kw.setdefault("template", "Capital of {city}?")
    exp = lm.experiment(
        kw.pop("prompts", CITIES), kw.pop("models", ["gpt-4o-mini"]), name=name, **kw
    )
    assert isinstance(exp, Experiment)
    return exp


def sent(fp: FakeProvider) -> int:
    return len(fp.completions())


@contextmanager
def inserts(book: Ledger) -> Iterator[list[int]]:
    """The number of rows of each INSERT into ``calls`` executed while inside."""
    from sqlalchemy import event

    seen: list[int] = []

    def before(conn: Any, clause: Any, multiparams: Any, params: Any, options: Any) -> None:
        table = getattr(clause, "table", None)
        if clause.is_insert and getattr(table, "name", None) == "calls":
            seen.append(len(multiparams) if isinstance(multiparams, list) and multiparams else 1)

    event.listen(book._engine, "before_execute", before)
    try:
        yield seen
    finally:
        event.remove(book._engine, "before_execute", before)


def test_a_rerun_records_a_cached_row_per_reused_call_in_one_insert(
    on_ledger: Ledger, provider: FakeProvider
) -> None:
    first = run("rerun")
    assert sent(provider) == 3 and first.made == 3
    with inserts(on_ledger) as batches:
        again = run("rerun")
    assert sent(provider) == 3  # no provider request
    # one INSERT … SELECT: the database copies the three rows (one statement, not one per call)
    assert batches == [1]
    assert on_ledger.reservations() == 0.0

    rows = on_ledger.df
    rows = rows[rows["experiment"] == "rerun"]
    made = rows[rows["status"] == "ok"].set_index("prompt_hash")
    cached = rows[rows["status"] == "cached"].set_index("prompt_hash")
    assert len(made) == 3 and len(cached) == 3
    assert set(cached.index) == set(made.index) and (cached["repeat"] == 0).all()
    assert (cached["cost_usd"] == 0.0).all() and (cached["attempts"] == 0).all()
    for h, orig in made.iterrows():
        row = cached.loc[h]
        assert row["saved_usd"] == pytest.approx(orig["cost_usd"]) and orig["cost_usd"] > 0
        assert (row["input_tokens"], row["output_tokens"]) == (12, 3)
        assert row["response"] == orig["response"] == "Paris is the capital"
        assert (
            row["request_hash"] == orig["request_hash"] and row["requested_model"] == "gpt-4o-mini"
        )

    # the experiment's data stays the original calls' measurements
    df = again.df.set_index("prompt_hash")
    assert df["reused"].all() and (df["status"] == "ok").all()
    assert again.made == 0 and again.reused == 3 and again.cached == 3
    for h, orig in made.iterrows():
        assert df.loc[h, "call_id"] == orig["call_id"]
        assert df.loc[h, "cost_usd"] == pytest.approx(orig["cost_usd"])
        assert df.loc[h, "latency_s"] == pytest.approx(orig["latency_s"])
        assert df.loc[h, "ttft_s"] == pytest.approx(orig["ttft_s"])
    assert again.summary().loc["gpt-4o-mini", "cost_usd"] == pytest.approx(3 * COST)
    assert again.saved_usd == pytest.approx(3 * COST)
    assert "0 made now, 3 reused, saved $0.000054; cost $0.000054" in again.headline()

    # the ledger's own summary counts them as cached, not as errors, with what they saved
    by_status = on_ledger.summary(by="status")
    assert by_status.loc["cached", "calls"] == 3 and by_status.loc["cached", "errors"] == 0
    assert by_status.loc["cached", "saved_usd"] == pytest.approx(3 * COST)
    assert by_status.loc["cached", "cost_usd"] == 0.0


def test_a_rerun_with_a_failed_call_makes_it_and_caches_the_rest(
    on_ledger: Ledger, provider: FakeProvider
) -> None:
    from tests.fakeprovider import status

    provider.script(ok("x", input_tokens=12, output_tokens=3), status(401))
    run("half", concurrency=1)
    again = run("half", concurrency=1)
    assert sent(provider) == 4 and again.made == 1 and again.cached == 2
    assert again.df["reused"].tolist() == [True, False, True]
    assert (again.df["status"] == "ok").all()


def test_cache_true_answers_a_new_experiment_from_earlier_calls_repeat_0_only(
    on_ledger: Ledger, provider: FakeProvider
) -> None:
    first_ids = set(run("first").df["call_id"])
    assert sent(provider) == 3
    est = lm.experiment(
        CITIES, ["gpt-4o-mini"], name="second", template="Capital of {city}?", max_tokens=100,
        repeats=2, cache=True, dry_run=True,
    )  # fmt: skip
    assert isinstance(est, Estimate) and sent(provider) == 3
    line = est.table.set_index("model").loc["gpt-4o-mini"]
    assert (line["calls"], line["cached"], line["reused"], line["to_run"]) == (6, 3, 0, 3)
    assert "3 call(s) to make, 0 reused, 3 from the response cache (cost 0)" in est.headline()

    second = run("second", repeats=2, cache=True)
    assert sent(provider) == 6  # repeat 1 of each prompt is made: repeats measure variance
    assert second.cached == 3 and second.made == 3
    assert second.saved_usd == pytest.approx(3 * COST)
    df = second.df
    r0, r1 = df[df["repeat"] == 0], df[df["repeat"] == 1]
    assert (r0["status"] == "cached").all() and r0["reused"].all()
    assert (r1["status"] == "ok").all() and not r1["reused"].any()
    assert set(r0["call_id"]).isdisjoint(first_ids)  # rows of its own
    # a cached answer shows the measurements of the call that made it (experiment "first")
    first = lm.ledger().df.query("experiment == 'first' and status == 'ok'").set_index("prompt")
    for _, row in r0.iterrows():
        orig = first.loc[row["prompt"]]
        assert row["cost_usd"] == pytest.approx(orig["cost_usd"])
        assert row["latency_s"] == pytest.approx(orig["latency_s"])
        assert row["answer"] == "Paris is the capital"
    assert second.summary().loc["gpt-4o-mini", "errors"] == 0

    # its re-run: repeat 1 reused from its own ok rows, repeat 0 from the cache again
    again = run("second", repeats=2, cache=True)
    assert sent(provider) == 6 and again.made == 0 and again.reused == 6 and again.cached == 6


def test_without_cache_a_new_experiment_makes_every_call(
    on_ledger: Ledger, provider: FakeProvider
) -> None:
    run("one")
    assert run("two").made == 3 and sent(provider) == 6  # default: the session switch is off
    assert run("three", cache=False).made == 3 and sent(provider) == 9


def test_the_session_switch_answers_temperature_0_only(
    on_ledger: Ledger, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    run("base")
    monkeypatch.setenv("LLM_MAGIC_CACHE", "1")
    config.reload_settings()
    assert run("switched").cached == 3 and sent(provider) == 3
    sampled = run("sampled", temperature=0.7)
    assert sampled.made == 3 and sampled.cached == 0 and sent(provider) == 6
    asked = run("asked", temperature=0.7, cache=True)  # asked explicitly: answered
    assert asked.cached == 3 and sent(provider) == 6
    assert math.isclose(asked.saved_usd, 3 * COST)


@pytest.mark.parametrize("store_text", [True, False], ids=["text", "no-text"])
def test_the_database_copy_writes_the_row_the_python_builder_makes(
    on_ledger: Ledger, provider: FakeProvider, store_text: bool
) -> None:
    """A re-run's ``cached`` rows are copied by the database (``copy_cached``); with
    OpenTelemetry on they are built in Python (``cached_record``). Both, from the same source
    call, read back equal in every column but the two new random ids."""
    from llm_magic import _expreuse, _respcache, _respstore
    from llm_magic._expplan import Job
    from llm_magic._expreads import calls_by_id
    from llm_magic._sql import row_values
    from llm_magic.core import Request
    from llm_magic.record import NAMES, utcnow

    first = run("parity", agent="bot", user="ann", tags={"team": "x"}, temperature=0.0)
    source = str(first.df["call_id"].iloc[1])
    hit = _respcache.record_of(calls_by_id(on_ledger, [source])[source])
    job = Job(1, "gpt-4o-mini", 0, str(hit.prompt), str(hit.prompt_hash))
    req = Request(
        prompt=job.prompt, model=job.model, max_tokens=100, agent="bot", user="ann",
        tags={"team": "x"}, experiment="parity", prompt_hash=job.prompt_hash, repeat=0,
    )  # fmt: skip
    row = _expreuse.Reuse._row(hit, req, utcnow(), 0.25, store_text)
    on_ledger.record_many([row])
    assert _respstore.copy_cached(on_ledger, [source], row_values(row), store_text) == 1

    cached = on_ledger.df.query("status == 'cached'")
    assert len(cached) == 2
    built, copied = (r.drop(["call_id", "trace_id"]) for _, r in cached.iterrows())
    pd.testing.assert_series_equal(built, copied, check_names=False)
    assert set(cached["call_id"]).isdisjoint({source}) and cached["call_id"].nunique() == 2
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in cached["trace_id"])
    # and they are what a cached row is: nothing paid, the original's cost saved
    assert (copied["cost_usd"], copied["attempts"], copied["agent"]) == (0.0, 0, "bot")
    assert copied["saved_usd"] == pytest.approx(COST) and copied["tags"] == {"team": "x"}
    if store_text:
        assert (copied["response"], copied["prompt"]) == (
            "Paris is the capital",
            "Capital of Rome?",
        )
    else:
        assert pd.isna(copied["response"]) and pd.isna(copied["prompt"])
    assert set(NAMES) - {"call_id", "trace_id"} <= set(built.index)

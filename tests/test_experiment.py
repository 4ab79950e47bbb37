"""lm.experiment: priced before it runs, resumable from the ledger (after a SIGKILL too), scored,
summarised, capped; lm.plots.pareto. The scripted provider answers with known usage, so every
cost is exact; the local model runs one small case."""

from __future__ import annotations

import _thread
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pandas as pd
import pytest

import llm_magic as lm
from llm_magic import config, errors
from llm_magic._expplan import Estimate
from llm_magic._expreads import experiment_calls
from llm_magic.experiments import Experiment
from tests.fakeprovider import FakeProvider, ok, status

ROOT = Path(__file__).resolve().parents[1]
IN_PRICE, OUT_PRICE = 1.0, 2.0  # $ per 1M tokens, set with %llm price: round figures
PER_TOKEN_IN, PER_TOKEN_OUT = IN_PRICE / 1e6, OUT_PRICE / 1e6


def sent_prompts(fp: FakeProvider) -> list[str]:
    """The user prompt of each completion request, in arrival order."""
    return [r.body["messages"][-1]["content"] for r in fp.completions()]


@pytest.fixture
def priced(provider: FakeProvider, book: Any) -> FakeProvider:
    book.set_price("gpt-4o-mini", IN_PRICE, OUT_PRICE)
    book.set_price("gpt-4o", IN_PRICE * 10, OUT_PRICE * 10)
    provider.default = ok("Paris is the capital", input_tokens=12, output_tokens=3)
    return provider


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "city": ["Paris", "Rome", "Oslo"],
            "expected": ["paris is the capital", "Rome", "capital"],
        }
    )


def run(**kw: Any) -> Experiment:
    kw.setdefault("progress", False)
    kw.setdefault("max_tokens", 100)
    exp = lm.experiment(kw.pop("prompts", frame()), kw.pop("models", ["gpt-4o-mini"]), **kw)
    assert isinstance(exp, Experiment)
    return exp


# -- priced before it runs ------------------------------------------------------------------------
def test_dry_run_shows_the_estimate_per_model_and_sends_nothing(
    priced: FakeProvider, book: Any
) -> None:
    import litellm

    est = lm.experiment(
        frame(),
        ["gpt-4o-mini", "gpt-4o"],
        name="capitals",
        template="Capital of {city}?",
        system="Answer briefly.",
        repeats=2,
        max_tokens=1000,
        dry_run=True,
    )
    assert isinstance(est, Estimate)
    assert priced.completions() == [] and len(book) == 0  # nothing sent, nothing recorded
    table = est.table.set_index("model")
    tokens = (
        sum(
            litellm.token_counter(
                model="gpt-4o-mini",
                messages=[
                    {"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": f"Capital of {c}?"},
                ],
            )
            for c in frame()["city"]
        )
        * 2
    )  # two repeats
    assert table.loc["gpt-4o-mini", "input_tokens"] == tokens
    assert table.loc["gpt-4o-mini", "to_run"] == 6 and table.loc["gpt-4o-mini", "reused"] == 0
    # worst case: every answer max_tokens long; expected: 256 tokens (no answers in the ledger)
    assert table.loc["gpt-4o-mini", "worst_usd"] == pytest.approx(
        tokens * PER_TOKEN_IN + 6 * 1000 * PER_TOKEN_OUT
    )
    assert table.loc["gpt-4o-mini", "expected_usd"] == pytest.approx(
        tokens * PER_TOKEN_IN + 6 * 256 * PER_TOKEN_OUT
    )
    assert table.loc["gpt-4o", "worst_usd"] == pytest.approx(
        10 * (tokens * PER_TOKEN_IN + 6 * 1000 * PER_TOKEN_OUT)
    )
    assert est.worst_usd == pytest.approx(table["worst_usd"].sum())
    assert "<table" in est._repr_html_() and "gpt-4o-mini" in est.text()


def test_expected_cost_uses_the_models_usual_answer_length(priced: FakeProvider) -> None:
    run(name="first", template="Capital of {city}?")  # 3 ok answers of 3 tokens each
    est = lm.experiment(["Hello"], ["gpt-4o-mini"], name="second", max_tokens=1000, dry_run=True)
    row = est.table.iloc[0]
    assert row["expected_usd"] == pytest.approx(
        row["input_tokens"] * PER_TOKEN_IN + 3 * PER_TOKEN_OUT
    )


def test_over_max_cost_is_refused_with_figures_and_options(priced: FakeProvider, book: Any) -> None:
    with pytest.raises(errors.UsageProblem) as refused:
        run(name="big", template="Capital of {city}?", max_cost_usd=0.0001, models=["gpt-4o"])
    message = str(refused.value)
    est = lm.experiment(
        frame(), ["gpt-4o"], name="big", template="Capital of {city}?", max_tokens=100, dry_run=True
    )
    expected = f"${est.expected_usd:.6f}".rstrip("0")
    assert expected in message and "max_cost_usd=$0.0001" in message
    for option in ("fewer prompts", "cheaper models", "lower max_tokens"):
        assert option in message
    assert "\n" not in message
    assert priced.completions() == [] and len(book) == 0


def test_over_the_days_remaining_budget_is_refused(
    priced: FakeProvider, book: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAILY_BUDGET_USD", "0.00001")
    config.reload_settings()
    with pytest.raises(errors.UsageProblem, match=r"left of today's budget"):
        run(name="budget", template="Capital of {city}?")
    assert priced.completions() == [] and len(book) == 0


def test_while_running_no_call_starts_that_could_pass_the_cap(
    priced: FakeProvider, book: Any
) -> None:
    # each answer really costs 12 in + 1000 out = $0.002012; the estimate expects 256 out
    priced.default = ok("long", input_tokens=12, output_tokens=1000)
    prompts = [f"p{i}" for i in range(10)]
    exp = run(prompts=prompts, name="capped", max_tokens=1000, max_cost_usd=0.008, concurrency=1)
    spent = float(book.df["cost_usd"].sum())
    assert len(priced.completions()) == 3  # a 4th call's worst case would pass $0.008
    assert spent == pytest.approx(3 * (12 + 1000 * 2) / 1e6) and spent <= 0.008
    summary = exp.summary().loc["gpt-4o-mini"]
    assert summary["calls"] == 3 and summary["not_run"] == 7
    assert exp.note is not None and "max_cost_usd" in exp.note


# -- results, scores, summary ---------------------------------------------------------------------
def test_df_and_summary_are_the_ledgers_figures(priced: FakeProvider, book: Any) -> None:
    exp = run(
        name="capitals",
        models=["gpt-4o-mini", "gpt-4o"],
        template="Capital of {city}?",
        repeats=2,
        score="contains",
    )
    df = exp.df
    assert len(df) == 3 * 2 * 2 and len(priced.completions()) == 12
    assert list(df.columns[:4]) == ["city", "expected", "prompt", "prompt_hash"]
    assert (df["status"] == "ok").all() and not df["reused"].any()
    assert set(df["answer"]) == {"Paris is the capital"}
    mini = df[df["model"] == "gpt-4o-mini"]
    assert mini["cost_usd"].tolist() == pytest.approx([(12 * 1 + 3 * 2) / 1e6] * 6)
    # contains, ignoring case: Paris and Oslo ("capital") match, Rome does not
    assert df.groupby("city")["score"].mean().to_dict() == {"Oslo": 1.0, "Paris": 1.0, "Rome": 0.0}

    ledger = book.df
    rows = ledger[ledger["experiment"] == "capitals"]
    assert len(rows) == 12 and set(rows["repeat"]) == {0, 1}
    summary = exp.summary()
    for model in ("gpt-4o-mini", "gpt-4o"):
        mine = rows[rows["requested_model"] == model]
        line = summary.loc[model]
        assert line["calls"] == 6 and line["errors"] == 0
        assert line["cost_usd"] == pytest.approx(mine["cost_usd"].sum())
        assert line["cost_per_100_usd"] == pytest.approx(mine["cost_usd"].mean() * 100)
        assert line["mean_score"] == pytest.approx(4 / 6)
        p50, p95 = np.percentile(mine["latency_s"], [50, 95])
        assert line["latency_p50_s"] == pytest.approx(p50)
        assert line["latency_p95_s"] == pytest.approx(p95)
    html = exp._repr_html_()
    assert "<table" in html and "gpt-4o-mini" in html


def test_exact_and_function_scores(priced: FakeProvider) -> None:
    exact = run(name="exact", template="Capital of {city}?", score="exact")
    assert exact.df["score"].tolist() == [1.0, 0.0, 0.0]  # case and spaces ignored, nothing else

    seen: list[str] = []

    def score(answer: str, row: pd.Series) -> float:
        seen.append(row["city"])
        return len(answer) / len(row["city"])

    scored = run(name="fn", template="Capital of {city}?", score=score)
    assert sorted(seen) == ["Oslo", "Paris", "Rome"]
    assert scored.df["score"].tolist() == pytest.approx([20 / 5, 20 / 4, 20 / 4])


def test_a_list_or_series_of_prompts(priced: FakeProvider) -> None:
    exp = run(prompts=pd.Series(["a?", "b?"], name="question"), name="series")
    assert exp.df["question"].tolist() == ["a?", "b?"]
    assert sent_prompts(priced) == ["a?", "b?"] or sorted(sent_prompts(priced)) == ["a?", "b?"]


# -- resumable ------------------------------------------------------------------------------------
def test_a_rerun_reuses_ok_calls_and_retries_failed_ones(priced: FakeProvider) -> None:
    priced.script(ok("x", input_tokens=12, output_tokens=3), status(401))
    first = run(name="retry", template="Capital of {city}?", concurrency=1)
    assert first.df["status"].tolist() == ["ok", "error", "ok"]
    before = len(priced.completions())
    again = run(name="retry", template="Capital of {city}?", concurrency=1)
    assert sent_prompts(priced)[before:] == ["Capital of Rome?"]  # only the failed one
    assert again.reused == 2 and again.made == 1
    assert again.df["status"].tolist() == ["ok", "ok", "ok"]
    assert again.df["reused"].tolist() == [True, False, True]
    third = run(name="retry", template="Capital of {city}?")
    assert len(priced.completions()) == before + 1 and third.made == 0 and third.reused == 3


def test_a_finished_experiment_reruns_without_key_or_request(
    priced: FakeProvider, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run(name="done", template="Capital of {city}?")
    monkeypatch.delenv("OPENAI_API_KEY")  # "Restart & Run All" on a machine without the key
    config.reload_settings()
    capsys.readouterr()
    again = run(name="done", template="Capital of {city}?", progress=True)
    assert again.reused == 3 and again.made == 0 and len(priced.completions()) == 3
    assert (again.df["answer"] == "Paris is the capital").all()
    shown = capsys.readouterr().out
    assert "0 call(s) to make, 3 reused" in shown and "all reused" in shown


def test_the_estimate_is_shown_before_the_calls_and_a_bar_per_model(
    priced: FakeProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    run(
        name="shown",
        models=["gpt-4o-mini", "gpt-4o"],
        template="Capital of {city}?",
        progress=True,
    )
    out, err = capsys.readouterr()
    assert out.startswith("Experiment 'shown': 6 call(s) to make, 0 reused; expected $")
    assert "worst_usd" in out and "gpt-4o-mini" in out
    # tqdm: one bar per model, ending at 3/3 with the model's cost (3 × $0.000018 at $1/$2)
    assert "gpt-4o-mini: 100%" in err and "3/3" in err and "$0.000054" in err
    assert "gpt-4o: 100%" in err and "$0.00054" in err


def test_changed_parameters_are_new_calls(priced: FakeProvider) -> None:
    run(name="params", template="Capital of {city}?")
    run(name="params", template="Capital of {city}?", system="Be brief.")
    assert len(priced.completions()) == 6  # another system prompt: another identity


def test_fresh_starts_over(priced: FakeProvider, book: Any) -> None:
    first = run(name="fresh", template="Capital of {city}?")
    again = run(name="fresh", template="Capital of {city}?", fresh=True)
    assert len(priced.completions()) == 6
    assert not again.df["reused"].any() and again.made == 3
    assert set(again.df["call_id"]).isdisjoint(first.df["call_id"])
    assert len(experiment_calls(book, "fresh")) == 6


CHILD = """
import llm_magic as lm
lm.experiment([f"prompt {i}" for i in range(16)], ["gpt-4o-mini"], name="killed",
              concurrency=2, max_tokens=50, progress=False)
"""


@pytest.mark.timeout(900)  # a child process that imports litellm: slow on a loaded machine
def test_resume_after_sigkill_makes_each_missing_call_once(priced: FakeProvider, book: Any) -> None:
    priced.default = ok("one two three four", input_tokens=5, output_tokens=4, chunk_delay=0.1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD], env=env)
    try:
        deadline = time.monotonic() + 600
        while len(experiment_calls(book, "killed")) < 5:
            assert child.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    rows = experiment_calls(book, "killed")
    answered = set(rows.loc[rows["status"] == "ok", "prompt_hash"])
    asked_first = sent_prompts(priced)
    in_flight = len(asked_first) - len(rows)  # sent, never answered: SIGKILL leaves no row
    assert 5 <= len(answered) < 16 and 0 <= in_flight <= 2

    exp = run(prompts=[f"prompt {i}" for i in range(16)], name="killed", max_tokens=50)
    asked_again = sent_prompts(priced)[len(asked_first) :]
    assert exp.reused == len(answered) and exp.made == 16 - len(answered)
    assert len(asked_again) == 16 - len(answered)  # the provider hears each missing call once
    answered_prompts = set(exp.df.loc[exp.df["prompt_hash"].isin(answered), "prompt"])
    assert answered_prompts.isdisjoint(asked_again)
    assert len(sent_prompts(priced)) == 16 + in_flight
    final = experiment_calls(book, "killed")
    ok_rows = final[final["status"] == "ok"]
    assert len(ok_rows) == 16 and ok_rows["prompt_hash"].is_unique
    assert (exp.df["status"] == "ok").all()


def test_ctrl_c_keeps_what_finished_and_records_the_calls_in_flight(
    priced: FakeProvider, book: Any
) -> None:
    # Four quick answers, then slow ones (~10 s each): the Ctrl-C comes while slow calls are in
    # flight and others are still waiting, however loaded the machine is.
    fast = ok("one two three four five", input_tokens=5, output_tokens=5)
    priced.script(*[fast] * 4)
    priced.default = ok("one two three four five", input_tokens=5, output_tokens=5, chunk_delay=2.0)
    finished = threading.Event()

    def interrupt_after_three() -> None:
        while len(experiment_calls(book, "cut").query("status == 'ok'")) < 3:
            if finished.wait(0.02):
                return  # never interrupt after the run (it would land in a later test)
        if not finished.is_set():
            _thread.interrupt_main()

    # Ctrl-C as Python's own SIGINT handler delivers it: an earlier test of the run may have left
    # another handler (or SIG_IGN) in place, under which interrupt_main() does nothing.
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=interrupt_after_three, daemon=True).start()
    prompts = [f"q{i}" for i in range(12)]
    try:
        exp = run(prompts=prompts, name="cut", concurrency=2, max_tokens=50)
    finally:
        finished.set()
        signal.signal(signal.SIGINT, handler)
    statuses = exp.df["status"].value_counts().to_dict()
    assert statuses.get("ok", 0) >= 3 and statuses.get("not run", 0) >= 1
    assert exp.note is not None and exp.note.startswith("Interrupted")
    rows = experiment_calls(book, "cut")
    assert set(rows["status"]) <= {"ok", "interrupted"}
    assert len(rows) == len(priced.completions())  # every call sent has its row
    priced.default = fast
    again = run(prompts=prompts, name="cut", concurrency=2, max_tokens=50)
    assert (again.df["status"] == "ok").all() and again.reused == statuses["ok"]


def most_at_once(rows: pd.DataFrame) -> int:
    """The most calls of ``rows`` in flight at one moment (from their ledger start and end)."""
    events = sorted(
        [(t, 1) for t in rows["ts_start"]] + [(t, -1) for t in rows["ts_end"]],
        key=lambda e: (e[0], e[1]),  # an end before a start at the same instant
    )
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def test_calls_in_flight_are_bounded_per_provider(
    priced: FakeProvider, book: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    priced.default = ok("one two three four", input_tokens=5, output_tokens=4, chunk_delay=0.1)
    monkeypatch.setenv("LLM_MAGIC_CONCURRENCY_OPENAI", "2")
    run(prompts=[f"c{i}" for i in range(8)], name="bounded", concurrency=8)  # 8 threads
    assert most_at_once(book.df) == 2  # concurrent, never more than the provider's bound
    monkeypatch.setenv("LLM_MAGIC_CONCURRENCY_OPENAI", "zero")
    with pytest.raises(errors.UsageProblem, match="LLM_MAGIC_CONCURRENCY_OPENAI=4"):
        run(prompts=["c9"], name="bounded")


# -- bad input: one line, nothing sent -----------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "fix"),
    [
        ({"name": ""}, "needs a name"),
        ({"name": "x", "template": "Capital of {town}?"}, "columns are city, expected"),
        ({"name": "x", "prompts": ["a"], "score": "exact"}, "'expected' column"),
        ({"name": "x", "score": "fuzzy", "template": "{city}"}, "'exact', 'contains'"),
        ({"name": "x", "models": [], "template": "{city}"}, "at least one model"),
        ({"name": "x", "repeats": 0, "template": "{city}"}, "repeats"),
        ({"name": "x", "prompts": "one string"}, "list of prompts"),
        ({"name": "x", "prompts": frame()}, "template"),
        ({"name": "x", "template": "{city}", "models": ["no-such-model-xyz"]}, "no-such-model"),
    ],
)
def test_bad_input_is_one_line_naming_the_fix(
    priced: FakeProvider, book: Any, kwargs: dict[str, Any], fix: str
) -> None:
    with pytest.raises(errors.UsageProblem) as problem:
        run(**kwargs)
    assert fix in str(problem.value) and "\n" not in str(problem.value)
    assert priced.completions() == [] and len(book) == 0


# -- the local model ------------------------------------------------------------------------------
@pytest.mark.local_model
def test_local_model_small_experiment(local_model: str, book: Any) -> None:
    exp = run(
        prompts=["Say hi.", "Name a colour."],
        models=["local"],
        name="local",
        max_tokens=8,
        score=lambda answer, row: float(bool(answer.strip())),
    )
    assert (exp.df["status"] == "ok").all() and (exp.df["cost_usd"] == 0).all()
    assert exp.summary().loc["local", "mean_score"] == 1.0
    rows = len(book)
    again = run(prompts=["Say hi.", "Name a colour."], models=["local"], name="local", max_tokens=8)
    assert again.reused == 2 and again.made == 0 and len(book) == rows + 2  # two cached rows
    assert (again.df["status"] == "ok").all() and again.df["answer"].tolist() == exp.df[
        "answer"
    ].tolist()


# -- lm.plots.pareto ------------------------------------------------------------------------------
def test_pareto_one_labelled_point_per_model(priced: FakeProvider) -> None:
    from llm_magic import plots

    exp = run(
        name="pareto",
        models=["gpt-4o-mini", "gpt-4o"],
        template="Capital of {city}?",
        score="contains",
    )
    fig = plots.pareto(exp)
    (ax,) = fig.axes
    summary = exp.summary()
    points = {
        tuple(np.round(c.get_offsets()[0], 12)) for c in ax.collections if len(c.get_offsets())
    }
    expected = {
        (round(summary.loc[m, "cost_per_100_usd"], 12), round(summary.loc[m, "mean_score"], 12))
        for m in ("gpt-4o-mini", "gpt-4o")
    }
    assert points == expected
    labels = [t.get_text() for t in ax.texts]
    assert any(label.startswith("gpt-4o-mini (") for label in labels)
    assert any(label.startswith("gpt-4o (") for label in labels)
    assert "$" in ax.get_xlabel() and "score" in ax.get_ylabel()


def test_pareto_marker_area_follows_latency_and_names_what_it_leaves_out() -> None:
    from llm_magic import plots

    summary = pd.DataFrame(
        {
            "cost_per_100_usd": [0.5, 2.0, 1.0, math.nan],
            "mean_score": [0.6, 0.9, math.nan, 0.7],
            "latency_p50_s": [1.0, 4.0, 2.0, 1.0],
        },
        index=pd.Index(["fast", "slow", "unscored", "unpriced"], name="model"),
    )
    ax = plots.pareto(summary).axes[0]
    sizes = {
        tuple(c.get_offsets()[0]): float(c.get_sizes()[0])
        for c in ax.collections
        if len(c.get_offsets())
    }
    assert set(sizes) == {(0.5, 0.6), (2.0, 0.9)}
    assert sizes[(2.0, 0.9)] == pytest.approx(4 * sizes[(0.5, 0.6)])  # area ∝ latency
    assert "unscored" in ax.get_title() and "unpriced" in ax.get_title()
    with pytest.raises(errors.UsageProblem, match="lm.experiment"):
        plots.pareto(pd.DataFrame({"x": [1]}))

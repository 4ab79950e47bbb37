"""Comparison: all models at once (every call open at the provider together), side by side, a failure
stays in its own column; task routing picks the first model with a key."""

from __future__ import annotations

import pytest

import llm_magic as lm
from llm_magic import config
from llm_magic.comparison import compare
from llm_magic.display import CompareView
from llm_magic.models import route_for_task
from llm_magic.result import Result
from tests.conftest import published
from tests.fakekeys import fake_key
from tests.fakeprovider import ok, refused_url

KEY_O = fake_key("CMPOPENAI")
KEY_A = fake_key("CMPANTHROPIC", kind="ant-test", tail=14)


@pytest.fixture
def provider_keys() -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY_O, "ANTHROPIC_API_KEY": KEY_A}


def slow() -> object:
    return ok("one two three four five six seven eight", 5, 8, chunk_delay=0.1)


def test_compare_runs_concurrently_and_records_every_call(provider, clean_env) -> None:
    from llm_magic import gateway

    gateway._litellm()  # its one-off import (seconds) is not what is measured here
    provider.default = slow()
    # the provider answers none of them until all six are open at once: one after another
    # would leave at most one open (and the hold would give up after 30 s)
    provider.gather(6, timeout=30)
    frame = compare(
        "Count.", ["gpt-4o", "claude-sonnet-4-5", "gpt-4o-mini"], repeats=2, progress=False
    )
    assert len(frame) == 6 and set(frame.status) == {"ok"}
    assert set(frame.model) == {"gpt-4o", "claude-sonnet-4-5", "gpt-4o-mini"}
    assert provider.most_open == 6 and len(provider.completions()) == 6
    assert len(lm.ledger(str(clean_env)).df) == 6
    priced = frame.set_index("model").cost_usd
    assert (priced > 0).all()


def test_a_failing_model_does_not_stop_the_others(provider, clean_env) -> None:
    frame = compare("Hi", ["gpt-4o", "mistral/mistral-large-latest"], progress=False)
    by = frame.set_index("model")
    assert by.loc["gpt-4o", "status"] == "ok"
    assert by.loc["mistral/mistral-large-latest", "status"] == "error"
    assert "MISTRAL_API_KEY" in by.loc["mistral/mistral-large-latest", "error"]


def test_comparison_cell_side_by_side_with_a_table(
    provider, ip_ledger, clean_env, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_BASE", refused_url())  # claude is down
    config.reload_settings()
    provider.default = slow()
    ip_ledger.run_cell_magic("llm", "-m gpt-4o,claude-sonnet-4-5 -o cmp", "Count.")
    out = capsys.readouterr().out
    frame = ip_ledger.user_ns["cmp"]
    assert list(frame.model) == ["gpt-4o", "claude-sonnet-4-5"]
    assert list(frame.status) == ["ok", "error"]
    assert "=== gpt-4o ===" in out and "one two three" in out
    assert "ttft_s" in out and "output_tps" in out  # the table
    rows = lm.ledger(str(clean_env)).df
    assert sorted(rows.status) == ["error", "ok"]


def test_comparison_usage_errors_send_nothing(provider, ip_ledger, clean_env) -> None:
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="No key for mistral"):
        ip_ledger.run_cell_magic("llm", "-m gpt-4o,mistral/mistral-large-latest", "Hi")
    with pytest.raises(UsageError, match="each model once"):
        ip_ledger.run_cell_magic("llm", "-m gpt-4o,gpt-4o", "Hi")
    assert not [r for r in provider.requests if r.method == "POST"]


def test_widget_columns_show_live_token_counts() -> None:
    view = CompareView("widget", ["a", "b"], rate=1000)
    view.start()
    view.add("a", "hello ")
    view.add("a", "world")
    view.flush()
    head_a, out_a = view._cols["a"]
    assert "~2 tokens" in head_a.value and out_a.outputs[0]["text"] == "hello world"
    view.finish_one("b", None, "ConnectionFailed: down")
    assert "error: ConnectionFailed: down" in view._cols["b"][0].value
    done = Result(text="hello world", model="a", requested_model="a", output_tokens=2, cost_usd=0.0)
    view.finish_one("a", done, None)
    assert view._cols["a"][1].outputs[0]["data"]["text/markdown"].startswith("hello world")


def test_columns_in_a_kernel_end_as_static_side_by_side_html(front_end) -> None:
    view = CompareView("handle", ["a", "b"], rate=1000)
    view.start("starting the local model…")
    view.add("a", "x < y ")
    view.finish_one("b", None, "ConnectionFailed: down")
    done = Result(text="x < y done", model="a", requested_model="a", output_tokens=3, cost_usd=0.0)
    view.finish_one("a", done, None)
    view.close()
    steps = published(front_end)
    assert len({s["id"] for s in steps}) == 1  # one display, updated in place
    assert "⏳ starting the local model…" in steps[0]["data"]["text/plain"]
    final = steps[-1]["data"]
    html = final["text/html"]
    assert '<table class="llm-magic-compare"' in html and html.count("<td ") == 2
    assert "a · ~3 tokens · ok" in html and "x &lt; y done" in html  # escaped, static
    assert "b · ~0 tokens · error: ConnectionFailed: down" in html
    assert "⏳" not in html and "⏳" not in final["text/plain"]
    assert "=== a · ~3 tokens · ok ===\nx < y done" in final["text/plain"]


def test_task_routing_takes_the_first_model_with_a_key(monkeypatch) -> None:
    assert route_for_task("standard") == "local"  # no key at all
    monkeypatch.setenv("OPENAI_API_KEY", KEY_O)
    config.reload_settings()
    assert route_for_task("standard") == "gpt-4o"
    assert route_for_task("classify") == "gpt-4o-mini"
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY_A)
    config.reload_settings()
    assert route_for_task("standard") == "claude-sonnet-4-5"
    assert route_for_task("private") == "local"
    monkeypatch.setenv("LLM_MAGIC_ROUTE_CLASSIFY", "gpt-4o-mini,claude-haiku-4-5")
    assert route_for_task("classify") == "gpt-4o-mini"


def test_task_flag_routes_the_cell(provider, ip_ledger, clean_env, monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    config.reload_settings()
    provider.script(ok("positive", 5, 1))
    ip_ledger.run_cell_magic("llm", "-t classify -o r", "Sentiment of 'great!'")
    assert ip_ledger.user_ns["r"].model == "gpt-4o-mini"


VALIDATE_ONLY = """
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from llm_magic import config, local, models, store

ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "llm_magic")
ip.run_line_magic("config", "LLMMagics.display_mode = 'text'")
print("before", local.server().running())
route = models.resolve("local", config.settings(), store.ledger())
print("resolved", route.provider, route.api_base)
try:
    ip.run_cell_magic("llm", "-m local,gpt-4o", "Hi")
except UsageError as exc:
    print("usage", str(exc).split(":")[0])
print("after", local.server().running())
"""


def test_validating_a_comparison_starts_no_local_server(clean_env, tmp_path) -> None:
    """``-m local,gpt-4o`` without an OpenAI key is a usage error, found before the embedded
    model's server is started for nothing; resolving ``local`` alone starts nothing either.
    In a fresh process with its own data directory: no server of this session is visible."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "XDG_DATA_HOME": str(tmp_path / "data"),  # where a running server would be noted
        "LLM_MAGIC_WARM_UP": "0",
    }
    env.pop("LLM_MAGIC_LOCAL_URL", None)
    out = subprocess.run(
        [sys.executable, "-c", VALIDATE_ONLY], env=env, capture_output=True, text=True, timeout=240
    )
    said = [line for line in out.stdout.splitlines() if not line.startswith("Comparing")]
    assert said == [
        "before False",
        "resolved local None",  # its URL is asked for only when a call is sent
        "usage No key for openai",
        "after False",
    ], out.stderr[-2000:]


def test_a_table_row_measures_a_call_as_the_ledger_does() -> None:
    """One output_tps rule (NaN without a first token) and the ledger's column names."""
    import math

    from llm_magic.comparison import Outcome
    from llm_magic.record import NAMES, tokens_per_second

    timed = Result(text="a b", model="m", requested_model="m", output_tokens=6)
    timed.latency_s, timed.ttft_s = 2.0, 0.5
    row = Outcome("m", 0, timed, None).row()
    assert row["output_tps"] == tokens_per_second(6, 2.0, 0.5) == 4.0
    untimed = Result(text="", model="m", requested_model="m", output_tokens=6, latency_s=2.0)
    assert math.isnan(Outcome("m", 0, untimed, None).row()["output_tps"])  # no first token
    failed = Outcome("m", 0, None, "No key for openai").row()
    assert set(failed) == set(row)
    shared = set(row) - {"model", "repeat", "answered_by", "text", "error"}
    assert shared <= set(NAMES)  # every measure under the ledger's name for it

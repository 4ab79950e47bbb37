"""The response cache for notebooks (issue 13): ``cache=True`` / ``%%llm --cache`` /
``%config LLMMagics.cache`` / ``LLM_MAGIC_CACHE=1`` answer a request identical to an earlier
``ok`` call from the ledger (no provider request, a ``cached`` row at $0 with the
``saved_usd`` it avoided); anything that changes the answer is sent; ``%llm cache clear``
forgets without deleting; "Restart & Run All" of a cached notebook sends nothing."""

from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path

import pytest

import llm_magic as lm
from llm_magic import _respcache, config, errors
from llm_magic.core import Request
from tests.fakekeys import fake_key
from tests.fakeprovider import FakeProvider, ok, status

PROMPT = "What is the capital of France?"
ANSWER = "Paris is the capital of France."
# gpt-4o in the bundled price map: $2.50 / 1M input, $10 / 1M output
IN, OUT = 2.5e-6, 10e-6


def sent(fp: FakeProvider) -> int:
    return len(fp.completions())


def ask(**kw: object) -> lm.Result:
    options: dict[str, object] = {"model": "gpt-4o", "max_tokens": 50}
    options.update(kw)
    return lm.complete(PROMPT, **options)


@pytest.fixture
def on_ledger(ledger_url: str, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The provider, and the calls recorded in ``ledger_url`` (SQLite or PostgreSQL)."""
    monkeypatch.setenv("LLM_MAGIC_LEDGER", ledger_url)
    config.reload_settings()
    return lm.ledger(ledger_url)


def test_a_second_identical_call_is_answered_from_the_ledger(
    on_ledger, provider: FakeProvider
) -> None:
    provider.script(ok(ANSWER, input_tokens=12, output_tokens=7))
    first = ask(cache=True)
    assert sent(provider) == 1 and first.status == "ok"
    assert first.cost_usd == pytest.approx(12 * IN + 7 * OUT, abs=1e-12)

    again = ask(cache=True)
    assert sent(provider) == 1  # no provider request
    assert again.status == "cached" and again.cached
    assert again.text == first.text == ANSWER
    assert (again.input_tokens, again.output_tokens) == (12, 7)
    assert again.cost_usd == 0.0
    assert again.saved_usd == pytest.approx(first.cost_usd, abs=1e-15)
    assert again.attempts == 0 and again.model == "gpt-4o"
    assert again.request_hash == first.request_hash and first.request_hash
    assert not math.isnan(again.latency_s) and not math.isnan(again.ttft_s)
    assert "cached (saved $0.000100)" in again.footer()
    assert "$0 ·" in again.footer()

    df = on_ledger.df.sort_values("ts_start")
    assert list(df.status) == ["ok", "cached"]
    original, cached = df.iloc[0], df.iloc[1]
    assert cached.cost_usd == 0.0 and cached.saved_usd == pytest.approx(original.cost_usd)
    assert math.isnan(original.saved_usd)  # NULL except on cached rows
    assert cached.response == ANSWER and cached.request_hash == original.request_hash
    assert (cached.input_tokens, cached.output_tokens) == (12, 7)
    assert on_ledger.cost_today() == pytest.approx(first.cost_usd)  # paid once
    summary = on_ledger.summary()
    assert summary.loc["gpt-4o", "calls"] == 2 and summary.loc["gpt-4o", "errors"] == 0
    assert summary.loc["gpt-4o", "saved_usd"] == pytest.approx(first.cost_usd)
    assert summary.loc["gpt-4o", "cost_usd"] == pytest.approx(first.cost_usd)


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.5},
        {"max_tokens": 51},
        {"system": "Answer in French."},
        {"model": "gpt-4o-mini"},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
    ],
    ids=["temperature", "max_tokens", "system", "model", "tools"],
)
def test_anything_that_changes_the_answer_is_sent(
    provider: FakeProvider, book, change: dict[str, object]
) -> None:
    ask(cache=True)
    changed = ask(cache=True, **change)
    assert sent(provider) == 2 and changed.status == "ok"
    assert ask(cache=True, **change).status == "cached"  # and is cached in its turn
    assert sent(provider) == 2


def test_the_other_prompt_or_an_alias_of_the_same_model(provider: FakeProvider, book) -> None:
    ask(cache=True)
    assert (
        lm.complete("Another question", model="gpt-4o", max_tokens=50, cache=True).cached is False
    )
    assert sent(provider) == 2
    assert ask(cache=True, model="gpt4o").cached  # the built-in alias of gpt-4o: the same model
    assert sent(provider) == 2


def test_every_chat_row_carries_the_hash_of_its_request(provider: FakeProvider, book) -> None:
    """Written without cache=True too: lm.experiment finds earlier calls by it."""
    first = ask(system="Be brief.")
    expected = _respcache.request_hash_of(
        Request(prompt=PROMPT, model="gpt-4o", max_tokens=50, system="Be brief.")
    )
    assert first.request_hash == expected
    assert book.df.request_hash.tolist() == [expected]
    found = _respcache.lookup(book, expected)
    assert found is not None and found.call_id == first.call_id and found.response == first.text
    assert _respcache.lookup(book, "0" * 64) is None
    # defaults filled in as the call fills them (max_tokens by task), aliases followed
    other = lm.complete("Another question", model="gpt-4o")
    assert other.request_hash == _respcache.request_hash_of(
        Request(prompt="Another question", model="gpt4o")
    )
    assert other.request_hash != expected
    many = _respcache.lookup_many(book, [expected, other.request_hash, "0" * 64, expected])
    assert {h: r.call_id for h, r in many.items()} == {
        expected: first.call_id,
        other.request_hash: other.call_id,
    }


def test_off_by_default_and_the_session_switch_is_for_temperature_0(
    provider: FakeProvider, book, monkeypatch: pytest.MonkeyPatch
) -> None:
    ask()
    assert not ask().cached and sent(provider) == 2  # off by default
    monkeypatch.setenv("LLM_MAGIC_CACHE", "1")
    config.reload_settings()
    assert ask().cached and sent(provider) == 2  # the switch: temperature 0 is answered
    ask(temperature=0.7)
    assert not ask(temperature=0.7).cached and sent(provider) == 4  # sampled: always sent
    assert ask(temperature=0.7, cache=True).cached  # asked on the call: any temperature
    assert not ask(cache=False).cached and sent(provider) == 5  # turned off for one call


def test_failures_are_never_reused(provider: FakeProvider, book) -> None:
    provider.script(status(401))
    with pytest.raises(errors.AuthError):
        ask(cache=True)
    assert ask(cache=True).status == "ok" and sent(provider) == 2


def test_clear_forgets_without_deleting_a_row(on_ledger, provider: FakeProvider) -> None:
    ask(cache=True)
    assert ask(cache=True).cached
    said = _respcache.clear(on_ledger)
    assert "1 answer(s) will not be reused" in said
    assert len(on_ledger) == 2  # the ledger is the record: nothing deleted
    fresh = ask(cache=True)
    assert fresh.status == "ok" and sent(provider) == 2
    assert ask(cache=True).cached and sent(provider) == 2  # the new answer is reused
    assert "1 answer(s) to reuse, 1 call(s) answered" in _respcache.status(on_ledger)


def test_without_stored_text_it_says_once_that_it_cannot_work(
    provider: FakeProvider, book, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_MAGIC_STORE_TEXT", "0")
    config.reload_settings()
    first, second = ask(cache=True), ask(cache=True)
    assert sent(provider) == 2 and not second.cached
    assert any("LLM_MAGIC_STORE_TEXT" in n for n in first.notes)
    assert not any("LLM_MAGIC_STORE_TEXT" in n for n in second.notes)


def test_run_tools_is_always_sent(provider: FakeProvider, book) -> None:
    def today() -> str:
        """The date."""
        return "2026-11-30"

    provider.script(ok("It is the 30th."), ok("It is the 30th."))
    first = ask(cache=True, tools=[today], run_tools=True)
    again = ask(cache=True, tools=[today], run_tools=True)
    assert sent(provider) == 2 and not again.cached
    assert _respcache.NO_TOOLS in first.notes


# -- the magic -------------------------------------------------------------------------------


def test_the_magic_cache_flag_and_its_footer(ip_ledger, provider: FakeProvider, capsys) -> None:
    provider.script(ok(ANSWER, input_tokens=12, output_tokens=7))
    ip_ledger.run_cell_magic("llm", "-m gpt-4o --max-tokens 50 --cache -o a", PROMPT)
    ip_ledger.run_cell_magic("llm", "-m gpt-4o --max-tokens 50 --cache -o b", PROMPT)
    out = capsys.readouterr().out
    assert sent(provider) == 1
    a, b = ip_ledger.user_ns["a"], ip_ledger.user_ns["b"]
    assert (a.status, b.status) == ("ok", "cached") and b.text == ANSWER
    assert out.count(ANSWER) == 2
    assert "$0 · cached (saved $0.000100)" in out

    ip_ledger.run_line_magic("llm", "cache status")
    assert "1 answer(s) to reuse, 1 call(s) answered from the ledger, saved $0.000100" in (
        capsys.readouterr().out
    )
    ip_ledger.run_line_magic("llm", "cache clear")
    assert "will not be reused" in capsys.readouterr().out
    ip_ledger.run_cell_magic("llm", "-m gpt-4o --max-tokens 50 --cache -o c", PROMPT)
    assert ip_ledger.user_ns["c"].status == "ok" and sent(provider) == 2


def test_the_config_switch(ip_ledger, provider: FakeProvider, capsys) -> None:
    ip_ledger.run_line_magic("config", "LLMMagics.cache = True")
    for name in ("a", "b"):
        ip_ledger.run_cell_magic("llm", f"-m gpt-4o --max-tokens 50 -o {name}", PROMPT)
    for name in ("c", "d"):
        ip_ledger.run_cell_magic(
            "llm", f"-m gpt-4o --max-tokens 50 --temperature 0.9 -o {name}", PROMPT
        )
    statuses = [ip_ledger.user_ns[n].status for n in "abcd"]
    assert statuses == ["ok", "cached", "ok", "ok"] and sent(provider) == 3
    ip_ledger.run_line_magic("llm", "config")
    assert "cache = True" in capsys.readouterr().out


def test_a_bad_cache_action_is_a_usage_error(ip_ledger) -> None:
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="use status or clear"):
        ip_ledger.run_line_magic("llm", "cache drop")


# -- Restart & Run All -----------------------------------------------------------------------


def test_restart_and_run_all_of_a_cached_notebook_sends_nothing(
    fake_provider: FakeProvider, tmp_path: Path
) -> None:
    import nbformat
    from nbclient import NotebookClient

    key = fake_key("RCACHEKEY")
    ledger = tmp_path / "nb.sqlite"
    cells = [
        "%load_ext llm_magic",
        "%%llm -m gpt-4o --cache --max-tokens 40\nName a colour.",
        "%%llm -m gpt-4o --cache -s 'Be brief.' --temperature 0.8\nName a fruit.",
    ]
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DEFAULT_MODEL", "LLM_MAGIC_DISPLAY")},
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "OPENAI_API_BASE": fake_provider.openai_base,
        "OPENAI_API_KEY": key,
        "LLM_MAGIC_LEDGER": str(ledger),
        "LLM_MAGIC_WARM_UP": "0",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }

    def run_all() -> list[str]:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
        NotebookClient(nb, timeout=180, kernel_name="python3").execute(
            env=env, cwd=str(tmp_path)
        )  # a fresh kernel each time: "Restart & Run All"
        return [
            str(o.get("data", {}).get("text/markdown", ""))
            for cell in nb.cells[1:]
            for o in cell.outputs
            if o["output_type"] == "display_data"
        ]

    first = run_all()
    assert sent(fake_provider) == 2
    second = run_all()
    assert sent(fake_provider) == 2  # nothing sent the second time
    assert all("cached (saved $" in md for md in second) and len(second) == 2
    assert not any("cached" in md for md in first)
    with sqlite3.connect(ledger) as conn:
        rows = conn.execute("SELECT status, cost_usd, saved_usd FROM calls ORDER BY ts_start")
        statuses = [r[0] for r in rows]
    assert statuses == ["ok", "ok", "cached", "cached"]

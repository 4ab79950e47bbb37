"""Budget: alert once at the threshold, downgrade or refuse over budget, cap per request —
decided from the ledger before anything is sent."""

from __future__ import annotations

import uuid

import pytest

import llm_magic as lm
from llm_magic import config, errors
from llm_magic.budget import BudgetWarning
from llm_magic.store import utcnow
from tests.fakekeys import fake_key
from tests.fakeprovider import FakeProvider, ok


@pytest.fixture
def provider_keys() -> dict[str, str]:
    return {"OPENAI_API_KEY": fake_key("BUDGETKEY", tail=16)}


def spend(path, dollars: float) -> None:  # type: ignore[no-untyped-def]
    lm.ledger(str(path)).record(
        {
            "call_id": uuid.uuid4().hex,
            "trace_id": uuid.uuid4().hex,
            "ts_start": utcnow(),
            "status": "ok",
            "model": "gpt-4o",
            "cost_usd": dollars,
        }
    )


def posts(server: FakeProvider) -> int:
    return sum(1 for r in server.requests if r.method == "POST")


def test_alert_once_at_the_threshold(provider, clean_env, monkeypatch) -> None:
    monkeypatch.setenv("DAILY_BUDGET_USD", "1.00")
    config.reload_settings()
    spend(clean_env, 0.85)
    provider.script(ok("a", 3, 1), ok("b", 3, 1))
    with pytest.warns(BudgetWarning, match="85% of \\$1.00"):
        first = lm.complete("Hi", model="gpt-4o", max_tokens=5)
    assert any("Budget alert" in n for n in first.notes)
    second = lm.complete("Hi", model="gpt-4o", max_tokens=5)  # no second alert today
    assert not any("Budget alert" in n for n in second.notes)


def test_over_budget_downgrades(provider, clean_env, monkeypatch) -> None:
    monkeypatch.setenv("DAILY_BUDGET_USD", "1.00")
    monkeypatch.setenv("BUDGET_DOWNGRADE_MODEL", "gpt-4o-mini")
    config.reload_settings()
    spend(clean_env, 1.50)
    provider.script(ok("cheap", 3, 1))
    result = lm.complete("Hi", model="gpt-4o", max_tokens=5)
    assert result.model == "gpt-4o-mini" and result.requested_model == "gpt-4o"
    assert provider.requests[-1].model == "gpt-4o-mini"
    assert any("Over the daily budget" in n for n in result.notes)


def test_over_budget_without_downgrade_is_refused_and_nothing_sent(
    provider, ip_ledger, clean_env, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("DAILY_BUDGET_USD", "1.00")
    config.reload_settings()
    spend(clean_env, 1.00)
    ip_ledger.run_cell_magic("llm", "-m gpt-4o", "Hi")
    assert "Over the daily budget" in capsys.readouterr().err
    assert posts(provider) == 0
    row = lm.ledger(str(clean_env)).df.iloc[-1]
    assert (row.status, row.cost_usd, row.error_type) == ("refused_budget", 0.0, "budget")


def test_worst_case_over_the_request_cap_is_refused(provider, clean_env, monkeypatch) -> None:
    monkeypatch.setenv("MAX_COST_PER_REQUEST_USD", "0.01")
    config.reload_settings()
    # gpt-4o output: $10 / 1M tokens → 2,000 max_tokens can cost $0.02 > $0.01
    with pytest.raises(errors.BudgetRefused, match="MAX_COST_PER_REQUEST_USD"):
        lm.complete("Hi", model="gpt-4o", max_tokens=2000)
    assert posts(provider) == 0
    provider.script(ok("small", 3, 1))
    assert lm.complete("Hi", model="gpt-4o", max_tokens=500).status == "ok"  # $0.005 fits
    assert list(lm.ledger(str(clean_env)).df.status) == ["refused_budget", "ok"]


def test_budget_subcommand_shows_spend(ip_ledger, clean_env, capsys) -> None:
    spend(clean_env, 0.25)
    ip_ledger.run_line_magic("llm", "budget 2")
    assert "Spent today: $0.250000 of $2.00 (12%)" in capsys.readouterr().out


def test_alert_when_one_call_jumps_from_below_the_threshold_past_the_whole_budget(
    provider, clean_env, monkeypatch
) -> None:
    monkeypatch.setenv("DAILY_BUDGET_USD", "1.00")
    config.reload_settings()
    spend(clean_env, 0.77)
    # gpt-4o output is $10 / 1M tokens: the provider reports 39,000 tokens ($0.39), far more
    # than the worst case of max_tokens=100 reserved for it, taking spend to 116%
    provider.script(ok("a long answer", 3, 39_000), ok("b", 3, 1))
    with pytest.warns(BudgetWarning, match="116% of \\$1.00"):
        jump = lm.complete("Hi", model="gpt-4o", max_tokens=100)
    assert [n for n in jump.notes if n.startswith("Budget alert")] == [
        "Budget alert: $1.1600 spent today, 116% of $1.00"
    ]
    with pytest.raises(errors.BudgetRefused):  # over budget now: refused, and no second alert
        lm.complete("Hi", model="gpt-4o", max_tokens=5)


def test_no_alert_while_spend_stays_below_the_threshold(provider, clean_env, monkeypatch) -> None:
    monkeypatch.setenv("DAILY_BUDGET_USD", "1.00")
    config.reload_settings()
    spend(clean_env, 0.10)
    provider.script(ok("a", 3, 1_000))  # $0.01: 11% of the budget
    result = lm.complete("Hi", model="gpt-4o", max_tokens=2_000)
    assert not any("Budget alert" in n for n in result.notes)


def test_a_worst_case_over_what_remains_is_refused_or_downgraded(
    provider, clean_env, monkeypatch
) -> None:
    """Spend is under the budget, but this call's worst case does not fit in what is left."""
    monkeypatch.setenv("DAILY_BUDGET_USD", "1.00")
    config.reload_settings()
    book = lm.ledger(str(clean_env))
    book.set_price("gpt-4o", 0, 1000)  # $0.001 per output token: 600 max_tokens = $0.60
    spend(clean_env, 0.50)
    with pytest.raises(
        errors.BudgetRefused, match=r"could cost up to \$0.6000.*\$0.5000 of the daily"
    ):
        lm.complete("Hi", model="gpt-4o", max_tokens=600)
    assert posts(provider) == 0
    provider.script(ok("fits", 3, 1))
    assert lm.complete("Hi", model="gpt-4o", max_tokens=400).status == "ok"  # $0.40 fits
    monkeypatch.setenv("BUDGET_DOWNGRADE_MODEL", "gpt-4o-mini")
    config.reload_settings()
    provider.script(ok("cheap", 3, 1))
    result = lm.complete("Hi", model="gpt-4o", max_tokens=600)
    assert (result.model, result.requested_model) == ("gpt-4o-mini", "gpt-4o")
    assert provider.requests[-1].model == "gpt-4o-mini"
    assert any("using gpt-4o-mini instead" in n for n in result.notes)
    assert book.reservations() == 0  # every hold settled with its row


def test_an_unpriced_model_under_a_request_cap_is_refused(provider, clean_env, monkeypatch) -> None:
    monkeypatch.setenv("MAX_COST_PER_REQUEST_USD", "0.01")
    config.reload_settings()
    with pytest.raises(errors.BudgetRefused, match="no price is known.*%llm price") as info:
        lm.complete("Hi", model="openai/house-model-7", max_tokens=5)
    assert "\n" not in str(info.value)
    assert posts(provider) == 0
    lm.ledger(str(clean_env)).set_price("openai/house-model-7", 1, 2)
    provider.script(ok("priced now", 3, 1))
    assert lm.complete("Hi", model="openai/house-model-7", max_tokens=5).status == "ok"


def test_reservations_hold_settle_and_expire(ledger_url: str) -> None:
    """The ledger's side of a budget that holds across processes (SQLite and PostgreSQL)."""
    from llm_magic.store import Ledger

    book = Ledger(ledger_url)
    assert book.reserve("a", "m", 0.6, 1.0)[0]
    held, spent, others = book.reserve("b", "m", 0.5, 1.0)
    assert (held, spent, others) == (False, 0.0, pytest.approx(0.6))
    book.record(  # settles "a": the row and the end of its hold in one transaction
        {"call_id": "a", "trace_id": "t", "ts_start": utcnow(), "status": "ok", "cost_usd": 0.3}
    )
    assert book.reservations() == 0
    assert book.reserve("b", "m", 0.5, 1.0)[0]  # 0.3 spent + 0.5 fits
    assert not book.reserve("c", "m", 0.25, 1.0)[0]
    book.release("b")
    assert book.reserve("c", "m", 0.25, 1.0)[0]


DIES_HOLDING = """
import os, sys
from llm_magic.store import Ledger
Ledger(sys.argv[1]).reserve("doomed", "gpt-4o", 0.9, 1.0)
os._exit(0)  # killed before its call ended: the reservation is left behind
"""


def test_a_dead_process_reservation_is_dropped(clean_env) -> None:
    import subprocess
    import sys

    from llm_magic.store import Ledger

    book = Ledger(str(clean_env))
    subprocess.run([sys.executable, "-c", DIES_HOLDING, str(clean_env)], check=True)
    assert book.reservations() == pytest.approx(0.9)
    assert book.reserve("mine", "gpt-4o", 0.5, 1.0)[0]  # the dead one's hold is gone
    assert book.reservations() == pytest.approx(0.5)


HAMMER = """
import sys
import llm_magic as lm
from llm_magic import errors, gateway
gateway._litellm()  # its one-off import (seconds of CPU) happens before the start, not during
print("ready", flush=True)
sys.stdin.readline()
ok = refused = 0
for _ in range(int(sys.argv[1])):
    try:
        r = lm.complete("Hi", model="gpt-4o", max_tokens=5)
        ok += r.status == "ok"
    except errors.BudgetRefused:
        refused += 1
print(ok, refused, flush=True)
"""


@pytest.mark.timeout(1800)  # four interpreters on a loaded 2-core machine: slow is not wrong
def test_a_budget_holds_across_four_processes(fake_provider, clean_env, monkeypatch) -> None:
    """A budget worth exactly 10 calls; 4 processes × 8 calls at once: 10 answers, no more
    (before reservations: 13). Nothing here depends on speed: the processes start together
    (each waits, ready, for "go"), a locked ledger is waited for as long as it takes, and only
    a hang is bounded."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    book = lm.ledger(str(clean_env))
    book.set_price("gpt-4o", 0, 1000)  # 5 output tokens = $0.005, worst case = real cost
    root = str(Path(__file__).resolve().parents[1])
    fake_provider.default = ok("one two three four five", 3, 5)
    env = {
        **os.environ,
        "OPENAI_API_BASE": fake_provider.openai_base,
        "OPENAI_API_KEY": fake_key("BUDGETKEY", tail=16),
        "DAILY_BUDGET_USD": "0.05",
        "LLM_MAGIC_LEDGER": str(clean_env),
        "LLM_MAGIC_LEDGER_WAIT_S": "600",  # a write waits out the others however slow they are
        "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HAMMER, "8"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=1500)[0].split() for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert all(p.returncode == 0 for p in procs)
    answered = sum(int(o[0]) for o in outs)
    refused = sum(int(o[1]) for o in outs)
    assert (answered, refused) == (10, 22)
    df = lm.ledger(str(clean_env)).df
    assert (df.status == "ok").sum() == 10
    assert df.cost_usd.sum() == pytest.approx(0.05)
    assert book.reservations() == 0

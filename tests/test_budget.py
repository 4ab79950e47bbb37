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
def fp(monkeypatch):  # type: ignore[no-untyped-def]
    with FakeProvider() as server:
        monkeypatch.setenv("OPENAI_API_BASE", server.openai_base)
        monkeypatch.setenv("OPENAI_API_KEY", fake_key("BUDGETKEY", tail=16))
        yield server


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


def test_alert_once_at_the_threshold(fp, clean_env, monkeypatch) -> None:
    monkeypatch.setenv("DAILY_BUDGET_USD", "1.00")
    config.reload_settings()
    spend(clean_env, 0.85)
    fp.script(ok("a", 3, 1), ok("b", 3, 1))
    with pytest.warns(BudgetWarning, match="85% of \\$1.00"):
        first = lm.complete("Hi", model="gpt-4o", max_tokens=5)
    assert any("Budget alert" in n for n in first.notes)
    second = lm.complete("Hi", model="gpt-4o", max_tokens=5)  # no second alert today
    assert not any("Budget alert" in n for n in second.notes)


def test_over_budget_downgrades(fp, clean_env, monkeypatch) -> None:
    monkeypatch.setenv("DAILY_BUDGET_USD", "1.00")
    monkeypatch.setenv("BUDGET_DOWNGRADE_MODEL", "gpt-4o-mini")
    config.reload_settings()
    spend(clean_env, 1.50)
    fp.script(ok("cheap", 3, 1))
    result = lm.complete("Hi", model="gpt-4o", max_tokens=5)
    assert result.model == "gpt-4o-mini" and result.requested_model == "gpt-4o"
    assert fp.requests[-1].model == "gpt-4o-mini"
    assert any("Over the daily budget" in n for n in result.notes)


def test_over_budget_without_downgrade_is_refused_and_nothing_sent(
    fp, ip_ledger, clean_env, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("DAILY_BUDGET_USD", "1.00")
    config.reload_settings()
    spend(clean_env, 1.00)
    ip_ledger.run_cell_magic("llm", "-m gpt-4o", "Hi")
    assert "Over the daily budget" in capsys.readouterr().err
    assert posts(fp) == 0
    row = lm.ledger(str(clean_env)).df.iloc[-1]
    assert (row.status, row.cost_usd, row.error_type) == ("refused_budget", 0.0, "budget")


def test_worst_case_over_the_request_cap_is_refused(fp, clean_env, monkeypatch) -> None:
    monkeypatch.setenv("MAX_COST_PER_REQUEST_USD", "0.01")
    config.reload_settings()
    # gpt-4o output: $10 / 1M tokens → 2,000 max_tokens can cost $0.02 > $0.01
    with pytest.raises(errors.BudgetRefused, match="MAX_COST_PER_REQUEST_USD"):
        lm.complete("Hi", model="gpt-4o", max_tokens=2000)
    assert posts(fp) == 0
    fp.script(ok("small", 3, 1))
    assert lm.complete("Hi", model="gpt-4o", max_tokens=500).status == "ok"  # $0.005 fits
    assert list(lm.ledger(str(clean_env)).df.status) == ["refused_budget", "ok"]


def test_budget_subcommand_shows_spend(ip_ledger, clean_env, capsys) -> None:
    spend(clean_env, 0.25)
    ip_ledger.run_line_magic("llm", "budget 2")
    assert "Spent today: $0.250000 of $2.00 (12%)" in capsys.readouterr().out


def test_alert_when_one_call_jumps_from_below_the_threshold_past_the_whole_budget(
    fp, clean_env, monkeypatch
) -> None:
    monkeypatch.setenv("DAILY_BUDGET_USD", "1.00")
    config.reload_settings()
    spend(clean_env, 0.77)
    # gpt-4o output is $10 / 1M tokens: 39,000 tokens cost $0.39, taking spend to 116%
    fp.script(ok("a long answer", 3, 39_000), ok("b", 3, 1))
    with pytest.warns(BudgetWarning, match="116% of \\$1.00"):
        jump = lm.complete("Hi", model="gpt-4o", max_tokens=50_000)
    assert [n for n in jump.notes if n.startswith("Budget alert")] == [
        "Budget alert: $1.1600 spent today, 116% of $1.00"
    ]
    with pytest.raises(errors.BudgetRefused):  # over budget now: refused, and no second alert
        lm.complete("Hi", model="gpt-4o", max_tokens=5)


def test_no_alert_while_spend_stays_below_the_threshold(fp, clean_env, monkeypatch) -> None:
    monkeypatch.setenv("DAILY_BUDGET_USD", "1.00")
    config.reload_settings()
    spend(clean_env, 0.10)
    fp.script(ok("a", 3, 1_000))  # $0.01: 11% of the budget
    result = lm.complete("Hi", model="gpt-4o", max_tokens=2_000)
    assert not any("Budget alert" in n for n in result.notes)

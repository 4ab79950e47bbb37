"""``%llm`` subcommands as a user types them: generated help, one-line usage errors, a budget
set for the session without re-reading the environment, and ``%unload_ext`` that unloads."""

from __future__ import annotations

import math
import os

import pytest
from IPython.core.error import UsageError

from llm_magic import config, vocab
from llm_magic._commands import COMMANDS
from tests.fakekeys import fake_key


def magics_objects(ip) -> list:  # type: ignore[no-untyped-def,type-arg]
    return [c for c in ip.configurables if type(c).__name__ == "LLMMagics"]


# -- help ----------------------------------------------------------------------------------


def test_llm_help_lists_every_subcommand(ip_ledger, capsys) -> None:
    result = ip_ledger.run_cell("%llm --help")
    out, err = capsys.readouterr()
    assert result.success and result.result is None
    assert out.startswith("usage: %llm SUBCOMMAND")
    for name, fn in COMMANDS.items():
        help_line = (fn.__doc__ or "").strip().splitlines()[0]
        assert f"    {name} " in out and help_line.split()[0] in out, name
    assert "Traceback" not in out + err


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_subcommand_has_generated_help(ip_ledger, clean_env, capsys, name: str) -> None:
    before = os.path.getsize(clean_env) if clean_env.exists() else None
    result = ip_ledger.run_cell(f"%llm {name} --help")
    out, err = capsys.readouterr()
    assert result.success and result.result is None  # help only: no table, no action
    assert out.startswith(f"usage: %llm {name}")
    assert f"e.g. %llm {name}" in out
    assert "Traceback" not in out + err
    assert (os.path.getsize(clean_env) if clean_env.exists() else None) == before


def test_ledger_help_names_its_options(ip_ledger, capsys) -> None:
    ip_ledger.run_cell("%llm ledger -h")
    out = capsys.readouterr().out
    assert "usage: %llm ledger [--today] [--by COLUMN]" in out
    assert "--today" in out and "group by model" in out


def test_cell_magic_help_lists_the_subcommands(ip_ledger) -> None:
    doc = ip_ledger.find_line_magic("llm").__doc__
    assert "%%llm -m local" in doc  # the example stays first
    for usage in ("%llm models", "%llm ledger [--today] [--by COLUMN]", "%llm budget [USD]",
                  "%llm local [ACTION]", "%llm alias NAME MODEL",
                  "%llm price MODEL IN_PER_1M OUT_PER_1M", "%llm reset [CHAT]"):  # fmt: skip
        assert usage in doc, usage


# -- usage errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "usage"),
    [
        ("ledger --bogus", "%llm ledger [--today] [--by COLUMN], e.g. %llm ledger --today"),
        ("ledger --by", "%llm ledger [--today] [--by COLUMN]"),
        ("alias onlyname", "%llm alias NAME MODEL, e.g. %llm alias fast gpt-4o-mini"),
        ("alias a b c", "%llm alias NAME MODEL"),
        ("price m 1", "%llm price MODEL IN_PER_1M OUT_PER_1M, e.g. %llm price my-model 3 15"),
        ("reset a b", "%llm reset [CHAT]"),
        ("config extra", "%llm config, e.g. %llm config"),
        ("models --all", "%llm models"),
        ("budget 1 2", "%llm budget [USD], e.g. %llm budget 5"),
    ],
)
def test_a_subcommand_mistake_is_one_line_with_usage_and_example(
    ip_ledger, clean_env, capsys, line: str, usage: str
) -> None:
    with pytest.raises(UsageError) as caught:
        ip_ledger.run_cell(f"%llm {line}")
    message = str(caught.value)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"%llm {line.split()[0]}: ")
    assert f"usage: {usage}" in message
    shown = capsys.readouterr()
    assert "UsageError: " in shown.err and "Traceback" not in shown.out + shown.err
    assert config.settings().daily_budget_usd is None


def test_unknown_subcommand_names_the_ones_there_are(ip_ledger) -> None:
    with pytest.raises(UsageError, match="Unknown %llm subcommand 'hepl'") as caught:
        ip_ledger.run_cell("%llm hepl")
    assert ", ".join(COMMANDS) in str(caught.value) and "%llm --help" in str(caught.value)


def test_llm_alone_is_config(ip_ledger, capsys) -> None:
    ip_ledger.run_cell("%llm")
    alone = capsys.readouterr().out
    ip_ledger.run_cell("%llm config")
    assert alone == capsys.readouterr().out and "default_model = " in alone


# -- %llm budget: an override, nothing re-read ---------------------------------------------


def key_pool(provider: str):  # type: ignore[no-untyped-def]
    try:  # key pools with their own state (after the reshape)
        from llm_magic import keys  # type: ignore[attr-defined]

        return keys.pool(config.settings(), provider)
    except ImportError:
        return config.settings().keys(provider)


def test_budget_is_set_for_the_session_without_touching_the_environment(
    ip_ledger, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", fake_key("FACEBUDGET"))
    config.reload_settings()
    before = config.settings()
    pool = key_pool("openai")
    key = pool.next()
    pool.cool(key, 600)  # as after a 429

    ip_ledger.run_cell("%llm budget 5")
    assert "of $5.00 (0%)" in capsys.readouterr().out
    assert "DAILY_BUDGET_USD" not in os.environ
    assert config.settings() is before  # nothing re-read…
    assert key_pool("openai").wait_time(key) > 0  # …so the key is still cooling down
    ip_ledger.run_cell("%llm config")
    assert "daily_budget_usd = 5.0" in capsys.readouterr().out

    with pytest.raises(UsageError, match="not a finite number"):
        ip_ledger.run_cell("%llm budget nan")
    assert config.settings().daily_budget_usd == 5.0  # a bad value changes nothing
    assert config.reload_settings().daily_budget_usd == 5.0  # the session's choice holds


def test_override_checks_values_like_the_environment() -> None:
    with pytest.raises(config.UsageProblem, match="out of range"):
        config.override(budget_alert_threshold=1.5)
    with pytest.raises(TypeError, match="no setting"):
        config.override(daily_budget=5)
    config.override(daily_budget_usd=2, max_cost_per_request_usd=None)
    assert (config.settings().daily_budget_usd, config.settings().max_cost_per_request_usd) == (
        2.0,
        None,
    )
    config.clear_overrides()
    assert config.settings().daily_budget_usd is None


# -- %unload_ext ---------------------------------------------------------------------------


def test_unload_ext_unregisters_and_load_ext_registers_again(ip, capsys) -> None:
    first = magics_objects(ip)
    assert len(first) == 1  # joined the configurables once, not twice
    ip.run_cell("%unload_ext llm_magic")
    assert "llm" not in ip.magics_manager.magics["line"]
    assert "llm" not in ip.magics_manager.magics["cell"]
    assert magics_objects(ip) == [] and "LLMMagics" not in ip.magics_manager.registry
    with pytest.raises(UsageError, match="not found"):
        ip.run_cell("%llm config")
    with pytest.raises(UsageError, match="not found"):
        ip.run_cell("%%llm -m local\nHi")

    ip.run_cell("%load_ext llm_magic")
    again = magics_objects(ip)
    assert len(again) == 1 and again[0] is not first[0]
    ip.run_cell("%config LLMMagics.temperature = 0.5")  # reaches the new object
    capsys.readouterr()
    ip.run_cell("%llm config")
    assert "temperature = 0.5" in capsys.readouterr().out


def test_unload_ext_leaves_a_magic_registered_since(ip) -> None:
    ip.register_magic_function(lambda line: f"mine: {line}", "line", "llm")
    ip.run_cell("%unload_ext llm_magic")
    assert ip.run_line_magic("llm", "config") == "mine: config"
    assert "llm" not in ip.magics_manager.magics["cell"]  # the cell magic was ours: gone


# -- one constant per vocabulary -----------------------------------------------------------


def test_the_magic_and_the_display_take_their_words_from_vocab(ip_ledger) -> None:
    from llm_magic.display import choose_mode, render_final
    from llm_magic.result import Result

    magics = magics_objects(ip_ledger)[0]
    assert tuple(type(magics).display_mode.values) == vocab.DISPLAY_MODES
    for mode in vocab.DISPLAY_MODES[1:]:
        assert choose_mode(mode, None) == mode
    parser = type(magics).llm.parser
    choices = {a.dest: a.choices for a in parser._actions if a.choices}
    assert tuple(choices["task"]) == vocab.TASKS and tuple(choices["format"]) == vocab.FORMATS
    done = Result(text="hi", model="m", requested_model="m", cost_usd=0.0)
    for fmt in vocab.FORMATS:
        assert "text/plain" in render_final(done, fmt)
    try:
        from llm_magic.models import ROUTES  # type: ignore[attr-defined]
    except ImportError:
        from llm_magic.comparison import ROUTES
    assert set(ROUTES) == set(vocab.TASKS)


def test_money_formats() -> None:
    assert (vocab.usd(2), vocab.usd(0.05), vocab.usd(0.0000015)) == ("$2.00", "$0.05", "$0.000002")
    assert (vocab.cost(math.nan), vocab.cost(0.0), vocab.cost(0.00012), vocab.cost(0.5)) == (
        "cost unknown",
        "$0",
        "$0.000120",
        "$0.5000",
    )
    assert (vocab.usd_label(1234.5), vocab.usd_label(0.0123), vocab.usd_label(math.nan)) == (
        "$1,234.50",
        "$0.0123",
        "unpriced",
    )

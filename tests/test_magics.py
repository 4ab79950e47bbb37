"""The magics driven as users drive them: bad input is a one-line UsageError, nothing sent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import llm_magic as lm


def test_load_ext_is_light_and_registers_the_magics() -> None:
    code = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "before = set(sys.modules)\n"
        "ip.run_line_magic('load_ext', 'llm_magic')\n"
        "assert 'llm' in ip.magics_manager.magics['cell'], 'no %%llm'\n"
        "assert 'llm' in ip.magics_manager.magics['line'], 'no %llm'\n"
        "new = set(sys.modules) - before\n"
        "heavy = [m for m in ('litellm', 'pandas', 'matplotlib', 'ipywidgets', 'httpx') if m in new]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_config_traitlets(ip_ledger) -> None:
    ip_ledger.run_line_magic("config", "LLMMagics.default_model = 'gpt-4o'")
    magics = next(c for c in ip_ledger.configurables if type(c).__name__ == "LLMMagics")
    assert magics.default_model == "gpt-4o"
    # a bad value is refused with a one-line message and the old value kept
    ip_ledger.run_line_magic("config", "LLMMagics.temperature = 7.0")
    assert magics.temperature == 0.0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--no-such-option", "unrecognized arguments"),
        ("--max-tokens lots", "invalid int value"),
        ("--temperature hot", "invalid float value"),
        ("--max-tokens -5", "positive integer"),
        ("--temperature 9", "between 0 and 2"),
        ("-f yaml", "invalid choice"),
        ("--tag nokeyvalue", "KEY=VALUE"),
        ("-m no-such-provider/zzz", "Unknown model"),
        ("-m gpt-4o", "No key for openai: set OPENAI_API_KEY"),
        ("-m claude-sonnet-4-5", "No key for anthropic: set ANTHROPIC_API_KEY"),
        ("stray words", "Unexpected"),
    ],
)
def test_bad_input_is_a_usage_error_and_nothing_is_recorded(
    ip_ledger, clean_env: Path, line: str, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        ip_ledger.run_cell_magic("llm", line, "Say hi")
    assert len(lm.ledger(str(clean_env))) == 0


def test_empty_cell_is_a_usage_error(ip_ledger) -> None:
    with pytest.raises(UsageError, match="empty"):
        ip_ledger.run_cell_magic("llm", "", "   \n")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("nonsense", "Unknown %llm subcommand"),
        ("local sideways", "start, stop or status"),
        ("price m one two", "dollars per million"),
        ("price m 1", "IN_PER_1M OUT_PER_1M"),
        ("alias onlyname", "alias NAME MODEL"),
        ("budget lots", "give dollars"),
        ("ledger --by colour", "cannot group by"),
        ("ledger --bogus", "unrecognized arguments"),
    ],
)
def test_bad_subcommands_are_usage_errors(ip_ledger, line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        ip_ledger.run_line_magic("llm", line)


def test_price_and_alias_persist_in_the_ledger(ip_ledger, clean_env: Path, capsys) -> None:
    ip_ledger.run_line_magic("llm", "price claude-sonnet-4-20250514 3 15")
    ip_ledger.run_line_magic("llm", "alias fast gpt-4o-mini")
    book = lm.Ledger(str(clean_env))  # a fresh connection sees them
    assert book.prices()["claude-sonnet-4-20250514"] == (3.0, 15.0)
    assert book.aliases()["fast"] == "gpt-4o-mini"
    ip_ledger.run_line_magic("llm", "config")
    assert "default_model = local" in capsys.readouterr().out


def test_help_is_the_docstring_with_an_example(ip_ledger) -> None:
    doc = ip_ledger.find_cell_magic("llm").__doc__
    assert "%%llm -m local" in doc and "--max-tokens" in doc

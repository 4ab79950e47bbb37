"""The magics driven as users drive them: bad input is a one-line UsageError, nothing sent."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from IPython.core.error import UsageError

import llm_magic as lm
from tests.conftest import published
from tests.fakeprovider import ok


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


def shown_usage_error(result, capsys) -> str:  # type: ignore[no-untyped-def]
    """What the person saw of a cell that failed on bad input: the cell raised a UsageError,
    which IPython shows as one ``UsageError: …`` line, with no traceback. Returns the message."""
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    seen = capsys.readouterr()
    assert seen.err.startswith("UsageError: ") and len(seen.err.strip().splitlines()) == 1
    assert "Traceback" not in seen.err + seen.out
    return seen.err


def test_config_traitlets(ip_ledger, capsys, caplog) -> None:
    ip_ledger.run_cell("%config LLMMagics.default_model = 'gpt-4o'")
    magics = next(c for c in ip_ledger.configurables if type(c).__name__ == "LLMMagics")
    assert magics.default_model == "gpt-4o"
    ip_ledger.run_cell("%llm config")
    assert "default_model = gpt-4o" in capsys.readouterr().out
    # a bad value is refused with a one-line message and the old value kept
    result = ip_ledger.run_cell_as_user("%config LLMMagics.temperature = 7.0")
    assert result.error_in_exec is None  # %config reports it; the cell does not fail
    (refused,) = [r.getMessage() for r in caplog.records if "temperature" in r.getMessage()]
    assert "must be between 0 and 2" in refused and "\n" not in refused
    ip_ledger.run_cell("%llm config")
    assert "temperature = 0.0" in capsys.readouterr().out
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
    ip_ledger, book, capsys, line: str, message: str
) -> None:
    result = ip_ledger.run_cell_as_user(f"%%llm {line}\nSay hi")
    assert re.search(message, shown_usage_error(result, capsys))
    assert len(book) == 0


def test_empty_cell_is_a_usage_error(ip_ledger, capsys) -> None:
    result = ip_ledger.run_cell_as_user("%%llm\n   \n")
    assert "empty" in shown_usage_error(result, capsys)


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
def test_bad_subcommands_are_usage_errors(ip_ledger, capsys, line: str, message: str) -> None:
    result = ip_ledger.run_cell_as_user(f"%llm {line}")
    assert re.search(message, shown_usage_error(result, capsys))


def test_price_and_alias_persist_in_the_ledger(ip_ledger, clean_env: Path, capsys) -> None:
    ip_ledger.run_cell("%llm price claude-sonnet-4-20250514 3 15\n%llm alias fast gpt-4o-mini")
    book = lm.Ledger(str(clean_env))  # a fresh connection sees them
    assert book.prices()["claude-sonnet-4-20250514"] == (3.0, 15.0)
    assert book.aliases()["fast"] == "gpt-4o-mini"
    ip_ledger.run_cell("%llm config")
    assert "default_model = local" in capsys.readouterr().out


def test_help_is_the_docstring_with_an_example(ip_ledger, capsys) -> None:
    ip_ledger.run_cell("%%llm?")
    shown = capsys.readouterr().out
    assert "%%llm -m local" in shown and "--max-tokens" in shown
    doc = ip_ledger.find_cell_magic("llm").__doc__
    assert "%%llm -m local" in doc and "--max-tokens" in doc


def test_an_answer_ends_as_ordinary_output_with_its_footer(
    ip_ledger, provider, front_end, book
) -> None:
    """A cell as a person writes it, in a front end that shows displays: a status line, the
    stream, then Markdown with a plain-text twin in the same display; ``-o`` keeps the Result."""
    ip_ledger.run_cell("%config LLMMagics.display_mode = 'handle'")
    provider.script(ok("Hello there, Ada.", 3, 4))
    ip_ledger.run_cell('name = "Ada"')
    ip_ledger.run_cell("%%llm -m gpt-4o --max-tokens 20 -o r\nSay hi to {name}.")
    steps = published(front_end)
    assert len({s["id"] for s in steps}) == 1  # one display, updated in place
    assert steps[0]["data"]["text/plain"].startswith("⏳")
    final = steps[-1]["data"]
    assert set(final) == {"text/markdown", "text/plain"}
    assert final["text/plain"] == "Hello there, Ada."
    assert final["text/markdown"].startswith("Hello there, Ada.")
    assert "gpt-4o · 3 in / 4 out tokens" in final["text/markdown"]
    r = ip_ledger.user_ns["r"]
    assert (r.text, r.status) == ("Hello there, Ada.", "ok")
    sent = [q for q in provider.requests if q.method == "POST"]
    assert sent[-1].body["messages"][-1]["content"] == "Say hi to Ada."
    assert sent[-1].body["max_tokens"] == 20
    assert list(book.df.call_id) == [r.call_id]

"""The context guard: tokens counted before sending; old chat turns dropped over 80% of the
window (said in the cell); a prompt still too long is refused, nothing sent, nothing charged."""

from __future__ import annotations

import pytest

import llm_magic as lm
from llm_magic import core
from tests.fakekeys import fake_key
from tests.fakeprovider import ok

KEY = fake_key("CONTEXTKEY", tail=18)
WORDS = "tide moon sea wave shore current ebb flow " * 1000  # ~8,000 tokens


@pytest.fixture
def provider_keys() -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY}


def test_a_prompt_over_the_window_is_refused_before_sending(
    provider, ip_ledger, clean_env, capsys
) -> None:
    # gpt-4 has an 8,192-token window in litellm's map: 80% is 6,553 tokens
    ip_ledger.run_cell_magic("llm", "-m gpt-4", WORDS)
    assert "over 80% of gpt-4's 8192-token window" in capsys.readouterr().err
    assert not [r for r in provider.requests if r.method == "POST"]  # nothing sent
    row = lm.ledger(str(clean_env)).df.iloc[-1]
    assert (row.status, row.cost_usd, row.error_type) == ("refused_context", 0.0, "context_length")


def test_old_chat_turns_are_dropped_with_a_note(provider, clean_env) -> None:
    long_turn = "tide " * 1800  # ~1,800 tokens each: 4 turns ≈ 7,200 > 6,553
    core._chats["long"] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": long_turn},
        {"role": "assistant", "content": long_turn},
        {"role": "user", "content": long_turn},
        {"role": "assistant", "content": long_turn},
    ]
    provider.script(ok("Short.", input_tokens=1600, output_tokens=2))
    try:
        result = lm.complete("And now?", model="gpt-4", max_tokens=16, chat="long")
    finally:
        core.reset_chat("long")
    assert any("Dropped the 1 oldest chat turn" in n for n in result.notes)
    sent = [r for r in provider.requests if r.method == "POST"][-1].body["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief."}  # the system prompt stays
    assert len(sent) == 4 and sent[-1]["content"] == "And now?"

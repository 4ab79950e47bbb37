"""The served calls' start gate (llm_magic/web/gate.py): a burst starts a few at a time, and a
call whose provider is silent stops holding its place after ``stale_s``."""

from __future__ import annotations

import threading

from llm_magic.web.gate import StartGate, starting_limit


def _enter_in_thread(gate: StartGate, entered: threading.Event) -> threading.Thread:
    def run() -> None:
        gate.enter()
        entered.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_full_gate_lets_the_next_call_start_only_when_one_has_started() -> None:
    gate = StartGate(2, stale_s=3600)  # no place goes stale during the test
    first, _second = gate.enter(), gate.enter()
    entered = threading.Event()
    t = _enter_in_thread(gate, entered)
    assert not entered.wait(0.3)  # the third waits: two are starting
    gate.leave(first)
    assert entered.wait(60)  # …and goes once one of them has started
    t.join(60)
    gate.leave(first)  # leaving twice gives back nothing more
    blocked = threading.Event()
    _enter_in_thread(gate, blocked)
    assert not blocked.wait(0.3)


def test_a_silent_provider_holds_its_place_only_until_it_is_stale() -> None:
    gate = StartGate(1, stale_s=0.05)
    gate.enter()  # never leaves: its provider has not answered
    entered = threading.Event()
    t = _enter_in_thread(gate, entered)
    assert entered.wait(60)
    t.join(60)


def test_the_limit_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("LLM_MAGIC_SERVE_STARTING", "9")
    assert starting_limit() == 9
    monkeypatch.setenv("LLM_MAGIC_SERVE_STARTING", "many")
    assert starting_limit() == 4
    monkeypatch.setenv("LLM_MAGIC_SERVE_STARTING", "0")
    assert starting_limit() == 1

"""Served calls take turns (llm_magic/web/turns.py): at most ``limit`` threads run at once, in
the order they asked; a call waiting for its provider gives its turn back; a holder blocked
elsewhere stops counting after ``stale_s``."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from llm_magic.web import turns
from llm_magic.web.turns import Turns, turns_limit
from tests.fakeprovider import FakeProvider, hang, ok
from tests.test_serve_api import HI, chat, parse, provider_keys, served, text_of  # noqa: F401


def _queued(t: Turns, n: int) -> None:
    while len(t._queue) < n:
        time.sleep(0.005)


def _take_in_thread(t: Turns, name: str, order: list[str]) -> threading.Thread:
    def run() -> None:
        with t.held():
            order.append(name)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_one_turn_at_a_time_in_the_order_asked() -> None:
    t = Turns(1, stale_s=3600)  # no turn goes stale during the test
    order: list[str] = []
    with t.held():
        first = _take_in_thread(t, "first", order)
        _queued(t, 1)
        second = _take_in_thread(t, "second", order)
        _queued(t, 2)
        with t.held():  # a thread holds one turn at most: asking again is nothing
            pass
        first.join(0.3)
        assert order == [] and first.is_alive()  # nobody ran while the turn was held
    first.join(60)
    second.join(60)
    assert order == ["first", "second"]
    assert not t._since and not t._queue  # every turn given back


def test_a_waiting_holder_lets_the_next_run() -> None:
    t = Turns(1, stale_s=3600)
    order: list[str] = []
    with t.held():
        other = _take_in_thread(t, "other", order)
        _queued(t, 1)
        with t.released():  # e.g. reading a provider's socket
            other.join(60)
        order.append("back")
    assert order == ["other", "back"]


def test_a_holder_pauses_for_the_waiters_once_it_has_had_its_slice() -> None:
    t = Turns(1, stale_s=3600)
    order: list[str] = []
    with t.held():
        t.pause()  # nobody waits: it keeps its turn
        other = _take_in_thread(t, "other", order)
        _queued(t, 1)
        time.sleep(turns.SLICE_S)
        t.pause()  # its slice is over and "other" waits: "other" goes first
        order.append("back")
    other.join(60)
    assert order == ["other", "back"]


def test_a_holder_blocked_elsewhere_stops_counting_once_stale() -> None:
    t = Turns(1, stale_s=0.05)
    t._take()  # never given back: blocked on something that is not the provider's socket
    order: list[str] = []
    other = _take_in_thread(t, "other", order)
    other.join(60)
    assert order == ["other"]


def test_the_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_MAGIC_SERVE_TURNS", "3")
    assert turns_limit() == 3
    monkeypatch.setenv("LLM_MAGIC_SERVE_TURNS", "many")
    assert turns_limit() == turns.LIMIT == 1
    monkeypatch.setenv("LLM_MAGIC_SERVE_TURNS", "0")
    assert turns_limit() == 1


def test_a_call_waiting_for_its_provider_lets_another_answer(
    served: Any,  # noqa: F811
    provider: FakeProvider,
    book: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One turn, never stale: the first call's provider says nothing for 30 s; the second
    call answers meanwhile only because the first gave its turn back while it waited on the
    socket (without the network backend it would keep it, and the second would wait)."""
    chat(served)  # litellm imported before anything is counted
    monkeypatch.setattr(turns.TURNS, "limit", 1)
    monkeypatch.setattr(turns.TURNS, "stale_s", 3600.0)
    provider.reset()
    provider.script(hang(30, then=ok("slow one")), ok("quick one"))
    got: dict[str, str] = {}

    def ask(name: str) -> None:
        got[name] = text_of(parse(chat(served, {**HI, "max_tokens": 50})))

    slow = threading.Thread(target=ask, args=("slow",), daemon=True)
    slow.start()
    provider.wait_for_requests(1, timeout=60)
    quick = threading.Thread(target=ask, args=("quick",), daemon=True)
    quick.start()
    quick.join(25)
    assert got.get("quick") == "quick one"
    assert "slow" not in got  # the first was still waiting for its provider
    slow.join(120)
    assert got["slow"] == "slow one"

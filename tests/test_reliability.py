"""Keys rotate and cool down, Ollama's absence is diagnosed, the ledger survives many writers
and a killed process."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import llm_magic as lm
from llm_magic import config
from tests.fakekeys import fake_key
from tests.fakeprovider import FakeProvider, ok, refused_url, status

KEYS = [fake_key(f"ROTATE{i}") for i in range(3)]


@pytest.fixture
def provider_keys() -> dict[str, str]:
    return {"OPENAI_API_KEYS": ",".join(KEYS)}


def posts(server: FakeProvider) -> list:  # type: ignore[type-arg]
    return [r for r in server.requests if r.method == "POST"]


def test_keys_rotate_round_robin(provider, clean_env) -> None:
    for _ in range(4):
        provider.script(ok("x", 2, 1))
        lm.complete("Hi", model="gpt-4o", max_tokens=4)
    assert [r.api_key for r in posts(provider)] == [KEYS[0], KEYS[1], KEYS[2], KEYS[0]]
    aliases = list(lm.ledger(str(clean_env)).df.key_alias)
    assert aliases[0].startswith("OPENAI_API_KEYS#1:") and aliases[1].startswith(
        "OPENAI_API_KEYS#2:"
    )
    assert not any(k in "".join(aliases) for k in KEYS)


def test_a_429_key_cools_down_and_the_retry_goes_out_at_once_on_another(
    provider, clean_env, monkeypatch
) -> None:
    # real waits, made long: the 30 s Retry-After would be a 600 s wait (beyond the test's
    # timeout), so a retry that waited for it cannot pass, however slow the machine
    monkeypatch.setenv("LLM_MAGIC_RETRY_SCALE", "20")
    provider.script(status(429, retry_after=30), ok("other key", 2, 1))
    result = lm.complete("Hi", model="gpt-4o", max_tokens=4)
    first, second = posts(provider)
    assert result.text == "other key" and result.attempts == 2
    assert first.api_key != second.api_key
    assert second.t - first.t < 600 / 10  # not the 600 s wait: another key was free
    provider.script(ok("next", 2, 1))
    lm.complete("Hi", model="gpt-4o", max_tokens=4)
    assert posts(provider)[-1].api_key != first.api_key  # the cooling key is skipped


def test_least_recently_used_strategy(provider, clean_env, monkeypatch) -> None:
    monkeypatch.setenv("LLM_MAGIC_KEY_STRATEGY", "lru")
    config.reload_settings()
    for _ in range(3):
        provider.script(ok("x", 2, 1))
        lm.complete("Hi", model="gpt-4o", max_tokens=4)
    assert len({r.api_key for r in posts(provider)}) == 3


def test_ollama_not_running_is_diagnosed_quickly(clean_env, monkeypatch) -> None:
    base = refused_url()
    monkeypatch.setenv("OLLAMA_API_BASE", base)
    config.reload_settings()
    with pytest.raises(lm.errors.ConnectionFailed) as caught:
        lm.complete("Hi", model="ollama/llama3.2", max_tokens=4)
    message = str(caught.value)
    assert base in message and f"curl {base}/api/tags" in message and "ollama serve" in message
    row = lm.ledger(str(clean_env)).df.iloc[-1]
    assert (row.error_type, row.attempts) == ("connection", 1)  # quickly: no retry, no wait


WRITER = """
import sys, uuid
from llm_magic.store import Ledger, utcnow
book = Ledger(sys.argv[1])
for i in range(int(sys.argv[2])):
    book.record({"call_id": uuid.uuid4().hex, "trace_id": sys.argv[3], "ts_start": utcnow(),
                 "status": "ok", "model": "m", "cost_usd": 0.001})
"""


def test_several_processes_lose_no_row(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, path, "200", f"w{i}"]) for i in range(4)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT call_id) FROM calls").fetchone() == (
        800,
        800,
    )
    assert dict(db.execute("SELECT trace_id, COUNT(*) FROM calls GROUP BY trace_id")) == {
        f"w{i}": 200 for i in range(4)
    }


def test_a_process_killed_mid_call_leaves_a_readable_ledger(tmp_path: Path) -> None:
    path = str(tmp_path / "killed.sqlite")
    with FakeProvider() as server:
        server.script(ok("done", 2, 1), ok(" ".join(["slow"] * 200), 2, 200, chunk_delay=0.05))
        code = (
            "import llm_magic as lm\n"
            "lm.complete('one', model='gpt-4o', max_tokens=4)\n"
            "print('committed', flush=True)\n"
            "lm.complete('two', model='gpt-4o', max_tokens=400)\n"
        )
        env = {
            **os.environ,
            "LLM_MAGIC_LEDGER": path,
            "OPENAI_API_BASE": server.openai_base,
            "OPENAI_API_KEY": KEYS[0],
        }
        proc = subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "committed"
        server.wait_for_requests(2, timeout=30)
        time.sleep(0.3)  # mid-stream
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    df = lm.Ledger(path).df  # opens, migrates nothing, reads every committed row
    assert list(df.response) == ["done"]


def waiting_to_retry(thread_id: int) -> bool:
    """Whether the thread is in the back-off before a retry (``_attempt._wait_to_retry``'s
    ``_sleep``) now."""
    frame = sys._current_frames().get(thread_id)
    while frame is not None and frame.f_back is not None:
        code, caller = frame.f_code, frame.f_back.f_code
        if (code.co_name, caller.co_name) == ("_sleep", "_wait_to_retry"):
            return caller.co_filename.endswith("_attempt.py")
        frame = frame.f_back
    return False


def test_ctrl_c_while_waiting_to_retry_is_recorded(provider, clean_env, monkeypatch) -> None:
    import _thread
    import threading

    provider.script(status(401))  # warm litellm's error path (its first one costs seconds)
    with pytest.raises(lm.errors.AuthError):
        lm.complete("warm", model="gpt-4o", max_tokens=4)
    monkeypatch.setenv("LLM_MAGIC_RETRY_SCALE", "100")  # a 200 s wait after the 500
    provider.script(status(500), ok("never", 2, 1))
    main, over = threading.get_ident(), threading.Event()

    def interrupt_during_the_wait() -> None:
        # Ctrl-C once the main thread is in the wait before the retry (seen on its stack, not
        # guessed from the time: a loaded machine may take seconds to handle the 500)
        while not over.wait(0.01):
            if waiting_to_retry(main):
                _thread.interrupt_main()
                return

    watcher = threading.Thread(target=interrupt_during_the_wait, daemon=True)
    watcher.start()
    try:
        with pytest.raises(lm.errors.Interrupted) as caught:
            lm.complete("Hi", model="gpt-4o", max_tokens=4)
    finally:
        over.set()
        watcher.join()
    assert caught.value.result.status == "interrupted"
    assert len(posts(provider)) == 2  # the warm-up and the 500: the retry never went out
    row = lm.ledger(str(clean_env)).df.iloc[-1]
    assert (row.status, row.error_type, row.attempts) == ("interrupted", "server_error", 1)
    assert row.http_status == 500 and row.cost_usd == 0.0


def test_a_cooling_key_is_still_cooling_after_the_settings_are_read_again(
    provider, clean_env, monkeypatch
) -> None:
    """Key pools live outside the settings: reading them again (``reload_settings()``, as
    ``%llm budget 5`` did) keeps a key's cool-down and the rotation's turn."""
    from llm_magic import keys

    monkeypatch.setenv("LLM_MAGIC_RETRY_SCALE", "1")  # the 429's 30 s Retry-After, for real
    provider.script(status(429, retry_after=30), ok("other key", 2, 1))
    lm.complete("Hi", model="gpt-4o", max_tokens=4)
    cooled = posts(provider)[0].api_key
    pool = keys.pool(config.settings(), "openai")
    config.reload_settings()
    again = keys.pool(config.settings(), "openai")
    assert again is pool
    waits = {k.alias: again.wait_time(k) for k in again.keys}
    assert sorted(w > 20 for w in waits.values()) == [False, False, True]
    provider.script(ok("next", 2, 1))
    lm.complete("Hi", model="gpt-4o", max_tokens=4)
    assert posts(provider)[-1].api_key != cooled  # the cooling key is still skipped


def test_other_keys_get_their_own_pool(provider, clean_env, monkeypatch) -> None:
    from llm_magic import keys

    first = keys.pool(config.settings(), "openai")
    first.cool(first.keys[0], 30)
    monkeypatch.setenv("OPENAI_API_KEYS", ",".join(KEYS[:2]))  # a key revoked: a new set
    config.reload_settings()
    second = keys.pool(config.settings(), "openai")
    assert second is not first and len(second.keys) == 2
    assert [second.wait_time(k) for k in second.keys] == [0.0, 0.0]
    monkeypatch.setenv("OPENAI_API_KEYS", ",".join(KEYS))  # back: the old pool, still cooling
    monkeypatch.setenv("LLM_MAGIC_KEY_STRATEGY", "lru")
    config.reload_settings()
    third = keys.pool(config.settings(), "openai")
    assert third is first and third.strategy == "lru" and third.wait_time(third.keys[0]) > 20

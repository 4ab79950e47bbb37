"""Integration on the real embedded model: SmolLM2-135M on llama.cpp, no key, $0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import llm_magic as lm

pytestmark = pytest.mark.local_model


def test_cell_streams_and_lands_in_the_ledger(local_model, ip_ledger, clean_env, capsys) -> None:
    ip_ledger.run_cell(
        "%%llm --max-tokens 24 -o answer --agent tester --tag exp=t1\nWrite a haiku about tides."
    )
    out = capsys.readouterr().out
    answer = ip_ledger.user_ns["answer"]
    assert answer.status == "ok" and answer.text.strip()
    assert answer.text.strip()[:20] in out  # the text reached the screen
    assert "local/smollm2-135m-instruct" in out  # with its one-line account
    df = lm.ledger(str(clean_env)).df
    assert len(df) == 1
    r = df.iloc[0]
    assert r.status == "ok" and r.requested_model == "local" and r.provider == "local"
    assert r.usage_source == "estimated"  # llama.cpp sends no usage in streams
    assert r.input_tokens > 5 and 0 < r.output_tokens <= 24 + 2
    assert r.cost_usd == 0.0 and r.price_source == "local"
    assert 0 < r.ttft_s < r.latency_s
    assert r.agent == "tester" and r.tags == {"exp": "t1"}
    assert r.max_tokens == 24 and r.call_id == answer.call_id
    assert r.response == answer.text


def test_max_tokens_bounds_the_answer(local_model, clean_env) -> None:
    result = lm.complete("Count from 1 to 100, one per line.", max_tokens=8)
    assert result.output_tokens <= 10
    assert len(result.text) < 100
    # llama.cpp says why it stopped in its last chunk: the cut is said, with the way out
    assert result.finish_reason == "length"
    assert "stopped at max_tokens (8): raise it, e.g. --max-tokens 16" in result.footer()
    assert lm.ledger().df.finish_reason.iloc[-1] == "length"


NO_LITELLM = """
import sys
import llm_magic as lm
r = lm.complete("Say hi.", model="local", max_tokens=8)
print(r.status, bool(r.text), "litellm" in sys.modules)
"""


def test_the_local_model_answers_without_importing_litellm(local_model, clean_env) -> None:
    """The embedded model is read straight from its server: a first local cell never waits
    for ``import litellm`` (seconds of CPU)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", NO_LITELLM], env=env, capture_output=True, text=True, timeout=240
    )
    assert out.stdout.split() == ["ok", "True", "False"], out.stderr[-2000:]


def test_chat_keeps_history_and_reset_forgets_it(local_model, ip_ledger, clean_env) -> None:
    ip_ledger.run_cell("%%llm --chat c1 --max-tokens 16\nMy name is Ada.")
    ip_ledger.run_cell("%%llm --chat c1 --max-tokens 16\nWhat is my name?")
    rows = lm.ledger(str(clean_env)).df
    assert list(rows.chat) == ["c1", "c1"]
    assert rows.input_tokens.iloc[1] > rows.input_tokens.iloc[0]  # history was sent
    assert len(lm.core.chats()["c1"]) == 4
    ip_ledger.run_cell("%llm reset c1")
    assert "c1" not in lm.core.chats()


def test_stream_api_yields_chunks_then_result(local_model, clean_env) -> None:
    s = lm.stream("Say hello.", max_tokens=12)
    chunks = list(s)
    assert len(chunks) >= 2  # it really streamed
    assert s.result is not None and s.result.text == "".join(chunks)


def test_breaking_out_of_a_stream_records_it_interrupted(local_model, clean_env) -> None:
    s = lm.stream("Tell me a long story about the sea.", max_tokens=200)
    first = next(iter(s))
    result = s.interrupt()
    assert result is not None and result.status == "interrupted"
    assert result.text.startswith(first)
    row = lm.ledger(str(clean_env)).df.iloc[-1]
    assert row.status == "interrupted" and row.output_tokens >= 1


def test_acomplete(local_model, clean_env) -> None:
    import asyncio

    result = asyncio.run(lm.acomplete("Say yes.", max_tokens=4))
    assert result.status == "ok" and result.output_tokens > 0


def test_plain_script_without_ipython(local_model, tmp_path: Path) -> None:
    code = (
        "import sys, llm_magic as lm\n"
        "r = lm.complete('Say hi.', max_tokens=8)\n"
        "assert r.status == 'ok', r\n"
        "assert 'IPython' not in sys.modules, 'core imported IPython'\n"
        "print(len(lm.ledger().df))\n"
    )
    env = {
        **__import__("os").environ,
        "LLM_MAGIC_LEDGER": str(tmp_path / "script.sqlite"),
        "LLM_MAGIC_LOCAL_URL": local_model,
    }
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "1"


def test_local_status_subcommand(local_model, ip_ledger, capsys) -> None:
    ip_ledger.run_cell("%llm local status")
    assert "running at http://127.0.0.1:" in capsys.readouterr().out


def test_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """A kernel killed with SIGKILL runs no atexit handler: the server must still go."""
    import json
    import os
    import signal
    import time

    code = (
        "import json, os, sys\n"
        "from llm_magic import local\n"
        "local._state_file = lambda: __import__('pathlib').Path(sys.argv[1])\n"
        "url = local.server().url()\n"
        "print(json.dumps({'url': url, 'pid': local.server()._pid}), flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    state = tmp_path / "state.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(state)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(info["pid"], signal.SIGKILL)
        pytest.fail("the local server outlived the process that started it")


def test_concurrent_calls_queue_instead_of_cutting_each_other(local_model, clean_env) -> None:
    """llama-cpp-python interrupts a running stream when another request arrives, unless the
    server is started with --interrupt_requests False."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda i: lm.complete(f"Say {i} words.", max_tokens=16), range(3)))
    assert [r.status for r in results] == ["ok", "ok", "ok"]
    assert all(r.output_tokens > 0 for r in results)


def test_a_busy_server_is_reused_not_started_again(local_model, clean_env) -> None:
    """While one call streams (it holds llama.cpp's lock for its whole length), another call in
    this kernel, or another kernel reading the state file, must find the same server."""
    import threading

    from llm_magic import local

    srv = local.server()
    pid = srv._pid
    streaming = threading.Event()
    results: list[lm.Result] = []

    def long_call() -> None:
        s = lm.stream("Write a long story about a lighthouse keeper.", max_tokens=300)
        for _ in s:
            streaming.set()
        assert s.result is not None
        results.append(s.result)

    worker = threading.Thread(target=long_call)
    worker.start()
    try:
        assert streaming.wait(60)
        assert srv.url() == local_model and srv._pid == pid  # this kernel: same server
        assert srv._read_state() == (local_model, pid)  # another kernel: same server
        assert srv.status().running
    finally:
        worker.join(120)
    assert [r.status for r in results] == ["ok"]
    assert results[0].output_tokens > 20  # it was still streaming when the checks ran

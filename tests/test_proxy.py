"""A team gateway: every call through a real LiteLLM proxy (its own venv, hashed lock) that
forwards to the embedded model; the ledger records what the proxy reports."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import llm_magic as lm
from llm_magic import config
from tests._servers import answers, free_port, locked_venv, wait_ready
from tests.fakekeys import fake_key

pytestmark = pytest.mark.local_model

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "build" / "proxy-venv"
MASTER = fake_key("MASTERKEY", kind="proxy", tail=16)


def _proxy_venv() -> Path:
    """build/proxy-venv with litellm[proxy] from requirements/proxy-lock.txt (hashes)."""
    return locked_venv(VENV, ROOT / "requirements" / "proxy-lock.txt", "litellm")


@pytest.fixture(scope="module")
def proxy(local_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = _proxy_venv()
    work = tmp_path_factory.mktemp("proxy")
    cfg = work / "proxy.yaml"
    cfg.write_text(
        json.dumps(  # JSON is YAML
            {
                "model_list": [
                    {
                        "model_name": "smollm2",
                        "litellm_params": {
                            "model": "openai/smollm2-135m-instruct",
                            "api_base": f"{local_model}/v1",
                            "api_key": "no-key",
                        },
                    }
                ],
                "general_settings": {"master_key": MASTER},
                "litellm_settings": {"drop_params": True},
            }
        )
    )
    port = free_port()
    log = open(work / "proxy.log", "wb")  # noqa: SIM115
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.Popen(
        [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    tail = lambda: (work / "proxy.log").read_text()[-2000:]  # noqa: E731
    wait_ready(answers(f"{url}/health/liveliness"), proc, "the LiteLLM proxy", 240, tail, every=1)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def _usage_seen_by_proxy(url: str, prompt: str, max_tokens: int) -> dict[str, int]:
    """Ask the proxy directly, as any client would, and read the usage it reports."""
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    usage: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {MASTER}"}
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=120
    ) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage") or usage
    return usage


def test_cells_go_through_the_proxy_and_the_ledger_matches_it(
    proxy, ip_ledger, clean_env, monkeypatch
) -> None:
    monkeypatch.setenv("LLM_MAGIC_API_BASE", proxy)
    monkeypatch.setenv("LLM_MAGIC_API_KEY", MASTER)
    config.reload_settings()
    ip_ledger.run_cell_magic("llm", "-m smollm2 --max-tokens 12 -o r", "Name a colour.")
    result = ip_ledger.user_ns["r"]
    assert result.status == "ok" and result.text
    row = lm.ledger(str(clean_env)).df.iloc[-1]
    assert row.model == "smollm2" and row.provider == "proxy"
    assert row.usage_source == "provider"
    seen = _usage_seen_by_proxy(proxy, "Name a colour.", 12)
    assert (row.input_tokens, row.output_tokens) == (
        seen["prompt_tokens"],
        seen["completion_tokens"],
    )
    assert MASTER not in (row.key_alias or "") and row.key_alias.startswith("LLM_MAGIC_API_KEY:")


def test_a_wrong_proxy_key_fails_fast_without_showing_it(proxy, clean_env, monkeypatch) -> None:
    wrong = fake_key(kind="wrong", tail=18)
    monkeypatch.setenv("LLM_MAGIC_API_BASE", proxy)
    monkeypatch.setenv("LLM_MAGIC_API_KEY", wrong)
    config.reload_settings()
    # A proxy without a database answers an unknown key with 400 "No connected db";
    # with one, 401. Either way: one request, a clear error, no retry, no key in it.
    with pytest.raises(lm.errors.ProviderError) as caught:
        lm.complete("Hi", model="smollm2", max_tokens=4)
    assert wrong not in str(caught.value)
    row = lm.ledger(str(clean_env)).df.iloc[-1]
    assert row.http_status in (400, 401) and row.attempts == 1 and row.status == "error"

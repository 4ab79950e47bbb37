"""B7 — the cold first cell: how long a person waits for the first token of the first ``%%llm``
cell of a fresh kernel on the local model.

Every run is a new Jupyter kernel (``jupyter_client.KernelManager``, this venv's ipykernel) with
its own empty user-data directory (so no running local model is reused) and ledger. The client
sends ``%load_ext llm_magic``, waits for its reply, then (``wait``) sleeps 5 s as a person reading
the notebook would, or (``no wait``) does not, and sends ``%%llm -m local --max-tokens 16``.
Timed on the client from sending that cell: the first output of any kind on iopub (the status
line), the first output showing answer text (the ledger's response says which text that is),
and the execute reply. The ledger row of the call gives its ``setup_s`` and ``ttft_s``.

Baselines, in the same run and interleaved with it: the same cell again in the same kernel (the
warm floor: nothing left to start), and jupyter-ai-magics' first ``%%ai`` call in a fresh kernel
of B1's jupyter-ai venv (``build/bench-jupyter-ai``; ipykernel and langchain-openai added to it
with pip), its OpenAI provider pointed at a llama.cpp server on the same GGUF that this benchmark
starts for it — ``%%ai`` does not stream, so its first output is its whole answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import ROOT, Ctx, Section, Verdict, fmt_s, log, med, table

PROMPT = "Say hello in one short sentence."
MAX_TOKENS = 16
WAIT_S = 5.0
TARGET_S = 1.5  # issue 9: first token within 1.5 s of a first cell run 5 s after %load_ext
# langchain-openai 0.3 with the langchain-core 0.3 that jupyter-ai-magics 2.31.7 needs (a newer
# langchain-openai pulls langchain-core 1.x, and then `%load_ext jupyter_ai_magics` fails)
JAI_EXTRA = ("ipykernel", "langchain-openai>=0.3,<0.4", "langchain-core>=0.3,<0.4")


def _texts(content: Any) -> list[str]:
    """Every string inside a message's content (display data, stream text, widget state)."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, dict):
        return [t for v in content.values() for t in _texts(v)]
    if isinstance(content, list):
        return [t for v in content for t in _texts(v)]
    return []


OUTPUT_TYPES = ("display_data", "update_display_data", "execute_result", "stream", "comm_msg")


class Kernel:
    """A fresh kernel with its own user-data directory and ledger; shut down gracefully (so the
    local model server it started is stopped by its atexit), and any server left is killed."""

    def __init__(self, python: str, tmp: Path, extra_env: dict[str, str] | None = None) -> None:
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import KernelManager

        self.dir = Path(tempfile.mkdtemp(prefix="b7-kernel-", dir=tmp))
        self.ledger = self.dir / "ledger.sqlite"
        env = {k: v for k, v in os.environ.items() if not k.startswith("JPY_")}
        env.update(
            {
                "XDG_DATA_HOME": str(self.dir / "xdg-data"),
                "LLM_MAGIC_LEDGER": str(self.ledger),
                "PYTHONPATH": str(ROOT),
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                **(extra_env or {}),
            }
        )
        env.pop("LLM_MAGIC_DISPLAY", None)  # what a person gets: the default display
        # A kernelspec of our own, so that the kernel is ``python`` (this venv's or another's)
        specs = self.dir / "kernels"
        (specs / "b7").mkdir(parents=True)
        spec = {
            "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "B7",
            "language": "python",
        }
        (specs / "b7" / "kernel.json").write_text(json.dumps(spec))
        self.km = KernelManager(
            kernel_name="b7", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)])
        )
        self.km.start_kernel(env=env, cwd=str(self.dir))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def run(self, code: str, timeout: float = 180.0) -> dict[str, Any]:
        """Send ``code``; the client-side times (from sending) of every output and the reply."""
        t0 = time.perf_counter()
        msg_id = self.kc.execute(code)
        outputs: list[tuple[float, str, list[str]]] = []
        status = "?"
        deadline = t0 + timeout
        idle = False
        while not idle and time.perf_counter() < deadline:
            try:
                msg = self.kc.get_iopub_msg(timeout=1)
            except Exception:
                continue
            t = time.perf_counter() - t0
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "status" and msg["content"].get("execution_state") == "idle":
                idle = True
            elif kind in OUTPUT_TYPES:
                if kind == "stream" and msg["content"].get("name") == "stderr":
                    outputs.append((t, "stderr", _texts(msg["content"])))
                else:
                    outputs.append((t, kind, _texts(msg["content"])))
            elif kind == "error":
                status = "error"
                outputs.append((t, "error", [str(msg["content"].get("evalue", ""))[:300]]))
        reply = self.kc.get_shell_msg(timeout=30)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=30)
        if status != "error":
            status = reply["content"]["status"]
        return {"outputs": outputs, "done": time.perf_counter() - t0, "status": status}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.kc.stop_channels()
        with contextlib.suppress(Exception):
            self.km.shutdown_kernel(now=False)
        for state in self.dir.glob("xdg-data/**/local_server.json"):  # a server left behind
            with contextlib.suppress(Exception):
                os.kill(int(json.loads(state.read_text())["pid"]), signal.SIGTERM)

    def calls(self) -> list[dict[str, Any]]:
        if not self.ledger.exists():
            return []
        db = sqlite3.connect(self.ledger)
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute("SELECT * FROM calls ORDER BY ts_start")]
        finally:
            db.close()


def _first(outputs: list[tuple[float, str, list[str]]], answer: str | None) -> tuple[float, float]:
    """(first output of any kind, first output showing answer text), NaN where none came."""
    nan = float("nan")
    shown = [
        (t, " ".join(x))
        for t, kind, x in outputs
        if kind not in ("stderr", "error") and "".join(x).strip()
    ]
    any_t = shown[0][0] if shown else nan
    if not answer:
        return any_t, nan
    head = answer.strip()[:5]
    return any_t, next((t for t, text in shown if head in text), nan)


def _llm_magic_run(ctx: Ctx, wait: float) -> dict[str, float]:
    cell = f"%%llm -m local --max-tokens {MAX_TOKENS}\n{PROMPT}"
    k = Kernel(sys.executable, ctx.tmp)
    try:
        load = k.run("%load_ext llm_magic")
        if load["status"] != "ok":
            raise RuntimeError(f"%load_ext llm_magic failed: {load}")
        time.sleep(wait)
        first = k.run(cell)
        warm = k.run(cell)
        rows = k.calls()
    finally:
        k.close()
    if first["status"] != "ok" or len(rows) < 2 or rows[0]["status"] != "ok":
        raise RuntimeError(f"the first cell did not answer: {first} {rows[:1]}")
    stderr = [x for _, kind, x in first["outputs"] if kind == "stderr"]
    if stderr:
        log(f"B7: stderr in the first cell: {stderr[:2]}")
    any_t, token_t = _first(first["outputs"], rows[0]["response"])
    w_any, w_token = _first(warm["outputs"], rows[1]["response"])
    return {
        "load_ext": load["done"],
        "first_output": any_t,
        "first_token": token_t,
        "done": first["done"],
        "setup_s": float(rows[0].get("setup_s") or 0.0),
        "ttft_s": float(rows[0]["ttft_s"]),
        "warm_token": w_token,
        "warm_ttft_s": float(rows[1]["ttft_s"]),
    }


def _jai_ready(python: str) -> str | None:
    """Add ipykernel and langchain-openai to the jupyter-ai venv; None when ready, else why not."""
    check = (
        "import ipykernel, langchain_openai, jupyter_ai_magics.magics, importlib.metadata as m;"
        "assert m.version('langchain-core').startswith('0.3')"
    )
    if subprocess.run([python, "-c", check], capture_output=True).returncode == 0:
        return None
    log(f"B7: pip install {' '.join(JAI_EXTRA)} into the jupyter-ai venv")
    done = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *JAI_EXTRA],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return f"`pip install {' '.join(JAI_EXTRA)}` failed: {done.stderr.strip()[-300:]}"
    if subprocess.run([python, "-c", check], capture_output=True).returncode != 0:
        return "ipykernel / langchain-openai not importable in the jupyter-ai venv after install"
    return None


def _jai_run(ctx: Ctx, python: str, base: str, wait: float) -> dict[str, float]:
    # OpenAI's provider through langchain-openai, pointed at the llama.cpp server (which
    # serves its one model whatever the name): no key leaves the machine, none is real.
    env = {"OPENAI_API_BASE": base, "OPENAI_BASE_URL": base, "OPENAI_API_KEY": "sk-local-bench"}
    k = Kernel(python, ctx.tmp, env)
    try:
        load = k.run("%load_ext jupyter_ai_magics")
        if load["status"] != "ok":
            raise RuntimeError(f"%load_ext jupyter_ai_magics failed: {load}")
        time.sleep(wait)
        params = json.dumps({"max_tokens": MAX_TOKENS}, separators=(",", ":"))
        cell = (
            "%%ai openai-chat-custom:smollm2-135m-instruct -f text "
            f"--model-parameters {params}\n{PROMPT}"
        )
        first = k.run(cell)
        warm = k.run(cell)
    finally:
        k.close()
    if first["status"] != "ok":
        raise RuntimeError(f"%%ai failed: {first}")
    texts = [" ".join(x) for _, kind, x in first["outputs"] if kind not in ("stderr", "error")]
    if not any(t.strip() for t in texts):
        raise RuntimeError(f"%%ai showed nothing: {first}")
    any_t, _ = _first(first["outputs"], None)
    w_any, _ = _first(warm["outputs"], None)
    return {"load_ext": load["done"], "first_output": any_t, "done": first["done"], "warm": w_any}


def run(ctx: Ctx) -> Section:
    from . import b1_load_ext

    jai: str | None = None
    jai_note = "skipped in smoke mode (it needs B1's pip-installed jupyter-ai venv)"
    if not ctx.smoke:
        jai, jai_note = b1_load_ext._jai_python()
        if jai is not None:
            why = _jai_ready(jai)
            if why is not None:
                jai, jai_note = None, why
    server_url = None
    if jai is not None:
        from llm_magic.local import server

        server_url = server().url() + "/v1"
    wait_rows: list[dict[str, float]] = []
    nowait_rows: list[dict[str, float]] = []
    jai_rows: list[dict[str, float]] = []
    for r in range(ctx.runs):
        log(f"B7: run {r + 1}/{ctx.runs}")
        wait_rows.append(_llm_magic_run(ctx, WAIT_S))
        nowait_rows.append(_llm_magic_run(ctx, 0.0))
        if jai is not None and server_url is not None:
            try:
                jai_rows.append(_jai_run(ctx, jai, server_url, WAIT_S))
            except Exception as exc:  # reported in the section, the rest still counts
                jai, jai_note = None, f"`%%ai` could not run: {type(exc).__name__}: {exc}"[:400]
    return _section(ctx, wait_rows, nowait_rows, jai_rows, jai_note)


def _col(rows: list[dict[str, float]], key: str) -> list[float]:
    return [r[key] for r in rows if r[key] == r[key]]  # NaN dropped


def _fs(rows: list[dict[str, float]], key: str) -> str:
    xs = _col(rows, key)
    return fmt_s(xs) if xs else "—"


def _attribution(
    wait_rows: list[dict[str, float]], nowait_rows: list[dict[str, float]]
) -> list[str]:
    """What dominates the first token of each variant, and what remains (medians)."""
    out = []
    for label, rows in (
        (f"{WAIT_S:.0f} s after `%load_ext`", wait_rows),
        ("right after `%load_ext`", nowait_rows),
    ):
        token, setup, ttft = (_col(rows, k) for k in ("first_token", "setup_s", "ttft_s"))
        if not (token and setup and ttft):
            continue
        t, su, tt = med(token), med(setup), med(ttft)
        rest = t - su - tt
        out.append(
            f"- First cell {label}: first token at {t:.2f} s = set-up still waited for "
            f"{su:.2f} s ({su / t:.0%}: the background start of litellm and of the local "
            f"model not yet done) + the model's time to first token {tt:.2f} s ({tt / t:.0%}) + "
            f"{rest:.2f} s ({rest / t:.0%}) for the kernel, the magic and the first display."
        )
    warm = _col(wait_rows + nowait_rows, "warm_token")
    warm_ttft = _col(wait_rows + nowait_rows, "warm_ttft_s")
    if warm and warm_ttft:
        out.append(
            f"- What remains once everything has started (the same cell again): "
            f"{med(warm):.2f} s to the first token, of which the model's TTFT {med(warm_ttft):.2f} s."
        )
    return out


def _section(
    ctx: Ctx,
    wait_rows: list[dict[str, float]],
    nowait_rows: list[dict[str, float]],
    jai_rows: list[dict[str, float]],
    jai_note: str,
) -> Section:
    from . import b1_load_ext

    n = len(wait_rows)
    lines = [
        f"Runs: {n} fresh kernels per variant, interleaved (wait, no wait"
        + (", jupyter-ai" if jai_rows else "")
        + f"). Cell: `%%llm -m local --max-tokens {MAX_TOKENS}` (“{PROMPT}”), default display. "
        f"Target: first token ≤ {TARGET_S} s for a first cell run {WAIT_S:.0f} s after "
        "`%load_ext`.",
        "",
    ]
    rows = [
        [
            f"**first cell {WAIT_S:.0f} s after `%load_ext`**",
            _fs(wait_rows, "first_output"),
            f"**{_fs(wait_rows, 'first_token')}**",
            _fs(wait_rows, "done"),
            _fs(wait_rows, "setup_s"),
            _fs(wait_rows, "ttft_s"),
        ],
        [
            "first cell right after `%load_ext` (no wait)",
            _fs(nowait_rows, "first_output"),
            _fs(nowait_rows, "first_token"),
            _fs(nowait_rows, "done"),
            _fs(nowait_rows, "setup_s"),
            _fs(nowait_rows, "ttft_s"),
        ],
        [
            "the same cell again, same kernel (warm floor)",
            "—",
            _fs(wait_rows + nowait_rows, "warm_token"),
            "—",
            "—",
            _fs(wait_rows + nowait_rows, "warm_ttft_s"),
        ],
    ]
    if jai_rows:
        rows.append(
            [
                f"jupyter-ai-magics {b1_load_ext.JAI_VERSION} first `%%ai` {WAIT_S:.0f} s after "
                "`%load_ext` (whole answer at once)",
                _fs(jai_rows, "first_output"),
                _fs(jai_rows, "first_output"),
                _fs(jai_rows, "done"),
                "—",
                "—",
            ]
        )
        rows.append(
            ["jupyter-ai: the same `%%ai` again (warm)", "—", _fs(jai_rows, "warm"), "—", "—", "—"]
        )
    lines += table(
        [
            "variant (client-side, from sending the cell)",
            "first output",
            "first answer text",
            "cell done",
            "ledger setup_s",
            "ledger ttft_s",
        ],
        rows,
    )
    lines.append("")
    lines.append(
        "`%load_ext llm_magic` reply (client side): "
        + _fs(wait_rows + nowait_rows, "load_ext")
        + (f"; `%load_ext jupyter_ai_magics`: {_fs(jai_rows, 'load_ext')}" if jai_rows else "")
        + "."
    )
    if not jai_rows:
        lines.append(f"jupyter-ai-magics: not measured — {jai_note}.")
    lines.append("")
    lines += _attribution(wait_rows, nowait_rows)
    lines.append("")
    verdicts = []
    token = _col(wait_rows, "first_token")
    if token and not ctx.smoke:
        m = med(token)
        verdicts.append(
            Verdict(
                "B7",
                f"first token ≤ {TARGET_S} s, first cell {WAIT_S:.0f} s after `%load_ext`",
                f"{m:.2f} s",
                m <= TARGET_S,
                f"{TARGET_S - m:.2f} s to spare" if m <= TARGET_S else f"{m - TARGET_S:.2f} s over",
            )
        )
    else:
        verdicts.append(
            Verdict("B7", f"first token ≤ {TARGET_S} s (cold first cell)", "not measured", None)
        )
    return Section("B7", "the cold first cell (fresh kernel, local model)", lines, verdicts)


if __name__ == "__main__":  # python -m bench.b7_first_cell: one smoke-sized run, no file
    from .common import prepare_env

    tmp = Path(tempfile.mkdtemp(prefix="llm-magic-b7-"))
    prepare_env(tmp)
    print(run(Ctx(smoke=True, runs=1, tmp=tmp)).markdown())

"""`make demo`: run every notebook headless on the embedded model, then summarise the ledger.

Executed notebooks (.ipynb and .html) go to build/notebooks/; the ledger of the run is
build/ledger.sqlite. No API key is needed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("LLM_MAGIC_BUILD", ROOT / "build"))


def main() -> int:
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    BUILD.mkdir(exist_ok=True)
    (BUILD / "notebooks").mkdir(exist_ok=True)
    ledger_path = BUILD / "ledger.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{ledger_path}{suffix}").unlink(missing_ok=True)
    os.environ["LLM_MAGIC_LEDGER"] = str(ledger_path)
    os.environ.setdefault("LLM_MAGIC_DISPLAY", "handle")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    from llm_magic.local import server

    print("starting the local model (SmolLM2-135M-Instruct on llama.cpp)…", flush=True)
    os.environ["LLM_MAGIC_LOCAL_URL"] = server().url()  # kernels reuse this one server

    failed = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        started = time.monotonic()
        book = nbformat.read(path, as_version=4)
        client = NotebookClient(
            book,
            timeout=900,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        )
        try:
            client.execute()
            status = "ok"
        except Exception as exc:  # keep going: report every notebook
            status = f"FAILED: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}"
            failed.append(path.name)
        out = BUILD / "notebooks" / path.name
        nbformat.write(book, out)
        html, _ = HTMLExporter().from_notebook_node(book)
        out.with_suffix(".html").write_text(html)
        print(f"{path.name}: {status} in {time.monotonic() - started:.1f} s → {out}", flush=True)

    import llm_magic as lm

    book = lm.ledger(str(ledger_path))
    frame = book.df
    print(f"\nLedger {ledger_path}: {len(frame)} call(s)")
    if len(frame):
        table = book.summary(by="model")[
            [
                "calls",
                "errors",
                "input_tokens",
                "output_tokens",
                "cost_usd",
                "p50_latency_s",
                "p50_ttft_s",
            ]
        ]
        print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    server().stop()
    if failed:
        print(f"\n{len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

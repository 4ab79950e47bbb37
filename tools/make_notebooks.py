"""Write the companion notebooks from their cell sources (so they are reviewed as code).

Run: python tools/make_notebooks.py  — writes notebooks/*.ipynb without outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def nb(cells: list[tuple[str, str]]) -> dict:
    out = []
    for i, (kind, src) in enumerate(cells):
        cell = {"id": f"c{i:02d}", "cell_type": kind, "metadata": {}, "source": src.strip("\n")}
        if kind == "code":
            cell.update({"execution_count": None, "outputs": []})
        out.append(cell)
    return {
        "cells": out,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


QUICKSTART = [
    (
        "markdown",
        """
# llm_magic quickstart

Load the extension, ask a question in a `%%llm` cell, and look at what it cost.
With no API key, the default model is `local`: SmolLM2-135M-Instruct running on this machine
through llama.cpp (started on first use, free).
""",
    ),
    ("code", "%load_ext llm_magic"),
    (
        "markdown",
        "The cell body is the prompt. The answer streams in token by token, then is shown as Markdown with a one-line account: model, tokens, cost, latency and time to first token.",
    ),
    (
        "code",
        """
%%llm --max-tokens 64 -o haiku
Write a haiku about tides.
""",
    ),
    ("markdown", "`-o haiku` kept the `Result`:"),
    ("code", "haiku.text[:80], haiku.model, haiku.output_tokens, haiku.cost_usd"),
    (
        "markdown",
        "`{name}` is filled in from the notebook; braces in code or JSON are left alone, and `{{`/`}}` give literal braces.",
    ),
    (
        "code",
        """
topic = "the moon"
""",
    ),
    (
        "code",
        """
%%llm --max-tokens 48 --agent quickstart --tag step=interpolation -f text
In one sentence, what is {topic}? Answer as JSON like {{"answer": "..."}}.
""",
    ),
    ("markdown", "A conversation keeps its history under a name:"),
    (
        "code",
        """
%%llm --chat trip --max-tokens 40
My name is Ada. Say hello to me.
""",
    ),
    (
        "code",
        """
%%llm --chat trip --max-tokens 40
What is my name?
""",
    ),
    ("code", "%llm reset trip"),
    ("markdown", "The same from Python, in a notebook or a plain script:"),
    (
        "code",
        """
import llm_magic as lm

result = lm.complete("Name three colours.", max_tokens=32, agent="quickstart")
result
""",
    ),
    (
        "markdown",
        "## The ledger\nEvery call — failed ones too — is a row with tokens, cost, latency and time to first token.",
    ),
    (
        "code",
        """
df = lm.ledger().df
df[["ts_start", "model", "status", "input_tokens", "output_tokens", "usage_source", "cost_usd", "latency_s", "ttft_s"]].tail()
""",
    ),
    ("code", "%llm ledger --by agent"),
    ("code", 'lm.ledger().summary(by="model")'),
]


def main() -> None:
    out = ROOT / "notebooks"
    out.mkdir(exist_ok=True)
    books = {"01_quickstart.ipynb": QUICKSTART}
    for name, cells in books.items():
        (out / name).write_text(json.dumps(nb(cells), indent=1, ensure_ascii=False) + "\n")
        print("wrote", out / name)


if __name__ == "__main__":
    main()

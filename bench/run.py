"""`make bench` writes docs/benchmarks.md; `--smoke` runs every benchmark once, tiny, no file.

B1 — `%load_ext llm_magic` time added to a bare IPython start, against `import litellm`.
Each figure: median of N runs with min–max, the baseline from the same run, and the ratio.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BARE = (
    "from IPython.core.interactiveshell import InteractiveShell; ip = InteractiveShell.instance()"
)
LOAD = BARE + "; ip.run_line_magic('load_ext', 'llm_magic')"
LITELLM = "import os; os.environ['LITELLM_LOCAL_MODEL_COST_MAP']='True'; import litellm"


def _time(code: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        out.append(time.perf_counter() - t0)
    return out


def _fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} s ({min(xs):.3f}–{max(xs):.3f})"


def b1(runs: int) -> list[str]:
    bare, load, lite = _time(BARE, runs), _time(LOAD, runs), _time(LITELLM, runs)
    added = [x - statistics.median(bare) for x in load]
    ratio = statistics.median([x - statistics.median(bare) for x in lite]) / max(
        statistics.median(added), 1e-3
    )
    return [
        "## B1 — `%load_ext llm_magic` added to a bare IPython start",
        "",
        f"Runs: {runs} each, in fresh processes. Target: ≤ 0.15 s added.",
        "",
        "| what | time (median, min–max) |",
        "|---|---|",
        f"| bare `InteractiveShell` start | {_fmt(bare)} |",
        f"| start + `%load_ext llm_magic` | {_fmt(load)} |",
        f"| **added by `%load_ext llm_magic`** | **{statistics.median(added):.3f} s** |",
        f"| `import litellm` alone (what a non-lazy extension would pay) | {_fmt(lite)} |",
        "",
        f"`import litellm` costs {ratio:.0f}× what `%load_ext llm_magic` adds: litellm is imported lazily.",
        "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="one tiny run of each, no doc")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    runs = 1 if args.smoke else args.runs
    lines = b1(runs)
    if args.smoke:
        print("\n".join(lines))
        return 0
    head = [
        "# Benchmarks",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}, "
        f"{__import__('os').cpu_count()} cores. Reproduce with `make bench`.",
        "",
    ]
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "benchmarks.md").write_text("\n".join(head + lines))
    print("\n".join(head + lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

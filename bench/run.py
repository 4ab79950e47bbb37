"""`make bench` writes docs/benchmarks.md; `make bench-smoke` (`--smoke`) runs every benchmark
once at tiny sizes, prints the tables and writes no file.

    python -m bench.run                 # full run (≥ 5 runs per figure), writes docs/benchmarks.md
    python -m bench.run --smoke         # one tiny run of each, no file
    python -m bench.run --only B2,B5    # some benchmarks; prints them, writes no file unless --out

One module per benchmark (bench/b1_load_ext.py … bench/b10_experiment.py), each returning a Section.
Every figure is a median over runs with min–max, next to a baseline measured in the same run,
and the ratio between the two. No timing is asserted: a missed target is reported, and the
exit status is non-zero only when a benchmark could not run at all.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .common import ROOT, Ctx, Section, import_litellm, log, machine, prepare_env, table

BENCHES = {
    "B1": "bench.b1_load_ext",
    "B2": "bench.b2_stream",
    "B3": "bench.b3_ledger",
    "B4": "bench.b4_compare",
    "B5": "bench.b5_tokens",
    "B6": "bench.b6_local",
    "B7": "bench.b7_first_cell",
    "B8": "bench.b8_embed",
    "B9": "bench.b9_serve",
    "B10": "bench.b10_experiment",
    "B10C": "bench.b10c_rerun",
}
DOC = ROOT / "docs" / "benchmarks.md"


def _selected(only: str | None) -> list[str]:
    if not only:
        return list(BENCHES)
    wanted = [w.strip().upper() for w in only.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in BENCHES]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}: use {', '.join(BENCHES)}")
    return [b for b in BENCHES if b in wanted]


def _verdict_rows(sections: list[Section]) -> list[list[str]]:
    rows = []
    for s in sections:
        for v in s.verdicts:
            mark = {True: "✅ met", False: "❌ missed", None: "— not measured"}[v.met]
            rows.append([v.bench, v.target, v.measured, mark, v.margin])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="one tiny run of each, no file")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (at least 5)")
    parser.add_argument("--only", help="comma-separated benchmark ids, e.g. B2,B5")
    parser.add_argument("--out", type=Path, help=f"write the markdown here (default {DOC})")
    args = parser.parse_args(argv)
    if args.runs < 5 and not args.smoke:
        parser.error(f"--runs {args.runs}: every figure is a median of at least 5 runs (--runs 5)")
    chosen = _selected(args.only)
    runs = 1 if args.smoke else args.runs
    out: Path | None = None
    if not args.smoke:
        out = args.out or (DOC if not args.only else None)
    command = "python -m bench.run " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    tmp = Path(tempfile.mkdtemp(prefix="llm-magic-bench-"))
    prepare_env(tmp)
    ctx = Ctx(smoke=args.smoke, runs=runs, tmp=tmp)
    info = machine()
    started = time.time()
    if args.smoke and "B1" in chosen:
        # One import serves B1's baseline and the other benchmarks (it costs seconds).
        ctx.litellm_import_s = import_litellm()
    sections: list[Section] = []
    crashed: list[str] = []
    try:
        for bench in chosen:
            log(f"{bench}: start")
            t0 = time.perf_counter()
            try:
                section = importlib.import_module(BENCHES[bench]).run(ctx)
            except Exception as exc:
                crashed.append(bench)
                tb = traceback.format_exc()
                print(tb, file=sys.stderr)
                section = Section(
                    bench,
                    "could not run",
                    [f"The benchmark raised `{type(exc).__name__}: {exc}`:", "", "```", tb, "```"],
                )
            log(f"{bench}: done in {time.perf_counter() - t0:.1f} s")
            sections.append(section)
            print(section.markdown(), flush=True)
    finally:
        from llm_magic.local import server

        server().stop()
        shutil.rmtree(tmp, ignore_errors=True)
    info_end = machine()
    elapsed = time.time() - started
    head = [
        "# Benchmarks",
        "",
        f"Command: `{command.strip()}` (`make bench`), from the repository root; "
        f"{time.strftime('%Y-%m-%d %H:%M %Z', time.localtime(started))}, "
        f"{elapsed / 60:.1f} min.",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['os']}; Python {info['python']}, "
        f"litellm {info['litellm']}. Load average (1/5/15 min) {info['load']} at the start, "
        f"{info_end['load']} at the end. Every figure is next to a baseline measured in the "
        "same run (interleaved with it), "
        f"median of {runs} runs with min–max unless a section says otherwise.",
        "",
        "## Targets"
        + (" (smoke mode: tiny sizes, one run — indicative only)" if args.smoke else ""),
        "",
        *table(["id", "target", "measured (median)", "", "margin"], _verdict_rows(sections)),
        "",
    ]
    doc = "\n".join(head + [s.markdown() for s in sections])
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(doc)
        log(f"wrote {out}")
    print("\n".join(head))
    if crashed:
        log(f"benchmark(s) that could not run: {', '.join(crashed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

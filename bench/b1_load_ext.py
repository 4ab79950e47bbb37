"""B1 — what `%load_ext llm_magic` adds to a bare IPython start.

Every run is a fresh process. Inside it, the shell start and the `%load_ext` call are timed
separately (perf_counter), so "added by %load_ext" is measured directly rather than as a
difference of two noisy process times (the process times are shown too). Baselines from the same
run, interleaved run by run: `import litellm` (what an extension that imports litellm eagerly
would pay) and jupyter-ai-magics 2.31.7's `%load_ext jupyter_ai_magics`, in its own venv under
build/ (pip-installed by this script on first use, reused afterwards; skipped in smoke mode).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from .common import ROOT, Ctx, Section, Verdict, fmt_s, fmt_x, log, med, table

JAI_VERSION = "2.31.7"
JAI_VENV = ROOT / "build" / "bench-jupyter-ai"
TARGET_S = 0.15
TARGET_X = 6.0
HEAVY = ("litellm", "pandas", "matplotlib", "ipywidgets", "httpx", "openai", "langchain_core")

# Prints {"shell": s, "load": s, "heavy": [...]} for one fresh process.
CHILD = """
import json, sys, time
t0 = time.perf_counter()
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
t1 = time.perf_counter()
ext = sys.argv[1]
if ext:
    ip.run_line_magic("load_ext", ext)
    if ext not in ip.extension_manager.loaded:
        raise SystemExit(f"%load_ext {ext} did not load")
t2 = time.perf_counter()
heavy = [m for m in sys.argv[2].split(",") if m in sys.modules]
print("BENCH " + json.dumps({"shell": t1 - t0, "load": t2 - t1, "heavy": heavy}))
"""

LITELLM_CHILD = """
import json, os, time
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
t0 = time.perf_counter()
import litellm
print("BENCH " + json.dumps({"load": time.perf_counter() - t0}))
"""


def _run(python: str, code: str, *args: str) -> tuple[float, dict]:
    """(process wall time, the child's JSON) for one fresh process."""
    t0 = time.perf_counter()
    done = subprocess.run([python, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{python} failed: {done.stderr.strip()[-600:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("BENCH "))
    return wall, json.loads(line[len("BENCH ") :])


def _jai_python() -> tuple[str | None, str]:
    """The jupyter-ai venv's python (creating it with pip on first use), or None and why not."""
    python = JAI_VENV / "bin" / "python"
    check = (
        f"import importlib.metadata as m; assert m.version('jupyter-ai-magics') == '{JAI_VERSION}'"
    )
    if (
        python.exists()
        and subprocess.run([python, "-c", check], capture_output=True).returncode == 0
    ):
        return str(python), "reused"
    log(f"B1: creating {JAI_VENV.relative_to(ROOT)} with pip (jupyter-ai-magics=={JAI_VERSION})")
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [
        [base, "-m", "venv", "--clear", str(JAI_VENV)],
        # Same IPython as the project venv, so the two bare starts are comparable; if pip cannot
        # resolve that, the second command lets it choose.
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         f"jupyter-ai-magics=={JAI_VERSION}", f"ipython=={_version('ipython')}"],
    ]  # fmt: skip
    fallback = [
        str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
        f"jupyter-ai-magics=={JAI_VERSION}",
    ]  # fmt: skip
    log_path = ROOT / "build" / "bench-jupyter-ai-install.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as out:
        for i, cmd in enumerate(steps):
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
            if rc != 0 and i == 1:
                rc = subprocess.run(fallback, stdout=out, stderr=subprocess.STDOUT).returncode
            if rc != 0:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                return None, f"`pip install` failed (exit {rc}): {' / '.join(tail)[:300]}"
    if subprocess.run([python, "-c", check], capture_output=True).returncode != 0:
        return None, f"jupyter-ai-magics {JAI_VERSION} is not importable after install"
    return str(python), "installed by this run"


def _version(dist: str, python: str | None = None) -> str:
    if python is None:
        from importlib.metadata import version

        return version(dist)
    code = f"import importlib.metadata as m; print(m.version('{dist}'))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return out.stdout.strip() or "?"


def run(ctx: Ctx) -> Section:
    me = sys.executable
    heavy = ",".join(HEAVY)
    jai: str | None = None
    jai_note = "skipped in smoke mode (it needs a pip install of jupyter-ai-magics)"
    if not ctx.smoke:
        jai, jai_note = _jai_python()
    variants: dict[str, tuple[str, str, tuple[str, ...]]] = {
        "bare": (me, CHILD, ("", heavy)),
        "llm_magic": (me, CHILD, ("llm_magic", heavy)),
    }
    if ctx.litellm_import_s is None:
        variants["litellm"] = (me, LITELLM_CHILD, ())
    if jai:
        variants["jai_bare"] = (jai, CHILD, ("", heavy))
        variants["jai"] = (jai, CHILD, ("jupyter_ai_magics", heavy))
    walls: dict[str, list[float]] = {k: [] for k in variants}
    inner: dict[str, list[float]] = {k: [] for k in variants}
    shells: dict[str, list[float]] = {k: [] for k in variants}
    loaded: dict[str, list[str]] = {}
    rounds = ctx.runs + (0 if ctx.smoke else 1)  # the first round warms caches, not counted
    for r in range(rounds):
        log(f"B1: round {r + 1}/{rounds}")
        for name, (python, code, args) in variants.items():
            wall, out = _run(python, code, *args)
            if r == 0 and not ctx.smoke:
                continue
            walls[name].append(wall)
            inner[name].append(out["load"])
            shells[name].append(out.get("shell", 0.0))
            loaded[name] = out.get("heavy", [])
    if ctx.litellm_import_s is not None:
        inner["litellm"] = [ctx.litellm_import_s]
    ours = inner["llm_magic"]
    lite = inner["litellm"]
    n = len(ours)
    lines = [
        f"Runs: {n} fresh processes per variant, interleaved"
        + ("" if ctx.smoke else " (after one warm-up round)")
        + ". Targets: ≤ 0.15 s added; ≥ 6× less than jupyter-ai.",
        "",
    ]
    rows = [
        ["bare `InteractiveShell` start (process wall)", fmt_s(walls["bare"]), "—"],
        ["start + `%load_ext llm_magic` (process wall)", fmt_s(walls["llm_magic"]), "—"],
        [
            "process difference (median − median)",
            f"{med(walls['llm_magic']) - med(walls['bare']):.3f} s",
            "—",
        ],
        ["**`%load_ext llm_magic` call, timed in-process**", f"**{fmt_s(ours)}**", "1×"],
    ]
    lite_ratio = [a / b for a, b in zip(lite, ours, strict=False)] if len(lite) == n else []
    if not lite_ratio:
        lite_ratio = [lite[0] / med(ours)]
    where = "in this process (smoke mode)" if ctx.litellm_import_s is not None else "fresh process"
    rows.append([f"`import litellm` alone ({where})", fmt_s(lite), fmt_x(lite_ratio, 0)])
    verdicts = [
        Verdict(
            "B1",
            "`%load_ext llm_magic` adds ≤ 0.15 s",
            f"{med(ours):.3f} s",
            med(ours) <= TARGET_S,
            f"{TARGET_S / med(ours):.0f}× under the target"
            if med(ours) <= TARGET_S
            else f"{med(ours) / TARGET_S:.1f}× over the target",
        )
    ]
    jai_ratio: list[float] = []
    if jai:
        jai_ratio = [a / b for a, b in zip(inner["jai"], ours, strict=True)]
        rows += [
            [
                f"jupyter-ai venv: bare start (IPython {_version('ipython', jai)}, process wall)",
                fmt_s(walls["jai_bare"]),
                "—",
            ],
            [
                f"**`%load_ext jupyter_ai_magics` {JAI_VERSION} call, timed in-process**",
                f"**{fmt_s(inner['jai'])}**",
                f"**{fmt_x(jai_ratio, 1)}**",
            ],
            [
                "jupyter-ai process difference (median − median)",
                f"{med(walls['jai']) - med(walls['jai_bare']):.3f} s",
                "—",
            ],
        ]
        verdicts.append(
            Verdict(
                "B1",
                "≥ 6× less than jupyter-ai's `%load_ext`",
                f"{med(jai_ratio):.1f}× less",
                med(jai_ratio) >= TARGET_X,
                f"{med(jai_ratio) / TARGET_X:.1f}× the required factor"
                if med(jai_ratio) >= TARGET_X
                else f"short of 6× by {TARGET_X - med(jai_ratio):.1f}",
            )
        )
    else:
        verdicts.append(
            Verdict("B1", "≥ 6× less than jupyter-ai's `%load_ext`", "not measured", None, jai_note)
        )
    lines += table(["what", "time (median, min–max)", "vs `%load_ext llm_magic`"], rows)
    lines += [""]
    lines.append(
        "Heavy modules present after `%load_ext llm_magic`: "
        + (", ".join(f"`{m}`" for m in loaded["llm_magic"]) or "none of " + ", ".join(HEAVY))
        + " (litellm, pandas and matplotlib load on first use)."
    )
    lines.append("")
    if jai:
        lines.append(
            f"jupyter-ai-magics {JAI_VERSION}: venv `{JAI_VENV.relative_to(ROOT)}` ({jai_note}); "
            "modules it loads at `%load_ext`: "
            + (", ".join(f"`{m}`" for m in loaded["jai"]) or "none of the listed")
            + ". The two venvs hold different packages besides IPython, so their bare starts "
            "differ; the ratio compares the two `%load_ext` calls, each timed inside its process."
        )
    else:
        lines.append(f"jupyter-ai-magics {JAI_VERSION}: {jai_note}.")
    return Section("B1", "`%load_ext llm_magic` added to a bare IPython start", lines, verdicts)

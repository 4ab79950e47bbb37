"""B10 — ``lm.experiment`` at scale: throughput, resume after SIGKILL, re-run of a finished one.

(a) N calls (10,000; ``LLM_MAGIC_BENCH_B10_N`` overrides; smoke 80) at concurrency 64 to a
scripted provider whose every answer ends 50 ms after its first chunk (two chunks 50 ms apart),
through ``lm.experiment`` and through a bare ``litellm.acompletion`` loop (asyncio, a semaphore
of 64, streamed like llm_magic's calls) against the same server in the same run, the two in
rotating order: calls/s and process CPU per call, and their ratios. The server is
``tests.fakeprovider`` in its own process. A cProfile of the calls' own path (the same calls in
sequence, in this thread: the experiment's workers are threads cProfile does not see) and of the
experiment's planning and reading in the calling thread says where the time goes.

(b) Resume: the experiment in a subprocess against a fake provider in this process (so its
requests can be counted), SIGKILLed once about half the calls have reached the server, then run
again to the end. Provider requests in all must be N plus at most the calls in flight at the
kill (requests the server saw whose answer has no ``ok`` row in the ledger).

(c) Re-run of the finished experiment (every call answered): wall time; nothing is sent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import (
    BENCH_KEY,
    ROOT,
    Ctx,
    Section,
    Verdict,
    fake_server,
    fmt_n,
    fmt_s,
    fmt_x,
    import_litellm,
    log,
    med,
    prepare_env,
    profile,
    quiet,
    table,
    use_openai_server,
)

MODEL = "gpt-4o-mini"
WIDTH = 64
ANSWER: dict[str, Any] = {"chunks": ["ok", " done"], "chunk_delay": 0.05}
FULL_N = 10_000
TARGET_RATIO = 0.8
TARGET_RERUN_S = 2.0


def _n(ctx: Ctx) -> int:
    if ctx.smoke:
        return 80
    return int(os.environ.get("LLM_MAGIC_BENCH_B10_N", FULL_N))


def _rounds(ctx: Ctx) -> int:
    """Rounds of (a) and (c): the run's ``--runs``, or fewer (``LLM_MAGIC_BENCH_B10_RUNS``:
    one round at the full N is ~20,000 calls, half an hour on a loaded 2-core machine)."""
    return max(1, min(ctx.runs, int(os.environ.get("LLM_MAGIC_BENCH_B10_RUNS", ctx.runs))))


def _resume_n(ctx: Ctx, n: int) -> int:
    """Calls in (b): N, or ``LLM_MAGIC_BENCH_B10_RESUME_N``."""
    return int(os.environ.get("LLM_MAGIC_BENCH_B10_RESUME_N", n)) if not ctx.smoke else n


def _prompts(n: int, tag: str) -> list[str]:
    return [f"{tag} question {i}: say ok" for i in range(n)]


def _experiment(prompts: list[str], name: str) -> tuple[float, float, object]:
    import llm_magic as lm

    c0, t0 = time.process_time(), time.perf_counter()
    exp = lm.experiment(prompts, MODEL, name=name, concurrency=WIDTH, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, exp


def _checked(exp: object, n: int, made: int) -> None:
    df = exp.df  # type: ignore[attr-defined]
    bad = int((df["status"] != "ok").sum())
    if len(df) != n or bad or exp.made != made:  # type: ignore[attr-defined]
        raise RuntimeError(
            f"experiment: {len(df)} rows, {bad} not ok, {exp.made} made (wanted {n}, 0, {made})"  # type: ignore[attr-defined]
        )


def _bare(prompts: list[str], base: str) -> tuple[float, float]:
    import litellm

    async def one(sem: asyncio.Semaphore, prompt: str) -> int:
        async with sem:
            resp = await litellm.acompletion(
                model=MODEL,
                messages=[{"role": "user", "content": prompt}],
                api_base=base,
                api_key=BENCH_KEY,
                max_tokens=256,
                temperature=0.0,
                stream=True,
                stream_options={"include_usage": True},
            )
            parts = [c.choices[0].delta.content or "" async for c in resp if c.choices]
            return 1 if "".join(parts) == "ok done" else 0

    async def main() -> int:
        sem = asyncio.Semaphore(WIDTH)
        return sum(await asyncio.gather(*(one(sem, p) for p in prompts)))

    c0, t0 = time.process_time(), time.perf_counter()
    good = asyncio.run(main())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if good != len(prompts):
        raise RuntimeError(f"bare litellm loop: {good} of {len(prompts)} answers right")
    return wall, cpu


def _profiles(base: str, n: int) -> list[str]:
    """Where the time goes: one call's path (sequential ``_one``) and the calling thread."""
    import threading

    import llm_magic as lm
    from llm_magic.comparison import _one
    from llm_magic.config import settings
    from llm_magic.core import Request
    from llm_magic.store import ledger

    cfg = settings()
    book = ledger(cfg.ledger)
    stop = threading.Event()
    reqs = [
        Request(prompt=p, model=MODEL, max_tokens=256, temperature=0.0)
        for p in _prompts(n, "profile")
    ]

    def calls() -> None:
        for req in reqs:
            _one(req, 0, None, stop, cfg, book)

    def planning() -> None:
        lm.experiment(
            _prompts(n, "plan"), MODEL, name="b10-plan", concurrency=WIDTH, progress=False
        )

    return [
        f"**One call's path** ({n} calls made one after another in the profiled thread):",
        "",
        *profile(calls, top=10, calls=n),
        "",
        f"**The calling thread of `lm.experiment`** ({n} calls; the calls themselves run in "
        "worker threads, not profiled here — this is planning, pricing, ledger reads, `.df`):",
        "",
        *profile(planning, top=8, by="cumulative"),
    ]


# -- (b) resume ---------------------------------------------------------------------------------
def _child(base: str, ledger_path: str, n: int) -> None:
    """The subprocess: run the experiment ``b10-resume`` to its end (or until it is killed)."""
    prepare_env(Path(ledger_path).parent)
    use_openai_server(base, Path(ledger_path))
    os.environ["LLM_MAGIC_CONCURRENCY_OPENAI"] = str(WIDTH)
    import llm_magic as lm

    exp = lm.experiment(
        _prompts(n, "resume"), MODEL, name="b10-resume", concurrency=WIDTH, progress=False
    )
    print(exp.made, exp.reused, flush=True)  # type: ignore[union-attr]


def _ok_rows(ledger_path: Path) -> int:
    with sqlite3.connect(ledger_path) as db:
        row = db.execute(
            "SELECT count(*) FROM calls WHERE experiment = 'b10-resume' AND status = 'ok'"
        ).fetchone()
    return int(row[0])


def _resume(ctx: Ctx, n: int) -> dict[str, int]:
    from tests.fakeprovider import FakeProvider, ok

    ledger_path = ctx.tmp / "b10-resume" / "ledger.sqlite"
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    fp = FakeProvider(default=ok(**ANSWER)).start()
    cmd = [sys.executable, "-m", "bench.b10_experiment", f"{fp.url}/v1", str(ledger_path), str(n)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        while len(fp.completions()) < n // 2 and proc.poll() is None:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.3)  # let the server finish answering the requests that were in flight
        first = len(fp.completions())
        ok_at_kill = _ok_rows(ledger_path)
        log(f"B10: killed after {first} requests, {ok_at_kill} ok rows")
        out = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        reqs = fp.completions()
        bodies = [r.body for r in reqs]
    finally:
        fp.close()
    total = len(reqs)
    return {
        "first": first,
        "ok_at_kill": ok_at_kill,
        "second": total - first,
        "total": total,
        "distinct": len({b["messages"][-1]["content"] for b in bodies if isinstance(b, dict)}),
        "unparsed": sum(1 for b in bodies if not isinstance(b, dict)),
        "made": int(out[0]),
        "reused": int(out[1]),
        "ok_end": _ok_rows(ledger_path),
    }


# -- the section --------------------------------------------------------------------------------
def run(ctx: Ctx) -> Section:
    import_litellm()
    n = _n(ctx)
    os.environ["LLM_MAGIC_CONCURRENCY_OPENAI"] = str(WIDTH)
    out: dict[str, list[float]] = {"exp_wall": [], "exp_cpu": [], "bare_wall": [], "bare_cpu": []}
    rerun: list[float] = []
    with fake_server(**ANSWER) as base:
        use_openai_server(base, ctx.tmp / "b10.sqlite")
        log("B10: warm-up")
        with quiet():
            _bare(_prompts(WIDTH, "warm"), base)
            _experiment(_prompts(WIDTH, "warm"), "b10-warm")
        rounds = _rounds(ctx)
        for r in range(rounds):
            log(f"B10: round {r + 1}/{rounds}, {n} calls each side")
            order = ["exp", "bare"] if r % 2 == 0 else ["bare", "exp"]
            for side in order:
                with quiet():
                    if side == "bare":
                        wall, cpu = _bare(_prompts(n, f"bare{r}"), base)
                    else:
                        wall, cpu, exp = _experiment(_prompts(n, f"exp{r}"), f"b10-run{r}")
                        _checked(exp, n, n)
                out[f"{side}_wall"].append(wall)
                out[f"{side}_cpu"].append(cpu)
            with quiet():  # (c): the same experiment again, everything reused
                wall, _cpu, exp = _experiment(_prompts(n, f"exp{r}"), f"b10-run{r}")
            _checked(exp, n, 0)
            rerun.append(wall)
        log("B10: profile")
        with quiet():
            prof = _profiles(base, min(n, 200))
    rn = _resume_n(ctx, n)
    log(f"B10: resume (SIGKILL at about half), {rn} calls")
    res = _resume(ctx, rn)
    extra = res["total"] - rn
    in_flight = res["first"] - res["ok_at_kill"]
    if res["ok_end"] != rn or res["second"] != rn - res["ok_at_kill"] or extra > in_flight:
        raise RuntimeError(f"resume: counts do not add up: {res} (n={rn})")
    return _section(ctx, n, out, rerun, {**res, "n": rn}, prof)


def _section(
    ctx: Ctx,
    n: int,
    out: dict[str, list[float]],
    rerun: list[float],
    res: dict[str, int],
    prof: list[str],
) -> Section:
    rate = {s: [n / w for w in out[f"{s}_wall"]] for s in ("exp", "bare")}
    cpu = {s: [c / n for c in out[f"{s}_cpu"]] for s in ("exp", "bare")}
    ratio = [e / b for e, b in zip(rate["exp"], rate["bare"], strict=True)]
    cpu_ratio = [e / b for e, b in zip(cpu["exp"], cpu["bare"], strict=True)]
    scaled = "" if n == FULL_N else f" (measured at N = {n:,}, not the full {FULL_N:,})"
    in_flight = res["first"] - res["ok_at_kill"]
    rn = res.get("n", n)  # (b)'s own N
    lines = [
        f"N = {n:,} calls{scaled}, concurrency {WIDTH}, model `{MODEL}` at a fake provider in "
        f"its own process; every answer is two chunks 50 ms apart. Runs: {len(ratio)} after a "
        f"warm-up of {WIDTH} calls each side; sides alternate in order. CPU is this process's "
        "(all threads).",
        "",
        *table(
            ["what", "calls/s", "CPU per call", "wall"],
            [
                [
                    "bare `litellm.acompletion` loop (asyncio, semaphore 64)",
                    fmt_n(rate["bare"]),
                    fmt_s(cpu["bare"], "ms"),
                    fmt_s(out["bare_wall"]),
                ],
                [
                    "**`lm.experiment`** (fresh name each run)",
                    f"**{fmt_n(rate['exp'])}**",
                    fmt_s(cpu["exp"], "ms"),
                    fmt_s(out["exp_wall"]),
                ],
                ["`lm.experiment` ÷ bare", fmt_x(ratio), fmt_x(cpu_ratio), ""],
                ["(c) re-run of a finished experiment (all reused)", "", "", fmt_s(rerun)],
            ],
        ),
        "",
        f"(b) Resume: the experiment in a subprocess, SIGKILLed once {res['first']:,} of "
        f"{rn:,} requests (N of (b)) had reached the server; the ledger then held {res['ok_at_kill']:,} "
        f"`ok` rows, so {in_flight} calls were in flight at the kill (sent, no row). The re-run "
        f"made {res['made']:,} calls and reused {res['reused']:,}; the server saw "
        f"{res['second']:,} requests in it — exactly N − ok rows at the kill. Provider requests "
        f"in all: {res['total']:,} = N + {res['total'] - rn} (the calls in flight at the kill, "
        f"sent again); {res['distinct']:,} distinct prompts (in the {res['total'] - res['unparsed']:,} request bodies the server could parse: a request cut by the kill has none); {res['ok_end']:,} `ok` rows at "
        "the end.",
        "",
        *prof,
    ]
    rr, rt = med(ratio), med(rerun)
    target_rerun = TARGET_RERUN_S * n / FULL_N
    verdicts = [
        Verdict(
            "B10",
            f"`lm.experiment` calls/s ≥ {TARGET_RATIO}× a bare `litellm.acompletion` loop",
            f"{rr:.2f}× ({med(rate['exp']):.0f} vs {med(rate['bare']):.0f} calls/s; CPU/call "
            f"{med(cpu_ratio):.2f}×)",
            None if ctx.smoke else rr >= TARGET_RATIO,
            f"{abs(rr - TARGET_RATIO):.2f}× {'over' if rr >= TARGET_RATIO else 'under'}",
        ),
        Verdict(
            "B10",
            "resume after SIGKILL: requests = N + calls in flight at the kill",
            f"{res['total']:,} = {rn:,} + {res['total'] - rn} (in flight: {in_flight})",
            res["total"] - rn <= in_flight,
            "counts checked",
        ),
        Verdict(
            "B10",
            f"re-run of a finished experiment ≤ {TARGET_RERUN_S:g} s at {FULL_N:,}"
            + (f" (scaled: {target_rerun:.2f} s at {n:,})" if n != FULL_N else ""),
            f"{rt:.3f} s",
            None if ctx.smoke else rt <= target_rerun,
            f"{abs(target_rerun - rt):.2f} s {'under' if rt <= target_rerun else 'over'}",
        ),
    ]
    return Section("B10", "`lm.experiment`: throughput, resume, re-run", lines, verdicts)


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], int(sys.argv[3]))

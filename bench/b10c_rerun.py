"""B10 (c) at full size — the cached re-run of a finished 10,000-call experiment.

The finished experiment is built once without a provider: 10,000 ``ok`` rows as a made call
writes them (its experiment, ``prompt_hash`` and ``repeat``, the ``request_hash`` the response
cache looks up, an answer, tokens, a cost), written through the ledger's own batch path
(``Ledger.record_many``) into an SQLite ledger of this run. Then the same ``lm.experiment`` cell
is run again ``runs`` times and timed from the call to its return: every call is reused, so it
reads the ledger, writes 10,000 ``cached`` rows (cost 0, ``saved_usd``) in one transaction,
sends nothing (no provider is running: a call made would show as ``made`` and fail the run)
and builds ``.df``. The
ledger grows by 10,000 rows per run, as it would with each "Restart & Run All".
``LLM_MAGIC_BENCH_B10_N`` overrides N; smoke: 80.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta

from .b10_experiment import FULL_N, MODEL, _n
from .common import Ctx, Section, Verdict, fmt_s, log, med, quiet, table

NAME = "b10c-finished"
TARGET_S = 2.0
MAX_TOKENS = 100


def _prompts(n: int) -> list[str]:
    return [f"question {i}: say ok" for i in range(n)]


def _finished(n: int) -> None:
    """The rows of a finished ``n``-call experiment, as its made calls would have written."""
    import llm_magic as lm
    from llm_magic import _expplan, _respcache
    from llm_magic.config import settings
    from llm_magic.core import Request
    from llm_magic.models import all_aliases
    from llm_magic.record import CallRecord, utcnow

    book = lm.ledger()
    cfg = settings()
    aliases = all_aliases(book)
    start = utcnow() - timedelta(hours=1)
    rows = []
    for i, prompt in enumerate(_prompts(n)):
        req = Request(prompt=prompt, model=MODEL, max_tokens=MAX_TOKENS, experiment=NAME)
        req.prompt_hash = _expplan.identity(prompt, None, 0.0, MAX_TOKENS)
        req.repeat = 0
        ts = start + timedelta(milliseconds=i)
        rec = CallRecord(
            call_id=uuid.uuid4().hex,
            trace_id=uuid.uuid4().hex,
            ts_start=ts,
            ts_end=ts + timedelta(milliseconds=60),
            requested_model=MODEL,
            model=MODEL,
            provider="openai",
            attempts=1,
            status="ok",
            input_tokens=14,
            output_tokens=2,
            cost_usd=14 * 0.15e-6 + 2 * 0.6e-6,
            price_source="litellm",
            latency_s=0.06,
            ttft_s=0.01,
            max_tokens=MAX_TOKENS,
            prompt=prompt,
            response="ok done",
            finish_reason="stop",
            request_hash=_respcache.request_hash_of(req, cfg, book, aliases),
            **req.attribution(),
        )
        rows.append(rec.row())
    book.record_many(rows)


def run(ctx: Ctx) -> Section:
    from llm_magic.config import reload_settings

    n = _n(ctx)
    ledger = ctx.tmp / "b10c.sqlite"
    os.environ["LLM_MAGIC_LEDGER"] = str(ledger)
    reload_settings()
    import llm_magic as lm

    log(f"B10c: building a finished experiment of {n:,} calls")
    t0 = time.perf_counter()
    _finished(n)
    built = time.perf_counter() - t0
    walls: list[float] = []
    saved = 0.0
    for r in range(ctx.runs + 1):  # the first is a warm-up (imports, first reads)
        log(f"B10c: re-run {r}/{ctx.runs}")
        with quiet():
            t0 = time.perf_counter()
            exp = lm.experiment(
                _prompts(n), MODEL, name=NAME, max_tokens=MAX_TOKENS, progress=False
            )
            wall = time.perf_counter() - t0
        df = exp.df  # type: ignore[union-attr]
        made, reused, cached = exp.made, exp.reused, exp.cached  # type: ignore[union-attr]
        if made or reused != n or cached != n or len(df) != n or not df["reused"].all():
            raise RuntimeError(f"re-run: {made} made, {reused} reused, {cached} cached (n={n})")
        saved = exp.saved_usd  # type: ignore[union-attr]
        if r:
            walls.append(wall)
    rows = lm.ledger().summary(by="status")
    n_cached = int(rows.loc["cached", "calls"])
    if n_cached != n * (ctx.runs + 1):
        raise RuntimeError(f"{n_cached} cached rows, wanted {n * (ctx.runs + 1)}")
    return _section(ctx, n, walls, built, saved)


def _section(ctx: Ctx, n: int, walls: list[float], built: float, saved: float) -> Section:
    scaled = "" if n == FULL_N else f" (measured at N = {n:,}, not the full {FULL_N:,})"
    target = TARGET_S * n / FULL_N
    t = med(walls)
    lines = [
        f"N = {n:,} calls{scaled}, model `{MODEL}`, one SQLite ledger in the run's "
        f"temporary folder. The finished experiment's {n:,} `ok` rows were written once through "
        f"`Ledger.record_many` ({built:.1f} s); each re-run reuses all of them and writes "
        f"{n:,} `cached` rows (saved ${saved:.4f} a run) in one transaction. Runs: "
        f"{ctx.runs} after one warm-up; the ledger grows by {n:,} rows a run.",
        "",
        *table(
            ["what", "wall (median, min–max)"],
            [[f"(c) cached re-run of a finished {n:,}-call experiment", fmt_s(walls)]],
        ),
    ]
    verdicts = [
        Verdict(
            "B10",
            f"cached re-run of a finished experiment ≤ {TARGET_S:g} s at {FULL_N:,} "
            "(10,000 `cached` rows written)"
            + (f" (scaled: {target:.2f} s at {n:,})" if n != FULL_N else ""),
            f"{t:.3f} s",
            None if ctx.smoke else t <= target,
            f"{abs(target - t):.2f} s {'under' if t <= target else 'over'}",
        )
    ]
    return Section("B10c", "`lm.experiment`: cached re-run at 10,000", lines, verdicts)

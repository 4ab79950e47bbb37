"""B4 — ``lm.compare`` over 8 models whose server takes ~1 s to answer each call.

The server is ``tests.fakeprovider`` in its own process (a threading HTTP server, so calls run
side by side there as at a real provider): every answer streams K chunks ``chunk_delay`` apart,
(K − 1) × delay = 1.0 s (0.25 s in smoke mode). Baselines in the same run: one call to one
model (what "answers in 1 s" costs end to end here), and the same 8 calls in sequence with
``lm.complete``. Steps in rotating order within each run.
"""

from __future__ import annotations

import time

from .common import (
    Ctx,
    Section,
    Verdict,
    fake_server,
    fmt_s,
    fmt_x,
    import_litellm,
    log,
    med,
    quiet,
    table,
    use_openai_server,
)

MODELS = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "o3-mini",
    "gpt-4-turbo",
    "gpt-3.5-turbo",
]
PROMPT = "Name three colours."
TARGET_S = 1.3


def _compare() -> float:
    import llm_magic as lm

    t0 = time.perf_counter()
    with quiet():  # the progress bar goes to stderr
        frame = lm.compare(PROMPT, MODELS, max_tokens=64)
    wall = time.perf_counter() - t0
    bad = frame[frame["status"] != "ok"]
    if len(frame) != len(MODELS) or len(bad):
        raise RuntimeError(f"lm.compare: {len(bad)} of {len(frame)} calls not ok: {bad.to_dict()}")
    return wall


def _sequence() -> float:
    import llm_magic as lm

    t0 = time.perf_counter()
    for model in MODELS:
        result = lm.complete(PROMPT, model=model, max_tokens=64)
        if result.status != "ok":
            raise RuntimeError(f"lm.complete({model}): {result.status}")
    return time.perf_counter() - t0


def _single() -> float:
    import llm_magic as lm

    t0 = time.perf_counter()
    result = lm.complete(PROMPT, model=MODELS[0], max_tokens=64)
    if result.status != "ok":
        raise RuntimeError(f"lm.complete: {result.status}")
    return time.perf_counter() - t0


def run(ctx: Ctx) -> Section:
    import_litellm()
    server_s = 0.25 if ctx.smoke else 1.0
    chunks, delay = 11, server_s / 10
    words = [f" word{i}" for i in range(chunks)]
    out: dict[str, list[float]] = {"compare": [], "sequence": [], "single": []}
    with fake_server(chunks=words, chunk_delay=delay) as base:
        use_openai_server(base, ctx.tmp / "b4.sqlite")
        steps = {"compare": _compare, "sequence": _sequence, "single": _single}
        names = list(steps)
        log("B4: warm-up")
        _compare()  # connections, first-use imports (tqdm, pandas), not counted
        for r in range(ctx.runs):
            log(f"B4: round {r + 1}/{ctx.runs}")
            for name in names[r % 3 :] + names[: r % 3]:
                out[name].append(steps[name]())
    vs_single = [a / b for a, b in zip(out["compare"], out["single"], strict=True)]
    vs_seq = [a / b for a, b in zip(out["compare"], out["sequence"], strict=True)]
    seq_per_call = [
        s / len(MODELS) / one for s, one in zip(out["sequence"], out["single"], strict=True)
    ]
    wall = med(out["compare"])
    target = TARGET_S * server_s
    lines = [
        f"8 models ({', '.join(f'`{m}`' for m in MODELS)}); each answer is {chunks} chunks "
        f"{delay * 1000:.0f} ms apart at the server ({server_s:.2f} s). Runs: {ctx.runs} after "
        f"one warm-up `lm.compare`. Target: wall ≤ {TARGET_S} s"
        + (
            f" (scaled to {target:.3f} s for the {server_s:.2f} s smoke server)"
            if ctx.smoke
            else ""
        )
        + ".",
        "",
        *table(
            ["what", "wall (median, min–max)", "`lm.compare` ÷ this"],
            [
                ["one call, one model (`lm.complete`)", fmt_s(out["single"]), fmt_x(vs_single)],
                [
                    "the same 8 calls in sequence (`lm.complete` each)",
                    fmt_s(out["sequence"]),
                    fmt_x(vs_seq),
                ],
                ["**`lm.compare` over the 8 models**", f"**{fmt_s(out['compare'])}**", "1×"],
            ],
        ),
        "",
        f"A call in the sequence costs {fmt_x(seq_per_call)} a lone call; "
        f"`lm.compare` finishes in {fmt_x(vs_single)} the time of one call, "
        f"i.e. {(med(vs_single) - 1) * server_s * 1000:.0f} ms beyond the slowest answer.",
    ]
    verdicts = [
        Verdict(
            "B4",
            f"`lm.compare` over 8 × {server_s:g} s models: wall ≤ {target:g} s",
            f"{wall:.3f} s ({med(vs_single):.2f}× one call, {med(vs_seq):.2f}× the sequence)",
            wall <= target,
            f"{(target - wall) * 1000:.0f} ms under"
            if wall <= target
            else f"{(wall - target) * 1000:.0f} ms over",
        )
    ]
    return Section("B4", "`lm.compare` over 8 models", lines, verdicts)

"""B2 — streaming N chunks from an instant local OpenAI-compatible server.

The server is ``tests.fakeprovider`` in its own process, answering every call with the same N
content chunks and no delay. Four readers of the same stream, in rotating order within each
run (so drift in the machine's load hits all of them alike):

* floor — httpx POST + SSE line read + ``json.loads`` of each event (what any client must do);
* raw litellm — ``litellm.completion(stream=True)`` with the kwargs llm_magic's gateway sends,
  iterated for ``delta.content``;
* ``lm.stream`` — the whole llm_magic pipeline (resolve, token count, price, ledger row);
* ``%%llm`` headless — an IPython ``InteractiveShell`` with ``display_mode='text'``, stdout
  redirected to a counting sink; its StreamView is wrapped to time every screen update.

Time to first token (TTFT) is from the call to the first non-empty text piece (for ``%%llm``:
to the first screen update); time to last is until the call returns (ledger row written,
answer rendered). Ratios are taken run by run against raw litellm of the same run.
"""

from __future__ import annotations

import gc
import io
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from .common import (
    BENCH_KEY,
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
    openai_sse_texts,
    profile,
    table,
    time_stream,
    use_openai_server,
)

# 32,768 output tokens at most in the bundled map: room for the 20,000-chunk answer (gpt-4o's
# 16,384 is refused before sending, as a user asking that many would be)
MODEL = "gpt-4.1"
PROMPT = "Stream a long answer, please."
WORDS = (
    "the quick brown fox jumps over lazy dogs while streaming tokens into notebooks "
    "ledger latency gateway provider answer chunk model budget"
).split()
TARGET_RATIO = 1.10
TARGET_TTFT_S = 0.005
TARGET_RATE = 30.0
PER_CALL_CALLS = 10
QUIET_S = 0.5


def pieces(n: int) -> list[str]:
    return [" " + WORDS[i % len(WORDS)] for i in range(n)]


class _Sink(io.TextIOBase):
    """stdout replacement: counts writes, remembers the first one's time."""

    def __init__(self) -> None:
        self.writes = 0
        self.chars = 0
        self.first: float | None = None

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if self.first is None and s:
            self.first = time.perf_counter()
        self.writes += 1
        self.chars += len(s)
        return len(s)

    def flush(self) -> None:
        pass


class _Shell:
    """A headless IPython shell with llm_magic loaded and its StreamView instrumented."""

    def __init__(self) -> None:
        from IPython.core.interactiveshell import InteractiveShell

        import llm_magic.magics as magics
        from llm_magic.display import StreamView

        views: list[Any] = []

        class TimedView(StreamView):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.flush_times: list[float] = []
                views.append(self)

            def _flush(self, now: float | None = None) -> None:
                super()._flush(now)
                self.flush_times.append(time.perf_counter())

        magics.StreamView = TimedView  # type: ignore[misc]  # the magic looks it up by this name
        self.views = views
        self.ip = InteractiveShell.instance()
        self.ip.run_line_magic("load_ext", "llm_magic")
        self.ip.run_line_magic("config", "LLMMagics.display_mode = 'text'")


def _peak_rate(times: list[float]) -> int:
    """Most screen updates within any 1-second window."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] > 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _floor(client: Any, base: str, n: int) -> tuple[float, float, str]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": n + 16,
        "temperature": 0.0,
    }
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    url = f"{base}/chat/completions"
    ttft, total, parts = time_stream(lambda: openai_sse_texts(client, url, body, headers))
    return _zero_if_none(ttft), total, "".join(parts)


def _litellm(n: int) -> tuple[float, float, str]:
    from llm_magic import gateway

    litellm = gateway._litellm()

    def texts() -> Iterator[str | None]:
        response = litellm.completion(
            model=MODEL,
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=n + 16,
            temperature=0.0,
            timeout=120.0,
            num_retries=0,
            max_retries=0,
            api_key=BENCH_KEY,
        )
        for chunk in response:
            for choice in chunk.choices or ():
                yield choice.delta.content if choice.delta is not None else None

    ttft, total, parts = time_stream(texts)
    return _zero_if_none(ttft), total, "".join(parts)


def _zero_if_none(ttft: float) -> float:
    """B2's readers report 0.0, not NaN, for a stream that carried no text."""
    return 0.0 if math.isnan(ttft) else ttft


def _lm_stream(n: int) -> tuple[float, float, str]:
    import llm_magic as lm

    parts: list[str] = []
    t0 = time.perf_counter()
    ttft = None
    stream = lm.stream(PROMPT, model=MODEL, max_tokens=n + 16)
    for piece in stream:
        if ttft is None:
            ttft = time.perf_counter() - t0
        parts.append(piece)
    if stream.result is None or stream.result.status != "ok":
        raise RuntimeError(f"lm.stream did not finish ok: {stream.result}")
    return ttft or 0.0, time.perf_counter() - t0, "".join(parts)


def _magic(shell: _Shell, n: int) -> tuple[float, float, str, list[float]]:
    import contextlib

    sink = _Sink()
    before = len(shell.views)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sink):
        shell.ip.run_cell_magic("llm", f"-m {MODEL} --max-tokens {n + 16} -o _bench", PROMPT)
    total = time.perf_counter() - t0
    result = shell.ip.user_ns.pop("_bench", None)
    if result is None or result.status != "ok" or len(shell.views) != before + 1:
        raise RuntimeError(f"%%llm did not finish ok: {result}")
    view = shell.views.pop()
    first = view.flush_times[0] if view.flush_times else (sink.first or t0)
    return first - t0, total, result.text, view.flush_times


def _one_size(
    ctx: Ctx, shell: _Shell, n: int, warm: bool, profile_it: bool = False
) -> dict[str, Any]:
    import httpx

    out: dict[str, Any] = {
        k: {"ttft": [], "total": []} for k in ("floor", "litellm", "lm", "magic")
    }
    out["rates"] = []
    out["updates"] = []
    out["stream_s"] = []
    expected = "".join(pieces(n))
    with fake_server(chunks=pieces(n), output_tokens=n) as base:
        use_openai_server(base, ctx.tmp / f"b2-{n}.sqlite")
        client = httpx.Client(timeout=120.0)
        paths: dict[str, Callable[[], tuple]] = {
            "floor": lambda: _floor(client, base, n),
            "litellm": lambda: _litellm(n),
            "lm": lambda: _lm_stream(n),
            "magic": lambda: _magic(shell, n),
        }
        order = list(paths)
        first = 0 if warm else 1  # round 0 warms up (connections, tokenizer), not counted
        for r in range(first, ctx.runs + 1):
            log(f"B2: {n:,} chunks, round {r + 1 - first}/{ctx.runs + 1 - first}")
            rot = order[r % 4 :] + order[: r % 4]
            for name in rot:
                # each reader starts on a quiet process: neither a collection of the previous
                # reader's garbage (thousands of pydantic chunks) nor litellm's logging thread
                # finishing the previous stream may land in this one's TTFT
                gc.collect()
                time.sleep(QUIET_S)
                got = paths[name]()
                ttft, total, text = got[0], got[1], got[2]
                if text != expected:
                    raise RuntimeError(f"{name}: got {len(text)} chars, expected {len(expected)}")
                if r == 0:
                    continue
                out[name]["ttft"].append(ttft)
                out[name]["total"].append(total)
                if name == "magic":
                    times = got[3]
                    out["updates"].append(len(times))
                    out["rates"].append(_peak_rate(times))
                    out["stream_s"].append(times[-1] - times[0] if len(times) > 1 else 0.0)
        out["profile"] = None
        if profile_it and not ctx.smoke:
            log(f"B2: profiling lm.stream at {n} chunks")
            out["profile"] = profile(lambda: _lm_stream(n))
            out["profile_litellm"] = profile(lambda: _litellm(n))
        client.close()
    return out


def _per_call(ctx: Ctx, shell: _Shell) -> dict[str, Any]:
    """What one call costs end to end when the answer is a single chunk: llm_magic's fixed
    work per call (routing, token count, price, ledger row; for %%llm also argument parsing and
    rendering) against raw litellm's, ``PER_CALL_CALLS`` calls per measurement."""
    out: dict[str, Any] = {k: [] for k in ("litellm", "lm", "magic")}
    with fake_server(chunks=["Hi"], output_tokens=1) as base:
        use_openai_server(base, ctx.tmp / "b2-call.sqlite")
        paths: dict[str, Callable[[], Any]] = {
            "litellm": lambda: _litellm(1),
            "lm": lambda: _lm_stream(1),
            "magic": lambda: _magic(shell, 1),
        }
        for fn in paths.values():
            fn()  # warm-up
        names = list(paths)
        for r in range(ctx.runs):
            log(f"B2: one-chunk calls, round {r + 1}/{ctx.runs}")
            for name in names[r % 3 :] + names[: r % 3]:
                t0 = time.perf_counter()
                for _ in range(PER_CALL_CALLS):
                    paths[name]()
                out[name].append((time.perf_counter() - t0) / PER_CALL_CALLS)
        out["steps"] = _pre_send_steps(ctx)
        out["profile"] = None
        if not ctx.smoke:
            log("B2: profiling one-chunk %%llm calls")
            out["profile"] = profile(
                lambda: [paths["magic"]() for _ in range(PER_CALL_CALLS)],
                top=14,
                only="llm_magic",
                by="cumulative",
                calls=PER_CALL_CALLS,
            )
    return out


def _pre_send_steps(ctx: Ctx) -> list[tuple[str, list[float]]] | str:
    """The steps a call (``core.start``: planning, then the attempt) takes before litellm sends anything, each timed alone
    (median per call). Uses llm_magic internals: if they changed, says so instead of failing."""
    try:
        from llm_magic import budget, gateway, models, pricing
        from llm_magic.config import settings
        from llm_magic.store import ledger

        cfg = settings()
        book = ledger(cfg.ledger)
        route = models.resolve(MODEL, cfg, book)
        messages = [{"role": "user", "content": PROMPT}]
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("`budget.check_daily` (no budget set)", lambda: budget.check_daily(cfg, book, MODEL)),
            ("`models.resolve`", lambda: models.resolve(MODEL, cfg, book)),
            (
                "`gateway.count_tokens` (the short prompt)",
                lambda: gateway.count_tokens(route.litellm_model, messages),
            ),
            (
                "`pricing.price_for`",
                lambda: pricing.price_for(route.model, route.provider, book, also=(MODEL,)),
            ),
            ("  of which `gateway.litellm_version()`", gateway.litellm_version),
        ]
        reps = 5 if ctx.smoke else 40
        times: dict[str, list[float]] = {name: [] for name, _ in steps}
        for _ in range(ctx.runs):
            for name, fn in steps:
                fn()
                t0 = time.perf_counter()
                for _ in range(reps):
                    fn()
                times[name].append((time.perf_counter() - t0) / reps)
        return [(name, times[name]) for name, _ in steps]
    except Exception as exc:  # llm_magic's internals moved: report, do not fail the run
        return f"{type(exc).__name__}: {exc}"


def run(ctx: Ctx) -> Section:
    import_litellm()
    shell = _Shell()
    small, large = (100, 400) if ctx.smoke else (2_000, 20_000)
    # The small size also gets one profiled lm.stream and raw litellm call each (cheap there;
    # the per-chunk work is the same at any size).
    results = {small: _one_size(ctx, shell, small, warm=True, profile_it=True)}
    results[large] = _one_size(ctx, shell, large, warm=False)
    overhead = _per_call(ctx, shell)
    lines = [
        f"Runs: {ctx.runs} per size (after one warm-up round at the first size); the four "
        "readers in rotating order within each run. The server (`tests.fakeprovider`, its own "
        f"process) sends each chunk as one SSE event with no delay; model `{MODEL}`, "
        "`stream_options.include_usage`. Targets: time to last ≤ 1.10× raw litellm; TTFT "
        "overhead ≤ 5 ms median; display updates ≤ 30/s.",
        "",
        f"Each reader starts after `gc.collect()` and a {QUIET_S} s pause. Without them, runs "
        "of this benchmark showed first-token spikes of 35–136 ms on every reader alike, the "
        "bare httpx floor included, in whichever reader followed a long stream: background "
        "work left by the previous stream (litellm finishes its logging of a stream in a "
        "thread; collections of its chunk objects), not the reader's own path. The fake "
        "server runs with its garbage collector off for the same reason.",
        "",
    ]
    ratio_lm: dict[int, list[float]] = {}
    ratio_magic: dict[int, list[float]] = {}
    ttft_lm: dict[int, list[float]] = {}
    ttft_magic: dict[int, list[float]] = {}
    for n, res in results.items():
        lite = res["litellm"]
        ratio_lm[n] = [a / b for a, b in zip(res["lm"]["total"], lite["total"], strict=True)]
        ratio_magic[n] = [a / b for a, b in zip(res["magic"]["total"], lite["total"], strict=True)]
        ratio_floor = [a / b for a, b in zip(res["floor"]["total"], lite["total"], strict=True)]
        ttft_lm[n] = [a - b for a, b in zip(res["lm"]["ttft"], lite["ttft"], strict=True)]
        ttft_magic[n] = [a - b for a, b in zip(res["magic"]["ttft"], lite["ttft"], strict=True)]
        ttft_floor = [a - b for a, b in zip(res["floor"]["ttft"], lite["ttft"], strict=True)]
        per_chunk = [t / n for t in lite["total"]]
        lines += [f"### {n:,} chunks", ""]
        lines += table(
            [
                "reader",
                "time to first token",
                "TTFT − raw litellm",
                "time to last",
                "vs raw litellm",
            ],
            [
                [
                    "raw httpx SSE read (floor)",
                    fmt_s(res["floor"]["ttft"], "ms"),
                    fmt_s(ttft_floor, "ms"),
                    fmt_s(res["floor"]["total"]),
                    fmt_x(ratio_floor),
                ],
                [
                    "**raw `litellm.completion(stream=True)` (baseline)**",
                    fmt_s(lite["ttft"], "ms"),
                    "—",
                    fmt_s(lite["total"]),
                    "1×",
                ],
                [
                    "**`lm.stream`**",
                    fmt_s(res["lm"]["ttft"], "ms"),
                    f"**{fmt_s(ttft_lm[n], 'ms')}**",
                    fmt_s(res["lm"]["total"]),
                    f"**{fmt_x(ratio_lm[n])}**",
                ],
                [
                    "**`%%llm` headless (text mode)**",
                    fmt_s(res["magic"]["ttft"], "ms"),
                    f"**{fmt_s(ttft_magic[n], 'ms')}**",
                    fmt_s(res["magic"]["total"]),
                    f"**{fmt_x(ratio_magic[n])}**",
                ],
            ],
        )
        lines += [
            "",
            f"litellm costs {fmt_s(per_chunk, 'us')} per chunk here. `%%llm` screen updates: "
            f"{fmt_n(res['updates'], 0)} per answer over {fmt_s(res['stream_s'])} of streaming; "
            f"peak {fmt_n(res['rates'], 0)} in any 1-second window.",
            "",
        ]
        if res.get("profile"):
            lines += [
                f"Where `lm.stream` spends its time at {n:,} chunks (one extra call, not timed "
                "above):",
                "",
                *res["profile"],
                "",
                "and raw litellm on the same stream:",
                "",
                *res["profile_litellm"],
                "",
            ]

    extra_lm = [a - b for a, b in zip(overhead["lm"], overhead["litellm"], strict=True)]
    extra_magic = [a - b for a, b in zip(overhead["magic"], overhead["litellm"], strict=True)]
    lines += [
        "### Fixed cost per call (a one-chunk answer)",
        "",
        f"{PER_CALL_CALLS} calls per measurement, {ctx.runs} measurements, rotating order.",
        "",
        *table(
            ["path", "per call (median, min–max)", "− raw litellm", "vs raw litellm"],
            [
                ["raw litellm (baseline)", fmt_s(overhead["litellm"], "ms"), "—", "1×"],
                [
                    "`lm.stream`",
                    fmt_s(overhead["lm"], "ms"),
                    fmt_s(extra_lm, "ms"),
                    fmt_x(
                        [a / b for a, b in zip(overhead["lm"], overhead["litellm"], strict=True)]
                    ),
                ],
                [
                    "`%%llm` headless",
                    fmt_s(overhead["magic"], "ms"),
                    fmt_s(extra_magic, "ms"),
                    fmt_x(
                        [a / b for a, b in zip(overhead["magic"], overhead["litellm"], strict=True)]
                    ),
                ],
            ],
        ),
        "",
    ]
    steps = overhead["steps"]
    if isinstance(steps, str):
        lines += [f"(Per-step breakdown unavailable: {steps}.)", ""]
    else:
        top = [t for name, t in steps if not name.startswith(" ")]
        total = [sum(x) for x in zip(*top, strict=True)]
        lines += [
            "The work a call (`core.start`: planning, then the attempt) does before litellm sends anything, each step timed alone "
            "(what the TTFT overhead is made of):",
            "",
            *table(
                ["step", "per call (median, min–max)"],
                [[name, fmt_s(t, "ms")] for name, t in steps]
                + [["**sum of the steps**", f"**{fmt_s(total, 'ms')}**"]],
            ),
            "",
        ]
    worst_ttft_now = max(
        max(med(x) for x in ttft_lm.values()), max(med(x) for x in ttft_magic.values())
    )
    if worst_ttft_now > TARGET_TTFT_S:
        spread = (
            max(max(x) - min(x) for d in (ttft_lm, ttft_magic) for x in d.values() if len(x) > 1)
            if ctx.runs > 1
            else 0.0
        )
        steps_sum = f"{med(total) * 1e3:.1f} ms" if not isinstance(steps, str) else "not measured"
        lines += [
            f"**TTFT overhead missed** (worst median {worst_ttft_now * 1e3:.1f} ms against 5 ms). "
            f"The steps llm_magic takes before sending sum to {steps_sum} per call, timed "
            "alone; a TTFT difference between two streams of the same run also carries this "
            f"machine's noise (min–max spans up to {spread * 1e3:.0f} ms here). `%%llm` adds "
            "argument parsing, `{name}` interpolation and the first screen update to that.",
            "",
        ]
    if overhead["profile"]:
        lines += [
            "Where a one-chunk `%%llm` call spends its time inside llm_magic (cumulative, so "
            "nested rows overlap; litellm's own work is under `gateway.stream_chat`):",
            "",
            *overhead["profile"],
            "",
        ]

    def by_size(d: dict[int, list[float]], f: Callable[[list[float]], str]) -> str:
        return "; ".join(f"{n:,}: {f(xs)}" for n, xs in d.items())

    worst_lm = max(med(x) for x in ratio_lm.values())
    worst_magic = max(med(x) for x in ratio_magic.values())
    worst_ttft = max(
        max(med(x) for x in ttft_lm.values()), max(med(x) for x in ttft_magic.values())
    )
    peak = max(max(res["rates"]) for res in results.values())
    ms = lambda xs: f"{med(xs) * 1e3:.1f} ms"  # noqa: E731
    ratio = lambda xs: f"{med(xs):.2f}×"  # noqa: E731
    verdicts = [
        Verdict(
            "B2",
            "`lm.stream` time to last ≤ 1.10× raw litellm",
            by_size(ratio_lm, ratio),
            worst_lm <= TARGET_RATIO,
            _margin_ratio(worst_lm),
        ),
        Verdict(
            "B2",
            "`%%llm` headless time to last ≤ 1.10× raw litellm",
            by_size(ratio_magic, ratio),
            worst_magic <= TARGET_RATIO,
            _margin_ratio(worst_magic),
        ),
        Verdict(
            "B2",
            "TTFT overhead ≤ 5 ms (median)",
            "lm.stream " + by_size(ttft_lm, ms) + " · %%llm " + by_size(ttft_magic, ms),
            worst_ttft <= TARGET_TTFT_S,
            f"worst {worst_ttft * 1e3:.1f} ms of 5"
            if worst_ttft <= TARGET_TTFT_S
            else f"{worst_ttft * 1e3 - 5:.1f} ms over",
        ),
        Verdict(
            "B2",
            "display updates ≤ 30/s",
            f"peak {peak} in any 1 s",
            peak <= TARGET_RATE,
            "" if peak <= TARGET_RATE else f"{peak - TARGET_RATE:.0f} over",
        ),
    ]
    return Section("B2", "streaming through `lm.stream` and `%%llm`", lines, verdicts)


def _margin_ratio(worst: float) -> str:
    if worst <= TARGET_RATIO:
        return f"worst {worst:.2f}× ({(TARGET_RATIO - worst) * 100:.0f} points of headroom)"
    return f"worst {worst:.2f}×, {(worst - TARGET_RATIO) * 100:.0f} points over"

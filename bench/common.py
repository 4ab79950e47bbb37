"""Shared helpers: statistics and formatting, the sections each benchmark returns, the fake
provider in its own process, the environment every benchmark runs in, and a cProfile summary."""

from __future__ import annotations

import contextlib
import cProfile
import io
import json
import math
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_KEY = "sk-bench-" + "0" * 16  # a fake key, never one-piece in the source

# Settings that would change what a call does (budgets, fallbacks, a gateway): never inherited.
_CLEARED_ENV = (
    "DEFAULT_MODEL",
    "FALLBACK_MODELS",
    "DAILY_BUDGET_USD",
    "BUDGET_ALERT_THRESHOLD",
    "BUDGET_DOWNGRADE_MODEL",
    "MAX_COST_PER_REQUEST_USD",
    "LLM_MAGIC_API_BASE",
    "LLM_MAGIC_API_KEY",
    "LLM_MAGIC_LOCAL_URL",
    "LLM_MAGIC_DISPLAY",
    "LLM_MAGIC_STORE_TEXT",
    "LLM_MAGIC_TIMEOUT_S",
    "OPENAI_API_KEYS",
    "OPENAI_BASE_URL",
)


def log(message: str) -> None:
    """Progress on stderr (the tables go to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- statistics -------------------------------------------------------------------------------
def med(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def fmt_s(xs: Sequence[float], unit: str = "s") -> str:
    """``median (min–max)`` in seconds or milliseconds."""
    scale, digits = {"s": (1.0, 3), "ms": (1e3, 1), "us": (1e6, 1)}[unit]
    label = {"s": "s", "ms": "ms", "us": "µs"}[unit]
    lo, mid, hi = min(xs) * scale, med(xs) * scale, max(xs) * scale
    if len(xs) == 1:
        return f"{mid:.{digits}f} {label}"
    return f"{mid:.{digits}f} {label} ({lo:.{digits}f}–{hi:.{digits}f})"


def fmt_x(xs: Sequence[float], digits: int = 2) -> str:
    """A ratio: ``1.05× (1.01–1.10)``."""
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}×"
    return f"{med(xs):.{digits}f}× ({min(xs):.{digits}f}–{max(xs):.{digits}f})"


def fmt_n(xs: Sequence[float], digits: int = 1, unit: str = "") -> str:
    suffix = f" {unit}" if unit else ""
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}{suffix}"
    return f"{med(xs):.{digits}f}{suffix} ({min(xs):.{digits}f}–{max(xs):.{digits}f})"


# -- results ----------------------------------------------------------------------------------
@dataclass
class Verdict:
    """One target of the issue and what this run measured against it."""

    bench: str
    target: str
    measured: str
    met: bool | None  # None: not measured in this run (skipped, or smoke mode)
    margin: str = ""  # "by how much", in words


@dataclass
class Section:
    id: str
    title: str
    lines: list[str] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)

    def markdown(self) -> str:
        return "\n".join([f"## {self.id} — {self.title}", "", *self.lines, ""])


@dataclass
class Ctx:
    """What every benchmark gets: the mode, the number of runs and a scratch directory."""

    smoke: bool
    runs: int
    tmp: Path
    litellm_import_s: float | None = None  # measured by the first import in this process


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


# -- environment ------------------------------------------------------------------------------
def prepare_env(tmp: Path) -> None:
    """The benchmark process's environment: bundled price map, quiet litellm, a scratch ledger
    and user-data directory (so no local model server or ledger of another job is reused)."""
    for name in _CLEARED_ENV:
        os.environ.pop(name, None)
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ["LITELLM_LOG"] = "ERROR"
    os.environ["XDG_DATA_HOME"] = str(tmp / "xdg-data")
    os.environ["LLM_MAGIC_LEDGER"] = str(tmp / "ledger.sqlite")
    os.environ["OPENAI_API_KEY"] = BENCH_KEY
    os.environ.pop("OPENAI_API_BASE", None)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def import_litellm() -> float | None:
    """Import litellm (through llm_magic's gateway, which quietens it); the seconds it took if
    this call did the import, None if it was already imported."""
    already = "litellm" in sys.modules
    t0 = time.perf_counter()
    from llm_magic import gateway

    gateway._litellm()
    return None if already else time.perf_counter() - t0


def use_openai_server(base: str, ledger: Path) -> None:
    """Send llm_magic's OpenAI calls to ``base`` (a fake provider) and record them in ``ledger``."""
    from llm_magic.config import reload_settings

    os.environ["OPENAI_API_BASE"] = base
    os.environ["OPENAI_API_KEY"] = BENCH_KEY
    os.environ["LLM_MAGIC_LEDGER"] = str(ledger)
    reload_settings()


@contextlib.contextmanager
def fake_server(**answer: Any) -> Iterator[str]:
    """``tests.fakeprovider`` in its own process answering every call with ``ok(**answer)``;
    yields its OpenAI base URL (``http://127.0.0.1:PORT/v1``)."""
    spec = tempfile.NamedTemporaryFile("w", suffix=".json", prefix="bench-answer-", delete=False)
    with spec:  # a file, not argv: 20,000 chunks are over the kernel's argument limit
        json.dump(answer, spec)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._fakeserver", spec.name],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"the fake provider did not start (got {url!r})")
        yield f"{url}/v1"
    finally:
        stop_child(proc)
        Path(spec.name).unlink(missing_ok=True)


def stop_child(proc: subprocess.Popen[str], wait_s: float = 10.0) -> None:
    """End a child that serves until its stdin closes: close the pipe, wait ``wait_s``
    seconds, then terminate it (and wait again)."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(timeout=10)


def time_stream(start: Callable[[], Iterable[str | None]]) -> tuple[float, float, list[str]]:
    """``start()`` sends a streamed request and yields its text pieces (None or "" where a chunk
    carries none). Returns (time to the first non-empty piece, NaN if none came; time to the
    last; the non-empty pieces), timed from just before ``start()``."""
    t0 = time.perf_counter()
    ttft = None
    parts: list[str] = []
    for text in start():
        if text:
            if ttft is None:
                ttft = time.perf_counter() - t0
            parts.append(text)
    return (math.nan if ttft is None else ttft), time.perf_counter() - t0, parts


def openai_sse_texts(
    client: Any, url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Iterator[str | None]:
    """POST ``body`` to an OpenAI-compatible ``/chat/completions`` ``url`` with an httpx
    ``client`` and yield each choice's ``delta.content`` from the SSE lines: the least any
    client must do to read a stream."""
    with client.stream("POST", url, json=body, headers=headers) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                return
            for choice in json.loads(data).get("choices") or ():
                yield (choice.get("delta") or {}).get("content")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence stdout and stderr (progress bars, banners) while a measurement runs."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


# -- machine ----------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        from importlib.metadata import version

        litellm_version = version("litellm")
    except Exception:
        litellm_version = "not installed"
    load = ""
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "litellm": litellm_version,
        "os": f"{platform.system()} {platform.release()}",
        "load": load,
    }


# -- profiling --------------------------------------------------------------------------------
def profile(
    fn: Callable[[], Any],
    top: int = 12,
    *,
    only: str | None = None,
    by: str = "own",
    calls: int = 1,
) -> list[str]:
    """Run ``fn`` under cProfile; a markdown table of the top functions by own time (``by="own"``)
    or cumulative time (``by="cumulative"``), optionally only those under a package directory
    (``only="llm_magic"``); ``calls`` > 1 divides times by that many calls of the profiled code."""
    prof = cProfile.Profile()
    prof.enable()
    try:
        fn()
    finally:
        prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    entries = []
    total = 0.0
    raw = stats.stats  # type: ignore[attr-defined]
    for (path, line, name), (_cc, ncalls, tottime, cumtime, _callers) in raw.items():
        total += tottime
        if only is not None and f"/{only}/" not in path:
            continue
        key = tottime if by == "own" else cumtime
        entries.append((key, tottime, cumtime, ncalls, _short(path, line, name)))
    entries.sort(reverse=True)
    unit = "ms per call" if calls > 1 else "s"
    scale = 1e3 / calls if calls > 1 else 1.0
    digits = 2 if calls > 1 else 3
    rows = [
        [
            f"`{where}`",
            f"{n / calls:,.0f}" if calls > 1 else f"{n:,}",
            f"{tt * scale:.{digits}f}",
            f"{ct * scale:.{digits}f}",
            f"{(tt if by == 'own' else ct) / total:.0%}" if total else "—",
        ]
        for _key, tt, ct, n, where in entries[:top]
    ]
    packages: dict[str, float] = {}
    for (path, _line, _name), (_cc, _n, tottime, _ct, _callers) in raw.items():
        packages[_package(path)] = packages.get(_package(path), 0.0) + tottime
    shares = sorted(packages.items(), key=lambda kv: -kv[1])
    split = ", ".join(
        f"{name} {t / total:.0%}" for name, t in shares[:7] if total and t / total >= 0.01
    )
    scope = f" in `{only}`" if only else ""
    per = f", per call of {calls}" if calls > 1 else ""
    return [
        f"cProfile, top {top} functions{scope} by {by} time (profiled: {total:.2f} s in all{per}):",
        "",
        *table(["function", "calls", f"own {unit}", f"cumulative {unit}", "share of all"], rows),
        "",
        f"Own time by package: {split}.",
    ]


def _package(path: str) -> str:
    """The top-level package (or 'builtins', 'stdlib') a profiled function belongs to."""
    if path == "~" or path.startswith("<"):
        return "builtins (C)"
    parts = Path(path).parts
    if "site-packages" in parts:
        i = parts.index("site-packages")
        return parts[i + 1].removesuffix(".py") if i + 1 < len(parts) else "site-packages"
    for anchor in ("llm_magic", "bench", "tests"):
        if anchor in parts:
            return anchor
    return "stdlib"


def _short(path: str, line: int, name: str) -> str:
    if path == "~":
        return name
    parts = Path(path).parts
    for anchor in ("site-packages", "llm_magic", "bench", "lib"):
        if anchor in parts:
            i = len(parts) - 1 - parts[::-1].index(anchor)
            rest = parts[i + 1 :] if anchor in ("site-packages", "lib") else parts[i:]
            return f"{'/'.join(rest)}:{line} {name}"
    return f"{Path(path).name}:{line} {name}"

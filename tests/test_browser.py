"""In a real browser: JupyterLab 4 and Notebook 7, driven by Debian's headless Chromium through
Playwright, run ``%%llm`` on the embedded local model as a person would (Shift+Enter), then
save, shut the kernel down, reload the page and export the notebook to HTML.

One Jupyter server for the module; per front end one notebook, one fresh kernel and one run of
its cells (the ``run`` fixture), which every test of that front end then judges. A failing test
copies the screenshot of the step it judged to ``build/browser-<test>.png``.
"""

from __future__ import annotations

import sqlite3
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests._browser import (
    NOISE,
    JupyterServer,
    Notebook,
    Recording,
    contains_in_order,
    is_growing_prefix,
    launch_chromium,
    nbconvert_html,
    need_chromium,
    save_failure_shot,
)
from tests.conftest import provider_env

pytestmark = [pytest.mark.browser, pytest.mark.local_model, pytest.mark.timeout(300)]

MAX_TOKENS = 48
SINGLE = "Write three sentences about the sea."
COMPARE = "Name two colours of the sky."
MODELS = ("local", "smollm2-b")
# issue 9 asks for something visible within 0.3 s of running the first cell; checked as a ratio:
# the status line comes in at most this share of the time the answer's first words took.
STATUS_SHARE = 0.5
MIN_STEPS = 4
MAX_PER_SECOND = 30


def cells(ui: str) -> list[str]:
    return [
        "%load_ext llm_magic",
        f"%%llm -m local --max-tokens {MAX_TOKENS} --agent browser-{ui}-single\n{SINGLE}",
        f"%llm alias {MODELS[1]} local",
        f"%%llm -m {','.join(MODELS)} --max-tokens {MAX_TOKENS} --agent browser-{ui}-compare\n"
        f"{COMPARE}",
    ]


@dataclass
class Run:
    """Everything one front end showed, step by step; a step that broke keeps its error."""

    ui: str
    shots: dict[str, Path] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    single: Recording | None = None
    answer: str = ""  # the single cell's answer, as the ledger recorded it
    compare_answers: dict[str, str] = field(default_factory=dict)
    compare_statuses: list[str] = field(default_factory=list)
    live_compare: dict[str, Any] = field(default_factory=dict)
    saved: dict[str, Any] = field(default_factory=dict)
    reloaded_single: str = ""
    reloaded_compare: dict[str, Any] = field(default_factory=dict)
    exported: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # how long each step took

    def need(self, *steps: str) -> None:
        for step in steps:
            if step in self.errors:
                pytest.fail(f"[{self.ui}] step {step!r} broke: {self.errors[step]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    need_chromium()
    srv = JupyterServer(tmp_path_factory.mktemp("jupyter"), provider_env())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser(server: JupyterServer) -> Iterator[Any]:
    yield from launch_chromium()


def _ledger(server: JupyterServer, agent: str) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(server.ledger)
    try:
        return db.execute(
            "SELECT requested_model, status, COALESCE(response, '') FROM calls "
            "WHERE agent = ? ORDER BY ts_start",
            (agent,),
        ).fetchall()
    finally:
        db.close()


def _drive(run: Run, nb: Notebook, server: JupyterServer, shots: Path) -> None:
    ui = run.ui

    def step(name: str) -> Any:
        class _Step:
            def __enter__(self) -> None:
                self.t0 = time.monotonic()

            def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
                run.seconds[name] = round(time.monotonic() - self.t0, 1)
                path = shots / f"{ui}-{name}.png"
                try:
                    run.shots[name] = nb.shot(path)
                except Exception:  # a dead page: the error below says why
                    pass
                if exc is not None:
                    run.errors[name] = "".join(traceback.format_exception_only(kind, exc)).strip()
                    raise _Stop from exc
                return False

        return _Step()

    with step("open"):
        nb.open()
        nb.run(0)
        nb.wait_done(0, timeout_s=120)
    with step("single"):
        run.single = nb.record(1)
        rows = _ledger(server, f"browser-{ui}-single")
        assert rows, "no ledger row for the single cell"
        run.answer = rows[-1][2]
    with step("compare"):
        nb.run(2)
        nb.wait_done(2)
        nb.run(3)
        time.sleep(0.3)
        nb.wait_done(3)
        time.sleep(0.5)
        run.live_compare = nb.comparison(3)
        rows = _ledger(server, f"browser-{ui}-compare")
        run.compare_answers = {m: r for m, _, r in rows}
        run.compare_statuses = [s for _, s, _ in rows]
    with step("save"):
        run.saved = nb.save()
        assert server.shutdown_kernels_of(nb.name) == 1, "no kernel to shut down"
    with step("reload"):
        nb.page.reload()
        nb.wait_loaded()
        nb.page.wait_for_function(
            "() => document.querySelectorAll('.jp-Notebook .jp-Cell .jp-OutputArea-output')"
            ".length > 0",
            timeout=30_000,
        )
        time.sleep(1.0)  # outputs that need a widget model would say so by now
        run.reloaded_single = nb.output_text(1)
        run.reloaded_compare = nb.comparison(3)
    with step("export"):
        run.exported = nbconvert_html(server, nb.name, shots / "export")


class _Stop(Exception):
    """A step broke: the later steps cannot run (their tests report the broken step)."""


@pytest.fixture(scope="module", params=["lab", "notebook7"])
def run(
    request: pytest.FixtureRequest,
    server: JupyterServer,
    browser: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Run:
    ui = str(request.param)
    shots = tmp_path_factory.mktemp(f"shots-{ui}")
    server.put_notebook(f"{ui}.ipynb", cells(ui))
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    result = Run(ui)
    t0 = time.monotonic()
    try:
        _drive(result, Notebook(page, server, f"{ui}.ipynb", ui), server, shots)
    except _Stop:
        pass
    finally:
        context.close()
        server.shutdown_kernels_of(f"{ui}.ipynb")
    print(
        f"[{ui}] driven in {time.monotonic() - t0:.1f} s {result.seconds}; "
        f"broken steps: {result.errors}"
    )
    return result


def _check(run: Run, step: str, ok: bool, message: str, request: pytest.FixtureRequest) -> None:
    if not ok:
        shot = save_failure_shot(run.shots.get(step), request.node.name)
        pytest.fail(f"[{run.ui}] {message}\nscreenshot: {shot}")


def test_answer_grows_in_visible_steps_at_a_steady_rate(
    run: Run, request: pytest.FixtureRequest
) -> None:
    run.need("open", "single")
    rec = run.single
    assert rec is not None and run.answer, "the single cell gave no answer"
    seen = rec.after_run()
    streamed = [s.text for s in seen[:-1] if is_growing_prefix(s.text, run.answer)]
    steps = sum(
        1 for i, t in enumerate(streamed) if i == 0 or len(t.strip()) > len(streamed[i - 1].strip())
    )
    print(f"[{run.ui}] {len(seen)} changes, {steps} growing steps, answer {run.answer!r}")
    _check(
        run,
        "single",
        steps >= MIN_STEPS,
        f"the answer grew in {steps} visible step(s) before the end, want ≥ {MIN_STEPS}; "
        f"what the cell showed: {[s.text[:60] for s in seen]}",
        request,
    )
    most = rec.max_changes_per_second()
    _check(
        run,
        "single",
        most <= MAX_PER_SECOND,
        f"{most} output changes in one second, want ≤ {MAX_PER_SECOND}",
        request,
    )


def test_no_widget_error_traceback_or_warning_in_the_cells(
    run: Run, request: pytest.FixtureRequest
) -> None:
    run.need("open", "single", "compare")
    rec = run.single
    assert rec is not None
    shown = [s.text for s in rec.after_run()] + [run.live_compare.get("text", "")]
    bad = sorted({n for text in shown for n in NOISE if n in text.lower()})
    _check(run, "compare", not bad, f"the cells showed {bad}: {shown[-2:]}", request)
    _check(
        run,
        "single",
        rec.stderr_outputs == 0,
        f"{rec.stderr_outputs} stderr output(s) in the %%llm cell",
        request,
    )


def test_status_line_well_before_the_first_answer_of_the_first_cell(
    run: Run, request: pytest.FixtureRequest
) -> None:
    run.need("open", "single")
    rec = run.single
    assert rec is not None
    first = rec.first_output()
    seen = [(round((s.t_ms - (rec.keydown_ms or 0)) / 1000, 2), s.text[:50]) for s in rec.samples]
    print(f"[{run.ui}] first output after Shift+Enter: {first}; all: {seen[:4]}")
    _check(run, "single", first is not None, f"the cell never said anything: {seen}", request)
    assert first is not None
    answer = rec.first_answer()
    _check(run, "single", answer is not None, f"no answer text after the status: {seen}", request)
    assert answer is not None
    _check(
        run,
        "single",
        first[0] <= STATUS_SHARE * answer[0],
        f"the first %%llm cell of a fresh kernel said nothing for {first[0]:.2f} s, its answer "
        f"began at {answer[0]:.2f} s (want the status within {STATUS_SHARE:.0%} of that); "
        f"then it said {first[1][:80]!r}; before: {seen[:3]}",
        request,
    )


def _judge_columns(run: Run, view: dict[str, Any], step: str, request: Any) -> None:
    cols = view.get("columns", [])
    _check(
        run,
        step,
        len(cols) == len(MODELS),
        f"want {len(MODELS)} comparison columns (table.llm-magic-compare), found {len(cols)}; "
        f"the cell shows {view.get('text', '')[:300]!r}",
        request,
    )
    for model, col in zip(MODELS, cols, strict=True):
        head = col["head"]
        _check(
            run,
            step,
            model in head and head.rstrip().endswith("ok"),
            f"column head {head!r} should name {model} and end with 'ok'",
            request,
        )
        answer = run.compare_answers.get(model, "")
        _check(
            run,
            step,
            bool(answer) and contains_in_order(col["body"], answer),
            f"column {model} shows {col['body'][:120]!r}, not its answer {answer[:120]!r}",
            request,
        )
    left, right = cols[0]["box"], cols[1]["box"]
    _check(
        run,
        step,
        abs(left["y"] - right["y"]) < 5 and right["x"] >= left["x"] + left["w"] - 5,
        f"the columns are not side by side: {left} / {right}",
        request,
    )
    tables = view.get("tables", [])
    frame = next((t for t in tables if t and "status" in t[0] and "ttft_s" in t[0]), None)
    _check(
        run,
        step,
        frame is not None,
        f"no results table with status and ttft_s after the columns; tables: {tables}",
        request,
    )
    assert frame is not None
    body = {row[0]: row for row in frame[1:] if row}
    for model in MODELS:
        _check(
            run,
            step,
            model in body and "ok" in body[model],
            f"the table has no ok row for {model}: {frame}",
            request,
        )


def test_comparison_shows_both_columns_finished_ok_and_the_table(
    run: Run, request: pytest.FixtureRequest
) -> None:
    run.need("open", "compare")
    assert run.compare_statuses == ["ok", "ok"], run.compare_statuses
    _judge_columns(run, run.live_compare, "compare", request)


def test_answer_and_columns_survive_save_shutdown_and_reload(
    run: Run, request: pytest.FixtureRequest
) -> None:
    run.need("open", "single", "compare", "save", "reload")
    shown = run.reloaded_single
    bad = sorted(n for n in NOISE if n in shown.lower())
    _check(run, "reload", not bad, f"after reload the answer cell shows {bad}: {shown!r}", request)
    _check(
        run,
        "reload",
        contains_in_order(shown, run.answer),
        f"after reload the answer cell shows {shown[:200]!r}, not the answer {run.answer!r}",
        request,
    )
    _judge_columns(run, run.reloaded_compare, "reload", request)


def test_exported_html_contains_the_answer(run: Run, request: pytest.FixtureRequest) -> None:
    run.need("open", "single", "save", "export")
    _check(
        run,
        "export",
        contains_in_order(run.exported, run.answer),
        f"`jupyter nbconvert --to html` of the saved notebook lacks the answer {run.answer!r}",
        request,
    )

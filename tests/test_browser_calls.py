"""Issue 11's outputs in a real browser: JupyterLab 4 in Debian's headless Chromium (Playwright)
runs, by Shift+Enter, cells that call tools (``--tools``), ask for JSON (``--schema``) and read
Anthropic's prompt cache (``--cache-prompt``) against the scripted provider over HTTP; then the
notebook is saved, its kernel shut down and the page reloaded.

One Jupyter server, one notebook, one run of its cells (the ``run`` fixture) that every test
judges. The page at the end is ``build/calls-in-lab.png`` (``LLM_MAGIC_DOCS_IMG=1`` also
writes it to ``docs/img/calls-in-lab.png``, the README's picture). A failing test copies the
screenshot of the step it judged to ``build/browser-<test>.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests._browser import (
    BUILD,
    NOISE,
    ROOT,
    JupyterServer,
    Notebook,
    Recording,
    StepBroke,
    Steps,
    launch_chromium,
    need_chromium,
)
from tests.conftest import provider_env
from tests.fakekeys import fake_key
from tests.fakeprovider import FakeProvider, ok, tool_call

# One run of the notebook (a kernel start, litellm's first import) is the first test's set-up:
# room for it on a loaded machine.
pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

NAME = "calls.ipynb"
SETUP = '''from pydantic import BaseModel


def get_weather(city: str) -> str:
    """The weather now in a city."""
    return f"18°C and sunny in {city}"


tools = [get_weather]


class Person(BaseModel):
    name: str
    born: int


report = "Quarterly report. " + "Revenue grew by 4% while costs rose by 6%. " * 300'''
CELLS = [
    "%load_ext llm_magic",
    SETUP,
    "%%llm -m gpt-4o --tools tools\nWhat is the weather in Paris?",
    "%%llm -m gpt-4o --schema Person\nWho wrote the first program?",
    '%%llm -m claude-sonnet-4-5 --cache-prompt -s "Answer from the report, briefly."\n'
    "{report}\n\nWhat are the main risks?",
]
TOOLS, JSON_CELL, CACHE = 2, 3, 4

# What the scripted provider answers, in the order the cells ask.
PIECES = ['{"ci', 'ty": "Pa', 'ris"}']  # the tool call's arguments, arriving slowly
CALL_DONE = '⚙ get_weather({"city": "Paris"}) → 18°C and sunny in Paris'
WEATHER = "It is 18°C and sunny in Paris."
PERSON = {"name": "Ada Lovelace", "born": 1815}
RISKS = "Costs rising faster than revenue, and thinner margins."
CACHED = "10,000 cached (saved $0.0270)"  # 10,000 cache reads × ($3 − $0.30) per 1M tokens
FOOTER = "claude-sonnet-4-5 · 10,500 in / 100 out tokens · $0.006000 · " + CACHED
SCRIPT = [
    ok("", tool_calls=[tool_call("get_weather", PIECES, id="call_paris")], chunk_delay=0.6),
    ok(WEATHER, input_tokens=60, chunk_delay=0.15),
    ok(json.dumps(PERSON), input_tokens=40, output_tokens=14, chunk_delay=0.1),
    ok(RISKS, input_tokens=500, output_tokens=100, cache_read_tokens=10_000, chunk_delay=0.1),
]
WIDGET = "application/vnd.jupyter.widget-view+json"


@dataclass
class Run:
    """What the page showed at each step (a step that broke keeps its error in ``steps``)."""

    steps: Steps
    recordings: dict[int, Recording] = field(default_factory=dict)
    live: dict[int, str] = field(default_factory=dict)  # each cell's output when it was done
    live_json: list[str] = field(default_factory=list)  # the JSON cell's code blocks
    saved: dict[str, Any] = field(default_factory=dict)
    reloaded: dict[int, str] = field(default_factory=dict)
    reloaded_json: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    math: list[str] = field(default_factory=list)  # outputs MathJax typeset, live and reloaded
    requests: int = 0


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with FakeProvider() as fp:
        yield fp


@pytest.fixture(scope="module")
def server(
    provider: FakeProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JupyterServer]:
    need_chromium()
    env = {
        "OPENAI_API_BASE": provider.openai_base,
        "ANTHROPIC_API_BASE": provider.anthropic_base,
        "OPENAI_API_KEY": fake_key("BROWSERCALLS"),
        "ANTHROPIC_API_KEY": fake_key("BROWSERCALLSANT", kind="ant-test", tail=14),
        "DEFAULT_MODEL": "gpt-4o",  # the kernel warms up litellm, not the local model
    }
    srv = JupyterServer(tmp_path_factory.mktemp("jupyter-calls"), provider_env(), env)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _rows(server: JupyterServer) -> list[dict[str, Any]]:
    db = sqlite3.connect(server.ledger)
    db.row_factory = sqlite3.Row
    try:
        rows = db.execute(
            "SELECT requested_model, status, trace_id, tool_calls, cache_read_tokens "
            "FROM calls ORDER BY ts_start"
        ).fetchall()
        return [dict(r) for r in rows]
    finally:
        db.close()


def _drive(run: Run, nb: Notebook, server: JupyterServer, provider: FakeProvider) -> None:
    steps = run.steps
    with steps("open"):
        nb.open()
        for i in (0, 1):
            nb.run(i)
            nb.wait_done(i, timeout_s=240)
    with steps("run"):
        for i in (TOOLS, JSON_CELL, CACHE):
            run.recordings[i] = nb.record(i)
            run.live[i] = nb.output_text(i)
        run.live_json = nb.texts(JSON_CELL, "pre")
        run.rows = _rows(server)
        run.requests = len(provider.completions())
        run.math += _typeset(nb)
        _picture(nb)
    with steps("save"):
        run.saved = nb.save()
        assert server.shutdown_kernels_of(nb.name) == 1, "no kernel to shut down"
    with steps("reload"):
        nb.page.reload()
        nb.wait_loaded()
        nb.page.wait_for_function(
            "(n) => document.querySelectorAll('.jp-Notebook .jp-Cell .jp-OutputArea-output')"
            ".length >= n",
            arg=3,
            timeout=30_000,
        )
        time.sleep(1.0)  # outputs that need a widget model would say so by now
        run.reloaded = {i: nb.output_text(i) for i in (TOOLS, JSON_CELL, CACHE)}
        run.reloaded_json = nb.texts(JSON_CELL, "pre")
        run.math += _typeset(nb)


def _typeset(nb: Notebook) -> list[str]:
    """What MathJax made math of in the outputs (a footer's ``$0.006 · … $0.027`` was)."""
    found = nb.page.locator(".jp-Notebook .jp-OutputArea mjx-container")
    return [str(t) for t in found.all_inner_texts()]


def _picture(nb: Notebook) -> None:
    """The three cells as a person sees them when done (file browser folded away, the first
    cells scrolled off): ``build/calls-in-lab.png``, and the README's picture when asked."""
    if nb.page.locator(".jp-FileBrowser:visible").count():
        nb.page.keyboard.press("Control+b")  # View › Show Left Sidebar, off
    nb.cell(TOOLS).scroll_into_view_if_needed()
    nb.page.evaluate(
        "(i) => document.querySelectorAll('.jp-Notebook .jp-Cell')[i].scrollIntoView()", TOOLS
    )
    time.sleep(0.5)
    path = BUILD / "calls-in-lab.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    nb.page.screenshot(path=str(path))
    if os.environ.get("LLM_MAGIC_DOCS_IMG") == "1":
        shutil.copyfile(path, ROOT / "docs" / "img" / "calls-in-lab.png")


@pytest.fixture(scope="module")
def run(
    server: JupyterServer,
    provider: FakeProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Run]:
    provider.script(*SCRIPT)
    server.put_notebook(NAME, CELLS)
    for browser in launch_chromium():
        context = browser.new_context(viewport={"width": 1100, "height": 820})
        nb = Notebook(context.new_page(), server, NAME, "lab")
        result = Run(Steps(nb, tmp_path_factory.mktemp("shots-calls"), "lab"))
        t0 = time.monotonic()
        try:
            _drive(result, nb, server, provider)
        except StepBroke:
            pass
        finally:
            context.close()
            server.shutdown_kernels_of(NAME)
        steps = result.steps
        print(f"driven in {time.monotonic() - t0:.1f} s {steps.seconds}; broken: {steps.errors}")
        yield result


def _saved_outputs(run: Run, index: int) -> list[dict[str, Any]]:
    return list(run.saved["cells"][index].get("outputs", []))


def _saved_text(run: Run, index: int, mime: str) -> str:
    parts = []
    for out in _saved_outputs(run, index):
        value = out.get("data", {}).get(mime, "")
        parts.append("".join(value) if isinstance(value, list) else str(value))
    return "\n".join(parts)


def _pretty_json(blocks: list[str]) -> Any:
    """The one code block of the JSON cell that parses, parsed (None if none does)."""
    for block in blocks:
        try:
            return json.loads(block)
        except ValueError:
            continue
    return None


def test_the_provider_was_asked_once_per_round_and_every_call_recorded_ok(run: Run) -> None:
    run.steps.need("open", "run")
    assert run.requests == len(SCRIPT), run.requests
    assert [r["requested_model"] for r in run.rows] == [
        "gpt-4o",
        "gpt-4o",
        "gpt-4o",
        "claude-sonnet-4-5",
    ]
    assert [r["status"] for r in run.rows] == ["ok"] * 4
    assert run.rows[0]["trace_id"] == run.rows[1]["trace_id"]  # the two tool rounds: one trace
    assert json.loads(run.rows[0]["tool_calls"])[0]["arguments"] == {"city": "Paris"}
    assert run.rows[3]["cache_read_tokens"] == 10_000


def test_the_tool_call_grows_in_the_cell_while_it_streams_and_stays(
    run: Run, request: pytest.FixtureRequest
) -> None:
    run.steps.need("open", "run")
    rec = run.recordings[TOOLS]
    seen = [s.text.strip() for s in rec.after_run()]
    growing = [t for t in seen if t.startswith("⚙ get_weather(") and '"Paris"}' not in t]
    first_answer = next((i for i, t in enumerate(seen) if WEATHER[:10] in t), len(seen))
    forming = [i for i, t in enumerate(seen) if t in growing]
    run.steps.check(
        "run",
        bool(forming) and forming[0] < first_answer and '⚙ get_weather({"ci' in growing,
        f"the tool call was not seen forming before the answer; the cell showed {seen}",
        request.node.name,
    )
    ran = [i for i, t in enumerate(seen) if t.startswith(CALL_DONE)]
    run.steps.check(
        "run",
        bool(ran) and ran[0] < first_answer,
        f"the call with its output ({CALL_DONE!r}) did not show before the answer: {seen}",
        request.node.name,
    )
    final = run.live[TOOLS]
    run.steps.check(
        "run",
        WEATHER in final and CALL_DONE in final and "2 rounds ran (1 tool call run)" in final,
        f"the finished cell lost the answer or the call: {final!r}",
        request.node.name,
    )
    run.steps.check(
        "run",
        final.index(CALL_DONE) < final.index(WEATHER),
        f"the finished cell shows the answer before the call that led to it: {final!r}",
        request.node.name,
    )


def test_the_json_answer_is_shown_pretty_printed(run: Run, request: pytest.FixtureRequest) -> None:
    run.steps.need("open", "run")
    run.steps.check(
        "run",
        _pretty_json(run.live_json) == PERSON and '  "name": "Ada Lovelace"' in run.live[JSON_CELL],
        f"the JSON cell does not show the answer pretty-printed in a code block: "
        f"{run.live[JSON_CELL]!r} (blocks {run.live_json})",
        request.node.name,
    )


def test_the_footer_says_what_was_cached_and_saved(
    run: Run, request: pytest.FixtureRequest
) -> None:
    run.steps.need("open", "run")
    shown = run.live[CACHE]
    run.steps.check(
        "run",
        RISKS in shown and FOOTER in shown,
        f"the cache cell should show the answer and the footer {FOOTER!r}: {shown!r}",
        request.node.name,
    )


def test_no_widget_error_traceback_or_warning_in_the_cells(
    run: Run, request: pytest.FixtureRequest
) -> None:
    run.steps.need("open", "run")
    for index, rec in run.recordings.items():
        shown = [s.text for s in rec.after_run()]
        bad = sorted({n for text in shown for n in NOISE if n in text.lower()})
        run.steps.check(
            "run", not bad, f"cell {index} showed {bad}: {shown[-2:]}", request.node.name
        )
        run.steps.check(
            "run",
            rec.stderr_outputs == 0,
            f"cell {index} has {rec.stderr_outputs} stderr output(s)",
            request.node.name,
        )


def test_no_dollar_amount_is_typeset_as_math(run: Run, request: pytest.FixtureRequest) -> None:
    run.steps.need("open", "run", "save", "reload")
    run.steps.check(
        "run",
        not run.math,
        f"MathJax typeset parts of the outputs as LaTeX: {run.math}",
        request.node.name,
    )


def test_the_saved_notebook_keeps_all_of_it_as_readable_output(run: Run) -> None:
    run.steps.need("open", "run", "save")
    for index in (TOOLS, JSON_CELL, CACHE):
        mimes = [set(o.get("data", {})) for o in _saved_outputs(run, index)]
        assert mimes and all(m and WIDGET not in m for m in mimes), (index, mimes)
    md, plain = _saved_text(run, TOOLS, "text/markdown"), _saved_text(run, TOOLS, "text/plain")
    for text in (md, plain):
        assert WEATHER in text and CALL_DONE in text, text
    md = _saved_text(run, JSON_CELL, "text/markdown")
    assert md.startswith(f"```json\n{json.dumps(PERSON, indent=2)}\n```"), md
    assert json.loads(_saved_text(run, JSON_CELL, "text/plain")) == PERSON
    md = _saved_text(run, CACHE, "text/markdown")
    assert RISKS in md and FOOTER in md, md


def test_all_of_it_is_visible_after_reload(run: Run, request: pytest.FixtureRequest) -> None:
    run.steps.need("open", "run", "save", "reload")
    want = {TOOLS: [WEATHER, CALL_DONE], JSON_CELL: ['"Ada Lovelace"'], CACHE: [RISKS, FOOTER]}
    for index, parts in want.items():
        shown = run.reloaded[index]
        bad = sorted(n for n in NOISE if n in shown.lower())
        missing = [p for p in parts if p not in shown]
        run.steps.check(
            "reload",
            not bad and not missing,
            f"after reload cell {index} shows {shown!r}: missing {missing}, noise {bad}",
            request.node.name,
        )
    run.steps.check(
        "reload",
        _pretty_json(run.reloaded_json) == PERSON,
        f"after reload the JSON cell's code blocks are {run.reloaded_json}",
        request.node.name,
    )

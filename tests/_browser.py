"""Helpers for the real-browser suite (tests/test_browser.py): a throwaway Jupyter server, Debian's
Chromium under Playwright, and a page-side recorder of what a cell's output shows over time.

Nothing is downloaded: Playwright comes from PyPI and drives ``/usr/bin/chromium`` (installed by
``make chromium`` when missing); ``playwright install`` is never run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests._servers import free_port, wait_ready

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
CHROMIUM = Path(os.environ.get("LLM_MAGIC_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The news popup and the update check of JupyterLab 4 and Notebook 7, off.
OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    }
}
NOISE = ("loading widget", "error displaying widget", "traceback", "warning")


def need_chromium() -> None:
    """Skip (locally) or fail (under CI) when Chromium or Playwright is missing."""
    why = None
    if not os.access(CHROMIUM, os.X_OK):
        why = f"{CHROMIUM} is missing: run `make chromium` (Debian's chromium via apt-get)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            why = "playwright is not installed: run `make install` (it is in the dev extra)"
    if why is None:
        return
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


class JupyterServer:
    """``jupyter lab`` (which also serves Notebook 7's ``/tree`` and ``/notebooks``) on a free
    127.0.0.1 port with a token, in throwaway root, ledger, settings, config, data and runtime
    directories; its kernels run this worktree's ``.venv`` with ``PYTHONPATH`` on this tree."""

    def __init__(
        self, base: Path, clear_env: list[str], extra_env: dict[str, str] | None = None
    ) -> None:
        self.base = base
        self.root = base / "root"
        self.ledger = base / "ledger.sqlite"
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "jupyter.log"
        dirs = {
            "JUPYTER_CONFIG_DIR": base / "jupyter-config",
            "JUPYTER_DATA_DIR": base / "jupyter-data",
            "JUPYTER_RUNTIME_DIR": base / "jupyter-runtime",
            "JUPYTERLAB_SETTINGS_DIR": base / "lab-settings",
            "JUPYTERLAB_WORKSPACES_DIR": base / "lab-workspaces",
            "XDG_DATA_HOME": base / "xdg-data",  # the local model's state file: ours alone
            "IPYTHONDIR": base / "ipython",
        }
        for d in [self.root, *dirs.values()]:
            d.mkdir(parents=True, exist_ok=True)
        # The news popup and update check off, for JupyterLab and Notebook 7 alike: an
        # overrides.json in a throwaway app settings dir (named in the server config), and the
        # same as default_setting_overrides.json in <JUPYTER_CONFIG_DIR>/labconfig.
        app_settings = base / "app-settings"
        app_settings.mkdir(parents=True, exist_ok=True)
        (app_settings / "overrides.json").write_text(json.dumps(OVERRIDES))
        labconfig = dirs["JUPYTER_CONFIG_DIR"] / "labconfig"
        labconfig.mkdir(parents=True, exist_ok=True)
        (labconfig / "default_setting_overrides.json").write_text(
            json.dumps({"default_setting_overrides": OVERRIDES})
        )
        server_config = {
            "LabApp": {"app_settings_dir": str(app_settings)},
            "JupyterNotebookApp": {"app_settings_dir": str(app_settings)},
        }
        (dirs["JUPYTER_CONFIG_DIR"] / "jupyter_server_config.json").write_text(
            json.dumps(server_config)
        )
        env = {k: v for k, v in os.environ.items() if k not in clear_env}
        env.update({k: str(v) for k, v in dirs.items()})
        env.update(
            {
                "LLM_MAGIC_LEDGER": str(self.ledger),
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
                    os.pathsep
                ),
                "JUPYTER_PLATFORM_DIRS": "1",
            }
        )
        env.update(extra_env or {})  # e.g. a scripted provider's base URLs and fake keys
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--ServerApp.shutdown_no_activity_timeout=600",  # never outlives a stuck run long
            "--MappingKernelManager.cull_idle_timeout=0",
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=self.env,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        status = lambda: self.api("GET", "/api/status")  # noqa: E731
        wait_ready(status, self.proc, "jupyter lab", timeout, self.log_tail, every=0.25)
        plugin = "@jupyterlab/apputils-extension:notification"
        reply = self.api("GET", f"/lab/api/settings/{plugin}")
        defaults = {k: v.get("default") for k, v in reply["schema"]["properties"].items()}
        got = {**defaults, **reply["settings"]}  # what the front end composes
        if any(got.get(k) != v for k, v in OVERRIDES[plugin].items()):
            raise RuntimeError(f"the news popup is not off: {plugin} settings are {got}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for session in self.api("GET", "/api/sessions") or []:
            self.api("DELETE", f"/api/sessions/{session['id']}")
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def put_notebook(self, name: str, cells: list[str]) -> None:
        """A new notebook of code cells (python3 kernel named, so it starts without a dialog)."""
        nb = {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                "language_info": {"name": "python"},
            },
            "cells": [
                {
                    "cell_type": "code",
                    "id": f"cell-{i}",
                    "metadata": {},
                    "source": src,
                    "outputs": [],
                    "execution_count": None,
                }
                for i, src in enumerate(cells)
            ],
        }
        self.api("PUT", f"/api/contents/{name}", {"type": "notebook", "content": nb})

    def shutdown_kernels_of(self, name: str) -> int:
        """Shut down the kernel of every session on ``name`` (as the Kernel menu does)."""
        count = 0
        for session in self.api("GET", "/api/sessions") or []:
            if session.get("path") == name and session.get("kernel"):
                self.api("DELETE", f"/api/kernels/{session['kernel']['id']}")
                count += 1
        return count


@dataclass
class Sample:
    """What a cell's output area showed (its innerText) from ``t_ms`` on (page clock)."""

    t_ms: float
    text: str


@dataclass
class Recording:
    keydown_ms: float | None
    samples: list[Sample] = field(default_factory=list)
    stderr_outputs: int = 0

    def after_run(self) -> list[Sample]:
        start = self.keydown_ms if self.keydown_ms is not None else -1.0
        return [s for s in self.samples if s.t_ms >= start]

    def first_output(self) -> tuple[float, str] | None:
        """Seconds from the Shift+Enter keydown to the first output that says something (not
        empty, not a "Loading widget…" placeholder), and what it said."""
        if self.keydown_ms is None:
            return None
        for s in self.after_run():
            if s.text.strip() and not any(n in s.text.lower() for n in NOISE):
                return (s.t_ms - self.keydown_ms) / 1000, s.text
        return None

    def first_answer(self) -> tuple[float, str] | None:
        """Seconds from the keydown to the first output that is the answer's own text (not
        the ``⏳`` status line), and what it said."""
        first = self.first_output()
        if first is None or self.keydown_ms is None:
            return None
        for s in self.after_run():
            text = s.text.strip()
            if text and not text.startswith("⏳") and not any(n in text.lower() for n in NOISE):
                return (s.t_ms - self.keydown_ms) / 1000, s.text
        return None

    def max_changes_per_second(self) -> int:
        """The most output changes seen in any 1-second window after the run began."""
        times = [s.t_ms for s in self.after_run()]
        best = 0
        j = 0
        for i, t in enumerate(times):
            while times[j] <= t - 1000:
                j += 1
            best = max(best, i - j + 1)
        return best


# Page side: a MutationObserver on one cell records each change of its output area's text with
# performance.now(), and a capturing keydown listener records when Shift+Enter was pressed.
_RECORDER_JS = """
(index) => {
  const cells = document.querySelectorAll('.jp-Notebook .jp-Cell');
  const cell = cells[index];
  const read = () => {
    const area = cell.querySelector('.jp-OutputArea');
    return area ? area.innerText : '';
  };
  const rec = {keydown: null, samples: []};
  let last = read();
  rec.samples.push([performance.now(), last]);
  const observer = new MutationObserver(() => {
    const now = read();
    if (now !== last) { last = now; rec.samples.push([performance.now(), now]); }
  });
  observer.observe(cell, {childList: true, subtree: true, characterData: true});
  const onKey = (e) => {
    if (e.key === 'Enter' && e.shiftKey && rec.keydown === null) rec.keydown = performance.now();
  };
  window.addEventListener('keydown', onKey, true);
  rec.stop = () => { observer.disconnect(); window.removeEventListener('keydown', onKey, true); };
  window.__llmRecorder = rec;
}
"""

_COLLECT_JS = """
(index) => {
  const rec = window.__llmRecorder;
  rec.stop();
  const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[index];
  const stderr = cell.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').length;
  return {keydown: rec.keydown, samples: rec.samples, stderr: stderr};
}
"""

# The comparison as a person sees it: the columns' heads and bodies with their places on the
# page, and every other table (the DataFrame) as header cells and rows of cell texts.
_COMPARE_JS = """
(index) => {
  const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[index];
  const area = cell.querySelector('.jp-OutputArea');
  const box = (el) => { const r = el.getBoundingClientRect();
                        return {x: r.x, y: r.y, w: r.width, h: r.height}; };
  const cmp = area ? area.querySelector('table.llm-magic-compare') : null;
  const columns = [];
  if (cmp) {
    const heads = cmp.querySelectorAll('th');
    const bodies = cmp.querySelectorAll('td');
    heads.forEach((th, i) => columns.push({
      head: th.innerText, body: bodies[i] ? bodies[i].innerText : '',
      box: box(bodies[i] || th)}));
  }
  const tables = [];
  if (area) area.querySelectorAll('table').forEach((t) => {
    if (t.classList.contains('llm-magic-compare')) return;
    tables.push(Array.from(t.querySelectorAll('tr')).map(
      (tr) => Array.from(tr.querySelectorAll('th,td')).map((c) => c.innerText.trim())));
  });
  return {columns: columns, tables: tables, text: area ? area.innerText : ''};
}
"""


class Notebook:
    """One open notebook page (JupyterLab's ``/lab/tree/…`` or Notebook 7's ``/notebooks/…``)."""

    def __init__(self, page: Any, server: JupyterServer, name: str, ui: str) -> None:
        self.page = page
        self.server = server
        self.name = name
        self.ui = ui

    def url(self) -> str:
        if self.ui == "lab":
            return f"{self.server.url}/lab/tree/{self.name}?token={self.server.token}"
        return f"{self.server.url}/notebooks/{self.name}?token={self.server.token}"

    def open(self) -> None:
        if self.ui == "notebook7":  # as a person arrives: the file browser, then the notebook
            self.page.goto(f"{self.server.url}/tree?token={self.server.token}")
            self.page.wait_for_selector(".jp-DirListing-content", timeout=60_000)
        self.page.goto(self.url())
        self.wait_loaded()
        self.wait_kernel_idle()

    def wait_kernel_idle(self, timeout_ms: int = 120_000) -> None:
        """Until the toolbar names a kernel and its execution indicator says idle (a cell run
        before that may be dropped)."""
        self.page.wait_for_function(
            """() => {
              const ind = document.querySelector('.jp-Notebook-ExecutionIndicator');
              const name = document.querySelector('.jp-KernelName, .jp-Toolbar-kernelName');
              const named = name && !['', 'No Kernel'].includes(name.innerText.trim());
              return named && ind && ind.dataset.status === 'idle';
            }""",
            timeout=timeout_ms,
        )

    def wait_loaded(self) -> None:
        self.page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        self.page.wait_for_function(
            "() => document.querySelectorAll('.jp-Notebook .jp-Cell .jp-InputArea').length > 0",
            timeout=60_000,
        )

    def cell(self, index: int) -> Any:
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def prompt(self, index: int) -> str:
        return str(self.cell(index).locator(".jp-InputArea-prompt").inner_text()).strip()

    def run(self, index: int) -> None:
        """Select the cell (command mode) and press Shift+Enter, as a person does."""
        self.cell(index).locator(".jp-InputArea-prompt").click()
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("Shift+Enter")

    def wait_done(self, index: int, timeout_s: float = 90.0) -> str:
        """Wait until the cell's prompt shows an execution count (``[3]:``) again."""
        deadline = time.monotonic() + timeout_s
        text = ""
        while time.monotonic() < deadline:
            text = self.prompt(index)
            if re.fullmatch(r"\[\d+\]:?", text):
                return text
            time.sleep(0.05)
        raise AssertionError(  # "[ ]:" never ran (a dropped key press), "[*]:" still running
            f"cell {index} still running after {timeout_s:.0f} s (its prompt shows {text!r})"
        )

    def record(self, index: int) -> Recording:
        """Run cell ``index`` and record every change of its output until it is done."""
        self.page.evaluate(_RECORDER_JS, index)
        self.run(index)
        time.sleep(0.3)  # the prompt turns to [*] first
        self.wait_done(index)
        time.sleep(0.5)  # a last update may follow the execute reply
        raw = self.page.evaluate(_COLLECT_JS, index)
        return Recording(
            keydown_ms=raw["keydown"],
            samples=[Sample(t, s) for t, s in raw["samples"]],
            stderr_outputs=int(raw["stderr"]),
        )

    def output_text(self, index: int) -> str:
        area = self.cell(index).locator(".jp-OutputArea")
        return str(area.inner_text()) if area.count() else ""

    def comparison(self, index: int) -> dict[str, Any]:
        return dict(self.page.evaluate(_COMPARE_JS, index))

    def save(self, timeout_s: float = 20.0) -> dict[str, Any]:
        """Ctrl+S, then wait until the file on disk has the outputs; return the saved JSON."""
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("Control+s")
        deadline = time.monotonic() + timeout_s
        nb: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                nb = self.server.api("GET", f"/api/contents/{self.name}")["content"]
            except urllib.error.HTTPError:  # read while the server writes it: ask again
                time.sleep(0.25)
                continue
            code = [c for c in nb["cells"] if c["cell_type"] == "code" and c["source"].strip()]
            if code and all(c.get("execution_count") for c in code):
                return nb
            time.sleep(0.25)
        raise AssertionError(f"{self.name} was not saved with its outputs in {timeout_s:.0f} s")

    def texts(self, index: int, selector: str) -> list[str]:
        """The innerText of every element matching ``selector`` in cell ``index``'s output."""
        found = self.cell(index).locator(f".jp-OutputArea {selector}")
        return [str(t) for t in found.all_inner_texts()]

    def shot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=True)
        return path


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9]+", text)


def contains_in_order(haystack: str, needle: str) -> bool:
    """Every word of ``needle`` appears in ``haystack`` in the same order (Markdown rendering
    drops list numbers and marks, so contiguity is not required)."""
    hay = iter(w.lower() for w in words(haystack))
    return all(any(h == w.lower() for h in hay) for w in words(needle))


def is_growing_prefix(shown: str, answer: str) -> bool:
    """``shown`` is a start of ``answer`` (word-wise; its last word may be cut)."""
    got, want = words(shown), words(answer)
    if not got or len(got) > len(want):
        return False
    *whole, last = got
    return whole == want[: len(whole)] and want[len(whole)].startswith(last)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return " ".join(parser.parts)


def nbconvert_html(server: JupyterServer, name: str, out_dir: Path) -> str:
    """``jupyter nbconvert --to html`` on the saved notebook (no kernel); the HTML's text."""
    out_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--output-dir",
         str(out_dir), str(server.root / name)],
        env=server.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"nbconvert failed: {done.stderr[-800:]}")
    html = (out_dir / (Path(name).stem + ".html")).read_text()
    return html_text(html)


def save_failure_shot(src: Path | None, test_name: str) -> str:
    """Copy the screenshot of the step a test judged into build/browser-<test>.png."""
    if src is None or not src.exists():
        return "(no screenshot)"
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", test_name).strip("-")
    dest = BUILD / f"browser-{safe}.png"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return str(dest.relative_to(ROOT))


def launch_chromium() -> Iterator[Any]:
    """Playwright driving Debian's Chromium (a generator: yields the Browser, closes it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


class StepBroke(Exception):
    """A step of a browser run broke: the later steps cannot run (their tests say which)."""


class Steps:
    """The named steps of one driven notebook: ``with steps("save"): …`` times the step,
    screenshots the page at its end (``shots``) and, when it raises, keeps the error
    (``errors``) and raises :class:`StepBroke`, which the driver catches to stop. Tests then
    judge what each step saw: ``need`` fails one whose steps broke, ``check`` fails with the
    screenshot of the step judged copied to ``build/``."""

    def __init__(self, nb: Notebook, shots: Path, label: str) -> None:
        self.nb = nb
        self.dir = shots
        self.label = label
        self.shots: dict[str, Path] = {}
        self.errors: dict[str, str] = {}
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        except Exception as exc:
            self.errors[name] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            raise StepBroke(name) from exc
        finally:
            self.seconds[name] = round(time.monotonic() - t0, 1)
            with contextlib.suppress(Exception):  # a dead page: the error says why
                self.shots[name] = self.nb.shot(self.dir / f"{self.label}-{name}.png")

    def need(self, *names: str) -> None:
        for name in names:
            if name in self.errors:
                pytest.fail(f"[{self.label}] step {name!r} broke: {self.errors[name]}")

    def check(self, step: str, ok: bool, message: str, test_name: str) -> None:
        if not ok:
            shot = save_failure_shot(self.shots.get(step), test_name)
            pytest.fail(f"[{self.label}] {message}\nscreenshot: {shot}")

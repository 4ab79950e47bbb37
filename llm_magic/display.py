"""Showing a streaming answer in a notebook: a display updated in place (``handle``, the
default in kernels), an ipywidgets Output (``widget``, on request), plain stdout in a terminal.

Whatever streams, what stays in the notebook is ordinary output: the finished answer (or the
partial one with its note, or the error line) replaces the stream in the same display, as
``text/markdown`` with a ``text/plain`` twin; a comparison as a static side-by-side HTML table
with a ``text/plain`` twin, then its table. Nothing left needs a kernel or widget state, so it
survives save, reopen, ``nbconvert`` and nbviewer. Before the first token a status line says
what the call is waiting for ("starting the local model…").

Updates are coalesced: at most ``rate`` per second whatever the token rate, plus a last one.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
from html import escape as html_escape
from typing import Any

from ._toolcalls import ToolEvent
from .result import Result
from .vocab import DISPLAY_MODES, no_math

__all__ = [
    "StreamView",
    "CompareView",
    "choose_mode",
    "render_final",
    "status_bundle",
    "error_bundle",
]

_FENCE = re.compile(r"```([\w+-]*)\n(.*?)```", re.S)


STATUS_CLASS = "llm-magic-status"  # the status line's HTML class (browser tests look for it)
COMPARE_CLASS = "llm-magic-compare"  # the comparison table's HTML class
COLUMN_CLASS = "llm-magic-column"  # each model's answer cell in it


def choose_mode(preference: str, shell: Any) -> str:
    """``handle`` in a kernel, ``widget`` or ``handle`` when asked, ``text`` elsewhere."""
    if preference in DISPLAY_MODES and preference != "auto":
        return preference
    in_kernel = shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
    return "handle" if in_kernel else "text"


def status_bundle(message: str) -> dict[str, str]:
    """The status line shown before the first token."""
    line = f"⏳ {message}"
    html = f'<div class="{STATUS_CLASS}" style="color:#666;font-style:italic">{html_escape(line)}</div>'
    return {"text/html": html, "text/plain": line}


def error_bundle(message: str) -> dict[str, str]:
    """A failed call with nothing to show: its one line, kept in the notebook."""
    return {"text/markdown": f"> ⚠️ {no_math(message)}", "text/plain": message}


RAN = "⚙ "  # how a note about a tool call that ran begins (``⚙ get_weather({…}) → output``)


def render_final(result: Result, fmt: str) -> dict[str, Any]:
    """The MIME bundle of the finished answer in format ``fmt`` (markdown|text|code|json).

    Tool calls that ran come first, as they did while streaming (the answer came after them);
    the calls the answer asks for, the notes and the footer follow it. Our own words are kept
    out of MathJax's reach (``vocab.no_math``): a footer's two ``$`` amounts are money."""
    text = result.text
    footer = result.footer()
    ran = [n for n in result.notes if n.startswith(RAN)]
    said = [n for n in result.notes if not n.startswith(RAN)]
    calls = result.tool_lines()
    before = "".join(f"<code>{html_escape(c, quote=False)}</code>\n\n" for c in ran)
    notes = "".join(f"\n\n<code>{html_escape(c, quote=False)}</code>" for c in calls)
    notes += "".join(f"\n\n> {no_math(n)}" for n in said)
    small = f"\n\n{no_math(footer, 'small')}"
    if fmt == "text":
        plain = "\n".join([*ran, text, *calls, *(f"[{n}]" for n in said), f"[{footer}]"])
        return {"text/plain": plain}
    if fmt == "code":
        match = _FENCE.search(text)
        lang, code = (match.group(1), match.group(2)) if match else ("", text)
        md = f"{before}```{lang}\n{code.rstrip()}\n```{notes}{small}"
        return {"text/markdown": md, "text/plain": code}
    if fmt == "json":
        match = _FENCE.search(text)
        raw = match.group(2) if match else text
        try:
            data = json.loads(raw)
        except ValueError:
            md = f"{before}{text}{notes}\n\n> The answer is not valid JSON.{small}"
            return {"text/markdown": md, "text/plain": text}
        pretty = json.dumps(data, indent=2, ensure_ascii=False)
        md = f"{before}```json\n{pretty}\n```{notes}{small}"
        return {"text/markdown": md, "text/plain": pretty}
    plain = "\n".join([*ran, text, *calls])
    return {"text/markdown": f"{before}{text}{notes}{small}", "text/plain": plain}


class StreamView:
    """One streaming answer on screen. ``add`` is cheap; rendering happens at most ``rate``/s."""

    def __init__(self, mode: str, fmt: str = "markdown", rate: float = 30.0) -> None:
        self.mode = mode
        self.fmt = fmt
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.text = ""
        self._shown = 0  # characters already written (text mode)
        self._last = 0.0
        self.updates = 0  # how many times the screen was redrawn (for tests and benchmarks)
        self._out: Any = None  # widget mode: the Output the answer streams into
        self._handle: Any = None  # the display that ends as the finished answer
        self.tools: dict[tuple[int, int], ToolEvent] = {}  # tool calls shown, by (round, index)
        self._blocks: list[str | tuple[int, int]] = []  # text pieces and tool calls, in order
        self._open_call = False  # text mode: a tool call is being written out
        self._last_char = ""  # text mode: the last character written

    def __repr__(self) -> str:
        return f"StreamView({self.mode}, {len(self.text)} chars, {self.updates} updates)"

    def start(self, status: str | None = "preparing the call…") -> None:
        """Show the (empty) answer at once, with a status line until the first token."""
        from IPython.display import display

        if self.mode == "widget":
            import ipywidgets

            self._out = ipywidgets.Output(layout={"border": "1px solid #ddd", "padding": "4px"})
            self._handle = display(self._out, display_id=True)
            if status:
                self.status(status)
        elif self.mode == "handle":
            self._handle = display(status_bundle(status or "…"), raw=True, display_id=True)

    def status(self, message: str) -> None:
        """Say what the call is waiting for (only before its first token; not in text mode)."""
        if self.text or self.tools:
            return
        if self.mode == "widget" and self._out is not None:
            self._out.outputs = (
                {"output_type": "display_data", "data": status_bundle(message), "metadata": {}},
            )
        elif self.mode == "handle" and self._handle is not None:
            self._handle.update(status_bundle(message), raw=True)

    def add(self, chunk: str) -> None:
        self.text += chunk
        self._blocks.append(chunk)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._flush(now)

    def tool(self, event: ToolEvent) -> None:
        """A tool call forming (``⚙ get_weather({"city": "Par…`` growing), or its output once
        run: shown in the stream where it came, among the text."""
        key = (event.round, event.index)
        if key not in self.tools:
            self._blocks.append(key)
        before = self.tools.get(key)
        self.tools[key] = event
        if self.mode == "text":  # a terminal only appends
            self._write(self.text[self._shown :])
            self._shown = len(self.text)
            if event.output is not None:
                self._write(f"{self._close_call()}  → {event.name}: {event.output}\n")
            elif before is None:
                sep = self._close_call() or ("\n" if self._last_char not in ("", "\n") else "")
                self._write(f"{sep}⚙ {event.name}({event.arguments}")
                self._open_call = True
            else:
                self._write(event.arguments[len(before.arguments) :])
            return
        now = time.monotonic()
        if now - self._last >= self.interval or event.output is not None:
            self._flush(now)

    def screen(self) -> str:
        """What the stream shows: its text, with the tool calls where they came."""
        if not self.tools:
            return self.text
        out = []
        for i, block in enumerate(self._blocks):
            if isinstance(block, str):
                out.append(block)
                continue
            e = self.tools[block]
            closed = e.output is not None or i < len(self._blocks) - 1
            line = f"⚙ {e.name}({e.arguments}{')' if closed else ''}"
            line += f" → {e.output}" if e.output is not None else ""
            sep = "\n" if out and not out[-1].endswith("\n") else ""
            out.append(f"{sep}{line}\n")
        return "".join(out)

    def _flush(self, now: float | None = None) -> None:
        self._last = time.monotonic() if now is None else now
        self.updates += 1
        if self.mode == "widget":
            shown = self.screen()
            self._out.outputs = ({"output_type": "stream", "name": "stdout", "text": shown},)
        elif self.mode == "handle":
            self._handle.update({"text/plain": self.screen()}, raw=True)
        else:
            pending = self.text[self._shown :]
            self._write(self._close_call() + pending if pending else "")
            self._shown = len(self.text)

    def _write(self, s: str) -> None:
        """Text mode: append to the terminal."""
        if s:
            sys.stdout.write(s)
            self._last_char = s[-1]
        sys.stdout.flush()

    def _close_call(self) -> str:
        """Text mode: the ``)`` that ends a tool call shown forming, when one is open."""
        was, self._open_call = self._open_call, False
        return ")\n" if was else ""

    def _end(self, bundle: dict[str, Any]) -> None:
        """The stream's display becomes ordinary output (the widget, if any, is replaced)."""
        if self._handle is not None:
            self._handle.update(bundle, raw=True)
        if self._out is not None:
            self._out.close()
            self._out = None

    def finish(self, result: Result) -> None:
        """Replace the streamed text with the rendered answer (and its notes and footer)."""
        if self.mode == "text":
            if len(self.text) != self._shown:
                self._flush()
            self._write(self._close_call().rstrip("\n"))
            tail = [*(f"[{n}]" for n in result.notes), f"[{result.footer()}]"]
            sys.stdout.write("\n" + "\n".join(tail) + "\n")
            sys.stdout.flush()
            return
        self.updates += 1
        self._end(render_final(result, self.fmt))

    def fail(self, message: str, partial: Result | None = None) -> None:
        """A failed call: its partial text (if any) with the error as a note, or the error line
        alone. In a kernel it stays in the cell's output; in a terminal it goes to stderr."""
        if self.mode == "text":
            if partial is not None and partial.text:
                self.finish(partial)
            print(message, file=sys.stderr)
            return
        if partial is not None and partial.text:
            notes = partial.notes if message in partial.notes else [*partial.notes, message]
            self.finish(dataclasses.replace(partial, notes=notes))
        else:
            self._end(error_bundle(message))

    def discard(self) -> None:
        """Nothing to show after all (e.g. a usage error): the status line goes."""
        if self.mode != "text":
            self._end({"text/plain": ""})


def _cell(style: str = "") -> str:
    return f'style="text-align:left;vertical-align:top;border:1px solid #ddd;padding:4px;{style}"'


class CompareView:
    """Side-by-side columns, one per model, each with a live token count; then a table.

    In a kernel the columns are one HTML table updated in place, ending as static HTML."""

    def __init__(self, mode: str, models: list[str], rate: float = 30.0) -> None:
        self.mode = mode
        self.models = models
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.texts = {m: "" for m in models}
        self.chunks = {m: 0 for m in models}
        self.done: dict[str, str] = {}
        self.results: dict[str, Result] = {}
        self._status: str | None = None
        self._dirty: set[str] = set()
        self._last = 0.0
        self.updates = 0
        self._cols: dict[str, tuple[Any, Any]] = {}
        self._handle: Any = None
        self._box: Any = None

    def __repr__(self) -> str:
        return f"CompareView({self.mode}, {len(self.models)} models, {self.updates} updates)"

    def _header(self, model: str) -> str:
        state = self.done.get(model, "streaming…" if self.chunks[model] else "waiting…")
        return f"{model} · ~{self.chunks[model]} tokens · {state}"

    def start(self, status: str | None = None) -> None:
        from IPython.display import display

        self._status = status
        if self.mode == "widget":
            import ipywidgets as w

            columns = []
            for m in self.models:
                head = w.HTML(f"<b>{html_escape(self._header(m))}</b>")
                out = w.Output(layout={"border": "1px solid #ddd", "padding": "4px"})
                self._cols[m] = (head, out)
                columns.append(w.VBox([head, out], layout={"flex": "1 1 0", "min_width": "0"}))
            self._box = w.HBox(columns, layout={"width": "100%"})
            self._handle = display(self._box, display_id=True)
        elif self.mode == "handle":
            self._handle = display(self.bundle(), raw=True, display_id=True)
        else:
            print(f"Comparing {', '.join(self.models)} …", flush=True)

    def status(self, message: str | None) -> None:
        """A line above the columns saying what they wait for (``None`` removes it)."""
        self._status = message
        if self.mode == "handle" and self._handle is not None:
            self._handle.update(self.bundle(), raw=True)

    def bundle(self) -> dict[str, str]:
        """The columns as static side-by-side HTML, and a ``text/plain`` twin."""
        width = f"{100 / max(1, len(self.models)):.2f}%"
        heads, cells, plain = [], [], []
        for m in self.models:
            result = self.results.get(m)
            text = result.text if result is not None else self.texts[m]
            extra = [*result.notes, result.footer()] if result is not None else []
            heads.append(f"<th {_cell(f'width:{width}')}>{html_escape(self._header(m))}</th>")
            tail = "".join(f"<br>{no_math(x, 'small')}" for x in extra)
            body = f'<div style="white-space:pre-wrap">{html_escape(text)}</div>'
            cells.append(f'<td class="{COLUMN_CLASS}" {_cell()}>{body}{tail}</td>')
            plain.append("\n".join([f"=== {self._header(m)} ===", text, *extra]))
        status = ""
        if self._status and len(self.done) < len(self.models):
            status = status_bundle(self._status)["text/html"]
            plain.insert(0, f"⏳ {self._status}")
        html = (
            f'{status}<table class="{COMPARE_CLASS}" style="width:100%;table-layout:fixed;'
            f'border-collapse:collapse"><tr>{"".join(heads)}</tr><tr>{"".join(cells)}</tr></table>'
        )
        return {"text/html": html, "text/plain": "\n\n".join(plain)}

    def add(self, model: str, chunk: str) -> None:
        self.texts[model] += chunk
        self.chunks[model] += 1
        self._dirty.add(model)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        self._last = time.monotonic() if now is None else now
        if not self._dirty:
            return
        self.updates += 1
        if self.mode == "handle":
            self._status = None  # tokens are arriving: nothing is waited for any more
            self._handle.update(self.bundle(), raw=True)
        elif self.mode == "widget":
            for m in sorted(self._dirty):
                head, out = self._cols[m]
                head.value = f"<b>{html_escape(self._header(m))}</b>"
                out.outputs = ({"output_type": "stream", "name": "stdout", "text": self.texts[m]},)
        self._dirty.clear()

    def finish_one(self, model: str, result: Result | None, error: str | None) -> None:
        """One model is done: its final text (or error) replaces the stream in its column."""
        if result is not None:
            self.texts[model] = result.text
            self.chunks[model] = result.output_tokens
            self.done[model] = result.status if not error else f"{result.status}: {error}"
            self.results[model] = result
        else:
            self.done[model] = f"error: {error}"
        if self.mode == "text":
            print(f"— {self._header(model)}", flush=True)
            return
        self._dirty.add(model)
        self.flush()
        if result is not None and self.mode == "widget":
            _, out = self._cols[model]
            bundle = render_final(result, "markdown")
            out.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)

    def fail(self, message: str) -> None:
        """Nothing was compared (e.g. a Ctrl-C before sending): the columns go, the line stays
        (on stderr)."""
        self.discard()
        print(message, file=sys.stderr)

    def discard(self) -> None:
        """Nothing to compare after all (e.g. a usage error): the columns go."""
        if self._handle is not None:
            self._handle.update({"text/plain": ""}, raw=True)
            self._handle = None
        self.close()

    def close(self) -> None:
        """The columns become static HTML in the notebook (a widget box is replaced)."""
        self._status = None
        if self._handle is not None:
            self._handle.update(self.bundle(), raw=True)
        if self._box is not None:
            for column in self._box.children:
                for part in column.children:
                    part.close()
                column.close()
            self._box.close()
            self._box = None

    def finish(self, table: Any) -> None:
        from IPython.display import display

        self.close()
        if "error" in table and table["error"].isna().all():
            table = table.drop(columns="error")
        table = table.round({"ttft_s": 2, "latency_s": 2, "output_tps": 1, "cost_usd": 6})

        if self.mode == "text":
            for m in self.models:
                print(f"\n=== {m} ===\n{self.texts[m]}")
            print("\n" + table.to_string(max_colwidth=60))
            return
        display(table)

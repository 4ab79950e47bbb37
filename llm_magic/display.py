"""Showing a streaming answer in a notebook: ipywidgets Output where a widget front end can
render it, a display handle updated in place for headless kernels, plain stdout in a terminal.

Updates are coalesced: at most ``rate`` per second whatever the token rate, plus a last one.
"""

from __future__ import annotations

import json
import re
import sys
import time
from html import escape as html_escape
from typing import Any

from .result import Result

__all__ = ["StreamView", "CompareView", "choose_mode", "render_final"]

_FENCE = re.compile(r"```([\w+-]*)\n(.*?)```", re.S)


def choose_mode(preference: str, shell: Any) -> str:
    """``widget`` in a kernel (if ipywidgets imports), ``handle`` when asked, ``text`` elsewhere."""
    if preference in ("widget", "handle", "text"):
        return preference
    in_kernel = shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
    if not in_kernel:
        return "text"
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return "handle"
    return "widget"


def render_final(result: Result, fmt: str) -> dict[str, Any]:
    """The MIME bundle of the finished answer in format ``fmt`` (markdown|text|code|json)."""
    text = result.text
    footer = result.footer()
    notes = "".join(f"\n\n> {n}" for n in result.notes)
    if fmt == "text":
        plain = "\n".join([text, *(f"[{n}]" for n in result.notes), f"[{footer}]"])
        return {"text/plain": plain}
    if fmt == "code":
        match = _FENCE.search(text)
        lang, code = (match.group(1), match.group(2)) if match else ("", text)
        md = f"```{lang}\n{code.rstrip()}\n```{notes}\n\n<small>{footer}</small>"
        return {"text/markdown": md, "text/plain": code}
    if fmt == "json":
        match = _FENCE.search(text)
        raw = match.group(2) if match else text
        try:
            data = json.loads(raw)
        except ValueError:
            md = f"{text}{notes}\n\n> The answer is not valid JSON.\n\n<small>{footer}</small>"
            return {"text/markdown": md, "text/plain": text}
        pretty = json.dumps(data, indent=2, ensure_ascii=False)
        md = f"```json\n{pretty}\n```{notes}\n\n<small>{footer}</small>"
        return {"text/markdown": md, "text/plain": pretty}
    return {"text/markdown": f"{text}{notes}\n\n<small>{footer}</small>", "text/plain": text}


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
        self._out: Any = None
        self._handle: Any = None

    def __repr__(self) -> str:
        return f"StreamView({self.mode}, {len(self.text)} chars, {self.updates} updates)"

    def start(self, header: str | None = None) -> None:
        from IPython.display import display

        if self.mode == "widget":
            import ipywidgets

            self._out = ipywidgets.Output(layout={"border": "1px solid #ddd", "padding": "4px"})
            display(self._out)
        elif self.mode == "handle":
            self._handle = display({"text/plain": "…"}, raw=True, display_id=True)
        if header and self.mode == "text":
            print(header)

    def add(self, chunk: str) -> None:
        self.text += chunk
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._flush(now)

    def _flush(self, now: float | None = None) -> None:
        self._last = time.monotonic() if now is None else now
        self.updates += 1
        if self.mode == "widget":
            self._out.outputs = ({"output_type": "stream", "name": "stdout", "text": self.text},)
        elif self.mode == "handle":
            self._handle.update({"text/plain": self.text}, raw=True)
        else:
            sys.stdout.write(self.text[self._shown :])
            sys.stdout.flush()
            self._shown = len(self.text)

    def finish(self, result: Result) -> None:
        """Replace the streamed text with the rendered answer (and its notes and footer)."""
        if len(self.text) != self._shown or self.mode != "text":
            self._flush()
        bundle = render_final(result, self.fmt)
        if self.mode == "widget":
            self._out.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)
        elif self.mode == "handle":
            self._handle.update(bundle, raw=True)
        else:
            tail = [*(f"[{n}]" for n in result.notes), f"[{result.footer()}]"]
            sys.stdout.write("\n" + "\n".join(tail) + "\n")
            sys.stdout.flush()

    def fail(self, message: str, partial: Result | None = None) -> None:
        """Show a one-line error (and keep any partial text on screen)."""
        if partial is not None and partial.text:
            self.finish(partial)
        elif self.mode == "widget" and self._out is not None:
            self._out.outputs = ()
        elif self.mode == "handle" and self._handle is not None:
            self._handle.update({"text/plain": ""}, raw=True)
        print(message, file=sys.stderr)


class CompareView:
    """Side-by-side columns, one per model, each with a live token count; then a table."""

    def __init__(self, mode: str, models: list[str], rate: float = 30.0) -> None:
        self.mode = mode
        self.models = models
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.texts = {m: "" for m in models}
        self.chunks = {m: 0 for m in models}
        self.done: dict[str, str] = {}
        self._dirty: set[str] = set()
        self._last = 0.0
        self.updates = 0
        self._cols: dict[str, tuple[Any, Any]] = {}
        self._handles: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"CompareView({self.mode}, {len(self.models)} models, {self.updates} updates)"

    def _header(self, model: str) -> str:
        state = self.done.get(model, "streaming…" if self.chunks[model] else "waiting…")
        return f"{model} · ~{self.chunks[model]} tokens · {state}"

    def start(self) -> None:
        from IPython.display import display

        if self.mode == "widget":
            import ipywidgets as w

            columns = []
            for m in self.models:
                head = w.HTML(f"<b>{html_escape(self._header(m))}</b>")
                out = w.Output(layout={"border": "1px solid #ddd", "padding": "4px"})
                self._cols[m] = (head, out)
                columns.append(w.VBox([head, out], layout={"flex": "1 1 0", "min_width": "0"}))
            display(w.HBox(columns, layout={"width": "100%"}))
        elif self.mode == "handle":
            for m in self.models:
                self._handles[m] = display(
                    {"text/plain": self._header(m)}, raw=True, display_id=True
                )
        else:
            print(f"Comparing {', '.join(self.models)} …", flush=True)

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
        for m in sorted(self._dirty):
            self._render(m)
        self._dirty.clear()

    def _render(self, model: str) -> None:
        if self.mode == "widget":
            head, out = self._cols[model]
            head.value = f"<b>{html_escape(self._header(model))}</b>"
            out.outputs = ({"output_type": "stream", "name": "stdout", "text": self.texts[model]},)
        elif self.mode == "handle":
            text = f"{self._header(model)}\n{self.texts[model]}"
            self._handles[model].update({"text/plain": text}, raw=True)

    def finish_one(self, model: str, result: Result | None, error: str | None) -> None:
        """One model is done: its final text (or error) replaces the stream in its column."""
        if result is not None:
            self.texts[model] = result.text
            self.chunks[model] = result.output_tokens
            self.done[model] = result.status if not error else f"{result.status}: {error}"
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
        elif result is not None and self.mode == "handle":
            bundle = render_final(result, "markdown")
            md = f"**{self._header(model)}**\n\n{bundle['text/markdown']}"
            self._handles[model].update({"text/markdown": md, "text/plain": result.text}, raw=True)

    def finish(self, table: Any) -> None:
        from IPython.display import display

        if "error" in table and table["error"].isna().all():
            table = table.drop(columns="error")
        table = table.round({"ttft_s": 2, "latency_s": 2, "output_tps": 1, "cost_usd": 6})

        if self.mode == "text":
            for m in self.models:
                print(f"\n=== {m} ===\n{self.texts[m]}")
            print("\n" + table.to_string(max_colwidth=60))
            return
        display(table)

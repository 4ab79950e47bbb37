"""Showing a streaming answer in a notebook: ipywidgets Output where a widget front end can
render it, a display handle updated in place for headless kernels, plain stdout in a terminal.

Updates are coalesced: at most ``rate`` per second whatever the token rate, plus a last one.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

from .result import Result

__all__ = ["StreamView", "choose_mode", "render_final"]

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

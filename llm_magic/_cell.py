"""A cell's call on screen: :func:`show_stream` plays a call's stream into a view, and
:class:`Guard` gives every view the same ending when the call does not happen (a usage mistake,
a Ctrl-C before anything was sent). Used by both the single-answer and the comparison cell."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from IPython.core.error import UsageError

from . import errors
from .display import StreamView
from .result import Result

if TYPE_CHECKING:
    from .core import Stream

__all__ = ["Guard", "show_stream"]


def show_stream(view: StreamView, stream: Stream, *, buffered: bool = False) -> Result | None:
    """Stream a call into ``view`` and end it as the answer (or the partial answer, or the
    error line); returns the call's Result (None when nothing was recorded).

    A Ctrl-C while the screen is drawing stops the stream (recorded as interrupted);
    ``buffered`` (``--no-stream``) shows the answer only when it is complete. Tool calls show
    as they form (``⚙ get_weather({"city": "Par…``), then with their output when run."""
    if not buffered:
        stream.on_tool = view.tool
    try:
        for chunk in stream:
            if buffered:
                view.text += chunk
                continue
            try:
                view.add(chunk)
            except KeyboardInterrupt:
                cut = stream.interrupt()
                if cut is not None:
                    view.finish(cut)
                return cut
    except errors.Interrupted as stop:
        view.finish(stop.result)
        return stop.result
    except errors.ProviderError as exc:
        failed: Result | None = getattr(exc, "result", None)
        view.fail(errors.describe(exc), failed)
        return failed
    done = stream.result
    if done is not None:
        view.finish(done)
    return done


class _View(Protocol):
    def discard(self) -> None: ...

    def fail(self, message: str) -> None: ...


class Guard:
    """``with Guard(view):`` around a cell's set-up (and its stream): the same ending for
    every view when the call does not happen.

    A usage mistake (:class:`errors.UsageProblem` or a ``UsageError``) removes the view and
    is one ``UsageError`` line (nothing was sent); a Ctrl-C before anything was sent leaves
    ``interrupted`` (default: "Interrupted before the request was sent") in its place and is
    not re-raised — ``guard.interrupted`` says it happened."""

    def __init__(self, view: _View, interrupted: str = "Interrupted before the request was sent"):
        self.view = view
        self.message = interrupted
        self.interrupted = False

    def __enter__(self) -> Guard:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if kind is None:
            return False
        if issubclass(kind, errors.UsageProblem):
            self.view.discard()
            raise UsageError(str(exc)) from None
        if issubclass(kind, UsageError):
            self.view.discard()
            return False
        if issubclass(kind, KeyboardInterrupt):  # during the set-up: nothing sent or recorded
            self.view.fail(self.message)
            self.interrupted = True
            return True
        return False

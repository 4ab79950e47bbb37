"""One served answer: a call driven by :func:`llm_magic.core.start` in a worker thread, its
text, tool calls, usage and failure turned into events of a :class:`~llm_magic.web.sse.Replay`.

The thread runs on its own: a reader that goes away does not stop it (it reconnects and reads
on); :meth:`ChatRun.stop` does (``DELETE``), recorded ``interrupted`` as a Ctrl-C in a notebook
is. The same guards as in a notebook apply by themselves (retries, fallbacks, budget, context,
one ledger row per call).
"""

from __future__ import annotations

import math
import threading
from typing import Any

from .. import _otel, core, errors
from .._toolcalls import ToolEvent
from ..config import Settings
from ..result import Result
from ..secrets import scrub
from ..store import Ledger
from . import tuning
from .sse import DONE, Replay
from .turns import TURNS

__all__ = ["ChatRun", "usage_of"]


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def usage_of(result: Result) -> dict[str, Any]:
    """The ``usage`` event of a call that wrote its ledger row."""
    return {
        "call_id": result.call_id,
        "model": result.model,
        "status": result.status,
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
        "usage_source": result.usage_source,
        "cost_usd": _number(result.cost_usd),
        "latency_s": _number(result.latency_s),
        "ttft_s": _number(result.ttft_s),
        "finish_reason": result.finish_reason,
    }


def _kind(exc: BaseException) -> str:
    if isinstance(exc, (errors.Interrupted, errors.StreamInterrupted)):
        return "interrupted"
    return "usage" if isinstance(exc, errors.UsageProblem) else "provider"


class ChatRun:
    """A call and its events: :meth:`start` it once, :meth:`stop` it from any thread."""

    def __init__(
        self, req: core.Request, cfg: Settings, book: Ledger, replay: Replay, model: str
    ) -> None:
        self.request = req
        self.cfg = cfg
        self.book = book
        self.replay = replay
        self.model = model
        self.result: Result | None = None
        self._stop = threading.Event()
        self._sent: dict[tuple[int, int], int] = {}  # (round, index) → argument chars sent

    def start(self) -> None:
        self.replay.add({"stream_id": self.replay.sid, "model": self.model}, "start")
        name = f"llm-magic-serve-{self.replay.sid[:8]}"
        run = _otel.within("chat request", self._run, {"llm_magic.model": self.model})
        threading.Thread(target=run, name=name, daemon=True).start()

    def stop(self) -> None:
        """Stop the call at its next piece (the partial answer is recorded ``interrupted``)."""
        self._stop.set()

    def _tool(self, event: ToolEvent) -> None:
        if self._stop.is_set():
            raise KeyboardInterrupt  # the Stream records the call as interrupted
        if event.output is not None:
            return
        seen = self._sent.get((event.round, event.index), 0)
        piece = event.arguments[seen:]
        self._sent[(event.round, event.index)] = len(event.arguments)
        call = {
            "index": event.index,
            "id": event.id or None,
            "name": event.name,
            "arguments": piece,
        }
        self.replay.add({"tool_call": call})

    def _run(self) -> None:
        with TURNS.held():  # a few calls run at once; one waiting for its provider lets another
            self._call()

    def _call(self) -> None:
        stream = core.start(self.request, self.cfg, self.book)
        stream.on_tool = self._tool
        failure: BaseException | None = None
        try:
            failure = self._read(stream)
        except (errors.Interrupted, errors.LLMError) as exc:
            failure = exc
            self.result = getattr(exc, "result", None)
        except Exception as exc:  # not ours: still one line, and the stream still ends
            failure = exc
        finally:
            self._end(stream, failure)

    def _read(self, stream: core.Stream) -> BaseException | None:
        for chunk in stream:
            self.replay.add({"content": chunk})
            TURNS.pause()  # the next waiting call's turn, when this one has had its slice
            if self._stop.is_set():
                self.result = stream.interrupt()
                return errors.Interrupted(self.result)
        self.result = stream.result
        return None

    def _end(self, stream: core.Stream, failure: BaseException | None) -> None:
        try:
            if self.result is not None and self.result.record is not None:
                self.replay.add(usage_of(self.result), "usage")
            if failure is not None:
                partial = self.result.text if self.result is not None else stream.text
                message = scrub(errors.describe(failure))
                event = {"message": message, "kind": _kind(failure), "partial": partial}
                self.replay.add(event, "error")
            tuning.settle()  # the first call only: later full collections are short
            self.replay.add(DONE)
        finally:
            self.replay.close()

"""The call pipeline: plan → guard → send (with retries and fallbacks) → price → ledger.

:func:`start` is the one way to drive a call: it returns a :class:`Stream`, which yields text
chunks as they arrive and holds the :class:`Result` once done; ``complete``, ``stream`` and
``acomplete`` all use it. Planning (routing, guards, refusals) is in :mod:`llm_magic._plan`, the
attempt loop in :mod:`llm_magic._attempt`. Every call that reached the point of sending writes
exactly one ledger row per model tried — failures and interruptions too. No IPython here: this
works in a plain script.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Generator, Iterator
from typing import Any

from . import _plan, _respcache, errors
from ._attempt import Run
from ._plan import Request, _chats, _chats_lock, get_ready
from ._toolcalls import ToolEvent
from ._tools import ToolRun
from .config import Settings, settings
from .models import Route, resolve
from .result import Result
from .store import Ledger, ledger

__all__ = [
    "Request",
    "complete",
    "stream",
    "acomplete",
    "Stream",
    "start",
    "check_request",
    "reset_chat",
    "chats",
    "get_ready",
]


def chats() -> dict[str, list[dict[str, str]]]:
    """Conversation histories kept by ``--chat NAME`` (in this process)."""
    return _chats


def reset_chat(name: str | None = None) -> list[str]:
    """Forget one conversation, or all of them; returns the names forgotten."""
    with _chats_lock:
        names = [name] if name else list(_chats)
        for n in names:
            _chats.pop(n, None)
    return names


class Stream:
    """One call, driven: iterate it for the answer's text chunks (it keeps them); ``.result``
    holds the :class:`Result` once it is exhausted; ``.interrupt()`` stops it.

    Nothing happens until the first chunk is asked for. While iterating it raises
    :class:`errors.UsageProblem` (nothing sent), :class:`errors.ProviderError` (``.result`` holds
    the failed call's record) or :class:`errors.Interrupted` (a ``KeyboardInterrupt`` while the
    answer was being read: the partial answer is recorded as ``interrupted``; ``.result`` holds
    it). A ``KeyboardInterrupt`` during the set-up, before anything was sent, records nothing and
    propagates as it is."""

    def __init__(
        self,
        req: Request,
        cfg: Settings | None = None,
        book: Ledger | None = None,
        *,
        status: Callable[[str], None] | None = None,
        waited_s: float = 0.0,
    ) -> None:
        self.request = req
        self._args = (cfg, book, status, waited_s)
        self._run: Run | ToolRun | _respcache.CachedRun | None = None
        self._chunks_in: Generator[str, None, None] | None = None
        self._over = False
        self.chunks: list[str] = []
        self.result: Result | None = None
        # Hears each tool call as it forms (and, with ``run_tools``, its output): a cell's
        # display shows them growing. Set it before iterating.
        self.on_tool: Callable[[ToolEvent], None] | None = None

    @property
    def text(self) -> str:
        """The answer: the result's text once done, the chunks so far until then."""
        return self.result.text if self.result is not None else "".join(self.chunks)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._over:
            raise StopIteration
        try:
            chunk = next(self._source(), None)
        except errors.Interrupted as stop:  # recorded already (stopped while waiting to retry)
            self._end(stop.result)
            raise
        except KeyboardInterrupt:
            cut = self._run.interrupted() if self._run is not None else None
            self._end(cut)
            if cut is None:
                raise  # during the set-up: nothing was sent, nothing recorded
            raise errors.Interrupted(cut) from None
        except errors.ProviderError as exc:
            self._end(getattr(exc, "result", None))
            raise
        except BaseException:
            self._end(None)
            raise
        if chunk is None:
            self._end(self._run.result if self._run is not None else None)
            raise StopIteration
        self.chunks.append(chunk)
        return chunk

    def _source(self) -> Generator[str, None, None]:
        if self._chunks_in is None:
            cfg, book, status, waited_s = self._args
            plan = _plan.make(self.request, cfg, book, status, waited_s)
            if self.on_tool is not None:
                plan.on_tool = self.on_tool
            cached = _respcache.answer(plan)  # an identical earlier answer (cache=True)
            self._run = cached or (ToolRun(plan) if plan.req.run_tools else Run(plan))
            self._chunks_in = self._run.chunks()
        return self._chunks_in

    def _end(self, result: Result | None) -> None:
        self._over = True
        self.result = result

    def interrupt(self) -> Result | None:
        """Stop the stream now. A call being read is recorded as ``interrupted`` and its
        :class:`Result` returned; before anything was sent, nothing is recorded (None); once
        done, the result it already had."""
        if self._over:
            return self.result
        self._over = True
        if self._run is not None:
            self.result = self._run.interrupted()
        if self._chunks_in is not None:
            self._chunks_in.close()
        return self.result

    def close(self) -> None:
        """Stop the stream (as :meth:`interrupt` does) and let it go."""
        self.interrupt()

    def __del__(self) -> None:
        # Dropped while its answer was still being read (a ``break`` out of the loop): the
        # call is recorded as interrupted, as a closed generator was.
        if not self._over and self._run is not None and self._run.reading is not None:
            with contextlib.suppress(Exception):  # nothing to tell, and no one to tell it to
                self.interrupt()

    def __repr__(self) -> str:
        return f"Stream(done={self.result is not None})"


def start(
    req: Request,
    cfg: Settings | None = None,
    book: Ledger | None = None,
    *,
    status: Callable[[str], None] | None = None,
    waited_s: float = 0.0,
) -> Stream:
    """The one way to drive a call: a :class:`Stream` over ``req``.

    Iterate it for text chunks; ``.result`` once it is exhausted; ``.interrupt()`` stops it and
    records the partial answer. While iterating it raises :class:`errors.Interrupted` (a kernel
    interrupt; ``.result`` holds the record), :class:`errors.ProviderError` (``.result`` holds the
    failed call's record) or :class:`errors.UsageProblem` (nothing sent). ``status`` hears the
    one-time set-up and the wait for the model; ``waited_s`` is set-up the caller already did."""
    return Stream(req, cfg, book, status=status, waited_s=waited_s)


def check_request(
    req: Request,
    cfg: Settings | None = None,
    book: Ledger | None = None,
    say: Callable[[str], None] = _plan._noop,
) -> Route:
    """Check ``req`` without sending it: validate it, do its model's one-time set-up (said
    through ``say``), route it, and check an explicit ``max_tokens`` against what the model can
    write. Raises :class:`errors.UsageProblem` (unknown model, no key, too many tokens, bad
    tools, tools for the local model)."""
    req.validate()
    cfg = cfg or settings()
    book = book if book is not None else ledger(cfg.ledger)
    name = (req.model or cfg.default_model).strip()
    if _plan._tools(req) and _plan.is_local(book, name):
        raise errors.UsageProblem(_plan.NO_LOCAL_TOOLS)  # before its server is started
    get_ready(name, book, say)
    route = resolve(name, cfg, book)
    if req.max_tokens is not None:
        _plan.bounded_max_tokens(route, req, req.max_tokens, True, [])
    return route


def _request(prompt: Any, model: str | None, max_tokens: int | None, **kw: Any) -> Request:
    tags = kw.pop("tags", None) or {}
    return Request(prompt=prompt, model=model, max_tokens=max_tokens, tags=dict(tags), **kw)


def stream(
    prompt: str | list[dict[str, str]],
    model: str | None = None,
    max_tokens: int | None = None,
    **options: Any,
) -> Stream:
    """Stream an answer: ``for chunk in lm.stream("Hi"): print(chunk, end="")``."""
    return start(_request(prompt, model, max_tokens, **options))


def complete(
    prompt: str | list[dict[str, str]],
    model: str | None = None,
    max_tokens: int | None = None,
    stream: bool = True,
    on_text: Callable[[str], None] | None = None,
    **options: Any,
) -> Result:
    """Ask ``model`` (default: ``DEFAULT_MODEL`` or ``local``) and return the :class:`Result`.

    Attribution (``agent``, ``user``, ``tags``, ``chat``), ``system`` and ``temperature`` go in
    ``options``. Streams underneath whatever ``stream`` says; ``on_text`` sees each chunk.
    Provider failures raise :class:`llm_magic.errors.ProviderError` (its ``.result`` holds the
    ledger's view of the call)."""
    answer = start(_request(prompt, model, max_tokens, **options))
    for chunk in answer:
        if on_text is not None:
            try:
                on_text(chunk)
            except KeyboardInterrupt:
                raise errors.Interrupted(answer.interrupt()) from None  # the partial call
    assert answer.result is not None
    return answer.result


async def acomplete(
    prompt: str | list[dict[str, str]],
    model: str | None = None,
    max_tokens: int | None = None,
    **options: Any,
) -> Result:
    """``complete`` for asyncio code: runs the call in a worker thread."""
    return await asyncio.to_thread(complete, prompt, model, max_tokens, **options)

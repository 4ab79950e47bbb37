"""What a server with many open streams changes in its process while it runs.

Every answer is read by a worker thread (:mod:`llm_magic.web.chat`) that parses the provider's
chunks in Python, while one event loop writes every stream's events and ``: ping``s. With a few
hundred streams, a few hundred threads want the GIL whenever chunks arrive, and the loop, which
gives the GIL up at each socket write, waits its turn behind them: Python hands the GIL over
every ``sys.getswitchinterval()`` (5 ms by default), so the loop's wait grows with the number of
busy threads and heartbeats come late (bench B9). A shorter switch interval while serving keeps
the loop's turns short; it is put back when the server stops.

The garbage collector: a full collection walks every object the process holds, and with
litellm imported that is ~0.7 s during which no thread runs (bench B9 saw the loop late by as
much at each one, twice in a burst of 200 requests). Once the first served call has ended (litellm
and the provider's modules loaded), :func:`settle` collects once and freezes what is left
(``gc.freeze``): later collections walk only what was made since. Unfrozen when the server
stops.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["SWITCH_INTERVAL_S", "serving", "settle"]

SWITCH_INTERVAL_S = 0.0005
_settled = threading.Event()  # settle() has frozen the heap (until the server stops)


def settle() -> None:
    """The first time (per server run): collect, then freeze the objects left (see above)."""
    if _settled.is_set():
        return
    _settled.set()
    gc.collect()
    gc.freeze()


@contextlib.asynccontextmanager
async def serving(switch_interval_s: float | None) -> AsyncIterator[None]:
    """While the server runs: the GIL switch interval at most ``switch_interval_s`` (None:
    unchanged)."""
    from .turns import pulse

    before = sys.getswitchinterval()
    if switch_interval_s is not None and switch_interval_s < before:
        sys.setswitchinterval(switch_interval_s)
    try:
        async with pulse():  # served calls let the loop go first (turns.py)
            yield
    finally:
        if _settled.is_set():
            _settled.clear()
            gc.unfreeze()
        if switch_interval_s is not None and sys.getswitchinterval() == min(
            before, switch_interval_s
        ):
            sys.setswitchinterval(before)


def lifespan(switch_interval_s: float | None) -> Any:
    """A FastAPI ``lifespan`` applying :func:`serving`."""

    def run(app: Any) -> Any:
        return serving(switch_interval_s)

    return run

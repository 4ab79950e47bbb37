"""The slow one-time set-up, begun in the background by ``%load_ext`` in a Jupyter kernel, so
that the first ``%%llm`` cell does not wait for all of it: importing litellm (~14 s of CPU on 2
cores), and, when the default model is ``local``, first starting its llama.cpp server and
loading its tokenizer (calls to ``local`` need no litellm).

Daemon threads only, every failure swallowed: a call that needs the part that failed does it
again in its own place and reports the error there. ``LLM_MAGIC_WARM_UP=0`` turns it off; ``1``
turns it on outside kernels too (terminal IPython).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

__all__ = ["begin", "wanted"]

_started = False
_lock = threading.Lock()


def wanted(shell: Any) -> bool:
    """Warm up in a Jupyter kernel (where a first cell should answer at once), or when asked."""
    flag = os.environ.get("LLM_MAGIC_WARM_UP", "").strip().lower()
    if flag in ("0", "false", "no", "off"):
        return False
    if flag in ("1", "true", "yes", "on"):
        return True
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _providers() -> None:
    from . import core, gateway  # noqa: F401  (the pipeline a first cell imports)

    with contextlib.suppress(Exception):
        import sqlalchemy  # noqa: F401  (the ledger's first open; small, so first)
    with contextlib.suppress(Exception):
        gateway._litellm()


def _local_model() -> None:
    from . import local

    with contextlib.suppress(Exception):
        local.server().url()
    with contextlib.suppress(Exception):
        local._tokenizer()


def begin(default_model: str) -> list[threading.Thread]:
    """Start the background set-up once per process; returns the threads started (none if it
    was started before)."""
    global _started
    with _lock:
        if _started:
            return []
        _started = True
    jobs: list[tuple[str, Any]] = [("llm-magic-warm-up", _providers)]
    if default_model.strip() == "local":
        # The local model first, then litellm: calls to ``local`` never need litellm (they
        # read its server directly), and on 2 cores the import's seconds of CPU would slow the
        # server's start, which is what a first local cell waits for.
        def _local_then_providers() -> None:
            from . import core  # noqa: F401  (the pipeline a first cell imports)

            _local_model()
            _providers()

        jobs = [("llm-magic-warm-up", _local_then_providers)]
    threads = [threading.Thread(target=job, name=name, daemon=True) for name, job in jobs]
    for thread in threads:
        thread.start()
    return threads

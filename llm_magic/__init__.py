"""llm_magic: stream LLM answers into notebooks, through one LiteLLM gateway, with a cost
ledger for every call.

    %load_ext llm_magic
    %%llm
    Write a haiku about tides.

or, outside notebooks, ``import llm_magic as lm; lm.complete("Hi")``. Importing this package is
cheap: litellm, pandas and matplotlib load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "complete",
    "stream",
    "acomplete",
    "embed",
    "Embeddings",
    "tool_schema",
    "ledger",
    "compare",
    "experiment",
    "Experiment",
    "plots",
    "Ledger",
    "reset_chat",
    "Result",
    "Stream",
    "errors",
    "load_ipython_extension",
    "unload_ipython_extension",
]

_LAZY = {
    "complete": "llm_magic.core",
    "stream": "llm_magic.core",
    "acomplete": "llm_magic.core",
    "Stream": "llm_magic.core",
    "reset_chat": "llm_magic.core",
    "embed": "llm_magic._embed",
    "Embeddings": "llm_magic.embeddings",
    "tool_schema": "llm_magic._toolcalls",
    "ledger": "llm_magic.store",
    "Ledger": "llm_magic.store",
    "Result": "llm_magic.result",
    "compare": "llm_magic.comparison",
    "experiment": "llm_magic.experiments",
    "Experiment": "llm_magic.experiments",
    "settings": "llm_magic.config",
    "reload_settings": "llm_magic.config",
}

if TYPE_CHECKING:
    from . import errors, plots
    from ._embed import embed
    from ._toolcalls import tool_schema
    from .comparison import compare
    from .core import Stream, acomplete, complete, reset_chat, stream
    from .embeddings import Embeddings
    from .experiments import Experiment, experiment
    from .result import Result
    from .store import Ledger, ledger


def _plug_reprice() -> None:
    """The ledger stores calls and imports no pricing policy: its what-if ``Ledger.reprice``
    (and what the cache saved, in ``Ledger.summary``) is plugged in here, above every layer, when ``lm.ledger``/``lm.Ledger`` is first used."""
    from . import pricing, store

    store.Ledger.repricer = pricing.reprice
    store.Ledger.saver = pricing.cache_savings


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        if name in ("ledger", "Ledger"):
            _plug_reprice()
        globals()[name] = value
        return value
    if name in ("errors", "plots", "gateway", "local"):
        return import_module(f"llm_magic.{name}")
    raise AttributeError(f"module 'llm_magic' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext llm_magic``: register ``%llm``/``%%llm`` (nothing heavy is imported here).

    The magics object joins ``ipython.configurables`` as it is made (IPython's ``Magics``
    does that), so ``%config LLMMagics.x = …`` reaches it. In a Jupyter kernel this also begins
    the slow one-time set-up in background threads (importing litellm; starting the local model
    when it is the default), so the first cell answers sooner; ``LLM_MAGIC_WARM_UP=0`` turns
    that off."""
    from . import _warmup
    from .magics import LLMMagics

    magics = LLMMagics(shell=ipython)
    ipython.register_magics(magics)
    if _warmup.wanted(ipython):
        _warmup.begin(magics.default_model)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext llm_magic``: ``%llm``/``%%llm`` and the ``LLMMagics`` settings object
    go; a later ``%load_ext llm_magic`` registers them afresh. The local model, if started,
    keeps running until the kernel exits (or ``%llm local stop`` before unloading)."""
    manager = ipython.magics_manager
    magics = manager.registry.pop("LLMMagics", None)
    if magics is None:
        return
    for kind in ("line", "cell"):
        table = manager.magics[kind]
        for name, fn in list(magics.magics[kind].items()):
            if table.get(name) == fn:  # only what is still ours (not a magic registered since)
                del table[name]
    ipython.configurables[:] = [c for c in ipython.configurables if c is not magics]

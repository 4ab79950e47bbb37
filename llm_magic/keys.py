"""Key pools: the keys of one provider, rotated per request and rested after a 429.

The settings hold only which keys there are (:meth:`llm_magic.config.Settings.keys`); the live
state — whose turn it is, which key is cooling down and until when — lives here, in one pool
per provider and set of keys for the whole process. Reading the settings again
(``reload_settings()``, ``%llm budget 5``) therefore keeps every cool-down; a new set of keys
gets a new pool.

Guards layer: imports only the base layer.
"""

from __future__ import annotations

import threading
import time

from .config import Settings
from .secrets import Secret

__all__ = ["KeyPool", "pool", "forget"]


class KeyPool:
    """The keys of one provider. Holds :class:`Secret` only.

    ``round_robin`` (default) or ``lru`` (``LLM_MAGIC_KEY_STRATEGY``); a key that got a 429
    cools down and is skipped while another one is free."""

    def __init__(self, provider: str, keys: list[Secret], strategy: str = "round_robin") -> None:
        self.provider = provider
        self.keys = keys
        self.strategy = strategy
        self._turn = 0
        self._last_used: dict[Secret, float] = {k: 0.0 for k in keys}
        self._cool_until: dict[Secret, float] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.keys)

    def __repr__(self) -> str:
        return f"KeyPool({self.provider}, {len(self.keys)} key(s), {self.strategy})"

    def _free(self, now: float) -> list[Secret]:
        return [k for k in self.keys if self._cool_until.get(k, 0.0) <= now]

    def next(self) -> Secret | None:
        """The key for the next request: a free one if any, else the one free soonest."""
        if not self.keys:
            return None
        with self._lock:
            now = time.monotonic()
            free = self._free(now)
            if not free:
                chosen = min(self.keys, key=lambda k: self._cool_until.get(k, 0.0))
            elif self.strategy == "lru":
                chosen = min(free, key=lambda k: self._last_used[k])
            else:
                n = len(self.keys)
                order = [self.keys[(self._turn + i) % n] for i in range(n)]
                chosen = next(k for k in order if k in free)
                self._turn = (self.keys.index(chosen) + 1) % n
            self._last_used[chosen] = now
            return chosen

    def cool(self, key: Secret, seconds: float) -> None:
        """Rest ``key`` for ``seconds`` (after a 429)."""
        with self._lock:
            self._cool_until[key] = time.monotonic() + max(seconds, 0.0)

    def wait_time(self, key: Secret) -> float:
        """Seconds until ``key`` may be used again (0 when it is free)."""
        with self._lock:
            return max(0.0, self._cool_until.get(key, 0.0) - time.monotonic())

    def any_free(self) -> bool:
        with self._lock:
            return bool(self._free(time.monotonic()))


# (provider, the keys' aliases) → its pool. An alias is the variable's name and the key's
# fingerprint (``OPENAI_API_KEYS#2:1a2b3c``), never the key: the same keys under the same names
# find the same pool, and the ledger's key_alias stays the one the settings give.
_pools: dict[tuple[str, tuple[str, ...]], KeyPool] = {}
_lock = threading.Lock()


def pool(cfg: Settings, provider: str) -> KeyPool:
    """The live pool of ``provider``'s keys in ``cfg``: the same one for the whole process while
    the keys are the same, whatever settings object asks (so cool-downs survive a reload).

    :class:`~llm_magic.errors.UsageProblem` for a bad ``LLM_MAGIC_KEY_STRATEGY``."""
    found = cfg.keys(provider)
    ident = (provider, tuple(k.alias for k in found.keys))
    with _lock:
        live = _pools.get(ident)
        if live is None:
            live = _pools[ident] = KeyPool(provider, list(found.keys), found.strategy)
        live.strategy = found.strategy  # a changed strategy applies; the cool-downs stay
        return live


def forget() -> None:
    """Drop every pool with its turns and cool-downs (a test's fresh start)."""
    with _lock:
        _pools.clear()

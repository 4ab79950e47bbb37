"""The retry policy of the SPEC's reliability table, in one place.

| condition | wait | retries | then |
|---|---|---|---|
| 429 | 2^attempt × (1 + U[0,1)) s, or Retry-After if longer (capped at 60 s) | 3 | fallback |
| 500 (and other 5xx) | 2 s | 2 | fallback |
| 503 | 5 s | 1 | fallback |
| 529 | 10 s | 1 | fallback |
| connection refused / timeout | — | 0 | fallback |
| 400 context length, 401, 403 | — | 0 | error; no fallback for 401/403 |

``LLM_MAGIC_RETRY_SCALE`` multiplies every wait (tests use a small one); the code path is the same.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

from . import errors

__all__ = ["Decision", "decide", "RETRY_AFTER_CAP_S"]

RETRY_AFTER_CAP_S = 60.0


@dataclass(frozen=True)
class Decision:
    retry: bool
    wait_s: float = 0.0
    fallback: bool = False


def _scale() -> float:
    try:
        return float(os.environ.get("LLM_MAGIC_RETRY_SCALE", "1") or 1)
    except ValueError:
        return 1.0


def rate_limit_wait(
    err: errors.ProviderError, attempt: int, rng: random.Random | None = None
) -> float:
    """After a 429: 2^attempt × (1 + U[0,1)) s, or Retry-After if longer, capped at 60 s.

    Also how long the key that got it cools down, even when no retry follows."""
    wait = (2**attempt) * (1 + (rng or random).random())
    if err.retry_after is not None:
        wait = max(wait, min(err.retry_after, RETRY_AFTER_CAP_S))
    return min(wait, RETRY_AFTER_CAP_S) * _scale()


def decide(err: errors.ProviderError, attempt: int, rng: random.Random | None = None) -> Decision:
    """What to do after ``attempt`` (1-based) failed with ``err``."""
    status = err.status
    if isinstance(err, errors.StreamInterrupted):
        return Decision(retry=False, fallback=False)  # never retried silently: text was shown
    if isinstance(err, (errors.AuthError, errors.ContextTooLong, errors.BadRequest)):
        return Decision(retry=False, fallback=False)
    if isinstance(err, (errors.ConnectionFailed, errors.Timeout)):
        return Decision(retry=False, fallback=True)
    if isinstance(err, errors.RateLimited):
        wait = rate_limit_wait(err, attempt, rng)
        if attempt > 3:
            return Decision(retry=False, wait_s=wait, fallback=True)
        return Decision(retry=True, wait_s=wait)
    table = {529: (10.0, 1), 503: (5.0, 1)}
    if status is not None and status >= 500:
        wait, retries = table.get(status, (2.0, 2))
        if attempt > retries:
            return Decision(retry=False, fallback=True)
        if err.retry_after is not None:
            wait = max(wait, min(err.retry_after, RETRY_AFTER_CAP_S))
        return Decision(retry=True, wait_s=wait * _scale())
    return Decision(retry=False, fallback=True)

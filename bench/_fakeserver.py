"""Run ``tests.fakeprovider.FakeProvider`` in its own process, for the benchmarks.

    python -m bench._fakeserver answer.json    # e.g. {"chunks": ["a", " b"], "chunk_delay": 0.0}

prints the server's base URL on one line, then serves every completion request with that
answer (``fp.default``) until its standard input closes (the benchmark process ended) or it
gets SIGTERM. A separate process keeps the server's work off the benchmarked interpreter's GIL,
as a real provider would be.
"""

from __future__ import annotations

import gc
import json
import signal
import sys
from pathlib import Path


def main() -> int:
    from tests.fakeprovider import FakeProvider, ok

    # A stand-in for an instant provider: its own garbage collections (every answer is
    # thousands of chunk objects) would land in whichever client's time to first token.
    gc.disable()
    spec = json.loads(Path(sys.argv[1]).read_text()) if len(sys.argv) > 1 else {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fp = FakeProvider(default=ok(**spec)).start()
    print(fp.url, flush=True)
    try:
        sys.stdin.read()  # returns when the parent closes the pipe or exits
    finally:
        fp.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

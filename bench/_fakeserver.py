"""Run ``tests.fakeprovider.FakeProvider`` in its own process, for the benchmarks.

    python -m bench._fakeserver answer.json    # e.g. {"chunks": ["a", " b"], "chunk_delay": 0.0}

prints the server's base URL on one line, then serves every completion request with that
answer (``fp.default``) until its standard input closes (the benchmark process ended) or it
gets SIGTERM. An optional ``"by_model": {"gpt-4.1-mini": {...}}`` in the answer gives requests
for those models their own answer (B9: a fast and a slow provider behind one URL). A separate
process keeps the server's work off the benchmarked interpreter's GIL, as a real provider would
be.

Each distinct stream (protocol, model, usage option) is rendered once, by the first request
that asks for it (a benchmark's warm-up), and its frames are replayed for the next ones: the
test server renders a whole answer before its first byte, which at 20,000 chunks is ~0.3 s of
its CPU per request on a loaded machine, and would otherwise sit, with its noise, inside every
reader's time to first token (a real provider sends its first token before it has the last).
"""

from __future__ import annotations

import gc
import json
import signal
import sys
from pathlib import Path
from typing import Any


def _replay_frames() -> None:
    """Render each distinct stream once; later requests for it get the same frames (same id)."""
    from tests import fakeprovider

    render = fakeprovider._Wire.frames
    done: dict[tuple[Any, ...], tuple[list[bytes], list[bytes], list[bytes]]] = {}

    def frames(wire: Any) -> tuple[list[bytes], list[bytes], list[bytes]]:
        key = (wire.protocol, wire.model, wire.include_usage, wire.generate, id(wire.answer))
        if key not in done:
            done[key] = render(wire)
        return done[key]

    fakeprovider._Wire.frames = frames  # type: ignore[method-assign,assignment]


def _by_model(routes: dict[str, dict[str, Any]]) -> None:
    """Requests for a model named in ``routes`` get ``ok(**routes[model])``, the others the
    default answer."""
    from tests import fakeprovider

    if not routes:
        return  # the other benchmarks: the provider's own dispatch, untouched
    answers = {name: fakeprovider.ok(**spec) for name, spec in routes.items()}
    plain = fakeprovider._Handler._completion

    def completion(handler: Any, req: Any, proto: Any) -> None:
        answer = answers.get(req.model or "")
        if answer is None:
            plain(handler, req, proto)
            return
        req.behaviour = answer
        handler.server.provider._record(req)
        handler._run(answer, req, proto)

    fakeprovider._Handler._completion = completion  # type: ignore[method-assign]


def main() -> int:
    from tests import fakeprovider
    from tests.fakeprovider import FakeProvider, ok

    # A stand-in for an instant provider: its own garbage collections (every answer is
    # thousands of chunk objects) would land in whichever client's time to first token.
    gc.disable()
    _replay_frames()
    spec = json.loads(Path(sys.argv[1]).read_text()) if len(sys.argv) > 1 else {}
    _by_model(spec.pop("by_model", None) or {})
    # Many connections at once (B9 opens 200 streams together): socketserver's listen backlog
    # of 5 would drop SYNs, and each dropped one costs its client a 1 s retransmission.
    fakeprovider._Server.request_queue_size = 1024
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

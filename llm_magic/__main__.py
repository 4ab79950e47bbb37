"""``python -m llm_magic serve [--host 127.0.0.1] [--port 8765]``: the chat endpoint and pages
(:mod:`llm_magic.web`) under uvicorn. Prints the URL with the token once."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llm_magic")
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = subs.add_parser("serve", help="serve a chat page and /api/chat (SSE) over HTTP")
    serve.add_argument(
        "--host",
        default=None,
        help="address to listen on (default 127.0.0.1; anything else is reachable by others)",
    )
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    return parser


def main(argv: list[str] | None = None) -> int:
    opts = _parser().parse_args(argv)
    import uvicorn

    from . import errors
    from .web.server import build, is_loopback, new_token, url_of

    host = opts.host or "127.0.0.1"
    if not is_loopback(host):
        print(
            f"Warning: serving on {host}, not only this machine: anyone who can reach it and "
            "has the token can spend your keys",
            file=sys.stderr,
        )
    token = new_token()
    try:
        app = build(token)
    except errors.UsageProblem as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print(f"Serving llm_magic at {url_of(host, opts.port, token)}", flush=True)
    # the one-time set-up (litellm's import, the local model) in the background, so that the
    # first page's model list and first answer do not wait for all of it
    from . import _warmup
    from .config import settings

    _warmup.begin(settings().default_model)
    uvicorn.run(
        app,
        host=host,
        port=opts.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,  # open streams do not hold Ctrl-C up
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

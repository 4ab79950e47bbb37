"""Running the app: uvicorn in the foreground (``python -m llm_magic serve``) or in a daemon
thread of a kernel (``%llm serve start``), on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import threading
import time

from fastapi import FastAPI

from .. import errors
from .app import create_app, serve_options

__all__ = ["Background", "new_token", "is_loopback", "url_of", "build"]

DEFAULT_PORT = 8765


def new_token() -> str:
    """``LLM_MAGIC_SERVE_TOKEN``, else a fresh random token."""
    return os.environ.get("LLM_MAGIC_SERVE_TOKEN", "").strip() or secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_of(host: str, port: int, token: str | None = None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def build(token: str) -> FastAPI:
    """The app with this environment's settings (``LLM_MAGIC_SERVE_*``)."""
    options = serve_options()
    return create_app(
        token=token,
        heartbeat_s=options["heartbeat_s"],
        max_tokens=int(options["max_tokens"]),
    )


def _free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise errors.UsageProblem(
                f"Cannot serve on {host}:{port} ({exc.strerror}): pick another port, "
                "e.g. %llm serve start --port 8766"
            ) from None


class Background:
    """The app under uvicorn in a daemon thread (one per kernel)."""

    def __init__(self) -> None:
        self.server: object | None = None
        self.app: FastAPI | None = None
        self.host = "127.0.0.1"
        self.port = DEFAULT_PORT
        self.token = ""

    @property
    def running(self) -> bool:
        return self.server is not None and bool(getattr(self.server, "started", False))

    def start(self, port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> str:
        """Start it; returns its URL with the token (shown once)."""
        import uvicorn

        if self.running:
            raise errors.UsageProblem(
                f"Already serving at {self.url(masked=True)}: %llm serve stop first"
            )
        _free(host, port)
        self.token = new_token()
        self.app = build(self.token)
        config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="llm-magic-serve", daemon=True)
        thread.start()
        while not server.started and thread.is_alive():
            time.sleep(0.02)
        if not server.started:
            raise errors.UsageProblem(f"The server did not start on {host}:{port}")
        self.server, self.host, self.port, self._thread = server, host, port, thread
        return self.url()

    def url(self, masked: bool = False) -> str:
        token = "…" + self.token[-4:] if masked and self.token else self.token
        return url_of(self.host, self.port, token or None)

    def stop(self) -> str:
        if not self.running:
            return "Not serving"
        self.server.should_exit = True  # type: ignore[union-attr]
        self._thread.join(timeout=10)
        self.server = None
        return f"Stopped serving on {url_of(self.host, self.port)}"

    def status(self) -> str:
        if not self.running or self.app is None:
            return "Not serving: %llm serve start [--port N]"
        streams = self.app.state.streams
        return (
            f"Serving at {self.url(masked=True)} · {streams.open} open stream(s) · "
            f"{streams.served} call(s) served"
        )

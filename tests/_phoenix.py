"""A real Arize Phoenix for the observability tests (tests/test_phoenix.py): its own virtual
environment from a hashed lock (requirements/phoenix-lock.txt, as the LiteLLM proxy's), ``phoenix
serve`` on a free 127.0.0.1 port in a throwaway working directory, nothing sent to the internet
(telemetry pixels and external resources off), and its spans read back through Phoenix's REST
API (``GET /v1/projects/{project}/spans``, what its Python client calls). The client itself is not
used: arize-phoenix-client shares the ``phoenix`` package with the server, whose ``__init__``
imports the whole server first (about 30 s of CPU, minutes on a busy machine).

Phoenix takes OTLP/HTTP at ``<url>/v1/traces``; the project a span lands in is its resource
attribute ``openinference.project.name``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests._servers import answers, free_port, locked_venv, wait_ready

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "build" / "phoenix-venv"
LOCK = ROOT / "requirements" / "phoenix-lock.txt"

#: Phoenix's own settings (phoenix/config.py): no telemetry, no fonts or binaries fetched, no
#: assistant, no MCP server — a server that needs nothing but 127.0.0.1 (checked in a network
#: namespace with no network: it starts, takes spans and serves its UI).
OFFLINE = {
    "PHOENIX_TELEMETRY_ENABLED": "false",
    "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
    "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
    "PHOENIX_ENABLE_MCP_SERVER": "false",
    "PHOENIX_LOG_MIGRATIONS": "false",  # its SQL, statement by statement, otherwise
}
#: Variables Phoenix (server or client) would read to send its own traces somewhere, or to find
#: a server other than ours.
CLEARED = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_RESOURCE_ATTRIBUTES",
    "PHOENIX_COLLECTOR_ENDPOINT",
    "PHOENIX_BASE_URL",
    "PHOENIX_API_KEY",
    "PHOENIX_PROJECT_NAME",
    "PHOENIX_SQL_DATABASE_URL",
)


def phoenix_venv() -> Path:
    """build/phoenix-venv with arize-phoenix from requirements/phoenix-lock.txt (hashes),
    rebuilt when the lock changes."""
    return locked_venv(VENV, LOCK, "phoenix")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.pop("PYTHONPATH", None)  # the phoenix venv's own packages, not this tree's
    return env


class Phoenix:
    """``phoenix serve`` on 127.0.0.1 (HTTP on a free port, gRPC on another), its SQLite
    database and files in ``work``."""

    def __init__(self, work: Path, running: str | None = None) -> None:
        self.exe = phoenix_venv()
        self.python = self.exe.parent / "python"
        self.work = work
        self.running = (running or "").strip().rstrip("/")
        self.port = free_port()
        self.url = self.running or f"http://127.0.0.1:{self.port}"
        self.traces_endpoint = f"{self.url}/v1/traces"
        self.log_path = work / "phoenix.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_s = 0.0

    def start(self, timeout: float = 900.0) -> None:
        if self.running:  # already up (LLM_MAGIC_TEST_PHOENIX): not ours to start or stop
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=10):
                return
        env = _env()
        env.update(OFFLINE)
        env.update(
            {
                "PHOENIX_HOST": "127.0.0.1",
                "PHOENIX_PORT": str(self.port),
                "PHOENIX_GRPC_PORT": str(free_port()),
                "PHOENIX_WORKING_DIR": str(self.work),
            }
        )
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(self.exe), "serve"],
                env=env,
                cwd=self.work,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_ready(
            answers(f"{self.url}/healthz"), self.proc, "phoenix serve", timeout, self.log_tail
        )
        self.started_s = time.monotonic() - t0

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def spans(self, project: str) -> list[dict[str, Any]]:
        """Every span of ``project`` from Phoenix's REST API (``GET /v1/projects/{name}/spans``,
        page by page); none while the project does not exist yet."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
            url = f"{self.url}/v1/projects/{project}/spans?{urllib.parse.urlencode(query)}"
            try:
                with urllib.request.urlopen(url, timeout=60) as r:
                    page = json.loads(r.read())
            except urllib.error.HTTPError as exc:
                if exc.code == 404:  # no span of it has arrived: no project yet
                    return []
                raise
            found += page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                return found

    def wait_spans(self, project: str, count: int, timeout: float = 90.0) -> list[dict[str, Any]]:
        """The spans of ``project`` once there are at least ``count`` (Phoenix inserts what it
        receives in batches, a moment later)."""
        deadline = time.monotonic() + timeout
        spans: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            spans = self.spans(project)
            if len(spans) >= count:
                return spans
            time.sleep(1)
        raise AssertionError(
            f"Phoenix has {len(spans)} span(s) of {project!r}, not {count}, after "
            f"{timeout:.0f} s: {self.log_tail(1500)}"
        )

    def project_id(self, project: str) -> str:
        with urllib.request.urlopen(f"{self.url}/v1/projects", timeout=30) as r:
            found = json.loads(r.read())["data"]
        return next(str(p["id"]) for p in found if p["name"] == project)

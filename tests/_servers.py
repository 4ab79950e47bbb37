"""What the tests' real servers share (JupyterLab, Arize Phoenix, the LiteLLM proxy, the fake
provider): a free 127.0.0.1 port, a virtual environment built from a hashed lock, and the wait
until a started server answers."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

__all__ = ["free_port", "locked_venv", "wait_ready", "answers"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 with nothing listening (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def locked_venv(venv: Path, lock: Path, exe: str) -> Path:
    """``venv`` with the packages of ``lock`` (``uv pip install --require-hashes``), rebuilt when
    the lock changes; returns its ``bin/<exe>``."""
    path = venv / "bin" / exe
    stamp = venv / ".lock-sha256"
    want = hashlib.sha256(lock.read_bytes()).hexdigest()
    if path.exists() and stamp.exists() and stamp.read_text() == want:
        return path
    subprocess.run(
        [sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)], check=True
    )
    uv = Path(sys.executable).parent / "uv"
    subprocess.run(
        [str(uv), "pip", "install", "--python", str(venv / "bin" / "python"),
         "--require-hashes", "-r", str(lock)],
        check=True,
    )  # fmt: skip
    stamp.write_text(want)
    return path


def answers(url: str) -> Callable[[], object]:
    """A readiness check: ``url`` answers a GET with a 2xx."""

    def check() -> object:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status

    return check


def wait_ready(
    ready: Callable[[], object],
    proc: subprocess.Popen[bytes],
    what: str,
    timeout: float,
    log_tail: Callable[[], str],
    every: float = 0.5,
) -> float:
    """Wait until ``ready()`` returns without an ``OSError`` (``urllib``'s errors are ones);
    ``RuntimeError`` with the log's tail when ``proc`` exits first or ``timeout`` seconds
    pass (the process is then killed). Returns the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() < t0 + timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log_tail()}")
        try:
            ready()
            return time.monotonic() - t0
        except OSError:
            time.sleep(every)
    proc.kill()
    raise RuntimeError(f"{what} did not answer in {timeout:.0f} s: {log_tail()}")

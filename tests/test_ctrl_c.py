"""A user's Ctrl-C keeps working in a notebook after ``%llm serve start`` (uvicorn in a thread
of the kernel) and after ``stop``: SIGINT keeps Python's own handler, so a Ctrl-C (here
``_thread.interrupt_main()``, as a kernel's interrupt delivers it) raises KeyboardInterrupt."""

from __future__ import annotations

import _thread
import signal
import time
from typing import Any

import pytest

from tests.fakeprovider import free_port


def ctrl_c_interrupts() -> bool:
    """Whether a Ctrl-C now stops the main thread with KeyboardInterrupt."""
    try:
        _thread.interrupt_main()
        for _ in range(500):  # the handler runs at the main thread's next check, however slow
            time.sleep(0.01)
    except KeyboardInterrupt:
        return True
    return False


def test_ctrl_c_works_while_serving_and_after(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ip.run_line_magic("llm", f"serve start --port {free_port()}")
    try:
        assert "token=" in capsys.readouterr().out
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert ctrl_c_interrupts()
    finally:
        ip.run_line_magic("llm", "serve stop")
    assert "Stopped" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert ctrl_c_interrupts()

"""Run llama.cpp's OpenAI-compatible server for the embedded model, and exit when the process
that started it dies (even by SIGKILL, when no atexit handler runs).

    python -m llm_magic._serve --model PATH --host 127.0.0.1 --port N ...
"""

from __future__ import annotations

import os
import sys
import threading
import time


def _watch(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:  # reparented: whoever started us is gone
            os._exit(0)


def main() -> None:
    parent = os.getppid()
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="parent-watch").start()
    from llama_cpp.server.__main__ import main as serve

    sys.argv = ["llama_cpp.server", *sys.argv[1:]]
    serve()


if __name__ == "__main__":
    main()

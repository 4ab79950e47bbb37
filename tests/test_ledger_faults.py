"""Ledger faults (issue 15): reads that interleave with writers never corrupt the file, a paid
answer survives a ledger it cannot be written to, unusable paths and locks are one sentence."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

import llm_magic as lm
from llm_magic import _fastread
from llm_magic._sql import row_values
from llm_magic.errors import LedgerBusy, LedgerError
from llm_magic.store import Ledger, LedgerWarning, utcnow
from tests.fakekeys import fake_key
from tests.fakeprovider import FakeProvider, ok


def _row(call_id: str, **over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "call_id": call_id,
        "trace_id": call_id,
        "ts_start": utcnow(),
        "ts_end": utcnow(),
        "model": "m",
        "provider": "openai",
        "status": "ok",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost_usd": 0.001,
        "latency_s": 1.0,
        "ttft_s": 0.1,
        "prompt": "p" * 200,
        "response": "r" * 500,
    }
    base.update(over)
    return base


def _in_file(path: Path) -> tuple[set[str], str]:
    """The call_ids in the file and its integrity check, read by a fresh sqlite3 connection."""
    db = sqlite3.connect(path)
    try:
        ids = {r[0] for r in db.execute("SELECT call_id FROM calls")}
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()
    return ids, check


@pytest.mark.parametrize("read", ["child_process", "in_process"])
def test_reads_between_threaded_writes_lose_nothing(tmp_path: Path, monkeypatch, read) -> None:
    """The issue's reproduction: 8 threads write 3 rows each (as lm.compare does) while `.df`
    and `summary()` are read, 30 rounds. Every acknowledged row must be in the file, and the
    file must pass `PRAGMA integrity_check`. (Before the fix `.df` read the file through ADBC's
    own SQLite in this process: "disk I/O error" and lost rows within a few rounds.)"""
    if read == "child_process":  # the big-ledger path, on a small ledger
        monkeypatch.setattr(_fastread, "CHILD_READ_ROWS", 0)
    path = tmp_path / "ledger.sqlite"
    book = Ledger(str(path))
    acknowledged: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()

    def writer(k: int, r: int) -> None:
        for i in range(3):
            call_id = f"r{r}-t{k}-{i}-{uuid.uuid4().hex[:6]}"
            try:
                book.record(_row(call_id))
            except Exception as exc:  # a failed write is a finding, not a crash of the test
                failures.append(f"write: {type(exc).__name__}: {exc}")
                continue
            with lock:
                acknowledged.append(call_id)

    for r in range(30):
        threads = [threading.Thread(target=writer, args=(k, r)) for k in range(8)]
        for t in threads:
            t.start()
        try:
            frame = book.df  # while the writers run
            book.summary(by="model")
        except Exception as exc:
            failures.append(f"read: {type(exc).__name__}: {exc}")
            frame = None
        for t in threads:
            t.join()
        try:
            frame = book.df  # after them: every row acknowledged so far is there
            assert set(acknowledged) <= set(frame.call_id)
        except AssertionError:
            failures.append(f"round {r}: acknowledged rows missing from .df")
        except Exception as exc:
            failures.append(f"read: {type(exc).__name__}: {exc}")
    book.close()
    ids, check = _in_file(path)
    assert failures == []
    assert check == "ok"
    assert len(acknowledged) == 30 * 8 * 3 and ids == set(acknowledged)


MIXED = """
import json, sys, threading
from llm_magic import _fastread
from llm_magic.store import Ledger, utcnow
_fastread.CHILD_READ_ROWS = 0  # the big-ledger read path, on a small ledger
path, role, name = sys.argv[1], sys.argv[2], sys.argv[3]
book = Ledger(path)
done, errors = [], []

def write(prefix, n):
    for i in range(n):
        call_id = f"{prefix}-{i}"
        row = {"call_id": call_id, "trace_id": name, "ts_start": utcnow(), "status": "ok",
               "prompt": "p" * 300, "response": "r" * 700, "cost_usd": 0.001}
        try:
            book.record(row)
            done.append(call_id)
        except Exception as exc:
            errors.append(f"write: {type(exc).__name__}: {exc}")

if role == "writer":
    write(name, 60)
else:  # a notebook: a comparison's threads write while the ledger is looked at
    for r in range(10):
        threads = [threading.Thread(target=write, args=(f"{name}-{r}-{k}", 3)) for k in range(4)]
        for t in threads:
            t.start()
        try:
            book.df
            book.summary(by="day")
        except Exception as exc:
            errors.append(f"read: {type(exc).__name__}: {exc}")
        for t in threads:
            t.join()
print(json.dumps({"done": done, "errors": errors}))
"""


def test_reads_and_writes_across_processes_lose_nothing(tmp_path: Path) -> None:
    """Three writer processes, and one where 4 threads write while `.df` and `summary()` are
    read (10 rounds): every acknowledged row is in the file and the file is sound."""
    path = tmp_path / "ledger.sqlite"
    Ledger(str(path)).close()  # migrated once, then the race
    root = str(Path(__file__).resolve().parents[1])  # this checkout's llm_magic
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    roles = [("writer", "w0"), ("writer", "w1"), ("writer", "w2"), ("reader", "r0")]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIXED, str(path), role, name],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for role, name in roles
    ]
    reports = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
    assert [r["errors"] for r in reports] == [[], [], [], []]
    acknowledged = {i for r in reports for i in r["done"]}
    ids, check = _in_file(path)
    assert check == "ok"
    assert len(acknowledged) == 3 * 60 + 10 * 4 * 3 and ids == acknowledged


HOLD_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
db.close()
"""


class LockHolder:
    """A second process holding the ledger's write lock (`BEGIN EXCLUSIVE`) until released."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)


@pytest.fixture
def provider_keys() -> dict[str, str]:
    return {"OPENAI_API_KEY": fake_key("LEDGERKEY", tail=16)}


@pytest.fixture
def provider(provider: FakeProvider) -> FakeProvider:
    """Every call answers five words unless a test scripts otherwise."""
    provider.default = ok("one two three four five", 3, 5)
    return provider


def test_a_paid_answer_survives_a_locked_ledger(
    provider, clean_env: Path, monkeypatch, ip_ledger, capsys
) -> None:
    """Another process holds the ledger's write lock: `lm.complete` still returns its Result,
    with a warning saying so, and the row waits in the journal; `%llm ledger` counts it; once
    the lock is gone the next open writes it, exactly once."""
    from llm_magic import config

    monkeypatch.setenv("LLM_MAGIC_LEDGER_WAIT_S", "0.5")
    config.reload_settings()
    Ledger(str(clean_env)).close()  # an ordinary (WAL) ledger that the other process locks
    holder = LockHolder(clean_env)
    try:
        with pytest.warns(LedgerWarning, match="locked by another process"):
            result = lm.complete("Hi", model="gpt-4o", max_tokens=5)
        assert (result.status, result.text) == ("ok", "one two three four five")
        assert any("locked by another process" in n and "pending" in n for n in result.notes)
        assert "move it aside" not in " ".join(result.notes)
        journal = Path(str(clean_env) + ".pending.jsonl")
        kept = [json.loads(line) for line in journal.read_text().splitlines()]
        assert [k["call_id"] for k in kept] == [result.call_id]
        assert kept[0]["output_tokens"] == 5 and kept[0]["status"] == "ok"
        with pytest.warns(LedgerWarning):  # a comparison does not abort either
            frame = lm.compare("Hi", ["gpt-4o", "gpt-4o-mini"], max_tokens=5, progress=False)
        assert list(frame.status) == ["ok", "ok"]
        ids, _ = _in_file(clean_env)
        assert ids == set()  # the ledger itself got nothing while locked
        capsys.readouterr()
        ip_ledger.run_line_magic("llm", "ledger")
        assert "3 call(s) pending" in capsys.readouterr().out
    finally:
        holder.release()
    book = Ledger(str(clean_env))  # the next open replays the journal
    assert book.pending() == 0 and journal.read_text() == ""
    again = Ledger(str(clean_env))
    assert len(again) == 3
    ids, check = _in_file(clean_env)
    assert result.call_id in ids and len(ids) == 3 and check == "ok"
    df = again.df
    assert df.loc[df.call_id == result.call_id, "output_tokens"].iloc[0] == 5


def test_the_journal_replays_idempotently(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    book = Ledger(str(path))
    row = row_values(_row("same"))
    book.journal.append(row)
    book.journal.append(row)  # a retried keep
    book.record(_row("other"))  # a successful write replays what waits
    assert book.pending() == 0
    assert sorted(Ledger(str(path)).df.call_id) == ["other", "same"]


def test_unusable_ledger_paths_are_one_sentence(tmp_path: Path) -> None:
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    cases = [
        (afile / "ledger.sqlite", "is a file, not a folder"),
        (Path("/proc/llm-magic/ledger.sqlite"), "set LLM_MAGIC_LEDGER"),
        (Path("/proc/ledger.sqlite"), "set LLM_MAGIC_LEDGER"),
        (tmp_path, "is a folder"),
    ]
    for path, words in cases:
        with pytest.raises(LedgerError) as info:
            Ledger(str(path))
        message = str(info.value)
        assert words in message and "\n" not in message
        assert "move it aside" not in message and "Traceback" not in message
        assert info.value.__cause__ is None
    assert afile.read_text() == "x"


def test_unusable_ledger_in_the_magic_and_the_api(ip, provider, monkeypatch, capsys) -> None:
    from IPython.core.error import UsageError

    from llm_magic import config

    ip.run_line_magic("config", "LLMMagics.ledger = '/proc/ledger.sqlite'")
    with pytest.raises(UsageError, match="set LLM_MAGIC_LEDGER"):
        ip.run_line_magic("llm", "ledger")
    monkeypatch.setenv("LLM_MAGIC_LEDGER", "/proc/llm-magic/ledger.sqlite")
    config.reload_settings()
    with pytest.raises(LedgerError, match="set LLM_MAGIC_LEDGER"):
        lm.complete("Hi", model="gpt-4o", max_tokens=5)
    assert provider.completions() == []  # nothing sent, nothing paid


def test_a_ledger_locked_at_open_says_so(tmp_path: Path, monkeypatch) -> None:
    """A file another process holds exclusively (not yet a WAL ledger, so even reading waits):
    the error says it is locked and how to fix it, not that the file is unreadable."""
    monkeypatch.setenv("LLM_MAGIC_LEDGER_WAIT_S", "0.3")
    path = tmp_path / "busy.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    holder = LockHolder(path)
    try:
        with pytest.raises(LedgerBusy) as info:
            Ledger(str(path))
    finally:
        holder.release()
    message = str(info.value)
    assert "locked by another process" in message and "LLM_MAGIC_LEDGER_WAIT_S" in message
    assert "move it aside" not in message and "not a readable" not in message
    Ledger(str(path))  # once free, it opens (and migrates)


def test_a_busy_ledger_write_says_locked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LLM_MAGIC_LEDGER_WAIT_S", "0.3")
    path = tmp_path / "l.sqlite"
    book = Ledger(str(path))
    holder = LockHolder(path)
    try:
        with pytest.raises(LedgerBusy, match="locked by another process"):
            book.record(_row("x"))
        with pytest.warns(LedgerWarning, match="locked by another process"):
            note = book.keep(_row("y"))
        assert note is not None and book.pending() == 1
    finally:
        holder.release()
    book.record(_row("z"))
    assert book.pending() == 0 and sorted(book.df.call_id) == ["y", "z"]

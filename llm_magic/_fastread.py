"""The fast read of a big SQLite ledger: ADBC's SQLite driver, in a child process.

One SQLite library per file per process: this process reads and writes an SQLite ledger through
Python's ``sqlite3`` only. A big ledger is loaded by ADBC (C, straight into Arrow columns:
several times faster than ``pandas.read_sql``) in a child process (:mod:`llm_magic._arrow_child`),
never in this one (two SQLite libraries on one file in one process corrupt it).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._sql import wait_s
from .record import COLUMNS, NAMES

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine

__all__ = ["reader", "worth_a_child", "read_frame", "start_frame", "time_ranges"]

ROWS_PER_READER = 100_000  # a big SQLite ledger is read by parallel readers of this many rows
CHILD_READ_ROWS = 50_000  # from this many rows, .df and summary() read in a child process
TEXT_COLUMNS = {name for name, kind in COLUMNS if kind == "text"}


class _ChildReader:
    """The child process that reads big SQLite ledgers through ADBC (C, straight into Arrow
    columns: several times faster than ``pandas.read_sql``; see :mod:`llm_magic._arrow_child`
    for why not in this process). Started on first use and kept for the process's next reads;
    one read at a time. Columns named in ``columns`` get the ledger's declared types: SQLite's
    values carry none, and an all-NULL part would otherwise come back as integers."""

    def __init__(self) -> None:
        self.proc: Any = None
        self.lock = threading.Lock()

    def _started(self) -> Any:
        import subprocess
        import sys

        if self.proc is None or self.proc.poll() is not None:
            script = Path(__file__).with_name("_arrow_child.py")
            self.proc = subprocess.Popen(
                [sys.executable, str(script)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        return self.proc

    def submit(
        self, path: Path, queries: list[str], columns: list[str] | None = None
    ) -> Callable[[], Any]:
        """Send the read now; the function returned waits for its Arrow table (and raises
        ``RuntimeError`` if the child failed). Call it exactly once: the child is held until."""
        job = {"path": str(path), "queries": queries, "types": dict(COLUMNS), "columns": columns}
        self.lock.acquire()
        try:
            proc = self._started()
            proc.stdin.write(json.dumps(job).encode() + b"\n")
            proc.stdin.flush()
        except BaseException:
            self._stop()
            self.lock.release()
            raise
        state: dict[str, Any] = {}

        def result() -> Any:
            if not state:
                import pyarrow as pa

                try:
                    status = proc.stdout.readline()
                    if status.startswith(b"ok"):
                        state["table"] = pa.ipc.open_stream(proc.stdout).read_all()
                    elif status.startswith(b"error "):
                        state["error"] = RuntimeError(json.loads(status[6:]))
                    else:
                        self._stop()  # died, or out of step: the next read starts a fresh one
                        state["error"] = RuntimeError("the ledger reader process stopped")
                except BaseException as exc:  # e.g. interrupted mid-read: out of step
                    self._stop()
                    state["error"] = exc
                finally:
                    self.lock.release()
            if "error" in state:
                raise state["error"]
            return state["table"]

        return result

    def _stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


reader = _ChildReader()


def time_ranges(path: Path) -> list[str]:
    """WHERE clauses splitting the calls into consecutive ``ts_start`` ranges of about equal
    size, one per core for a big ledger: each part, read in ``ts_start`` order through its
    index, continues the previous one, so the parts joined are in order with no sort."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=wait_s())) as db:
        n = int(db.execute("SELECT count(*) FROM calls").fetchone()[0])
        parts = max(1, min(os.cpu_count() or 1, n // ROWS_PER_READER))
        bounds = [
            db.execute(
                "SELECT ts_start FROM calls ORDER BY ts_start LIMIT 1 OFFSET ?", (n * i // parts,)
            ).fetchone()[0]
            for i in range(1, parts)
        ]
    bounds = sorted({b for b in bounds if b is not None})
    if not bounds:
        return ["1"]

    def q(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    wheres = [f"(ts_start < {q(bounds[0])} OR ts_start IS NULL)"]
    wheres += [
        f"ts_start >= {q(a)} AND ts_start < {q(b)}"
        for a, b in zip(bounds, bounds[1:], strict=False)
    ]
    wheres.append(f"ts_start >= {q(bounds[-1])}")
    return wheres


def worth_a_child(engine: Engine, dialect: str, path: Path | str) -> bool:
    """Whether big reads go through ADBC's SQLite driver in a child process: an SQLite
    file of at least ``CHILD_READ_ROWS`` rows (below that, starting the child costs more
    than it saves), driver and pyarrow installed (found, not imported: this process must
    never load ADBC's SQLite)."""
    from importlib.util import find_spec

    if dialect != "sqlite" or not isinstance(path, Path) or not path.is_file():
        return False
    if find_spec("adbc_driver_sqlite") is None or find_spec("pyarrow") is None:
        return False
    if CHILD_READ_ROWS <= 0:
        return True
    with engine.connect() as conn:  # the last rowid: O(log n), ≈ the row count
        last = conn.exec_driver_sql("SELECT max(rowid) FROM calls").scalar()
    return int(last or 0) >= CHILD_READ_ROWS


def read_frame(path: Path) -> pd.DataFrame:
    """Every call of the SQLite ledger at ``path``, read by the child in parallel ``ts_start``
    ranges, typed exactly as ``Ledger.df``'s general path types them."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    cols = ", ".join(f'"{n}"' for n in NAMES)
    queries = [
        f"SELECT {cols} FROM calls WHERE {where} ORDER BY ts_start, rowid"
        for where in time_ranges(path)
    ]
    table = reader.submit(path, queries, NAMES)()
    utc = pa.timestamp("us", tz="UTC")
    for name in ("ts_start", "ts_end"):
        i = table.column_names.index(name)
        table = table.set_column(i, name, pc.cast(table.column(name), utc))
    tags = [json.loads(t) if t else {} for t in table.column("tags").to_pylist()]
    table = table.drop_columns(["tags"])
    ints = {pa.int64(): pd.Int64Dtype()}
    frame = table.to_pandas(types_mapper=ints.get)
    frame.insert(NAMES.index("tags"), "tags", pd.Series(tags, index=frame.index, dtype=object))
    for name in TEXT_COLUMNS - {"tags"}:  # as read_sql gives it: an all-NULL text column
        if table.column(name).null_count == table.num_rows and table.num_rows:  # is object
            frame[name] = pd.Series(None, index=frame.index, dtype=object)
    return frame


def start_frame(path: Path, query: Any, columns: list[str]) -> Callable[[], pd.DataFrame | None]:
    """Start reading ``query`` (a SQLAlchemy select) through ADBC in a child process; the
    function returned waits for it as a DataFrame, or None if that failed (the caller then
    reads it the general way)."""
    from sqlalchemy.dialects import sqlite

    sql = str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    try:
        pending = reader.submit(path, [sql], columns)
    except OSError:
        return lambda: None
    box: list[pd.DataFrame | None] = []

    def frame() -> pd.DataFrame | None:
        if not box:
            try:
                box.append(pending().to_pandas())
            except Exception:
                box.append(None)
        return box[0]

    return frame

"""Read a big SQLite ledger through ADBC in a child process; Arrow IPC goes back on stdout.

Why a child process: ADBC's SQLite driver carries its own SQLite library, and two SQLite
libraries on one file in one process corrupt it. POSIX locks belong to the process, so when one
library closes its descriptor of the file the other library's locks vanish with it ("How To
Corrupt An SQLite Database File", §2.2.1). Across processes SQLite's locking is the ordinary,
safe case, so the process that writes the ledger (through Python's ``sqlite3``) never loads
ADBC: it runs this file as a script and reads the table it hands back.

One child serves a kernel's reads: a request is one JSON line on stdin, ``{"path": …,
"queries": […], "types": {column: "text"|"int"|"float"}, "columns": […] or null}``; the answer
is a line ``ok`` followed by one Arrow IPC stream, or a line ``error <json message>``. The
queries are read in parallel, one connection each (opened for the request, closed after it),
and joined in the order given; columns named in ``columns`` (all when null) get their declared
Arrow type. The child exits when its stdin closes (its parent exited). It uses ADBC's low-level
API (the DB-API layer imports pandas: seconds of start-up) and imports nothing from llm_magic.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def read(path: str, queries: list[str], types: dict[str, str], columns: list[str] | None) -> Any:
    import adbc_driver_manager as adbc
    import adbc_driver_sqlite
    import pyarrow as pa

    kinds = {"text": pa.string(), "int": pa.int64(), "float": pa.float64()}
    db = adbc_driver_sqlite.connect(path)

    def connect() -> Any:
        # ADBC's SQLite has no busy timeout: a reader that meets a lock (another connection
        # opening the WAL, a checkpoint) tries again rather than failing the read.
        for attempt in range(250):
            conn = adbc.AdbcConnection(db)
            try:
                stmt = adbc.AdbcStatement(conn)
                stmt.set_sql_query("SELECT 1 FROM calls LIMIT 1")  # prepares the schema now
                handle, _ = stmt.execute_query()
                pa.RecordBatchReader._import_from_c(handle.address).read_all()
                stmt.close()
                return conn
            except adbc.Error as exc:
                conn.close()
                if "locked" not in str(exc) or attempt == 249:
                    raise
                time.sleep(0.02)
        raise AssertionError("unreachable")

    def one(job: tuple[Any, str]) -> Any:
        conn, sql = job
        try:
            stmt = adbc.AdbcStatement(conn)
            # infer each column's type from every row, not the first 1,024 (a column NULL there
            # and text later would otherwise fail the read)
            stmt.set_options(**{"adbc.sqlite.query.batch_rows": str(1 << 30)})
            stmt.set_sql_query(sql)
            handle, _ = stmt.execute_query()
            table = pa.RecordBatchReader._import_from_c(handle.address).read_all()
            stmt.close()
        finally:
            conn.close()
        fields = []
        for name in table.column_names:
            kind = types.get(name)
            target = kinds[kind] if kind and (columns is None or name in columns) else None
            fields.append((name, target or table.schema.field(name).type))
        return table.cast(pa.schema(fields))

    try:
        jobs = [(connect(), sql) for sql in queries]  # opened one at a time
        if len(jobs) == 1:
            return one(jobs[0])
        with ThreadPoolExecutor(len(jobs)) as pool:  # the driver releases the GIL as it reads
            return pa.concat_tables(list(pool.map(one, jobs)))
    finally:
        db.close()


def main() -> int:
    import signal

    import pyarrow as pa

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        try:
            job = json.loads(line)
            table = read(job["path"], job["queries"], job["types"], job.get("columns"))
        except Exception as exc:
            message = json.dumps(f"{type(exc).__name__}: {exc}")
            out.write(f"error {message}\n".encode())
            out.flush()
            continue
        out.write(b"ok\n")
        with pa.ipc.new_stream(out, table.schema) as stream:
            stream.write_table(table)
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

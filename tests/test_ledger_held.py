"""``Ledger.held_reads``: an experiment reads the ledger's aliases and prices once, not per call."""

from __future__ import annotations

from pathlib import Path

from llm_magic.store import Ledger


def test_held_reads_read_once_and_see_this_process_writes(book: Ledger, clean_env: Path) -> None:
    book.set_alias("fast", "gpt-4o-mini")
    book.set_price("m1", 1.0, 2.0)
    other = Ledger(str(clean_env))  # another engine on the same file: another writer's view
    try:
        with book.held_reads():
            assert book.aliases() == {"fast": "gpt-4o-mini"}
            assert book.prices() == {"m1": (1.0, 2.0)}
            other.set_alias("slow", "gpt-4o")  # not re-read while held
            other.set_price("m2", 3.0, 4.0)
            assert book.aliases() == {"fast": "gpt-4o-mini"}
            assert book.prices() == {"m1": (1.0, 2.0)}
            book.aliases()["x"] = "y"  # a copy: the held one is not changed by its reader
            assert "x" not in book.aliases()
            book.set_alias("fast", "gpt-4o")  # this process's own write: seen at once
            assert book.aliases() == {"fast": "gpt-4o", "slow": "gpt-4o"}
            with book.held_reads():  # nested (two experiments at once): one copy
                assert book.prices() == {"m1": (1.0, 2.0), "m2": (3.0, 4.0)}
            other.set_price("m3", 5.0, 6.0)
            assert "m3" not in book.prices()  # the outer hold still stands
        assert book.prices()["m3"] == (5.0, 6.0)  # released: read again every time
        other.set_alias("later", "gpt-4o")
        assert book.aliases()["later"] == "gpt-4o"
    finally:
        other.close()

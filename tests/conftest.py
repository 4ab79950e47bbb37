"""Fixtures: a shell ladder (bare shell → extension loaded → private ledger), the scripted
provider (bare, or with this process's settings pointing at it), the test's ledger, the local
model."""

from __future__ import annotations

import atexit
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from traitlets.config import Config

from tests.fakekeys import fake_key
from tests.fakeprovider import FakeProvider

# Offline: litellm uses its bundled price map, never the network.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["LLM_MAGIC_RETRY_SCALE"] = os.environ.get("LLM_MAGIC_RETRY_SCALE", "0.01")

FIXED_ENV = (
    "DEFAULT_MODEL",
    "FALLBACK_MODELS",
    "DAILY_BUDGET_USD",
    "BUDGET_ALERT_THRESHOLD",
    "BUDGET_DOWNGRADE_MODEL",
    "MAX_COST_PER_REQUEST_USD",
    "LLM_MAGIC_DISPLAY",
    "LLM_MAGIC_STORE_TEXT",
)


def provider_env() -> list[str]:
    """Variables that would let a real key, base URL or budget leak into a test."""
    found = [
        n for n in os.environ if n.endswith(("_API_KEY", "_API_KEYS", "_API_BASE", "_BASE_URL"))
    ]
    return found + [n for n in FIXED_ENV if n not in found]


class TestingShell(InteractiveShell):
    """An InteractiveShell whose run_cell re-raises, so a failing cell fails the test."""

    def run_cell(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        result = super().run_cell(*args, **kwargs)
        result.raise_error()
        return result

    def run_cell_as_user(self, cell: str) -> ExecutionResult:
        """Run ``cell`` as a notebook does: an error is shown, not raised (a ``UsageError`` as
        one ``UsageError: …`` line on stderr, no traceback); the result's ``error_in_exec``
        says what was shown."""
        return super().run_cell(cell, store_history=True)


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No real keys, no .env, a private ledger file per test."""
    from llm_magic import config, keys

    keys.forget()  # key pools live for the process: each test starts with fresh cool-downs
    for name in provider_env():
        monkeypatch.delenv(name, raising=False)
    ledger_path = tmp_path / "ledger.sqlite"
    monkeypatch.setenv("LLM_MAGIC_LEDGER", str(ledger_path))
    monkeypatch.chdir(tmp_path)  # no stray .env
    config.clear_overrides()  # e.g. `%llm budget 2` in an earlier test
    config.reload_settings()
    yield ledger_path
    config.clear_overrides()
    config.reload_settings()


# Ctrl-C as in a notebook's kernel: Python's own SIGINT handler (KeyboardInterrupt), even when
# pytest was started with SIGINT ignored, as a non-interactive shell starts a background job (a
# CI runner may): `_thread.interrupt_main()` does nothing under SIG_IGN.
if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL):
    signal.signal(signal.SIGINT, signal.default_int_handler)
SIGINT_AT_START = signal.getsignal(signal.SIGINT)


def _sigint_restored(when: str) -> None:
    now = signal.getsignal(signal.SIGINT)
    if now is not SIGINT_AT_START:
        signal.signal(signal.SIGINT, SIGINT_AT_START)
        pytest.fail(
            f"SIGINT's handler was changed {when}: {SIGINT_AT_START!r} -> {now!r}; a user's "
            "Ctrl-C (and _thread.interrupt_main()) must keep working, restore the handler",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def sigint_kept() -> Iterator[None]:
    """A test must leave SIGINT's handler as it found it: under ``SIG_IGN`` or a stray handler a
    user's Ctrl-C does nothing. The test (or a wider fixture set up for it) that changes it
    fails here, and the handler is put back for the next test."""
    _sigint_restored("by a fixture set up for this test")
    yield
    _sigint_restored("by this test")


@pytest.fixture
def ip_empty() -> Iterator[InteractiveShell]:
    cfg = Config()
    cfg.HistoryManager.hist_file = ":memory:"
    cfg.HistoryManager.enabled = False
    shell = TestingShell.instance(config=cfg)
    yield shell
    TestingShell.clear_instance()
    # Each shell registers its exit clean-up, which runs gc.collect(): with the suite's hundreds
    # of shells on a 1 GB heap, pytest sat for minutes after its summary. Nothing to keep here
    # (history is off): the shell is let go like any object.
    atexit.unregister(shell.atexit_operations)


@pytest.fixture
def ip(ip_empty: InteractiveShell) -> Iterator[InteractiveShell]:
    ip_empty.run_line_magic("load_ext", "llm_magic")
    yield ip_empty
    ip_empty.run_line_magic("unload_ext", "llm_magic")


@pytest.fixture
def ip_ledger(ip: InteractiveShell, clean_env: Path) -> InteractiveShell:
    """Extension loaded, ledger in this test's temporary directory, plain-text streaming."""
    ip.run_line_magic("config", f"LLMMagics.ledger = {str(clean_env)!r}")
    ip.run_line_magic("config", "LLMMagics.display_mode = 'text'")
    return ip


@pytest.fixture
def book(clean_env: Path):  # type: ignore[no-untyped-def]
    """The ledger this test's calls are recorded in (``lm.ledger()`` of its private file)."""
    import llm_magic as lm

    return lm.ledger(str(clean_env))


@pytest.fixture
def fake_provider() -> Iterator[FakeProvider]:
    """The scripted provider on 127.0.0.1, nothing pointed at it yet (a kernel's or a child
    process's environment can be)."""
    with FakeProvider() as server:
        yield server


@pytest.fixture
def provider_keys() -> dict[str, str]:
    """The key variables ``provider`` sets. A module whose assertions name its own keys (or
    wants one provider only, or a key list) overrides this fixture."""
    return {
        "OPENAI_API_KEY": fake_key("PROVIDER"),
        "ANTHROPIC_API_KEY": fake_key("PROVIDERANT", kind="ant-test", tail=14),
    }


@pytest.fixture
def provider(
    fake_provider: FakeProvider,
    provider_keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    clean_env: Path,
) -> FakeProvider:
    """The scripted provider with this process's OpenAI and Anthropic base URLs and
    ``provider_keys`` pointing at it, settings read again: ``lm.complete("Hi", model="gpt-4o")``
    and ``%%llm -m claude-sonnet-4-5`` reach it."""
    from llm_magic import config

    monkeypatch.setenv("OPENAI_API_BASE", fake_provider.openai_base)
    monkeypatch.setenv("ANTHROPIC_API_BASE", fake_provider.anthropic_base)
    for name, value in provider_keys.items():
        monkeypatch.setenv(name, value)
    config.reload_settings()
    return fake_provider


@pytest.fixture(scope="session")
def local_model() -> Iterator[str]:
    """The embedded SmolLM2 server, started once for the session."""
    from llm_magic.local import server

    url = server().url()
    yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty ledger URL: an SQLite file, or a new database on the throwaway PostgreSQL
    server that `make test` starts (LLM_MAGIC_TEST_PG). In CI a missing server is a failure."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        return
    admin = os.environ.get("LLM_MAGIC_TEST_PG", "").strip()
    if not admin:
        if os.environ.get("CI"):
            pytest.fail("LLM_MAGIC_TEST_PG is not set: `make test` starts PostgreSQL for CI")
        pytest.skip("no PostgreSQL: run `bash tools/pg_throwaway.sh` and set LLM_MAGIC_TEST_PG")
    import uuid

    import psycopg

    name = f"ledger_{uuid.uuid4().hex[:12]}"
    plain = admin.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base = admin.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    close_engines_of(name)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def close_engines_of(database: str) -> None:
    """Close the ledgers a test opened on ``database`` (through ``lm.ledger`` or ``Ledger(url)``
    directly): every SQLAlchemy engine on it is disposed, so its pooled psycopg connections are
    closed here, before DROP DATABASE, not left to the garbage collector (a ResourceWarning
    "deleted while still open" in whichever later test the collection falls in)."""
    import gc

    from sqlalchemy.engine import Engine

    from llm_magic import store

    for spec in [s for s in store._ledgers if database in s]:
        store._ledgers.pop(spec).close()
    for obj in gc.get_objects():
        if isinstance(obj, Engine) and obj.url.database == database:
            obj.dispose()


def published(cap) -> list[dict]:  # type: ignore[no-untyped-def]
    """What reached the front end, in order: (display_id, update?, data)."""
    return [
        {"id": (o["transient"] or {}).get("display_id"), "update": o["update"], "data": o["data"]}
        for o in cap.outputs_raw
    ]


@pytest.fixture
def front_end(ip):  # type: ignore[no-untyped-def]
    """The shell's display publisher swapped for IPython's capturing one (as capture_output
    does), keeping every message with its display id and whether it updates one."""
    from IPython.core.displaypub import CapturingDisplayPublisher

    class Keep(CapturingDisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False):  # type: ignore[no-untyped-def]
            self.outputs_raw.append(
                {"data": data, "metadata": metadata, "transient": transient, "update": update}
            )

    keep = Keep(shell=ip)
    keep.outputs_raw = []
    saved, ip.display_pub = ip.display_pub, keep
    yield keep
    ip.display_pub = saved

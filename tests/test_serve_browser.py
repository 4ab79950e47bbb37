"""The serve pages in a real browser: Debian's Chromium (Playwright, ``executable_path``) against
the app under a real uvicorn server on 127.0.0.1, the scripted provider or the local model
behind it, and the test's own ledger.

- the SSE parser of ``static/client.js`` on one stream cut into every chunking (bytes too);
- ``/`` streams an answer from ``local`` in several visible steps;
- a server-side drop mid-answer shows "response interrupted" with the partial text;
- a dropped browser connection (a cutting TCP proxy in between) resumes with ``Last-Event-ID``:
  the whole answer, one provider request, one ledger row;
- the Stop button stops the call (an ``interrupted`` row);
- ``/spend`` shows ``Ledger.summary()``'s figures, and updates when a call lands.

Screenshots of both pages go to build/ (docs/img/ with ``LLM_MAGIC_DOC_SHOTS=1``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests._browser import BUILD, ROOT, launch_chromium, need_chromium
from tests.fakeprovider import FakeProvider, cut_after, ok

pytestmark = [pytest.mark.browser]

# The README's screenshots are taken again with LLM_MAGIC_DOC_SHOTS=1; otherwise into build/.
IMG = ROOT / "docs" / "img" if os.environ.get("LLM_MAGIC_DOC_SHOTS") else BUILD
LONG = (
    "The ledger keeps one row per call with its tokens, its cost and its latency, so a team can "
    "see what each prototype spent today and which model answered fastest for every agent."
)


# ---------------------------------------------------------------------------------------------
# the server: the app under uvicorn in a thread, on a free port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    token: str
    book: Any

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **extra}

    def chat(self, prompt: str, model: str, **headers: str) -> str:
        """POST /api/chat and read the whole stream (as a non-browser client does)."""
        body = {"messages": [{"role": "user", "content": prompt}], "model": model}
        with httpx.stream(
            "POST", f"{self.url}/api/chat", json=body, headers=self.headers(**headers), timeout=60
        ) as r:
            assert r.status_code == 200, r.read()
            return "".join(r.iter_text())


@contextlib.contextmanager
def serving(book: Any, given_settings: bool = True, **kw: Any) -> Iterator[Served]:
    """The app on ``book``, with this process's settings given (or, as ``%llm serve`` runs it,
    read again for each request)."""
    import uvicorn

    from llm_magic import config
    from llm_magic.web.app import create_app

    token = secrets.token_urlsafe(16)
    app = create_app(config.settings() if given_settings else None, book, token=token, **kw)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="serve-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", token, book)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    need_chromium()
    yield from launch_chromium()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    yield context.new_page()
    context.close()


def open_page(pg: Any, served: Served, path: str, base: str | None = None) -> None:
    """Open ``path`` as the printed URL does: ``?token=`` once, the cookie afterwards."""
    pg.goto(f"{base or served.url}{path}?token={served.token}")
    assert pg.url == f"{base or served.url}{path}", "the token was not swapped for the cookie"


# ---------------------------------------------------------------------------------------------
# the chat page, driven as a person does


_RECORD_JS = """
() => {
  const el = document.getElementById('answer');
  const seen = [el.textContent];
  new MutationObserver(() => {
    if (el.textContent !== seen[seen.length - 1]) seen.push(el.textContent);
  }).observe(el, {childList: true, subtree: true, characterData: true});
  window.__answers = seen;
}
"""


def send(pg: Any, prompt: str, model: str, timeout_ms: int = 90_000) -> None:
    """Pick ``model``, type ``prompt``, press Send (recording each text the answer shows)."""
    pg.wait_for_function(
        "(m) => [...document.querySelectorAll('#model option')].some(o => o.value === m)",
        arg=model,
        timeout=timeout_ms,  # the first /api/models imports litellm
    )
    pg.select_option("#model", model)
    pg.fill("#prompt", prompt)
    pg.evaluate(_RECORD_JS)
    pg.click("#send")


def ask(pg: Any, prompt: str, model: str, timeout_ms: int = 90_000) -> dict[str, Any]:
    """:func:`send`, then wait until the page says it is done; what it showed."""
    send(pg, prompt, model, timeout_ms)
    return shown_when_done(pg, timeout_ms)


def shown_when_done(pg: Any, timeout_ms: int = 90_000) -> dict[str, Any]:
    pg.wait_for_function("() => document.body.dataset.state === 'done'", timeout=timeout_ms)
    return dict(
        pg.evaluate(
            """() => ({
              answer: document.getElementById('answer').textContent,
              steps: window.__answers,
              problem: document.getElementById('problem').hidden ? null
                       : document.getElementById('problem').textContent,
              usage: document.getElementById('usage').textContent,
              reconnects: Number(document.body.dataset.reconnects),
            })"""
        )
    )


def growing_prefixes(steps: list[str], final: str) -> list[str]:
    """The distinct non-empty texts shown on the way that are starts of the final answer."""
    out: list[str] = []
    for s in steps:
        if s and final.startswith(s) and s not in out:
            out.append(s)
    return out


@pytest.mark.local_model
def test_chat_page_streams_local_answer_in_steps(page: Any, book: Any, local_model: str) -> None:
    with serving(book) as served:
        open_page(page, served, "/")
        got = ask(page, "Name three colours of the rainbow.", "local")
        row = book.df.iloc[-1]
        IMG.mkdir(parents=True, exist_ok=True)
        page.set_viewport_size({"width": 1000, "height": 470})
        page.screenshot(path=str(IMG / "serve-chat.png"))
    assert got["problem"] is None, got
    final = got["answer"]
    assert final.strip(), "no answer shown"
    steps = growing_prefixes(got["steps"], final)
    assert len(steps) >= 3, f"the answer did not grow in steps: {got['steps']!r}"
    assert len(book) == 1 and row["model"].startswith("local") and row["status"] == "ok"
    # the footer is the usage event: the row's tokens
    assert f"{int(row['input_tokens'])} → {int(row['output_tokens'])} tokens" in got["usage"]


def test_server_side_drop_shows_response_interrupted(
    page: Any, book: Any, provider: FakeProvider
) -> None:
    words = LONG.split(" ")
    provider.script(cut_after(4, text=LONG))
    with serving(book) as served:
        open_page(page, served, "/")
        got = ask(page, "Tell me about the ledger.", "gpt-4o")
    partial = " ".join(words[:4]) + " "
    assert got["problem"] is not None and "response interrupted" in got["problem"], got
    assert got["answer"].strip() == partial.strip(), got  # the partial text stays on the page
    assert len(book) == 1 and book.df.iloc[-1]["status"] in ("interrupted", "error")


def test_stop_button_stops_the_call(page: Any, book: Any, provider: FakeProvider) -> None:
    provider.script(ok(LONG, chunk_delay=0.25))
    with serving(book) as served:
        open_page(page, served, "/")
        send(page, "Tell me about the ledger.", "gpt-4o")
        page.wait_for_function("() => document.getElementById('answer').textContent.length > 20")
        page.click("#stop")
        got = shown_when_done(page)
        deadline = time.monotonic() + 20  # the DELETE reaches the server after the abort
        while len(book) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        row = book.df.iloc[-1]
    assert got["problem"] == "stopped", got
    assert LONG.startswith(got["answer"]) and 20 < len(got["answer"]) < len(LONG), got
    assert len(provider.completions()) == 1
    assert len(book) == 1 and row["status"] == "interrupted"  # recorded, not read to the end
    assert int(row["output_tokens"]) < len(LONG.split(" "))


_STOP_AT_ONCE_JS = """
async () => {
  const m = await import('/static/client.js');
  const client = new m.ChatClient();
  const answer = client.send({messages: [{role: 'user', content: 'Hi'}], model: 'gpt-4o'}, {});
  client.stop();  // before the server has named the stream
  const got = await answer;
  return {stopped: got.stopped, text: got.text, sid: client.sid};
}
"""


def test_stop_before_the_stream_is_named_still_stops_the_call(
    page: Any, book: Any, provider: FakeProvider
) -> None:
    provider.script(ok(LONG, chunk_delay=0.25))
    with serving(book) as served:
        open_page(page, served, "/")
        got = page.evaluate(_STOP_AT_ONCE_JS)
        assert got["stopped"] and got["sid"], got
        # what the server kept of that stream: stopped, not read to the end
        with httpx.stream(
            "GET",
            f"{served.url}/api/chat/{got['sid']}",
            headers=served.headers(**{"Last-Event-ID": f"{got['sid']}:0"}),
            timeout=30,
        ) as r:
            assert r.status_code == 200
            kept = "".join(r.iter_text())
    assert "data: [DONE]" in kept and "event: error" in kept and "interrupted" in kept, kept
    assert LONG not in "".join(
        json.loads(line[6:])["content"] for line in kept.splitlines() if '"content"' in line
    )


# ---------------------------------------------------------------------------------------------
# a dropped connection: a TCP proxy that cuts the browser's answer after a few events


class CuttingProxy:
    """127.0.0.1 TCP proxy to ``target``; the first connection that carries ``POST /api/chat``
    is closed (both ways) once ``after`` content events of its answer went through."""

    def __init__(self, target_port: int, after: int = 3) -> None:
        self.target = ("127.0.0.1", target_port)
        self.after = after
        self.cuts = 0
        self.chat_posts = 0
        self.resumes = 0
        self._armed = True
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._open += [client, upstream]
            conn = {"cut": False}
            threading.Thread(target=self._up, args=(client, upstream, conn), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, conn), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket, conn: dict[str, bool]) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    if b"POST /api/chat " in data:
                        self.chat_posts += 1
                        if self._armed:
                            self._armed, conn["cut"] = False, True
                    if b"GET /api/chat/" in data:
                        self.resumes += 1
                upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    def _down(self, upstream: socket.socket, client: socket.socket, conn: dict[str, bool]) -> None:
        seen = b""
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if conn["cut"]:
                    seen += data
                    if seen.count(b'data: {"content"') >= self.after:
                        # pass on the bytes up to the cut's event only, then drop the connection
                        end = _nth(seen, b'data: {"content"', self.after)
                        keep = seen.find(b"\n\n", end)
                        already = len(seen) - len(data)
                        client.sendall(seen[already : keep + 2 if keep >= 0 else len(seen)])
                        self.cuts += 1
                        for s in (client, upstream):
                            with contextlib.suppress(OSError):
                                s.shutdown(socket.SHUT_RDWR)
                            s.close()
                        return
                client.sendall(data)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._sock.close()
        for s in self._open:
            with contextlib.suppress(OSError):
                s.close()


def _nth(data: bytes, needle: bytes, n: int) -> int:
    at = -1
    for _ in range(n):
        at = data.find(needle, at + 1)
    return at


def test_dropped_connection_resumes_without_second_call(
    page: Any, book: Any, provider: FakeProvider
) -> None:
    provider.script(ok(LONG, chunk_delay=0.06))
    with serving(book) as served:
        proxy = CuttingProxy(int(served.url.rsplit(":", 1)[1]), after=3)
        try:
            open_page(page, served, "/", base=proxy.url)
            got = ask(page, "Tell me about the ledger.", "gpt-4o")
        finally:
            proxy.close()
    assert proxy.cuts == 1 and proxy.chat_posts == 1, vars(proxy)
    assert proxy.resumes >= 1 and got["reconnects"] >= 1, got
    assert got["problem"] is None, got
    assert got["answer"] == LONG  # the whole answer, nothing twice, nothing missing
    assert len(provider.completions()) == 1  # not a second provider request
    assert len(book) == 1 and book.df.iloc[-1]["status"] == "ok"  # not a second row
    assert f"{int(book.df.iloc[-1]['output_tokens'])} tokens" in got["usage"]


# ---------------------------------------------------------------------------------------------
# /spend against Ledger.summary()


def _money(v: float) -> str:
    return "–" if v is None or math.isnan(v) else f"${v:.6f}"


def _secs(v: float) -> str:
    return "–" if v is None or math.isnan(v) else f"{v:.3f} s"


def expected_tables(book: Any) -> dict[str, dict[str, dict[str, str]]]:
    """``book.summary(by, today=True)`` formatted as the page formats it."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for by in ("model", "agent", "user"):
        frame = book.summary(by=by, today=True)
        out[by] = {
            str(key): {
                "calls": str(int(r["calls"])),
                "errors": str(int(r["errors"])),
                "input_tokens": str(int(r["input_tokens"])),
                "output_tokens": str(int(r["output_tokens"])),
                "cost_usd": _money(r["cost_usd"]),
                "p50_latency_s": _secs(r["p50_latency_s"]),
                "p95_latency_s": _secs(r["p95_latency_s"]),
                "p50_ttft_s": _secs(r["p50_ttft_s"]),
                "p95_ttft_s": _secs(r["p95_ttft_s"]),
            }
            for key, r in frame.iterrows()
        }
    return out


_TABLES_JS = """
() => {
  const out = {};
  for (const by of ['model', 'agent', 'user']) {
    out[by] = {};
    document.querySelectorAll(`#by-${by} tbody tr[data-key]`).forEach((tr) => {
      const row = {};
      tr.querySelectorAll('td[data-col]').forEach((td) => { row[td.dataset.col] = td.textContent; });
      out[by][tr.dataset.key] = row;
    });
  }
  return {tables: out, spent: document.getElementById('spent').textContent,
          budget: document.getElementById('budget').textContent,
          rows: Number(document.body.dataset.rows)};
}
"""


def test_spend_page_matches_ledger_summary_and_updates(
    page: Any, book: Any, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm_magic import config

    monkeypatch.setenv("DAILY_BUDGET_USD", "2.5")
    config.reload_settings()
    provider.script(
        ok("One two three", input_tokens=120, chunk_delay=0.01),
        ok("Four five", input_tokens=300, chunk_delay=0.01),
        ok("Six", input_tokens=40),
        ok("Seven eight nine ten", input_tokens=900),
    )
    with serving(book, given_settings=False) as served:
        served.chat("a", "gpt-4o", **{"X-LLM-Agent": "triage", "X-LLM-User": "ana"})
        served.chat("b", "gpt-4o-mini", **{"X-LLM-Agent": "triage", "X-LLM-User": "bo"})
        served.chat("c", "claude-sonnet-4-5", **{"X-LLM-Agent": "writer", "X-LLM-User": "ana"})
        assert len(book) == 3
        open_page(page, served, "/spend")
        page.wait_for_function("() => Number(document.body.dataset.rows) === 3")
        shown = page.evaluate(_TABLES_JS)
        want = expected_tables(book)
        assert shown["tables"] == want
        assert set(want["agent"]) == {"triage", "writer"} and set(want["user"]) == {"ana", "bo"}
        assert shown["spent"] == _money(book.cost_today()) and book.cost_today() > 0
        assert shown["budget"] == "of $2.50"
        IMG.mkdir(parents=True, exist_ok=True)
        page.set_viewport_size({"width": 1000, "height": 400})  # full_page: the page's height
        page.screenshot(path=str(IMG / "serve-spend.png"), full_page=True)
        # a new call lands: the page updates by itself (SSE), to the new summary
        served.chat("d", "gpt-4o", **{"X-LLM-Agent": "writer", "X-LLM-User": "cy"})
        page.wait_for_function("() => Number(document.body.dataset.rows) === 4", timeout=20_000)
        shown = page.evaluate(_TABLES_JS)
        # `%llm budget 5` in the server's process: the page follows
        config.override(daily_budget_usd=5.0)
        page.wait_for_function(
            "() => document.getElementById('budget').textContent === 'of $5.00'", timeout=20_000
        )
    want = expected_tables(book)
    assert shown["tables"] == want
    assert want["model"]["gpt-4o"]["calls"] == "2" and "cy" in shown["tables"]["user"]


# ---------------------------------------------------------------------------------------------
# the SSE parser of client.js, in the browser, on every chunking of one stream

STREAM = (
    ": hello\r\n"
    "retry: 1000\n"
    'id: s1:0\r\nevent: start\r\ndata: {"stream_id": "s1"}\r\n\r\n'
    'id: s1:1\rdata: {"content": "Hé ✓"}\r\r'
    "data: line one\ndata: line two\ndata:\ndata:  spaced\n\n"
    ": ping\n\n"
    'id: s1:2\nevent: usage\ndata: {"a":1}\n\n'
    "event: nodata\n\n"
    "field-without-colon\ndata\n\n"
    "id: s1:3\ndata: [DONE]\r\n\r\n"
    "data: never closed"
)
EXPECTED = {
    "ev": [
        {"id": "s1:0", "event": "start", "data": '{"stream_id": "s1"}'},
        {"id": "s1:1", "event": "message", "data": '{"content": "Hé ✓"}'},
        {"id": "s1:1", "event": "message", "data": "line one\nline two\n\n spaced"},
        {"id": "s1:2", "event": "usage", "data": '{"a":1}'},
        {"id": "s1:2", "event": "message", "data": ""},
        {"id": "s1:3", "event": "message", "data": "[DONE]"},
    ],
    "com": ["hello", "ping"],
    "re": [1000],
}

_PARSER_JS = """
async (stream) => {
  const m = await import('/static/client.js');
  const run = (pieces) => {
    const ev = [], com = [], re = [];
    const p = new m.SSEParser({onEvent: (e) => ev.push(e), onComment: (c) => com.push(c),
                               onRetry: (r) => re.push(r)});
    const dec = new TextDecoder();
    for (const b of pieces) p.feed(dec.decode(b, {stream: true}));
    p.feed(dec.decode());
    p.end();
    return JSON.stringify({ev, com, re});
  };
  const bytes = new TextEncoder().encode(stream);
  const two = new Set(), three = new Set(), random = new Set();
  for (let i = 0; i <= bytes.length; i++) two.add(run([bytes.slice(0, i), bytes.slice(i)]));
  for (let i = 0; i < bytes.length; i += 3)
    for (let j = i; j <= bytes.length; j += 5)
      three.add(run([bytes.slice(0, i), bytes.slice(i, j), bytes.slice(j)]));
  let seed = 7;
  for (let k = 0; k < 200; k++) {
    const pieces = [];
    let at = 0;
    while (at < bytes.length) {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      const n = 1 + (seed % 9);
      pieces.push(bytes.slice(at, at + n));
      at += n;
    }
    random.add(run(pieces));
  }
  return {whole: run([bytes]), bytewise: run([...bytes].map((b) => new Uint8Array([b]))),
          two: [...two], three: [...three], random: [...random],
          numbers: [m.eventNumber('abc:7'), m.eventNumber('a:b:12'), m.eventNumber('x'),
                    m.eventNumber('')]};
}
"""


def test_sse_parser_in_browser(page: Any, book: Any) -> None:
    with serving(book) as served:
        open_page(page, served, "/")
        got = page.evaluate(_PARSER_JS, STREAM)
    assert json.loads(got["whole"]) == EXPECTED
    assert json.loads(got["bytewise"]) == EXPECTED
    # every way of cutting the stream into network chunks gives the same events
    assert got["two"] == [got["whole"]] and got["three"] == [got["whole"]]
    assert got["random"] == [got["whole"]]
    assert got["numbers"] == [7, 12, -1, -1]


def test_pages_and_spend_routes_need_the_token(book: Any) -> None:
    with serving(book) as served:
        for path in ("/", "/spend", "/static/client.js", "/api/spend", "/api/spend/events"):
            r = httpx.get(f"{served.url}{path}", timeout=30)
            assert r.status_code == 401, path
            if path.startswith("/api/"):
                assert "token" in r.json()["error"]
            assert served.token not in r.text
        with_token = httpx.get(f"{served.url}/api/spend", headers=served.headers(), timeout=30)
        unknown = httpx.get(f"{served.url}/static/..%2Fpages.py", headers=served.headers())
    assert with_token.status_code == 200 and with_token.json()["rows"] == 0
    assert unknown.status_code == 404 and "APIRouter" not in unknown.text

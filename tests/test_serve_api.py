"""The chat server (``llm_magic.web``) as a client sees it: a real uvicorn server on a free port
in a thread, httpx against it, the scripted provider behind it, the test's ledger."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakekeys import fake_key
from tests.fakeprovider import FakeProvider, cut_after, hang, ok, status, tool_call

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HI = {"messages": [{"role": "user", "content": "Hi"}], "model": "gpt-4o-mini"}
KEYS = {
    "OPENAI_API_KEY": fake_key("SERVE"),
    "ANTHROPIC_API_KEY": fake_key("SERVEANT", kind="ant-test", tail=14),
}


@pytest.fixture
def provider_keys() -> dict[str, str]:
    return dict(KEYS)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Served:
    url: str
    app: Any
    raw: list[bytes] = field(default_factory=list)  # every byte the server sent (for key greps)

    def client(self, **kw: Any) -> httpx.Client:
        hooks = {"response": [self._keep]}
        return httpx.Client(base_url=self.url, timeout=300, event_hooks=hooks, **kw)

    def _keep(self, response: httpx.Response) -> None:
        if not _is_sse(response):  # streams: the test keeps what it read
            self.raw.append(response.read())


def _is_sse(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


@pytest.fixture
def served(provider: FakeProvider, book: Any) -> Iterator[Served]:
    """The app under uvicorn (heartbeat 0.2 s) in a thread, pointed at the scripted provider."""
    import uvicorn

    from llm_magic.web import create_app

    app = create_app(book=book, token=TOKEN, heartbeat_s=0.2, replay_s=60, max_tokens=1000)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        thread.join(0.02)
    yield Served(f"http://127.0.0.1:{port}", app)
    server.should_exit = True
    thread.join(10)


@dataclass
class Event:
    id: str | None
    event: str | None
    data: str

    @property
    def json(self) -> Any:
        return json.loads(self.data)


def parse(raw: bytes) -> list[Event | str]:
    """SSE blocks: an :class:`Event`, or a comment's text (``"ping"``)."""
    out: list[Event | str] = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        fields: dict[str, list[str]] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                out.append(line[1:].strip())
                continue
            name, _, value = line.partition(": ")
            fields.setdefault(name, []).append(value)
        if fields:
            ident, kind = fields.get("id", [None])[0], fields.get("event", [None])[0]
            out.append(Event(ident, kind, "\n".join(fields.get("data", []))))
    return out


def events(items: list[Event | str]) -> list[Event]:
    return [e for e in items if isinstance(e, Event)]


def text_of(items: list[Event | str]) -> str:
    return "".join(
        e.json["content"] for e in events(items) if e.event is None and "content" in e.data
    )


def chat(
    served: Served, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> bytes:
    """POST /api/chat and read the whole stream."""
    with (
        served.client() as client,
        client.stream(
            "POST", "/api/chat", json=body or HI, headers={**AUTH, **(headers or {})}
        ) as r,
    ):
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        raw = r.read()
    served.raw.append(raw)
    return raw


def read_until(pieces: Iterator[bytes], n_events: int) -> bytes:
    """Read a stream's ``pieces`` until ``n_events`` events (not comments) have come."""
    raw = b""
    for piece in pieces:
        raw += piece
        if len(events(parse(raw.rpartition(b"\n\n")[0] + b"\n\n"))) >= n_events:
            return raw.rpartition(b"\n\n")[0] + b"\n\n"
    return raw


def no_key_in(served: Served) -> None:
    everything = b"".join(served.raw)
    assert everything, "nothing was read"
    for key in KEYS.values():
        assert key.encode() not in everything


# -- auth ---------------------------------------------------------------------------------------


def test_every_api_route_needs_the_token(served: Served) -> None:
    with served.client() as client:
        none = client.get("/api/models")
        wrong = client.get("/api/models", headers={"Authorization": "Bearer nope"})
        posted = client.post("/api/chat", json=HI)
        right = client.get("/api/models", headers=AUTH)
        missing = client.get("/api/nothing", headers=AUTH)
    assert none.status_code == wrong.status_code == posted.status_code == 401
    assert "token" in none.json()["error"]
    assert wrong.json()["error"].startswith("wrong token")
    assert right.status_code == 200
    assert missing.status_code == 404 and "/api/nothing" in missing.json()["error"]
    models = right.json()
    assert models["models"][0] == "local"
    assert "gpt-4o-mini" in models["models"]
    assert models["default"] == "local"


def test_token_in_the_url_becomes_a_cookie(served: Served) -> None:
    with served.client() as client:
        bad = client.get("/api/models?token=nope")
        first = client.get(f"/api/models?token={TOKEN}&x=1")
        assert first.status_code == 303
        assert first.headers["location"] == "/api/models?x=1"
        cookie = first.headers["set-cookie"].lower()
        assert "llm_magic_token=" in cookie
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        again = client.get("/api/models")  # the client keeps the cookie
    assert bad.status_code == 401
    assert again.status_code == 200 and "local" in again.json()["models"]
    with served.client(cookies={"llm_magic_token": "nope"}) as client:
        assert client.get("/api/models").status_code == 401


# -- validation: 4xx, one line, nothing sent, nothing recorded -----------------------------------


BAD = [
    (b"{not json", "not valid JSON"),
    (json.dumps({"messages": []}).encode(), "messages"),
    (json.dumps({"messages": [{"role": "robot", "content": "Hi"}]}).encode(), "role"),
    (json.dumps({**HI, "stream": True}).encode(), "stream"),
    (json.dumps({**HI, "max_tokens": "10"}).encode(), "max_tokens"),
    (json.dumps({**HI, "max_tokens": 5000}).encode(), "LLM_MAGIC_SERVE_MAX_TOKENS"),
    (json.dumps({**HI, "temperature": 7}).encode(), "temperature"),
    (json.dumps({**HI, "model": "mistral/mistral-large-latest"}).encode(), "MISTRAL_API_KEY"),
    (json.dumps({**HI, "model": "no-such-model-xyz"}).encode(), "no-such-model-xyz"),
    (json.dumps({**HI, "tools": [{"bad": 1}]}).encode(), "tool"),
]


@pytest.mark.parametrize(("body", "named"), BAD, ids=[b[1] for b in BAD])
def test_bad_requests_are_refused_before_anything_is_sent(
    served: Served, provider: FakeProvider, book: Any, body: bytes, named: str
) -> None:
    with served.client() as client:
        r = client.post(
            "/api/chat", content=body, headers={**AUTH, "Content-Type": "application/json"}
        )
    assert 400 <= r.status_code < 500
    message = r.json()["error"]
    assert named in message
    assert "\n" not in message
    assert provider.completions() == []
    assert len(book.df) == 0


def test_a_body_over_256_kib_is_refused(served: Served, provider: FakeProvider, book: Any) -> None:
    big = {**HI, "messages": [{"role": "user", "content": "x" * (300 * 1024)}]}
    with served.client() as client:
        r = client.post("/api/chat", json=big, headers=AUTH)
    assert r.status_code == 413
    assert "256 KiB" in r.json()["error"]
    assert provider.requests == []
    assert len(book.df) == 0


# -- streaming ----------------------------------------------------------------------------------


def test_an_answer_streams_as_numbered_events(
    served: Served, provider: FakeProvider, book: Any
) -> None:
    provider.script(ok("Hello there from the server", input_tokens=12))
    items = parse(chat(served, headers={"X-LLM-Agent": "web-test", "X-LLM-User": "ada"}))
    evs = events(items)
    sid = evs[0].json["stream_id"]
    assert evs[0].event == "start" and evs[0].json["model"] == "gpt-4o-mini"
    assert [e.id for e in evs] == [f"{sid}:{n}" for n in range(len(evs))]
    assert [e.json["content"] for e in evs[1:-2]] == ["Hello", " there", " from", " the", " server"]
    usage, done = evs[-2], evs[-1]
    assert usage.event == "usage" and done.data == "[DONE]"
    row = book.df.iloc[-1]
    assert len(book.df) == 1
    assert usage.json["call_id"] == row.call_id
    assert usage.json["status"] == "ok" and usage.json["finish_reason"] == "stop"
    assert (usage.json["input_tokens"], usage.json["output_tokens"]) == (12, 5)
    assert usage.json["cost_usd"] == pytest.approx(row.cost_usd) and row.cost_usd > 0
    assert usage.json["ttft_s"] <= usage.json["latency_s"]
    assert (row.agent, row.user, row.status) == ("web-test", "ada", "ok")
    assert provider.completions()[0].body["messages"][-1]["content"] == "Hi"
    no_key_in(served)


def test_tool_calls_stream_as_tool_call_events(served: Served, provider: FakeProvider) -> None:
    provider.script(
        ok("", tool_calls=[tool_call("get_weather", ['{"city": ', '"Paris"}'], id="call_w1")])
    )
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    evs = events(parse(chat(served, {**HI, "tools": [tool]})))
    calls = [e.json["tool_call"] for e in evs if "tool_call" in e.data and e.event is None]
    assert {c["name"] for c in calls} == {"get_weather"}
    assert {c["id"] for c in calls} == {"call_w1"}  # the provider's id for the call
    assert "".join(c["arguments"] for c in calls) == '{"city": "Paris"}'
    assert evs[-2].json["finish_reason"] == "tool_calls"
    assert provider.completions()[0].body["tools"][0]["function"]["name"] == "get_weather"


def test_heartbeats_while_the_provider_is_silent(served: Served, provider: FakeProvider) -> None:
    provider.script(hang(1.0, then=ok("late but whole")))
    items = parse(chat(served))
    first_content = next(i for i, e in enumerate(items) if isinstance(e, Event) and e.event is None)
    assert "ping" in items[1:first_content]  # between start and the first words
    assert text_of(items) == "late but whole"
    assert all(e.id for e in events(items))


def test_a_provider_cut_is_an_interrupted_error_with_the_partial_text(
    served: Served, provider: FakeProvider, book: Any
) -> None:
    provider.script(cut_after(2, text="one two three four"))
    evs = events(parse(chat(served)))
    error = next(e for e in evs if e.event == "error").json
    assert error["kind"] == "interrupted"
    assert "response interrupted" in error["message"]
    assert error["partial"] == "one two"
    assert [e.event for e in evs[-3:]] == ["usage", "error", None]
    assert evs[-1].data == "[DONE]"
    assert list(book.df.status) == ["interrupted"]
    assert evs[-3].json["status"] == "interrupted"
    no_key_in(served)


def test_a_provider_refusal_keeps_no_key_in_the_error(
    served: Served, provider: FakeProvider, book: Any
) -> None:
    provider.script(status(401))
    evs = events(parse(chat(served)))
    error = next(e for e in evs if e.event == "error").json
    assert error["kind"] == "provider" and error["partial"] == ""
    assert error["message"].startswith("AuthError: ")
    assert list(book.df.status) == ["error"]
    no_key_in(served)


# -- reconnect and stop -------------------------------------------------------------------------


WORDS = " ".join(f"w{i}" for i in range(30))
LONG = " ".join(f"w{i}" for i in range(100))  # 10 s at 0.1 s a word: time to stop it midway


def test_a_dropped_client_resumes_with_last_event_id(
    served: Served, provider: FakeProvider, book: Any
) -> None:
    provider.script(ok(WORDS, chunk_delay=0.05))
    with served.client() as client:
        with client.stream("POST", "/api/chat", json=HI, headers=AUTH) as r:
            head = read_until(
                r.iter_raw(), 4
            )  # start and three words, then the connection is dropped
        seen = events(parse(head))
        sid = seen[0].json["stream_id"]
        last = seen[-1].id
        assert last == f"{sid}:3"
        with client.stream(
            "GET", f"/api/chat/{sid}", headers={**AUTH, "Last-Event-ID": last}
        ) as again:
            assert again.status_code == 200
            rest = again.read()
    served.raw += [head, rest]
    tail = events(parse(rest))
    assert tail[0].id == f"{sid}:4"
    assert text_of(parse(head)) + text_of(parse(rest)) == WORDS
    assert tail[-1].data == "[DONE]" and tail[-2].event == "usage"
    assert len(provider.completions()) == 1
    assert len(book.df) == 1 and book.df.iloc[0].status == "ok"
    no_key_in(served)


def test_an_answer_no_longer_kept_is_410(served: Served) -> None:
    sid = events(parse(chat(served)))[0].json["stream_id"]
    with served.client() as client:
        kept = client.get(f"/api/chat/{sid}", headers={**AUTH, "Last-Event-ID": f"{sid}:0"})
        assert kept.status_code == 200 and b"[DONE]" in kept.content
        served.app.state.streams.replay_s = 0  # its time is up
        gone = client.get(f"/api/chat/{sid}", headers={**AUTH, "Last-Event-ID": f"{sid}:0"})
        unknown = client.get("/api/chat/nope", headers=AUTH)
    assert gone.status_code == unknown.status_code == 410
    assert "no longer kept" in gone.json()["error"] and "ask again" in gone.json()["error"]


def test_delete_stops_the_call_and_records_it_interrupted(
    served: Served, provider: FakeProvider, book: Any
) -> None:
    provider.script(ok(LONG, chunk_delay=0.1))
    with served.client() as client:
        with client.stream("POST", "/api/chat", json=HI, headers=AUTH) as r:
            pieces = r.iter_raw()
            head = read_until(pieces, 3)
            sid = events(parse(head))[0].json["stream_id"]
            stopped = client.delete(f"/api/chat/{sid}", headers=AUTH)
            assert stopped.status_code == 204
            rest = b"".join(pieces)
    evs = events(parse(head + rest))
    error = next(e for e in evs if e.event == "error").json
    assert error["kind"] == "interrupted" and error["message"] == "response interrupted"
    assert error["partial"] and LONG.startswith(error["partial"]) and error["partial"] != LONG
    assert evs[-1].data == "[DONE]"
    assert list(book.df.status) == ["interrupted"]
    assert len(provider.completions()) == 1


# -- starting it --------------------------------------------------------------------------------


def test_python_m_llm_magic_serve_prints_the_url_once(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "LLM_MAGIC_SERVE_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "llm_magic", "serve", "--port", str(port)]
    child = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert f"http://127.0.0.1:{port}/?token={TOKEN}" in line
        for _ in range(200):
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/chat/nope", headers=AUTH, timeout=60)
                break
            except httpx.ConnectError:
                threading.Event().wait(0.1)
        assert r.status_code == 410  # the token let it through (no token: 401)
        assert httpx.get(f"http://127.0.0.1:{port}/api/chat/nope").status_code == 401
    finally:
        child.terminate()
        child.wait(30)


def test_llm_serve_start_status_stop(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    ip.run_line_magic("llm", f"serve start --port {port}")
    started = capsys.readouterr().out
    assert f"http://127.0.0.1:{port}/?token=" in started
    token = started.split("?token=")[1].split()[0]
    try:
        url = f"http://127.0.0.1:{port}/api/chat/nope"
        assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 410
        assert httpx.get(url).status_code == 401
        ip.run_line_magic("llm", "serve status")
        shown = capsys.readouterr().out
        assert f"127.0.0.1:{port}" in shown and token not in shown and "0 call(s)" in shown
    finally:
        ip.run_line_magic("llm", "serve stop")
    assert "Stopped" in capsys.readouterr().out
    ip.run_line_magic("llm", "serve status")
    assert "Not serving" in capsys.readouterr().out


def test_the_replay_buffer_is_bounded_and_says_what_it_lost(served: Served) -> None:
    from llm_magic.web.sse import Replay, frame

    small = Replay("s1", max_events=3, max_bytes=10_000)
    for n in range(5):
        small.add({"content": f"c{n}"})
    assert small.kept_from() == 2
    assert [n for n, _ in small.since(-1)[0]] == [2, 3, 4]
    size = len(frame("s2:0", {"content": "x" * 20}))
    tiny = Replay("s2", max_events=100, max_bytes=2 * size + 1)
    for _ in range(5):
        tiny.add({"content": "x" * 20})
    assert tiny.kept_from() == 3  # two events fit
    small.close()

    class Run:  # what the app keeps per stream: its replay
        replay = small

    served.app.state.streams.add("s1", Run())
    with served.client() as client:
        lost = client.get("/api/chat/s1", headers={**AUTH, "Last-Event-ID": "s1:0"})
        kept = client.get("/api/chat/s1", headers={**AUTH, "Last-Event-ID": "s1:1"})
    assert lost.status_code == 410
    assert [e.id for e in events(parse(kept.content))] == ["s1:2", "s1:3", "s1:4"]


# -- load ---------------------------------------------------------------------------------------


def test_150_streams_are_open_at_the_provider_at_once(
    served: Served, provider: FakeProvider, book: Any
) -> None:
    """litellm's synchronous clients keep httpx's default of 100 connections: without the
    server's ``provider_connections``, the 101st call waits until one of the first 100 ends.
    Every scripted call here holds its connection ``hold`` seconds before it answers, so 150
    requests arriving at the provider before the first one answers were all open together."""
    n, hold = 150, 45.0
    chat(served)  # litellm imported (a minute on a loaded machine) before anything is counted
    provider.reset()
    before = len(book)
    provider.script(*[hang(hold, then=ok("all at once")) for _ in range(n)])
    texts: list[str | None] = [None] * n
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)

    with served.client(limits=limits) as client:

        def one(i: int) -> None:
            body = {**HI, "max_tokens": 50}
            headers = {**AUTH, "X-LLM-User": f"u{i}"}
            with client.stream("POST", "/api/chat", json=body, headers=headers) as r:
                texts[i] = text_of(parse(r.read())) if r.status_code == 200 else r.read().decode()

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        try:
            # with 100 connections at most, request 101 cannot arrive before ``hold`` is over
            provider.wait_for_requests(n, timeout=hold - 1)
        finally:
            for t in threads:
                t.join(hold + 120)
    calls = provider.completions()
    assert len(calls) == n
    assert max(c.t for c in calls) - min(c.t for c in calls) < hold  # all n in flight together
    assert texts == ["all at once"] * n
    assert len(book) - before == n
    df = book.df
    mine = df[df["user"].isin({f"u{i}" for i in range(n)})]
    assert len(mine) == n and set(mine["status"]) == {"ok"} and mine["user"].nunique() == n

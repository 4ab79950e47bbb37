"""Tool calling (issue 11): tools from Python functions or JSON schemas, tool-call deltas on
both wire formats parsed into ``Result.tool_calls`` and the ledger, the ``run_tools`` loop
(each round its own row under one trace), the local model's refusal, and ``%%llm --tools``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

import llm_magic as lm
from llm_magic import _direct, errors
from llm_magic._toolcalls import ToolDelta, ToolEvent, tools_of
from tests.fakeprovider import FakeProvider, ok, tool_call

WIRES = ["gpt-4o", "claude-sonnet-4-5"]  # the OpenAI and the Anthropic wire format


def get_weather(city: str, unit: str = "C") -> str:
    """The weather now in a city.

    Args:
        city: the city's name, e.g. Paris
        unit: C or F
    """
    if city == "Nowhere":
        raise ValueError(f"no such city: {city}")
    return f"18°{unit} in {city}"


def get_time(tz: str) -> dict[str, str]:
    """The time now in a time zone."""
    return {"tz": tz, "time": "12:00"}


WEATHER_SCHEMA = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "the city's name, e.g. Paris"},
                "unit": {"type": "string", "default": "C", "description": "C or F"},
            },
            "required": ["city"],
        },
    },
}


def weather_call(city: str = "Paris", id: str = "call_1") -> Any:
    """A tool call for ``get_weather`` whose JSON arguments arrive in three pieces."""
    args = json.dumps({"city": city})
    return tool_call("get_weather", [args[:4], args[4:11], args[11:]], id=id)


def sent_back(request: Any) -> list[tuple[str, str]]:
    """(tool call id, content) of each tool result a request carries, in either wire format:
    OpenAI ``tool`` messages, Anthropic ``tool_result`` blocks."""
    out = []
    for m in request.body["messages"]:
        if m.get("role") == "tool":
            out.append((m["tool_call_id"], m["content"]))
        elif isinstance(m.get("content"), list):
            for block in m["content"]:
                if block.get("type") == "tool_result":
                    content = block["content"]
                    if isinstance(content, list):
                        content = "".join(b.get("text", "") for b in content)
                    out.append((block["tool_use_id"], content))
    return out


def offered(request: Any) -> list[str]:
    """The names of the tools a request offers, in either wire format."""
    return [t.get("name") or t["function"]["name"] for t in request.body["tools"]]


# --------------------------------------------------------------------------- schemas


def test_the_schema_of_a_function_comes_from_its_signature_and_docstring() -> None:
    (tool,) = tools_of([get_weather])
    assert tool.fn is get_weather
    assert tool.schema == WEATHER_SCHEMA


def test_lm_tool_schema_shows_what_is_sent_for_a_function() -> None:
    import llm_magic as lm

    assert lm.tool_schema(get_weather) == WEATHER_SCHEMA
    with pytest.raises(errors.UsageProblem, match="not a tool|tools must be"):
        lm.tool_schema(42)


def test_json_schema_tools_are_taken_whole_or_bare_and_pydantic_types_are_described() -> None:
    bare = {"name": "lookup", "description": "Look up", "parameters": {"type": "object"}}
    whole, plain, typed = tools_of([WEATHER_SCHEMA, bare, book_trip])
    assert whole.schema == WEATHER_SCHEMA and whole.fn is None
    assert plain.schema == {"type": "function", "function": bare}
    params = typed.schema["function"]["parameters"]
    assert params["required"] == ["place", "nights"]
    assert params["properties"]["nights"] == {"type": "integer"}
    place = params["$defs"]["Place"]["properties"]
    assert place["city"]["type"] == "string"


class Place(BaseModel):
    city: str
    country: str = "FR"


def book_trip(place: Place, nights: int) -> str:
    """Book a trip."""
    return "booked"


def not_a_tool(*cities: str) -> str:
    return ""


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tools": [lambda city: city]}, "has the tool name '<lambda>'"),
        ({"tools": [42]}, "42 is not a tool: pass a Python function"),
        ({"tools": "get_weather"}, "tools must be a list .* not str"),
        ({"tools": [{"description": "no name"}]}, "has no name"),
        ({"tools": [{"name": "x", "parameters": {"type": "string"}}]}, "object"),
        ({"tools": [not_a_tool]}, "parameter 'cities' is variadic positional"),
        ({"tools": [get_weather, WEATHER_SCHEMA]}, "'get_weather' is given twice"),
        ({"tools": [WEATHER_SCHEMA], "run_tools": True}, "no Python function, so it cannot be run"),
        ({"run_tools": True}, "run_tools=True runs tools: pass them too"),
        ({"tools": [get_weather], "max_tool_rounds": 0}, "max_tool_rounds must be a positive"),
    ],
)
def test_bad_tools_are_one_usage_line_and_nothing_is_sent(
    provider: FakeProvider, book: Any, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(errors.UsageProblem, match=message):
        lm.complete("Weather in Paris?", model="gpt-4o", **options)
    assert provider.completions() == []
    assert len(book.df) == 0


def test_the_local_model_refuses_tools_before_anything_starts_or_is_sent(book: Any) -> None:
    with pytest.raises(errors.UsageProblem) as refused:
        lm.complete("Weather in Paris?", model="local", tools=[get_weather])
    assert str(refused.value) == (
        "the local model (SmolLM2-135M) does not do tool calling: use a provider model, "
        "e.g. -m gpt-4o-mini"
    )
    assert len(book.df) == 0


# --------------------------------------------------------------------------- tool-call deltas


@pytest.mark.parametrize("model", WIRES)
def test_tool_calls_stream_in_pieces_and_parse_into_the_result_and_the_ledger(
    provider: FakeProvider, book: Any, model: str
) -> None:
    provider.script(
        ok("", tool_calls=[weather_call(), tool_call("get_time", ['{"tz":', ' "CET"}'], "t2")])
    )
    heard: list[ToolEvent] = []
    answer = lm.stream("Weather and time in Paris?", model=model, tools=[get_weather, get_time])
    answer.on_tool = heard.append
    chunks = list(answer)
    result = answer.result
    assert result is not None and result.status == "ok"
    assert chunks == [] and result.text == ""  # tool calls only: not an "empty answer"
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls == [
        {"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}},
        {"id": "t2", "name": "get_time", "arguments": {"tz": "CET"}},
    ]
    forming = [e.arguments for e in heard if e.index == 0]
    assert forming == ["", '{"ci', '{"city": "P', '{"city": "Paris"}']  # growing, piece by piece
    assert {e.name for e in heard} == {"get_weather", "get_time"}
    row = book.df.iloc[0]
    assert json.loads(row["tool_calls"]) == result.tool_calls
    assert row["finish_reason"] == "tool_calls"
    (request,) = provider.completions()
    assert offered(request) == ["get_weather", "get_time"]
    assert request.body["max_tokens"] == 1024  # the default when tools are sent


@pytest.mark.parametrize("model", WIRES)
def test_text_then_a_tool_call_keeps_both_and_stream_yields_text_only(
    provider: FakeProvider, model: str
) -> None:
    provider.script(ok("Let me check.", tool_calls=[weather_call()]))
    answer = lm.stream("Weather in Paris?", model=model, tools=[get_weather])
    chunks = list(answer)
    assert all(isinstance(c, str) for c in chunks) and "".join(chunks) == "Let me check."
    assert answer.result is not None
    assert answer.result.tool_calls == [
        {"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}
    ]
    assert 'get_weather({"city": "Paris"})' in answer.result._repr_markdown_()


def test_max_tokens_is_1024_with_tools_unless_given_and_2048_without(
    provider: FakeProvider,
) -> None:
    lm.complete("Hi", model="gpt-4o", tools=[get_weather])
    lm.complete("Hi", model="gpt-4o", tools=[get_weather], max_tokens=300)
    lm.complete("Hi", model="gpt-4o")
    sent = [r.body["max_tokens"] for r in provider.completions()]
    assert sent == [1024, 300, 2048]
    assert "tools" not in provider.completions()[2].body


def test_the_direct_path_reads_tool_call_pieces_too() -> None:
    tally = _direct._Tally()
    first = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
    more = {"index": 0, "function": {"arguments": '{"a": 1}'}}
    pieces = tally.take({"choices": [{"delta": {"tool_calls": [first]}}]})
    pieces += tally.take(
        {"choices": [{"delta": {"tool_calls": [more]}, "finish_reason": "tool_calls"}]}
    )
    assert pieces == [ToolDelta(0, "c1", "f", ""), ToolDelta(0, None, None, '{"a": 1}')]
    assert tally.finish == "tool_calls" and tally.got_text


# --------------------------------------------------------------------------- run_tools


@pytest.mark.parametrize("model", WIRES)
def test_run_tools_runs_the_function_sends_its_result_back_and_asks_again(
    provider: FakeProvider, book: Any, model: str
) -> None:
    provider.script(ok("", tool_calls=[weather_call()]), ok("It is 18°C in Paris."))
    result = lm.complete("Weather in Paris?", model=model, tools=[get_weather], run_tools=True)
    assert result.text == "It is 18°C in Paris." and result.status == "ok"
    assert result.tool_calls is None and result.finish_reason == "stop"
    assert "2 rounds ran (1 tool call run)" in result.notes
    assert '⚙ get_weather({"city": "Paris"}) → 18°C in Paris' in result.notes
    first, second = provider.completions()
    assert sent_back(first) == []
    assert sent_back(second) == [("call_1", "18°C in Paris")]
    assert offered(second) == ["get_weather"]  # the tools go with every round
    rows = book.df.sort_values("ts_start")
    assert len(rows) == 2 and rows["trace_id"].nunique() == 1
    assert rows["trace_id"].iloc[0] == result.trace_id
    assert list(rows["finish_reason"]) == ["tool_calls", "stop"]
    assert json.loads(rows["tool_calls"].iloc[0])[0]["arguments"] == {"city": "Paris"}
    assert rows["call_id"].iloc[1] == result.call_id  # the final Result is the last round's


def test_a_chat_keeps_the_whole_tool_exchange_once(provider: FakeProvider) -> None:
    provider.script(ok("Let me check.", tool_calls=[weather_call()]), ok("18°C."), ok("Yes."))
    lm.complete("Weather in Paris?", model="gpt-4o", tools=[get_weather], run_tools=True, chat="w")
    from llm_magic.core import chats

    kept = chats()["w"]
    assert [m["role"] for m in kept] == ["user", "assistant", "tool", "assistant"]
    assert kept[1]["content"] == "Let me check." and kept[1]["tool_calls"][0]["id"] == "call_1"
    assert kept[3]["content"] == "18°C."
    lm.complete("Sure?", model="gpt-4o", tools=[get_weather], run_tools=True, chat="w")
    roles = [m["role"] for m in provider.completions()[2].body["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant", "user"]
    lm.reset_chat("w")


@pytest.mark.parametrize("model", WIRES)
def test_a_tool_that_raises_is_reported_to_the_model_not_a_crash(
    provider: FakeProvider, model: str
) -> None:
    provider.script(
        ok("", tool_calls=[weather_call("Nowhere", id="bad")]), ok("I could not find it.")
    )
    result = lm.complete("Weather in Nowhere?", model=model, tools=[get_weather], run_tools=True)
    assert result.text == "I could not find it."
    second = provider.completions()[1]
    assert sent_back(second) == [("bad", "error: ValueError: no such city: Nowhere")]


def test_arguments_that_do_not_fit_the_signature_are_reported_to_the_model(
    provider: FakeProvider,
) -> None:
    provider.script(ok("", tool_calls=[tool_call("get_weather", '{"town": "Paris"}', "c")]), ok())
    lm.complete("Weather?", model="gpt-4o", tools=[get_weather], run_tools=True)
    ((call_id, content),) = sent_back(provider.completions()[1])
    assert call_id == "c" and content.startswith("error: ValidationError:")
    assert "city" in content  # names the missing argument


@pytest.mark.parametrize("model", WIRES)
def test_the_round_limit_stops_the_loop_and_says_so(
    provider: FakeProvider, book: Any, model: str
) -> None:
    runs: list[str] = []

    def ping(n: int) -> str:
        """Ping."""
        runs.append(str(n))
        return "pong"

    provider.script(
        *[ok("", tool_calls=[tool_call("ping", f'{{"n": {i}}}', f"p{i}")]) for i in range(4)]
    )
    result = lm.complete("Ping away", model=model, tools=[ping], run_tools=True, max_tool_rounds=2)
    assert runs == ["0"]  # round 2's call is not run: the limit stopped it
    assert len(provider.completions()) == 2 and len(book.df) == 2
    assert result.tool_calls == [{"id": "p1", "name": "ping", "arguments": {"n": 1}}]
    assert any("Stopped at the tool-round limit (2 rounds)" in n for n in result.notes)
    assert "2 rounds ran (1 tool call run)" in result.notes


# --------------------------------------------------------------------------- the magic


def test_magic_tools_runs_them_and_shows_the_calls_and_the_answer(
    ip_ledger: Any, provider: FakeProvider, book: Any, capsys: Any
) -> None:
    ip_ledger.user_ns["my_tools"] = [get_weather]
    provider.script(ok("", tool_calls=[weather_call()]), ok("It is 18°C in Paris."))
    result = ip_ledger.run_cell_as_user(
        "%%llm -m claude-sonnet-4-5 --tools my_tools -o r\nWeather in Paris?"
    )
    assert result.error_in_exec is None
    out = capsys.readouterr().out
    assert '⚙ get_weather({"city": "Paris"})' in out
    assert "→ get_weather: 18°C in Paris" in out
    assert "It is 18°C in Paris." in out
    assert "2 rounds ran (1 tool call run)" in out
    assert ip_ledger.user_ns["r"].text == "It is 18°C in Paris."
    assert len(book.df) == 2 and sent_back(provider.completions()[1])[0][1] == "18°C in Paris"


def slow_to_draw(front_end: Any, seconds: float) -> None:
    """The front end takes at least ``seconds`` to draw each update (as a busy browser does)."""
    import time

    publish = front_end.publish

    def drawn_slowly(*args: Any, **kwargs: Any) -> None:
        began = time.monotonic()
        publish(*args, **kwargs)
        while time.monotonic() - began < seconds:
            time.sleep(seconds)

    front_end.publish = drawn_slowly


def test_magic_tool_calls_grow_in_the_cell_and_stay_in_its_output(
    ip_ledger: Any, provider: FakeProvider, front_end: Any
) -> None:
    from tests.conftest import published

    ip_ledger.run_line_magic("config", "LLMMagics.display_mode = 'handle'")
    ip_ledger.run_line_magic("config", "LLMMagics.updates_per_second = 30")
    ip_ledger.user_ns["my_tools"] = [get_weather]
    slow_to_draw(front_end, 1 / 30)
    provider.script(ok("", tool_calls=[weather_call()]), ok("Sunny, 18°C."))
    ip_ledger.run_cell("%%llm -m gpt-4o --tools my_tools\nWeather in Paris?")
    shown = [m["data"].get("text/plain", "") for m in published(front_end)]
    growing = [s.strip() for s in shown if s.startswith("⚙ get_weather(")]
    # each piece of the arguments as it came: a front end that takes an update's interval to
    # draw is never sent two updates within one interval, so no piece is skipped for speed
    assert growing[:3] == ["⚙ get_weather(", '⚙ get_weather({"ci', '⚙ get_weather({"city": "P']
    assert any(s.startswith('⚙ get_weather({"city": "Paris"}) → 18°C in Paris') for s in shown)
    final = published(front_end)[-1]["data"]["text/markdown"]
    # the call that ran stays where it streamed: before the answer it led to
    assert final.startswith('<code>⚙ get_weather({"city": "Paris"}) → 18°C in Paris</code>')
    assert final.index("→ 18°C in Paris") < final.index("Sunny, 18°C.")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--tools nothing_here", "--tools nothing_here: no such variable in the notebook"),
        ("--tools bad", "42 is not a tool"),
        ("--max-tool-rounds 3", "--max-tool-rounds goes with --tools VAR"),
        ("-m local --tools my_tools", "the local model \\(SmolLM2-135M\\) does not do tool"),
        ("-m gpt-4o,local --tools my_tools", "the local model \\(SmolLM2-135M\\) does not do"),
    ],
)
def test_magic_tools_usage_errors_are_one_line(
    ip_ledger: Any, provider: FakeProvider, book: Any, capsys: Any, line: str, message: str
) -> None:
    from IPython.core.error import UsageError

    ip_ledger.user_ns.update(bad=[42], my_tools=[get_weather])
    result = ip_ledger.run_cell_as_user(f"%%llm -m gpt-4o {line}\nWeather in Paris?")
    assert isinstance(result.error_in_exec, UsageError)
    err = capsys.readouterr().err
    assert err.startswith("UsageError: ") and len(err.strip().splitlines()) == 1
    import re

    assert re.search(message, err), err
    assert provider.completions() == [] and len(book.df) == 0

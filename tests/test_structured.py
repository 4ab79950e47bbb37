"""Structured output (issue 11): ``schema=`` sends the schema as each wire format carries it,
``Result.data`` is the validated object, and an answer that is not JSON, does not match, or was
cut at max_tokens is an error row with the tokens and cost really spent, never a silent string."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

import llm_magic as lm
from llm_magic import errors
from llm_magic.core import chats, reset_chat
from tests.conftest import published
from tests.fakeprovider import FakeProvider, ok, tool_call

EXACT = 1e-9  # dollars


class Person(BaseModel):
    name: str
    age: int


PERSON_SCHEMA = {
    "type": "object",
    "title": "Person",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}
ADA = '{"name": "Ada", "age": 36}'


def _gpt4o_cost(tin: int, tout: int) -> float:
    return tin * 2.5e-6 + tout * 10e-6


# --------------------------------------------------------------------------- what is sent


def test_openai_wire_gets_response_format_json_schema(provider: FakeProvider, book) -> None:
    provider.script(ok(ADA, input_tokens=120, output_tokens=11))
    result = lm.complete("Who wrote the first program?", model="gpt-4o", schema=Person)
    assert isinstance(result.data, Person)
    assert result.data == Person(name="Ada", age=36)
    assert result.text == ADA  # the raw answer stays the text
    sent = provider.completions()[-1].body["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == "Person"
    assert sent["json_schema"]["strict"] is True  # closed and all required: OpenAI's strict mode
    schema = sent["json_schema"]["schema"]
    assert schema["required"] == ["name", "age"] and schema["additionalProperties"] is False
    assert schema["properties"]["age"]["type"] == "integer"
    row = book.df.iloc[-1]
    assert row.status == "ok" and row.error_type is None
    assert abs(row.cost_usd - _gpt4o_cost(120, 11)) < EXACT


def test_anthropic_wire_gets_output_format_and_data_is_a_dict(provider: FakeProvider, book) -> None:
    """claude-sonnet-4-5 takes a schema natively: litellm sends it as ``output_format`` with the
    structured-outputs beta header; the answer is plain text JSON."""
    provider.script(ok(ADA, input_tokens=50, output_tokens=9))
    result = lm.complete("Who?", model="claude-sonnet-4-5", schema=PERSON_SCHEMA)
    assert result.data == {"name": "Ada", "age": 36} and isinstance(result.data, dict)
    request = provider.completions()[-1]
    assert request.path.endswith("/messages")
    fmt = request.body["output_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["schema"]["properties"]["name"] == {"type": "string"}
    assert "structured-outputs" in (request.header("anthropic-beta") or "")
    assert book.df.iloc[-1].status == "ok"


def _json_tool_answer(args: str, **usage: int):  # type: ignore[no-untyped-def]
    """Claude answering through litellm's forced ``json_tool_call`` tool: a ``tool_use`` block
    whose ``input_json_delta`` pieces are the JSON, and no text block."""
    pieces = [args[:7], args[7:15], args[15:]]
    return ok("", tool_calls=[tool_call("json_tool_call", pieces, id="toolu_json")], **usage)


def _forced_json_tool(request) -> dict:  # type: ignore[no-untyped-def]
    assert request.path.endswith("/messages") and "output_format" not in request.body
    assert request.body["tool_choice"] == {"type": "tool", "name": "json_tool_call"}
    (tool,) = request.body["tools"]
    assert tool["name"] == "json_tool_call"
    return tool["input_schema"]


def test_older_claude_gets_the_schema_as_a_forced_tool_and_its_input_is_the_data(
    provider: FakeProvider, book
) -> None:
    """claude-opus-4-1 has no native structured output in litellm's map: litellm sends the schema
    as a forced ``json_tool_call`` tool and turns the tool's streamed input back into the text.
    That JSON is validated into ``.data``; it is not one of the caller's tool calls."""
    provider.script(_json_tool_answer(ADA, input_tokens=40, output_tokens=12))
    result = lm.complete("Who?", model="claude-opus-4-1", schema=Person)
    assert result.data == Person(name="Ada", age=36)
    assert result.text == ADA
    assert not result.tool_calls
    sent = _forced_json_tool(provider.completions()[-1])
    assert sent["required"] == ["name", "age"] and sent["additionalProperties"] is False
    assert sent["properties"]["age"]["type"] == "integer"
    row = book.df.iloc[-1]
    assert (row.status, row.input_tokens, row.output_tokens) == ("ok", 40, 12)
    assert row.tool_calls is None
    # The price map bundled with the pinned litellm has no first-party claude-opus-4-1 entry
    # (only Bedrock's and Databricks' ids): no price is NaN with a note, never a silent 0 …
    assert row.cost_usd != row.cost_usd
    assert any("%llm price claude-opus-4-1" in n for n in result.notes)
    # … and a price set by hand prices the same call.
    book.set_price("claude-opus-4-1", 15, 75)
    provider.script(_json_tool_answer(ADA, input_tokens=40, output_tokens=12))
    again = lm.complete("Who?", model="claude-opus-4-1", schema=Person)
    assert again.data == Person(name="Ada", age=36)
    assert abs(book.df.iloc[-1].cost_usd - (40 * 15e-6 + 12 * 75e-6)) < EXACT


def test_older_claude_forced_tool_input_that_does_not_match_is_a_schema_mismatch(
    provider: FakeProvider, book
) -> None:
    provider.script(_json_tool_answer('{"name": "Ada", "age": -3}'))
    with pytest.raises(errors.SchemaMismatch, match="-3 is less than the minimum of 0"):
        lm.complete("Who?", model="claude-opus-4-1", schema=PERSON_SCHEMA)
    _forced_json_tool(provider.completions()[-1])
    row = book.df.iloc[-1]
    assert (row.status, row.error_type) == ("error", "schema_mismatch")
    assert row.response == '{"name": "Ada", "age": -3}'


def test_open_object_schema_on_new_claude_goes_as_the_forced_tool_too(
    provider: FakeProvider, book
) -> None:
    """An object left open (``additionalProperties: true``) is not Anthropic's native format:
    litellm uses the forced tool even on claude-sonnet-4-5, which is priced."""
    open_schema = {**PERSON_SCHEMA, "additionalProperties": True}
    answer = '{"name": "Ada", "age": 36, "field": "computing"}'
    provider.script(_json_tool_answer(answer, input_tokens=40, output_tokens=12))
    result = lm.complete("Who?", model="claude-sonnet-4-5", schema=open_schema)
    assert result.data == {"name": "Ada", "age": 36, "field": "computing"}
    assert _forced_json_tool(provider.completions()[-1])["additionalProperties"] is True
    assert abs(book.df.iloc[-1].cost_usd - (40 * 3e-6 + 12 * 15e-6)) < EXACT


def test_model_without_schema_support_gets_json_mode_and_the_schema_in_its_prompt(
    provider: FakeProvider,
) -> None:
    provider.script(ok('{"name": "Ada"}'))
    result = lm.complete("Who?", model="gpt-3.5-turbo", schema={"name": str}, system="Be brief.")
    assert result.data.name == "Ada"  # {"field": type} shorthand: a pydantic model
    body = provider.completions()[-1].body
    assert body["response_format"] == {"type": "json_object"}
    system = body["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Be brief.")
    assert '"required": ["name"]' in system["content"]  # the schema, in the prompt
    assert any("JSON mode with the schema in the system prompt" in n for n in result.notes)


def test_shorthand_takes_typing_constructs(provider: FakeProvider) -> None:
    provider.script(ok('{"tags": ["a", "b"], "nick": null}'))
    result = lm.complete("Tags?", model="gpt-4o", schema={"tags": list[str], "nick": str | None})
    assert (result.data.tags, result.data.nick) == (["a", "b"], None)
    sent = provider.completions()[-1].body["response_format"]["json_schema"]["schema"]
    assert sent["properties"]["tags"]["items"] == {"type": "string"}
    assert sent["required"] == ["tags", "nick"]


def test_json_mode_leaves_the_chat_history_as_it_was(provider: FakeProvider) -> None:
    """The schema goes in a copy of the system prompt: a second turn does not carry it twice."""
    reset_chat("schema-chat")
    for _ in range(2):
        provider.script(ok('{"name": "Ada"}'))
        lm.complete(
            "Who?",
            model="gpt-3.5-turbo",
            schema={"name": str},
            system="Be brief.",
            chat="schema-chat",
        )
    system = provider.completions()[-1].body["messages"][0]["content"]
    assert system.count("JSON schema") == 1
    assert chats()["schema-chat"][0] == {"role": "system", "content": "Be brief."}
    reset_chat("schema-chat")


class Pet(BaseModel):
    kind: str
    name: str


class Owner(BaseModel):
    name: str
    pets: list[Pet]


def test_nested_models_are_sent_closed_and_come_back_as_instances(provider: FakeProvider) -> None:
    provider.script(ok('{"name": "Ada", "pets": [{"kind": "cat", "name": "Tib"}]}'))
    result = lm.complete("Who?", model="gpt-4o", schema=Owner)
    assert result.data == Owner(name="Ada", pets=[Pet(kind="cat", name="Tib")])
    fmt = provider.completions()[-1].body["response_format"]["json_schema"]
    assert fmt["schema"]["$defs"]["Pet"]["additionalProperties"] is False
    assert fmt["strict"] is True


# --------------------------------------------------------------------------- invalid answers


def test_invalid_json_is_an_error_row_with_its_tokens_and_cost(
    provider: FakeProvider, book
) -> None:
    provider.script(ok("Sure! Ada, 36 years old.", input_tokens=200, output_tokens=7))
    with pytest.raises(errors.InvalidJSON) as caught:
        lm.complete("Who?", model="gpt-4o", schema=Person)
    err = caught.value
    assert isinstance(err, errors.ProviderError)
    assert "not valid JSON" in str(err) and "Sure! Ada" in str(err)
    assert err.result.text == "Sure! Ada, 36 years old."  # the raw answer is kept
    assert err.result.status == "error" and err.result.data is None
    row = book.df.iloc[-1]
    assert (row.status, row.error_type, row.finish_reason) == ("error", "invalid_json", "stop")
    assert (row.input_tokens, row.output_tokens, row.usage_source) == (200, 7, "provider")
    assert abs(row.cost_usd - _gpt4o_cost(200, 7)) < EXACT  # money was spent: never lost
    assert row.cost_usd == err.result.cost_usd > 0
    assert "not valid JSON" in row.error_message
    assert row.response == "Sure! Ada, 36 years old."


def test_json_that_does_not_match_is_a_schema_mismatch(provider: FakeProvider, book) -> None:
    provider.script(ok('{"name": "Ada", "age": -3}', input_tokens=30, output_tokens=8))
    with pytest.raises(errors.SchemaMismatch) as caught:
        lm.complete("Who?", model="gpt-4o", schema=PERSON_SCHEMA)
    assert "at age" in str(caught.value) and "-3 is less than the minimum of 0" in str(caught.value)
    assert caught.value.result.text == '{"name": "Ada", "age": -3}'
    row = book.df.iloc[-1]
    assert (row.status, row.error_type) == ("error", "schema_mismatch")
    assert abs(row.cost_usd - _gpt4o_cost(30, 8)) < EXACT

    provider.script(ok('{"name": "Ada", "age": "old"}'))
    with pytest.raises(errors.SchemaMismatch, match="age: Input should be a valid integer"):
        lm.complete("Who?", model="gpt-4o", schema=Person)


def test_an_answer_cut_at_max_tokens_says_to_raise_it(provider: FakeProvider, book) -> None:
    provider.script(
        ok('{"name": "Ada", "ag', input_tokens=40, output_tokens=12, finish_reason="length")
    )
    with pytest.raises(errors.InvalidJSON) as caught:
        lm.complete("Who?", model="gpt-4o", schema=Person, max_tokens=12)
    message = str(caught.value)
    assert "The answer was cut" in message
    assert "stopped at max_tokens (12): raise it, e.g. --max-tokens 24" in message
    assert caught.value.result.truncated  # the provider's reason is kept: the footer says it
    row = book.df.iloc[-1]
    assert row.error_type == "invalid_json" and row.output_tokens == 12
    assert row.finish_reason == "length"
    assert abs(row.cost_usd - _gpt4o_cost(40, 12)) < EXACT


# --------------------------------------------------------------------------- bad schemas


@pytest.mark.parametrize(
    ("schema", "fix"),
    [
        (Person(name="a", age=1), "pass the class itself, schema=Person"),
        (42, "must be a pydantic model class or a JSON schema dict, not int"),
        ({"type": "objekt"}, "is not a valid JSON schema"),
        ({"type": "object", "properties": {"when": {"type": "string", "x": object()}}}, "JSON"),
    ],
)
def test_a_bad_schema_is_a_usage_problem_and_nothing_is_sent(
    provider: FakeProvider, book, schema: object, fix: str
) -> None:
    with pytest.raises(errors.UsageProblem, match="schema=") as caught:
        lm.complete("Who?", model="gpt-4o", schema=schema)
    assert fix in str(caught.value)
    assert provider.completions() == []
    assert len(book.df) == 0


# --------------------------------------------------------------------------- the magic


def test_magic_schema_shows_pretty_json_and_keeps_data(
    provider: FakeProvider, ip_ledger, book, front_end
) -> None:
    ip_ledger.run_line_magic("config", "LLMMagics.display_mode = 'handle'")
    ip_ledger.user_ns["Person"] = Person
    provider.script(ok(ADA, input_tokens=20, output_tokens=9))
    ip_ledger.run_cell("%%llm -m gpt-4o --schema Person -o who\nWho wrote the first program?")
    who = ip_ledger.user_ns["who"]
    assert who.data == Person(name="Ada", age=36)
    final = published(front_end)[-1]["data"]  # what the notebook keeps: ordinary output
    pretty = json.dumps({"name": "Ada", "age": 36}, indent=2)
    assert final["text/plain"] == pretty  # --schema implies -f json: pretty-printed
    assert final["text/markdown"].startswith(f"```json\n{pretty}\n```")
    assert provider.completions()[-1].body["response_format"]["json_schema"]["name"] == "Person"
    assert book.df.iloc[-1].status == "ok"


def test_magic_schema_invalid_answer_is_shown_and_recorded(
    provider: FakeProvider, ip_ledger, book, capsys
) -> None:
    ip_ledger.user_ns["Person"] = PERSON_SCHEMA
    provider.script(ok("no json here", input_tokens=20, output_tokens=3))
    ip_ledger.run_cell("%%llm -m gpt-4o --schema Person -o who\nWho?")
    out = capsys.readouterr()
    assert "InvalidJSON" in out.out + out.err
    assert ip_ledger.user_ns["who"].text == "no json here"
    assert book.df.iloc[-1].error_type == "invalid_json"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("", "no variable 'Nobody' in the notebook"),
        ("Nobody = 3", "schema= must be a pydantic model class or a JSON schema dict"),
    ],
)
def test_magic_bad_schema_is_one_usage_error_line(
    provider: FakeProvider, ip_ledger, book, capsys, setup: str, message: str
) -> None:
    from IPython.core.error import UsageError

    if setup:
        ip_ledger.run_cell(setup)
    result = ip_ledger.run_cell_as_user("%%llm -m gpt-4o --schema Nobody\nWho?")
    assert isinstance(result.error_in_exec, UsageError)
    assert message in str(result.error_in_exec)
    assert provider.completions() == [] and len(book.df) == 0


# --------------------------------------------------------------------------- the local model


@pytest.mark.local_model
def test_local_model_answers_valid_json_by_grammar(local_model, book) -> None:
    """llama.cpp constrains SmolLM2's sampling with a grammar built from the schema: even a
    135M model answers JSON that validates."""
    result = lm.complete(
        "Invent a person: give a name and an age.",
        model="local",
        schema={"name": str, "age": int},
        max_tokens=64,
    )
    assert result.status == "ok", result.error
    assert isinstance(result.data.name, str) and result.data.name.strip()
    assert isinstance(result.data.age, int)
    assert json.loads(result.text) == result.data.model_dump()
    row = book.df.iloc[-1]
    assert row.status == "ok" and row.provider == "local" and row.cost_usd == 0.0


@pytest.mark.local_model
def test_local_model_cut_by_max_tokens_is_invalid_json_with_the_hint(local_model, book) -> None:
    with pytest.raises(errors.InvalidJSON, match="raise it, e.g. --max-tokens 8") as caught:
        lm.complete(
            "Invent a person: give a name and an age.",
            model="local",
            schema=PERSON_SCHEMA,
            max_tokens=4,
        )
    assert caught.value.result.output_tokens > 0
    row = book.df.iloc[-1]
    assert (row.status, row.error_type, row.provider) == ("error", "invalid_json", "local")

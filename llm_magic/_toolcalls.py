"""Tool calling's plain parts: the tools a request offers, and the calls an answer makes.

:func:`tools_of` turns what the user passed (``tools=[...]``: OpenAI-style JSON-schema tools,
their bare ``{name, description, parameters}`` form, or plain Python functions whose schema
pydantic builds from the signature, the docstring giving the descriptions) into :class:`Tool`
objects, or raises :class:`UsageProblem` naming the fix. :class:`ToolDelta` is one piece of a
tool call as a stream carries it (the gateway yields them beside text); :class:`ToolCalls`
gathers the pieces of one answer and parses them. Base layer: imports only :mod:`errors`.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageProblem

__all__ = ["Tool", "ToolDelta", "ToolCalls", "ToolEvent", "tools_of", "tool_schema", "show_call"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what OpenAI and Anthropic accept as a tool name
_PARAM_DOC = re.compile(r"^\s*(?::param\s+)?(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


@dataclass(frozen=True)
class Tool:
    """One tool offered to the model: its OpenAI-style schema and, for a Python function, the
    function that runs it."""

    name: str
    schema: dict[str, Any]  # {"type": "function", "function": {name, description, parameters}}
    fn: Callable[..., Any] | None = None


@dataclass(frozen=True)
class ToolDelta:
    """A piece of a tool call as it streams: the call's ``index`` in the answer, and whatever
    this piece carries (the id and name come first, the JSON arguments in pieces)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class ToolEvent:
    """What a cell display hears about a tool call: while it forms (``arguments`` so far),
    and once run (``output``). ``round`` counts the requests of a ``run_tools`` loop from 1."""

    round: int
    index: int
    name: str
    arguments: str
    output: str | None = None
    id: str = ""  # the provider's id for the call ("" until it has sent one)


@dataclass
class _Draft:
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class ToolCalls:
    """The tool calls of one answer, gathered from its :class:`ToolDelta` pieces."""

    drafts: dict[int, _Draft] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.drafts)

    def add(self, delta: ToolDelta) -> _Draft:
        draft = self.drafts.setdefault(delta.index, _Draft())
        draft.id = delta.id or draft.id
        draft.name = delta.name or draft.name
        draft.arguments += delta.arguments or ""
        return draft

    def clear(self) -> None:
        self.drafts.clear()

    def arguments(self) -> str:
        """Every call's arguments text, as written (for an estimate of the output tokens)."""
        return "".join(d.arguments for d in self.drafts.values())

    def parsed(self) -> list[dict[str, Any]] | None:
        """``[{id, name, arguments}]`` with ``arguments`` a dict (None when there were none).
        Arguments that are not a JSON object (a cut stream) stay as text in ``raw_arguments``,
        with ``arguments`` empty."""
        if not self.drafts:
            return None
        calls = []
        for index in sorted(self.drafts):
            d = self.drafts[index]
            call: dict[str, Any] = {"id": d.id, "name": d.name, "arguments": {}}
            try:
                args = json.loads(d.arguments) if d.arguments.strip() else {}
            except ValueError:
                args = None
            if isinstance(args, dict):
                call["arguments"] = args
            else:
                call["raw_arguments"] = d.arguments
            calls.append(call)
        return calls


def show_call(call: dict[str, Any]) -> str:
    """``⚙ get_weather({"city": "Paris"})``: one parsed call as a line."""
    args = call.get("raw_arguments")
    if args is None:
        args = json.dumps(call.get("arguments") or {}, ensure_ascii=False)
    return f"⚙ {call.get('name', '?')}({args})"


def tool_schema(tool: Any) -> dict[str, Any]:
    """The schema llm_magic sends for ``tool`` (a Python function or a JSON-schema tool):
    ``{"type": "function", "function": {name, description, parameters}}``."""
    return tools_of([tool])[0].schema


def tools_of(tools: Any, *, runnable: bool = False) -> list[Tool]:
    """The tools of ``tools=[...]``; :class:`UsageProblem` for anything that is not a tool,
    a name used twice, or (``runnable``) a JSON-schema tool with no Python function to run."""
    if tools is None:
        return []
    if callable(tools) or isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, (list, tuple)):
        raise UsageProblem(
            f"tools must be a list of Python functions or JSON-schema tools, not "
            f"{type(tools).__name__}: e.g. tools=[get_weather]"
        )
    out = [_tool(t) for t in tools]
    names = [t.name for t in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageProblem(f"Tool name {twice[0]!r} is given twice: give each tool its own name")
    if runnable:
        for t in out:
            if t.fn is None:
                raise UsageProblem(
                    f"Tool {t.name!r} is a JSON schema with no Python function, so it cannot be "
                    "run: pass the function itself in tools=[...], or drop run_tools/--tools"
                )
    return out


def _tool(item: Any) -> Tool:
    if isinstance(item, dict):
        return _schema_tool(item)
    if callable(item) and not isinstance(item, type):
        return _function_tool(item)
    raise UsageProblem(
        f"{item!r} is not a tool: pass a Python function, or a JSON-schema tool "
        '{"type": "function", "function": {"name": …, "description": …, "parameters": {…}}}'
    )


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise UsageProblem(
            f"{what} has the tool name {name!r}: a tool name is 1-64 letters, digits, _ or -"
            " (a def'd function, not a lambda)"
        )
    return name


def _schema_tool(item: dict[str, Any]) -> Tool:
    spec = item.get("function") if item.get("type") == "function" else item
    if not isinstance(spec, dict) or "name" not in spec:
        raise UsageProblem(
            f"The JSON-schema tool {str(item)[:80]} has no name: write "
            '{"type": "function", "function": {"name": …, "description": …, "parameters": {…}}}'
        )
    name = _check_name(spec["name"], "A JSON-schema tool")
    params = spec.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(params, dict) or params.get("type", "object") != "object":
        raise UsageProblem(
            f'Tool {name!r}: "parameters" must be a JSON schema of an object, e.g. '
            '{"type": "object", "properties": {"city": {"type": "string"}}}'
        )
    function = {"name": name, "description": str(spec.get("description") or ""), **spec}
    function["parameters"] = params
    return Tool(name, {"type": "function", "function": function})


def _function_tool(fn: Callable[..., Any]) -> Tool:
    name = _check_name(getattr(fn, "__name__", None), f"The function {fn!r}")
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise UsageProblem(
                f"Tool {name!r}: parameter {p.name!r} is {p.kind.description}; a tool's model "
                "passes named arguments only: give each one its own named parameter"
            )
    from pydantic import TypeAdapter

    problem: str | None = None
    try:
        params = TypeAdapter(fn).json_schema()  # type: ignore[arg-type]  # a callable: its args
    except Exception as exc:  # a type pydantic cannot describe
        problem = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    if problem is not None:
        raise UsageProblem(
            f"Tool {name!r}: no JSON schema for its parameters ({problem}): annotate them with "
            "JSON-like types (str, int, float, bool, list, dict, a pydantic model)"
        )
    summary, described = _docstring(fn)
    for pname, prop in params.get("properties", {}).items():
        prop.pop("title", None)
        if pname in described:
            prop.setdefault("description", described[pname])
    params.pop("title", None)
    params.pop("additionalProperties", None)
    function = {"name": name, "description": summary, "parameters": params}
    return Tool(name, {"type": "function", "function": function}, fn)


def _docstring(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """(summary, {parameter: description}) of a docstring: its first paragraph, and the lines
    ``name: text`` / ``name (type): text`` (Google ``Args:``) or ``:param name: text``."""
    doc = inspect.getdoc(fn) or ""
    summary = doc.split("\n\n", 1)[0].strip().replace("\n", " ")
    params = set(inspect.signature(fn).parameters)
    described: dict[str, str] = {}
    for line in doc.splitlines()[1:]:
        m = _PARAM_DOC.match(line)
        if m and m.group(1) in params:
            described.setdefault(m.group(1), m.group(2).strip())
    return summary, described

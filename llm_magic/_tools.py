"""Running the tools a model asks for: ``run_tools=True`` (and ``%%llm --tools VAR``).

:class:`ToolRun` drives a planned request as :class:`~llm_magic._attempt.Run` does, round after
round: when an answer holds tool calls, it runs the Python functions with the parsed
arguments, appends the assistant's message (with its tool calls) and one ``tool`` message per
result, and asks again, at most ``max_tool_rounds`` times. Every round is its own ledger row
(one :class:`Run`), all under the plan's ``trace_id``. A tool that raises is reported to the
model as its result (``error: ValueError: …``), not a crash. Pipeline layer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator
from typing import Any

from . import _plan
from ._attempt import Run
from ._toolcalls import ToolEvent, show_call
from .result import Result

__all__ = ["ToolRun", "run_tool"]

SHOWN_OUTPUT = 200  # characters of a tool's output said in the answer's notes


class ToolRun:
    """A planned request with ``run_tools``: its rounds in turn until an answer asks for no
    tool (or the round limit stops it). Iterated, ``interrupted()``, ``reading`` and ``result``
    as a :class:`Run` is; ``result`` is the last round's, its notes saying how many ran."""

    def __init__(self, plan: _plan.Plan) -> None:
        self.plan = plan
        self.run = Run(plan)
        self.result: Result | None = None
        self.ran = 0  # tool calls run, over every round

    @property
    def reading(self) -> Any:
        return self.run.reading

    def interrupted(self) -> Result | None:
        self.result = self.run.interrupted()
        return self.result

    def chunks(self) -> Generator[str, None, None]:
        plan = self.plan
        chain = list(plan.chain)
        limit = plan.req.max_tool_rounds
        while True:
            yield from self.run.chunks()
            result = self.run.result
            assert result is not None
            calls = result.tool_calls or []
            if not calls:
                break
            if plan.tool_round >= limit:
                names = ", ".join(str(c.get("name")) for c in calls)
                result.notes.append(
                    f"Stopped at the tool-round limit ({limit} rounds): the model still asked "
                    f"for {names}, not run; raise max_tool_rounds (--max-tool-rounds) to go on"
                )
                _plan.remember(plan.req, plan.new, result.text)
                break
            plan.new = [*plan.new, _assistant(result.text, calls), *self._run_all(calls)]
            plan.tool_round += 1
            plan.chain = list(chain)  # each round may fall back along the whole chain
            plan.prepared_at = time.perf_counter()
            self.run = Run(plan)
        result.notes.append(
            f"{plan.tool_round} round{'s' if plan.tool_round > 1 else ''} ran "
            f"({self.ran} tool call{'s' if self.ran != 1 else ''} run)"
        )
        self.result = result

    def _run_all(self, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run each call; one ``tool`` message per call (said in the notes and to the display)."""
        fns = {t.name: t.fn for t in self.plan.tools}
        out = []
        for index, call in enumerate(calls):
            output = run_tool(fns.get(str(call.get("name"))), call)
            self.ran += 1
            shown = output if len(output) <= SHOWN_OUTPUT else output[: SHOWN_OUTPUT - 1] + "…"
            self.plan.notes.append(f"{show_call(call)} → {shown}")
            args = call.get("raw_arguments") or json.dumps(call.get("arguments") or {})
            event = ToolEvent(self.plan.tool_round, index, str(call.get("name")), args, output)
            self.plan.on_tool(event)
            out.append({"role": "tool", "tool_call_id": call.get("id"), "content": output})
        return out


def run_tool(fn: Callable[..., Any] | None, call: dict[str, Any]) -> str:
    """Run one parsed call; its result as the text sent back. A failure (no such tool, bad
    arguments, the function raised) is reported as ``error: Type: message``."""
    if fn is None:
        return f"error: there is no tool named {call.get('name')!r}"
    if "raw_arguments" in call:
        return f"error: the arguments are not a JSON object: {call['raw_arguments']!r}"
    from pydantic import validate_call

    try:
        value = validate_call(fn)(**(call.get("arguments") or {}))
    except Exception as exc:  # reported to the model, which may try again
        said = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        return f"error: {type(exc).__name__}: {said}" if said else f"error: {type(exc).__name__}"
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:  # a circular structure
        return str(value)


def _assistant(text: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant's message that asked for ``calls`` (OpenAI's shape; litellm translates it
    to Anthropic's ``tool_use`` blocks)."""
    return {
        "role": "assistant",
        "content": text or None,
        "tool_calls": [
            {
                "id": c.get("id"),
                "type": "function",
                "function": {
                    "name": c.get("name"),
                    "arguments": c.get("raw_arguments")
                    or json.dumps(c.get("arguments") or {}, ensure_ascii=False),
                },
            }
            for c in calls
        ],
    }

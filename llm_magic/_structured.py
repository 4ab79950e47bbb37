"""Structured output: ``schema=`` (a pydantic model class or a JSON schema) → ``Result.data``.

:func:`parse` checks the schema before anything is sent (a bad one is a
:class:`~llm_magic.errors.UsageProblem`); :func:`extra` puts it in a leg's request: OpenAI's
``response_format`` ``json_schema`` where litellm's map says the model supports it (litellm sends
it on to Anthropic as ``output_format`` or a forced tool), llama.cpp's grammar-constrained
``json_object`` on the embedded model, else JSON mode with the schema in the system prompt;
:func:`check` validates the answer: the object, or :class:`~llm_magic.errors.InvalidJSON` /
:class:`~llm_magic.errors.SchemaMismatch`, whose message says what to change.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import errors, gateway
from .errors import UsageProblem

__all__ = ["Schema", "parse", "extra", "check", "validated", "answered"]

_FENCE = re.compile(r"^```[A-Za-z]*\s*\n(.*?)\n?```$", re.DOTALL)
_PREVIEW = 120


@dataclass(frozen=True)
class Schema:
    """A checked schema: its name, the JSON schema sent, and how to validate the answer."""

    name: str
    sent: dict[str, Any]  # objects closed (additionalProperties: false) unless they say otherwise
    strict: bool  # OpenAI's strict mode: every object closed, every property required
    model: Any = None  # the pydantic class, when one was given
    original: dict[str, Any] | None = None  # the user's JSON schema, when one was given


def parse(schema: Any) -> Schema | None:
    """``schema`` checked: a pydantic ``BaseModel`` subclass, a JSON schema dict, or a shorthand
    dict of Python types (``{"name": str, "tags": list[str]}``); None for None."""
    if schema is None:
        return None
    from pydantic import BaseModel

    if isinstance(schema, dict) and schema and not any(map(_is_json, schema.values())):
        schema = _shorthand(schema)  # {"name": str, "tags": list[str]}: no JSON value in it
    if isinstance(schema, BaseModel):
        raise UsageProblem(
            f"schema= got an instance of {type(schema).__name__}: pass the class itself, "
            f"schema={type(schema).__name__}"
        )
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        sent = schema.model_json_schema()
        return _made(schema.__name__, sent, model=schema)
    if isinstance(schema, dict):
        _check_json_schema(schema)
        return _made(str(schema.get("title") or "answer"), schema, original=schema)
    raise UsageProblem(
        f"schema= must be a pydantic model class or a JSON schema dict, not "
        f"{type(schema).__name__}: e.g. schema={{'type': 'object', 'properties': "
        "{'name': {'type': 'string'}}}"
    )


def _is_json(value: Any) -> bool:
    return value is None or isinstance(value, (dict, list, str, int, float))


def _shorthand(fields: dict[str, Any]) -> Any:
    from pydantic import create_model

    typed: dict[str, Any] = {str(k): (v, ...) for k, v in fields.items()}
    try:
        return create_model("Answer", **typed)
    except Exception as exc:
        raise UsageProblem(
            f"schema= shorthand {fields!r} is not a set of typed fields ({exc}): use a "
            "pydantic model class or a JSON schema dict"
        ) from None


def _check_json_schema(schema: dict[str, Any]) -> None:
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    problem = None
    try:
        json.dumps(schema)
        validator_for(schema).check_schema(schema)
    except (TypeError, ValueError) as exc:
        problem = f"schema= is not JSON ({exc}): use JSON types only (str, int, list, dict, …)"
    except SchemaError as exc:
        problem = (
            f"schema= is not a valid JSON schema: {exc.message} (at "
            f"{'/'.join(map(str, exc.path)) or 'the root'}): fix it, e.g. "
            "{'type': 'object', 'properties': {'name': {'type': 'string'}}}"
        )
    if problem:
        raise UsageProblem(problem)


def _made(
    name: str, schema: dict[str, Any], *, model: Any = None, original: dict[str, Any] | None = None
) -> Schema:
    sent = copy.deepcopy(schema)
    strict = True
    for node in _objects(sent):
        node.setdefault("additionalProperties", False)
        props = node.get("properties") or {}
        if node["additionalProperties"] is not False or set(node.get("required", ())) != set(props):
            strict = False
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "answer"
    return Schema(safe, sent, strict, model=model, original=original)


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every object schema inside ``node`` (properties, items, $defs, anyOf, …)."""
    if isinstance(node, list):
        for item in node:
            yield from _objects(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "object" or "properties" in node:
        yield node
    for key in ("properties", "$defs", "definitions", "patternProperties"):
        for sub in (node.get(key) or {}).values():
            yield from _objects(sub)
    for key in ("items", "prefixItems", "anyOf", "oneOf", "allOf", "not", "additionalProperties"):
        yield from _objects(node.get(key))


def extra(
    spec: Schema, provider: str, model: str, messages: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]], str | None]:
    """(request parameters, messages, note) for ``spec`` on a leg to ``model``. Where the model
    has no schema support, JSON mode, and the messages (copies) carry the schema in their system
    prompt, which the note says."""
    if provider == "local":  # llama-cpp-python's server: a grammar built from the schema
        return {"response_format": {"type": "json_object", "schema": spec.sent}}, messages, None
    if gateway.supports_response_schema(model):
        fmt = {"name": spec.name, "schema": spec.sent, "strict": spec.strict}
        return {"response_format": {"type": "json_schema", "json_schema": fmt}}, messages, None
    ask = (
        "Answer with a single JSON value only, no prose and no code fence, valid against this "
        f"JSON schema:\n{json.dumps(spec.sent, ensure_ascii=False)}"
    )
    sent = [dict(m) for m in messages]  # the chat history's own dicts stay as they are
    system = next((m for m in sent if m.get("role") == "system"), None)
    if system is not None:
        system["content"] = f"{system.get('content') or ''}\n\n{ask}".strip()
    else:
        sent.insert(0, {"role": "system", "content": ask})
    note = (
        f"{model} has no structured-output support in litellm's map: sent JSON mode with the "
        "schema in the system prompt (the answer is still validated)"
    )
    return {"response_format": {"type": "json_object"}}, sent, note


def check(spec: Schema, text: str, finish_reason: str | None, max_tokens: int) -> Any:
    """The validated object of ``text`` (a pydantic instance, or the parsed JSON), or raises
    :class:`errors.InvalidJSON` / :class:`errors.SchemaMismatch`."""
    raw = text.strip()
    fenced = _FENCE.match(raw)
    if fenced:
        raw = fenced.group(1).strip()
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise errors.InvalidJSON(_why_invalid(text, str(exc), finish_reason, max_tokens)) from None
    try:
        return _validated(spec, value)
    except ValueError as exc:  # pydantic's ValidationError and ours are ValueErrors
        raise errors.SchemaMismatch(
            f"The answer is JSON but does not match the schema {spec.name}: {exc}. "
            + _fix(finish_reason, max_tokens)
        ) from None


def validated(
    spec: Schema | None, text: str, finish_reason: str | None, max_tokens: int
) -> tuple[Any, errors.ProviderError | None]:
    """(the object, None), or (None, the error) for an answer that fails :func:`check`; (None,
    None) without a schema."""
    if spec is None:
        return None, None
    try:
        return check(spec, text, finish_reason, max_tokens), None
    except (errors.InvalidJSON, errors.SchemaMismatch) as exc:
        return None, exc


def answered(err: BaseException | None) -> bool:
    """Whether ``err`` is an answer that failed its schema (the provider did finish)."""
    return isinstance(err, (errors.InvalidJSON, errors.SchemaMismatch))


def _validated(spec: Schema, value: Any) -> Any:
    if spec.model is not None:
        from pydantic import ValidationError as Invalid

        try:
            return spec.model.model_validate(value)
        except Invalid as exc:
            each = [
                f"{'.'.join(map(str, e['loc'])) or 'the root'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            ]
            raise ValueError("; ".join(each)) from None
    from jsonschema import ValidationError
    from jsonschema.validators import validator_for

    schema = spec.original or spec.sent
    try:
        validator_for(schema)(schema).validate(value)
    except ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "the root"
        raise ValueError(f"{exc.message} (at {where})") from None
    return value


def _why_invalid(text: str, problem: str, finish_reason: str | None, max_tokens: int) -> str:
    shown = text.strip()
    shown = shown if len(shown) <= _PREVIEW else shown[: _PREVIEW - 3] + "..."
    head = "The answer was cut" if finish_reason == "length" else "The answer is not valid JSON"
    return f"{head} ({problem}; it begins {shown!r}). " + _fix(finish_reason, max_tokens)


def _fix(finish_reason: str | None, max_tokens: int) -> str:
    if finish_reason == "length":
        return (
            f"It stopped at max_tokens ({max_tokens}): raise it, e.g. --max-tokens "
            f"{2 * max_tokens} (or max_tokens={2 * max_tokens})"
        )
    return "Try again, simplify the schema, or use a model with structured-output support"

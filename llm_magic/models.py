"""From the name a user writes (``local``, an alias, a LiteLLM id, a task) to where the call
goes: aliases, the routing table of tasks, and :func:`resolve` to a :class:`Route`."""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import config, gateway, keys, local
from .config import KEYLESS, Settings
from .errors import UsageProblem
from .record import Book
from .secrets import Secret, mask_url

__all__ = [
    "Route",
    "resolve",
    "BUILTIN_ALIASES",
    "all_aliases",
    "follow_alias",
    "add_alias",
    "ROUTES",
    "route_for_task",
]

# Short names that work out of the box; `%llm alias NAME MODEL` adds more (kept in the ledger).
BUILTIN_ALIASES = {
    "local": local.LOCAL_ALIAS,
    "sonnet": "claude-sonnet-4-5",
    "haiku": "claude-haiku-4-5",
    "gpt4o": "gpt-4o",
    "gpt4o-mini": "gpt-4o-mini",
}


@dataclass
class Route:
    """Where one call goes. ``model`` is the name recorded and priced; ``litellm_model`` is sent."""

    requested: str
    model: str
    provider: str
    litellm_model: str
    api_base: str | None = None
    key: Secret | None = None
    context_window: int | None = None
    via_proxy: bool = False
    max_output: int | None = None  # the model's largest max_tokens, where litellm knows it

    def __repr__(self) -> str:
        return (
            f"Route({self.requested!r} → {self.litellm_model!r}, provider={self.provider!r}, "
            f"api_base={mask_url(self.api_base)!r}, key={self.key!r})"
        )

    @property
    def key_alias(self) -> str | None:
        return self.key.alias if self.key is not None else None

    def base_url(self) -> str | None:
        """The base URL to send to: ``api_base``, or for the embedded model its server's URL,
        asked for now — which starts the server if it is not running — and kept. The sender
        calls this; :func:`resolve` does not, so validating a name never starts a server."""
        if self.api_base is None and self.provider == "local":
            self.api_base = f"{local.server().url()}/v1"
        return self.api_base


def all_aliases(ledger: Book) -> dict[str, str]:
    return {**BUILTIN_ALIASES, **ledger.aliases()}


def follow_alias(name: str, aliases: dict[str, str]) -> str:
    """Follow ``name`` through ``aliases`` to the end of its chain (``a → b → gpt-4o``);
    :class:`UsageProblem` for a cycle."""
    seen = [name]
    while name in aliases and aliases[name] != name:
        name = aliases[name]
        if name in seen:
            loop = " → ".join([*seen[seen.index(name) :], name])
            raise UsageProblem(
                f"The aliases make a cycle ({loop}): redefine one with %llm alias NAME MODEL"
            )
        seen.append(name)
    return name


def add_alias(ledger: Book, name: str, model: str) -> str:
    """Keep ``name`` → ``model`` in the ledger unless it would make a cycle; returns the model
    the alias finally resolves to."""
    name, model = name.strip(), model.strip()
    if not name or not model or "," in name:
        raise UsageProblem("%llm alias NAME MODEL: e.g. %llm alias fast gpt-4o-mini")
    aliases = {**all_aliases(ledger), name: model}
    if model == name and name != local.LOCAL_ALIAS:
        raise UsageProblem(f"%llm alias {name} {model}: an alias cannot point to itself")
    try:
        target = follow_alias(name, aliases)
    except UsageProblem:
        raise UsageProblem(
            f"%llm alias {name} {model} would make a cycle ({name} → {model} → … → {name}): "
            "point it at a model id such as gpt-4o-mini"
        ) from None
    ledger.set_alias(name, model)
    return target


def resolve(name: str, settings: Settings, ledger: Book) -> Route:
    """Resolve ``name``; :class:`UsageProblem` (nothing sent) for unknown models or missing keys."""
    requested = name.strip()
    if not requested:
        raise UsageProblem("No model given: use -m MODEL, e.g. -m local or -m gpt-4o")
    model = follow_alias(requested, all_aliases(ledger))
    if model == local.LOCAL_ALIAS:
        return Route(  # its server's URL: asked for when the call is sent (Route.base_url)
            requested=requested,
            model=f"local/{local.SERVED_NAME}",
            provider="local",
            litellm_model=f"openai/{local.SERVED_NAME}",
            api_base=None,
            key=None,
            context_window=local.CONTEXT_WINDOW,
        )
    if settings.api_base:
        # Everything through an OpenAI-compatible gateway (e.g. a LiteLLM proxy) that holds the
        # keys: the proxy knows model names litellm may not (its own model_list), so any name goes.
        try:
            provider = gateway.provider_of(model)
        except UsageProblem:
            provider = "proxy"
        info = (gateway.model_info(model) or {}) if provider != "proxy" else {}
        return Route(
            requested=requested,
            model=model,
            provider=provider,
            litellm_model=f"openai/{model}",
            api_base=settings.api_base,
            key=settings.api_key,
            context_window=info.get("max_input_tokens"),
            via_proxy=True,
            max_output=info.get("max_output_tokens") or None,
        )
    provider = gateway.provider_of(model)
    info = gateway.model_info(model) or {}
    window = info.get("max_input_tokens") or info.get("max_tokens")
    most = info.get("max_output_tokens")
    api_base = None
    key = None
    if provider in ("ollama", "ollama_chat"):
        api_base = settings.ollama_api_base
    elif provider not in KEYLESS:
        key = keys.pool(settings, provider).next()
        if key is None:
            env = settings.key_env_name(provider)
            raise UsageProblem(
                f"No key for {provider}: set {env} (or {env}S=k1,k2) in .env or the environment"
            )
    return Route(
        requested=requested,
        model=model,
        provider=provider,
        litellm_model=model,
        api_base=api_base,
        key=key,
        context_window=int(window) if window else None,
        max_output=int(most) if most else None,
    )


# The decision framework: the first model of a task's list that has a key answers; else local.
ROUTES: dict[str, list[str]] = {
    "reason": ["claude-opus-4-5", "o1"],
    "standard": ["claude-sonnet-4-5", "gpt-4o"],
    "classify": ["claude-haiku-4-5", "gpt-4o-mini"],
    "private": ["local"],
    "generate": ["claude-sonnet-4-5", "gpt-4o"],
}


def _routes() -> dict[str, list[str]]:
    """:data:`ROUTES`, with each task's list replaced by ``LLM_MAGIC_ROUTE_<TASK>`` if set."""
    table = {task: list(models) for task, models in ROUTES.items()}
    for task in table:
        raw = os.environ.get(f"LLM_MAGIC_ROUTE_{task.upper()}", "")
        if raw.strip():
            table[task] = [m.strip() for m in raw.split(",") if m.strip()]
    return table


def route_for_task(task: str, cfg: Settings | None = None) -> str:
    """The model the routing table picks for ``task`` (first with a key present, else local)."""
    cfg = cfg or config.settings()
    table = _routes()
    if task not in table:
        raise UsageProblem(f"Unknown task {task!r}: use one of {', '.join(table)}")
    for model in table[task]:
        if model == "local":
            return model
        try:
            provider = gateway.provider_of(model)
        except UsageProblem:
            continue
        if provider in KEYLESS or cfg.api_base or keys.pool(cfg, provider):
            return model
    return "local"

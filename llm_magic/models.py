"""From the name a user writes (``local``, an alias, a LiteLLM id) to where the call goes."""

from __future__ import annotations

from dataclasses import dataclass

from . import gateway, local
from .config import KEYLESS, Settings
from .errors import UsageProblem
from .secrets import Secret
from .store import Ledger

__all__ = ["Route", "resolve", "BUILTIN_ALIASES", "all_aliases"]

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

    @property
    def key_alias(self) -> str | None:
        return self.key.alias if self.key is not None else None


def all_aliases(ledger: Ledger) -> dict[str, str]:
    return {**BUILTIN_ALIASES, **ledger.aliases()}


def resolve(name: str, settings: Settings, ledger: Ledger) -> Route:
    """Resolve ``name``; :class:`UsageProblem` (nothing sent) for unknown models or missing keys."""
    requested = name.strip()
    if not requested:
        raise UsageProblem("No model given: use -m MODEL, e.g. -m local or -m gpt-4o")
    model = all_aliases(ledger).get(requested, requested)
    if model == local.LOCAL_ALIAS:
        url = local.server().url()
        return Route(
            requested=requested,
            model=f"local/{local.SERVED_NAME}",
            provider="local",
            litellm_model=f"openai/{local.SERVED_NAME}",
            api_base=f"{url}/v1",
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
        )
    provider = gateway.provider_of(model)
    info = gateway.model_info(model) or {}
    window = info.get("max_input_tokens") or info.get("max_tokens")
    api_base = None
    key = None
    if provider in ("ollama", "ollama_chat"):
        api_base = settings.ollama_api_base
    elif provider not in KEYLESS:
        pool = settings.keys(provider)
        key = pool.next()
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
    )

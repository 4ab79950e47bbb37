"""Settings from the environment (and a ``.env`` file), under the names users already write.

Nothing here imports litellm, pandas or IPython: reading settings must stay cheap.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import UsageProblem
from .secrets import MaskedURL, Secret, mask_url, register_url

__all__ = [
    "Settings",
    "ProviderKeys",
    "settings",
    "reload_settings",
    "default_ledger_path",
    "check_number",
    "override",
    "clear_overrides",
    "provider_concurrency",
]

# Providers whose keys we look up, and the environment prefix each one uses.
KEY_PREFIX = {
    "openai": "OPENAI",
    "anthropic": "ANTHROPIC",
    "gemini": "GEMINI",
    "mistral": "MISTRAL",
    "groq": "GROQ",
    "cohere": "COHERE",
    "deepseek": "DEEPSEEK",
    "xai": "XAI",
    "together_ai": "TOGETHERAI",
    "openrouter": "OPENROUTER",
}
# Providers that need no key.
KEYLESS = {"ollama", "ollama_chat", "local", "llama_cpp", "hosted_vllm", "lm_studio"}

_dotenv_loaded = False


def _load_dotenv() -> None:
    global _dotenv_loaded
    if _dotenv_loaded:
        return
    try:
        from dotenv import find_dotenv, load_dotenv
    except ImportError:  # pragma: no cover - python-dotenv is a dependency
        _dotenv_loaded = True
        return
    path = find_dotenv(usecwd=True)
    if not path:
        _dotenv_loaded = True
        return
    problem = None
    try:
        load_dotenv(path, override=False)
    except UnicodeDecodeError as exc:
        problem = (
            f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}): save it as UTF-8 "
            "(e.g. `iconv -f latin1 -t utf-8`), or move it aside"
        )
    if problem is not None:  # raised outside the handler: no decoder traceback behind it
        raise UsageProblem(problem)  # and again next time, until the file is fixed
    _dotenv_loaded = True


# What each numeric setting accepts: (lowest, lowest allowed?, highest, example, unit).
_LIMITS: dict[str, tuple[float, bool, float, str, str]] = {
    "DAILY_BUDGET_USD": (0.0, True, math.inf, "5.00", "dollars"),
    "MAX_COST_PER_REQUEST_USD": (0.0, True, math.inf, "0.50", "dollars"),
    "BUDGET_ALERT_THRESHOLD": (0.0, False, 1.0, "0.8", "a share of the budget"),
    "LLM_MAGIC_TIMEOUT_S": (0.0, False, math.inf, "120", "seconds"),
}


def _limit_text(low: float, closed: bool, high: float) -> str:
    if math.isinf(high):
        return f"{'>=' if closed else '>'} {low:g}"
    return f"in {'[' if closed else '('}{low:g}, {high:g}]"


def check_number(
    name: str, raw: object, *, where: str | None = None, fix: str | None = None
) -> float:
    """``raw`` as a float when it is finite and within the limits of setting ``name``;
    else :class:`UsageProblem` naming ``where`` (default: ``NAME='raw'``) and ``fix``.

    Prices, budgets and caps are finite and non-negative, the alert threshold is in (0, 1],
    the timeout is > 0: a NaN or an infinity is never silently accepted or replaced."""
    low, closed, high, example, unit = _LIMITS.get(
        name, (0.0, True, math.inf, "3", "dollars per million tokens")
    )
    shown = where or f"{name}={str(raw)!r}"
    fix = fix or f"set e.g. {name}={example} in .env or the environment"
    try:
        value = float(str(raw).strip())
    except ValueError:
        value = None
    bounds = _limit_text(low, closed, high)
    if value is None:
        problem = f"{shown} is not a number: {fix}"
    elif not math.isfinite(value):
        problem = f"{shown} is not a finite number ({unit} {bounds}): {fix}"
    elif value < low or (value == low and not closed) or value > high:
        problem = f"{shown} is out of range ({unit} {bounds}): {fix}"
    else:
        return value
    raise UsageProblem(problem)


def _float(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    return check_number(name, raw)


def _list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def default_ledger_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("llm_magic", appauthor=False)) / "ledger.sqlite"


@dataclass(frozen=True)
class ProviderKeys:
    """The keys of one provider as the environment gives them (:class:`Secret` only), and how
    they rotate. Their live state (turns, cool-downs) is :func:`llm_magic.keys.pool`'s."""

    provider: str
    keys: tuple[Secret, ...] = ()
    strategy: str = "round_robin"

    def __bool__(self) -> bool:
        return bool(self.keys)

    def __repr__(self) -> str:
        return f"ProviderKeys({self.provider}, {len(self.keys)} key(s), {self.strategy})"


def _text(name: str) -> str:
    return os.environ.get(name, "").strip()


ON_WORDS = frozenset({"1", "true", "yes", "on"})
OFF_WORDS = frozenset({"0", "false", "no", "off"})


def env_flag(name: str, default: bool) -> bool:
    """An on/off environment switch: ``1/true/yes/on`` or ``0/false/no/off`` (any case);
    ``default`` when unset. Another word counts as the opposite of ``default``."""
    word = _text(name).lower()
    if not word:
        return default
    return word not in OFF_WORDS if default else word in ON_WORDS


def _register_urls() -> None:
    for name, value in os.environ.items():
        if name in ("LLM_MAGIC_LEDGER", "OLLAMA_API_BASE") or name.endswith(
            ("_API_BASE", "_BASE_URL")
        ):
            register_url(value.strip())


def _secret_env(name: str) -> Secret | None:
    """The key in variable ``name`` as a :class:`Secret` (no caller holds the raw value)."""
    value = os.environ.get(name, "").strip()
    return Secret(value, name) if value else None


def _read_keys(provider: str) -> ProviderKeys:
    strategy = os.environ.get("LLM_MAGIC_KEY_STRATEGY", "round_robin").strip().lower()
    if strategy not in ("round_robin", "lru"):  # checked before any key is read
        raise UsageProblem(f"LLM_MAGIC_KEY_STRATEGY={strategy!r}: use round_robin or lru")
    prefix = KEY_PREFIX.get(provider, provider.upper())
    values: list[str] = []
    many = os.environ.get(f"{prefix}_API_KEYS", "")
    values += [v.strip() for v in many.split(",") if v.strip()]
    one = os.environ.get(f"{prefix}_API_KEY", "").strip()
    if one and one not in values:
        values.append(one)
    name = f"{prefix}_API_KEYS" if many.strip() else f"{prefix}_API_KEY"
    secrets = [
        Secret(v, f"{name}#{i + 1}" if len(values) > 1 else name) for i, v in enumerate(values)
    ]
    return ProviderKeys(provider, tuple(secrets), strategy)


@dataclass
class Settings:
    """Everything llm_magic reads from the environment, read once (see :func:`reload_settings`)."""

    default_model: str = "local"
    fallback_models: list[str] = field(default_factory=list)
    daily_budget_usd: float | None = None
    budget_alert_threshold: float = 0.8
    budget_downgrade_model: str | None = None
    max_cost_per_request_usd: float | None = None
    ledger: str = ""
    api_base: str | None = None
    api_key: Secret | None = None
    ollama_api_base: str = "http://localhost:11434"
    store_text: bool = True
    timeout_s: float = 120.0
    cache: bool = False  # LLM_MAGIC_CACHE: the response cache for temperature 0 calls
    _keys: dict[str, ProviderKeys] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        """Every setting, with URL passwords and query-string secrets masked (keys are
        :class:`Secret` and show only their alias)."""
        shown = []
        for f in fields(self):
            if not f.repr:
                continue
            value = getattr(self, f.name)
            if f.name in ("ledger", "api_base", "ollama_api_base") and value:
                value = mask_url(str(value))
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @classmethod
    def from_env(cls) -> Settings:
        # No local here holds os.environ or a key: a verbose traceback of a bad value below
        # prints the variables of the failing statement, and the environment holds the keys.
        _load_dotenv()
        _register_urls()  # their passwords are scrubbed from errors
        return cls(
            default_model=_text("DEFAULT_MODEL") or "local",
            fallback_models=_list("FALLBACK_MODELS"),
            daily_budget_usd=_float("DAILY_BUDGET_USD", None),
            budget_alert_threshold=_float("BUDGET_ALERT_THRESHOLD", 0.8) or 0.8,
            budget_downgrade_model=_text("BUDGET_DOWNGRADE_MODEL") or None,
            max_cost_per_request_usd=_float("MAX_COST_PER_REQUEST_USD", None),
            ledger=MaskedURL(_text("LLM_MAGIC_LEDGER") or str(default_ledger_path())),
            api_base=MaskedURL(_text("LLM_MAGIC_API_BASE")) or None,
            api_key=_secret_env("LLM_MAGIC_API_KEY"),
            ollama_api_base=MaskedURL(_text("OLLAMA_API_BASE") or "http://localhost:11434"),
            timeout_s=_float("LLM_MAGIC_TIMEOUT_S", 120.0) or 120.0,
            store_text=env_flag("LLM_MAGIC_STORE_TEXT", True),
            cache=env_flag("LLM_MAGIC_CACHE", False),
        )

    def keys(self, provider: str) -> ProviderKeys:
        """The keys of ``provider`` (read from the environment on first use); the pool that
        rotates them and remembers cool-downs is ``llm_magic.keys.pool(settings, provider)``."""
        if provider not in self._keys:
            self._keys[provider] = _read_keys(provider)
        return self._keys[provider]

    def key_env_name(self, provider: str) -> str:
        return f"{KEY_PREFIX.get(provider, provider.upper())}_API_KEY"


_settings: Settings | None = None
_settings_lock = threading.Lock()
_overrides: dict[str, object] = {}  # set in this process (``%llm budget 5``), over the environment
_ENV_NAME = {"timeout_s": "LLM_MAGIC_TIMEOUT_S"}  # a numeric setting's variable, when not NAME


def _read() -> Settings:
    cfg = Settings.from_env()
    for name, value in _overrides.items():
        setattr(cfg, name, value)
    return cfg


def settings() -> Settings:
    """The process-wide settings, read from the environment on first use, with the values set
    by :func:`override` laid over them."""
    global _settings
    with _settings_lock:
        if _settings is None:
            _settings = _read()
        return _settings


def reload_settings() -> Settings:
    """Read the environment again (after changing ``os.environ`` or ``.env``); values set by
    :func:`override` in this process still apply."""
    global _settings
    with _settings_lock:
        _settings = None  # a bad value is reported again next time, never the stale settings
        _settings = _read()
        return _settings


def override(**values: object) -> None:
    """Set settings for the rest of this process, over the environment: ``%llm budget 5`` is
    ``override(daily_budget_usd=5.0)``. Nothing is re-read, so nothing else changes (key pools
    keep their cool-downs). Numbers are checked as strictly as the environment's (``None``
    unsets an optional one); a bad value changes nothing."""
    known = {f.name for f in fields(Settings) if f.repr}
    checked: dict[str, object] = {}
    for name, value in values.items():
        if name not in known:
            raise TypeError(f"override(): no setting {name!r}; settings are {', '.join(known)}")
        env = _ENV_NAME.get(name, name.upper())
        checked[name] = check_number(env, value) if env in _LIMITS and value is not None else value
    with _settings_lock:
        _overrides.update(checked)
        if _settings is not None:
            for name, value in checked.items():
                setattr(_settings, name, value)


def clear_overrides() -> None:
    """Forget every :func:`override`: the settings are read from the environment again."""
    global _settings
    with _settings_lock:
        _overrides.clear()
        _settings = None


DEFAULT_CONCURRENCY = 8  # calls in flight per provider, unless LLM_MAGIC_CONCURRENCY[_X] says


def provider_concurrency(provider: str) -> int:
    """How many calls to ``provider`` may be in flight at once (``lm.experiment``):
    ``LLM_MAGIC_CONCURRENCY_<PROVIDER>`` (e.g. ``LLM_MAGIC_CONCURRENCY_OPENAI=4``), else
    ``LLM_MAGIC_CONCURRENCY``, else 8. The embedded model always takes one at a time."""
    _load_dotenv()
    if provider == "local":
        return 1
    name = f"LLM_MAGIC_CONCURRENCY_{KEY_PREFIX.get(provider, provider.upper())}"
    for var in (name, "LLM_MAGIC_CONCURRENCY"):
        raw = os.environ.get(var, "").strip()
        if not raw:
            continue
        if not raw.isdigit() or int(raw) < 1:
            raise UsageProblem(f"{var}={raw!r} is not a positive whole number: set e.g. {var}=4")
        return int(raw)
    return DEFAULT_CONCURRENCY

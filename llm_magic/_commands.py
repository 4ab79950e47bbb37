"""``%llm SUBCOMMAND``: one argparse parser with a subparser per subcommand, and the subcommands
themselves as a dict of small functions (as jupysql's ``%sqlcmd`` does).

Each function takes the :class:`~llm_magic.magics.LLMMagics` object and the parsed options; its
arguments are IPython ``@argument`` decorators, its docstring's first line is its help.
``%llm --help`` and ``%llm SUBCOMMAND --help`` print the generated usage; a mistake is one
``UsageError`` line with the usage and an example.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import MagicArgumentParser, argument
from IPython.display import display

from . import _otel, errors
from .config import check_number, override, settings
from .secrets import mask_url
from .vocab import usd

if TYPE_CHECKING:
    from .magics import LLMMagics

__all__ = ["COMMANDS", "parse", "call", "summary"]

Command = Callable[["LLMMagics", argparse.Namespace], Any]

COMMANDS: dict[str, Command] = {}  # name → function, in the order ``--help`` lists them
_EXAMPLES: dict[str, str] = {}


def command(name: str, example: str) -> Callable[[Command], Command]:
    """Make the decorated function ``%llm NAME``; ``example`` is shown with its usage errors."""

    def register(fn: Command) -> Command:
        COMMANDS[name] = fn
        _EXAMPLES[name] = example
        return fn

    return register


class _HelpShown(Exception):
    """``--help`` printed the usage: nothing else to do."""


class _Parser(MagicArgumentParser):
    """Errors are one ``UsageError`` line naming the usage and an example; ``--help`` prints
    and returns to the notebook (no ``SystemExit``)."""

    example = ""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.pop("add_help", None)
        super().__init__(add_help=False, **kwargs)
        self.add_argument("-h", "--help", action="help", help=argparse.SUPPRESS)

    def one_line_usage(self) -> str:
        return " ".join(self.format_usage().removeprefix("usage:").split())

    def error(self, message: str) -> Any:
        example = f", e.g. {self.example}" if self.example else ""
        raise UsageError(f"{self.prog}: {message}; usage: {self.one_line_usage()}{example}")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        raise _HelpShown


_parsers: dict[str, _Parser] = {}


def _parser() -> _Parser:
    """The ``%llm`` parser (built once), its subparsers in ``_parsers``."""
    if "" in _parsers:
        return _parsers[""]
    root = _Parser(
        prog="%llm",
        description="Line magic subcommands (the prompt itself goes in a %%llm cell); "
        "%llm alone is %llm config.",
        epilog="%llm SUBCOMMAND --help shows one subcommand's options.",
    )
    subs = root.add_subparsers(dest="command", metavar="SUBCOMMAND", title="subcommands")
    for name, fn in COMMANDS.items():
        doc = (fn.__doc__ or "").strip()
        first = doc.splitlines()[0]
        sub = subs.add_parser(name, help=first.replace("%", "%%"), description=doc)
        sub.example = _EXAMPLES[name]
        sub.epilog = f"e.g. {sub.example}"
        for deco in getattr(fn, "decorators", [])[::-1]:  # in the order they are written
            deco.add_to_parser(sub, None)
        _parsers[name] = sub
    _parsers[""] = root
    return root


def _show_help(magics: LLMMagics, opts: argparse.Namespace) -> None:
    return None


def parse(line: str) -> tuple[Command, argparse.Namespace]:
    """The subcommand function of ``line`` and its options (``UsageError`` if ``line`` is not
    one). ``--help`` prints the usage and gives a function that does nothing."""
    root = _parser()
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%llm: cannot parse {line!r} ({exc})") from None
    if not words:
        return COMMANDS["config"], argparse.Namespace()
    name, rest = words[0], words[1:]
    if name not in COMMANDS and name not in ("-h", "--help"):
        raise UsageError(
            f"Unknown %llm subcommand {name!r}: use one of {', '.join(COMMANDS)} "
            "(the prompt goes in a %%llm cell; %llm --help lists them)"
        )
    try:
        if name in COMMANDS:
            return COMMANDS[name], _parsers[name].parse_args(rest)
        root.parse_args(words)
    except _HelpShown:
        pass
    return _show_help, argparse.Namespace()


def call(magics: LLMMagics, fn: Command, opts: argparse.Namespace) -> Any:
    """Run a parsed subcommand; what the user asked for that cannot be done is a UsageError."""
    problem = None
    try:
        return fn(magics, opts)
    except errors.UsageProblem as exc:
        problem = str(exc)
    raise UsageError(problem)


def summary() -> str:
    """One line per subcommand (its usage and help), for the ``%llm?`` text."""
    _parser()
    lines = ["Line magic subcommands (%llm SUBCOMMAND --help for more):"]
    for name, fn in COMMANDS.items():
        help_line = (fn.__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {_parsers[name].one_line_usage()}\n      {help_line}")
    return "\n".join(lines)


# -- the subcommands ---------------------------------------------------------------------------


def _pool(cfg: Any, provider: str) -> Any:
    """The key pool of ``provider`` (masked aliases only)."""
    from .keys import pool

    return pool(cfg, provider)


@command("models", "%llm models")
def _models(magics: LLMMagics, opts: argparse.Namespace) -> None:
    """Aliases and models, providers with their keys (✓/✗, masked), the local model's status."""
    import pandas as pd

    from .config import KEY_PREFIX
    from .local import server
    from .models import all_aliases

    cfg = settings()
    rows = [{"name": alias, "model": model} for alias, model in all_aliases(magics.book()).items()]
    keys = []
    for provider in KEY_PREFIX:
        pool = _pool(cfg, provider)
        keys.append(
            {
                "provider": provider,
                "key": "✓" if pool else "✗",
                "keys": ", ".join(k.alias for k in pool.keys)
                or f"set {cfg.key_env_name(provider)}",
            }
        )
    display(pd.DataFrame(rows))
    display(pd.DataFrame(keys))
    print(server().status())


@command("ledger", "%llm ledger --today --by agent")
@argument("--today", action="store_true", help="only today's calls (UTC)")
@argument(
    "--by",
    default="model",
    metavar="COLUMN",
    help="group by model (default), agent, user, day, status, provider or chat",
)
def _ledger(magics: LLMMagics, opts: argparse.Namespace) -> Any:
    """Calls, tokens, cost and latency so far, grouped; says what the journal still holds."""
    book = magics.book()
    book.replay_pending()  # rows a busy ledger could not take, if it takes them now
    table = book.summary(by=opts.by, today=opts.today)
    print(f"{len(book)} call(s) in {book.path}; spent today ${book.cost_today():.6f}")
    pending = book.pending()
    if pending:
        print(
            f"{pending} call(s) pending in {book.journal.path}: the ledger could not take "
            "them (busy or full); they go in on the next successful write"
        )
    return table


@command("budget", "%llm budget 5")
@argument("usd", nargs="?", metavar="USD", help="set the daily budget for this session (dollars)")
def _budget(magics: LLMMagics, opts: argparse.Namespace) -> None:
    """Spend today against the daily budget; with USD, set the budget for this session."""
    if opts.usd is not None:
        value = check_number(
            "DAILY_BUDGET_USD",
            opts.usd,
            where=f"%llm budget {opts.usd!r}",
            fix="give dollars, e.g. %llm budget 5",
        )
        override(daily_budget_usd=value)
    cfg = settings()
    spent = magics.book().cost_today()
    if cfg.daily_budget_usd is None:
        print(f"Spent today: ${spent:.6f}. No daily budget: set one with %llm budget USD")
    else:
        share = spent / cfg.daily_budget_usd if cfg.daily_budget_usd else float("inf")
        print(
            f"Spent today: ${spent:.6f} of {usd(cfg.daily_budget_usd)} ({share:.0%}); "
            f"alert at {cfg.budget_alert_threshold:.0%}"
        )


@command("local", "%llm local start")
@argument(
    "action", nargs="?", default="status", metavar="ACTION", help="start, stop or status (default)"
)
def _local(magics: LLMMagics, opts: argparse.Namespace) -> None:
    """Start, stop or show the embedded local model (SmolLM2 on llama.cpp)."""
    from .local import server

    actions = {"start": server().start, "stop": server().stop, "status": server().status}
    if opts.action not in actions:
        raise UsageError(f"%llm local {opts.action!r}: use start, stop or status")
    print(actions[opts.action]())


@command("config", "%llm config")
def _config(magics: LLMMagics, opts: argparse.Namespace) -> None:
    """The settings in use (URLs and keys masked); change them with %config LLMMagics.x = …"""
    cfg = magics.settings()
    lines = [
        f"default_model = {cfg.default_model}",
        f"fallback_models = {', '.join(cfg.fallback_models) or '—'}",
        f"daily_budget_usd = {cfg.daily_budget_usd}",
        f"budget_alert_threshold = {cfg.budget_alert_threshold}",
        f"budget_downgrade_model = {cfg.budget_downgrade_model}",
        f"max_cost_per_request_usd = {cfg.max_cost_per_request_usd}",
        f"ledger = {mask_url(cfg.ledger)}",
        f"api_base = {mask_url(cfg.api_base) or None}",
        f"api_key = {cfg.api_key.alias if cfg.api_key else '—'}",
        f"max_tokens = {magics.max_tokens or 'by task'}",
        f"temperature = {magics.temperature}",
        f"display_mode = {magics.display_mode}",
        f"store_text = {cfg.store_text}",
        f"cache = {cfg.cache}",
        _otel.status_line(),  # "otel: off", or where spans go and how many were sent/dropped
    ]
    print("\n".join(lines))


@command("alias", "%llm alias fast gpt-4o-mini")
@argument("name", metavar="NAME", help="the new name")
@argument("model", metavar="MODEL", help="the model (or alias) it stands for")
def _alias(magics: LLMMagics, opts: argparse.Namespace) -> None:
    """Give a model a short name, kept in the ledger."""
    from .models import add_alias

    target = add_alias(magics.book(), opts.name, opts.model)
    print(f"{opts.name} → {opts.model}" + (f" (→ {target})" if target != opts.model else ""))


@command("price", "%llm price my-model 3 15")
@argument("model", metavar="MODEL", help="the model id")
@argument("input", metavar="IN_PER_1M", help="dollars per million input tokens")
@argument("output", metavar="OUT_PER_1M", help="dollars per million output tokens")
def _price(magics: LLMMagics, opts: argparse.Namespace) -> None:
    """Set a model's price, kept in the ledger (used when LiteLLM knows none)."""
    pin, pout = (
        check_number(
            "price",
            raw,
            where=f"%llm price {opts.model}: {side}_PER_1M={raw!r}",
            fix=f"give dollars per million tokens, e.g. %llm price {opts.model} 3 15",
        )
        for side, raw in (("IN", opts.input), ("OUT", opts.output))
    )
    magics.book().set_price(opts.model, pin, pout)
    print(f"{opts.model}: ${pin}/1M input, ${pout}/1M output (kept in the ledger)")


@command("reset", "%llm reset my-chat")
@argument("chat", nargs="?", metavar="CHAT", help="the --chat name to forget (default: all)")
def _reset(magics: LLMMagics, opts: argparse.Namespace) -> None:
    """Forget a --chat conversation's history (or every one)."""
    from .core import reset_chat

    names = reset_chat(opts.chat)
    print(f"Forgot chat(s): {', '.join(names)}" if names else "No chat to forget")


@command("cache", "%llm cache clear")
@argument("action", nargs="?", default="status", metavar="ACTION", help="status (default) or clear")
def _cache(magics: LLMMagics, opts: argparse.Namespace) -> None:
    """The response cache (--cache): status, or clear (earlier answers are no longer reused)."""
    from . import _respcache

    if opts.action not in ("status", "clear"):
        raise UsageError(f"%llm cache {opts.action!r}: use status or clear")
    book = magics.book()
    if opts.action == "clear":
        print(_respcache.clear(book))
    else:
        print(_respcache.status(book, magics.settings()))


_serving: dict[str, Any] = {}  # "server": the kernel's background server (llm_magic.web)


def _background() -> Any:
    from .web.server import Background

    return _serving.setdefault("server", Background())


@command("serve", "%llm serve start --port 8765")
@argument(
    "action", nargs="?", default="status", metavar="ACTION", help="start, stop or status (default)"
)
@argument("--port", type=int, default=8765, help="port to serve on (127.0.0.1), default 8765")
def _serve(magics: LLMMagics, opts: argparse.Namespace) -> None:
    """Serve a chat page and /api/chat from this kernel (in the background), on 127.0.0.1."""
    server = _background()
    if opts.action == "start":
        print(f"Serving at {server.start(port=opts.port)} (the token is shown only now)")
    elif opts.action in ("stop", "status"):
        print(server.stop() if opts.action == "stop" else server.status())
    else:
        raise UsageError(f"%llm serve {opts.action!r}: use start, stop or status")

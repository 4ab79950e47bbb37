"""``%%llm`` and ``%llm``: a thin notebook face over :mod:`llm_magic.core`.

Each magic parses its arguments, then hands off to plain functions; subcommands of ``%llm`` go
through a dict of small functions. Settings are traitlets, so ``%config LLMMagics.x = …`` works.
"""

from __future__ import annotations

import argparse
import dataclasses
import keyword
import shlex
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display
from traitlets import Bool, Enum, Float, Int, TraitError, Unicode, default, validate

from . import errors
from ._cell import Guard, show_stream
from ._interpolate import interpolate
from .config import check_number, settings
from .display import StreamView, choose_mode
from .secrets import mask_url

__all__ = ["LLMMagics"]

TASKS = ("reason", "standard", "classify", "private", "generate")
FORMATS = ("markdown", "text", "code", "json")


def _tags(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--tag {item!r} is not KEY=VALUE: write e.g. --tag experiment=tides")
        out[key.strip()] = value.strip()
    return out


class _LineParser(argparse.ArgumentParser):
    """argparse for ``%llm`` subcommands: errors become one-line UsageErrors."""

    def error(self, message: str) -> Any:
        raise UsageError(f"%llm {self.prog}: {message}")


@magics_class
class LLMMagics(Magics):
    """Talk to LLMs from cells; every call lands in the ledger (``lm.ledger().df``)."""

    default_model = Unicode(
        help="Model used when -m is absent (env DEFAULT_MODEL; 'local' = embedded SmolLM2)."
    ).tag(config=True)
    max_tokens = Int(
        0, help="Default max_tokens for every call (0 = by task: 2048 standard, 4096 generate)."
    ).tag(config=True)
    temperature = Float(0.0, help="Default sampling temperature.").tag(config=True)
    display_mode = Enum(
        ["auto", "widget", "handle", "text"],
        "auto",
        help="How answers stream: ipywidgets Output, an updated display, or plain text.",
    ).tag(config=True)
    updates_per_second = Float(30.0, help="At most this many screen updates per second.").tag(
        config=True
    )
    store_text = Bool(True, help="Keep prompt and response text in the ledger.").tag(config=True)
    ledger = Unicode(help="Ledger path or sqlite:/// URL (env LLM_MAGIC_LEDGER).").tag(config=True)

    @default("default_model")
    def _default_model(self) -> str:
        return settings().default_model

    @default("ledger")
    def _default_ledger(self) -> str:
        return settings().ledger

    @default("store_text")
    def _default_store_text(self) -> bool:
        return settings().store_text

    @default("display_mode")
    def _default_display(self) -> str:
        import os

        mode = os.environ.get("LLM_MAGIC_DISPLAY", "auto").strip() or "auto"
        return mode if mode in ("auto", "widget", "handle", "text") else "auto"

    @validate("max_tokens")
    def _check_max_tokens(self, proposal: Any) -> int:
        if proposal["value"] < 0:
            raise TraitError("LLMMagics.max_tokens must be >= 0 (0 = the default by task)")
        return int(proposal["value"])

    @validate("temperature")
    def _check_temperature(self, proposal: Any) -> float:
        if not 0 <= proposal["value"] <= 2:
            raise TraitError("LLMMagics.temperature must be between 0 and 2")
        return float(proposal["value"])

    @validate("updates_per_second")
    def _check_rate(self, proposal: Any) -> float:
        if not 0 < proposal["value"] <= 120:
            raise TraitError("LLMMagics.updates_per_second must be in (0, 120]")
        return float(proposal["value"])

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.subcommands: dict[str, Callable[[list[str]], Any]] = {
            "models": self._cmd_models,
            "ledger": self._cmd_ledger,
            "budget": self._cmd_budget,
            "local": self._cmd_local,
            "config": self._cmd_config,
            "alias": self._cmd_alias,
            "price": self._cmd_price,
            "reset": self._cmd_reset,
        }

    # -- helpers -------------------------------------------------------------------------------
    def settings(self) -> Any:
        """Environment settings with this object's traitlets laid over them."""
        return dataclasses.replace(
            settings(),
            default_model=self.default_model,
            ledger=self.ledger,
            store_text=self.store_text,
        )

    def book(self) -> Any:
        from .store import ledger

        try:
            return ledger(self.ledger)
        except errors.LLMError as exc:
            raise UsageError(str(exc)) from None

    # -- the magic -----------------------------------------------------------------------------
    @magic_arguments()
    @argument("-m", "--model", help="LiteLLM model id or alias (default: LLMMagics.default_model)")
    @argument("-s", "--system", help="system prompt")
    @argument("--max-tokens", type=int, help="upper bound on output tokens (never unbounded)")
    @argument("-t", "--task", choices=TASKS, help="task kind (sets the default max_tokens)")
    @argument("--temperature", type=float, help="sampling temperature (default 0.0)")
    @argument("-o", "--out", help="store the Result in this variable")
    @argument("--agent", help="attribution: agent name (ledger column)")
    @argument("--user", help="attribution: user name (ledger column)")
    @argument("--tag", action="append", help="attribution: KEY=VALUE (repeatable)")
    @argument("-f", "--format", choices=FORMATS, default="markdown", help="how to render")
    @argument("--chat", help="keep a multi-turn conversation under this name")
    @argument("--no-stream", action="store_true", help="show the answer only when complete")
    @argument("words", nargs="*", help="subcommand for the line magic (see below)")
    @line_cell_magic
    def llm(self, line: str, cell: str | None = None) -> Any:
        """Ask an LLM; the cell body is the prompt, streamed into the notebook.

        Example::

            %%llm -m local --max-tokens 64 -o answer
            Write a haiku about {topic}.

        ``{name}`` is replaced by the value of ``name`` in the notebook (unknown names and code
        braces are left alone; ``{{``/``}}`` give literal braces).

        Line magic subcommands: ``%llm models``, ``%llm ledger [--today] [--by model|agent|user|day]``,
        ``%llm budget [USD]``, ``%llm local start|stop|status``, ``%llm config``,
        ``%llm alias NAME MODEL``, ``%llm price MODEL IN_PER_1M OUT_PER_1M``, ``%llm reset [CHAT]``.
        """
        if cell is None:
            return self._subcommand(line)
        args = parse_argstring(self.llm, line)
        if args.words:
            raise UsageError(
                f"Unexpected {' '.join(args.words)!r} on the %%llm line: options start with -, "
                "the prompt goes in the cell body"
            )
        if args.out is not None and not (
            args.out.isidentifier() and not keyword.iskeyword(args.out)
        ):
            raise UsageError(
                f"-o {args.out!r} is not a Python variable name: use letters, digits and _, "
                "not starting with a digit, e.g. -o answer"
            )
        problem = None
        try:
            return self._run_cell(args, cell)
        except errors.UsageProblem as exc:  # e.g. a bad setting read while preparing the call
            problem = str(exc)
        raise UsageError(problem)

    def _run_cell(self, args: argparse.Namespace, cell: str) -> Any:
        shell: Any = self.shell
        ns = shell.user_ns if shell is not None else {}
        prompt = interpolate(cell, ns).strip()
        if not prompt:
            raise UsageError("The cell is empty: write the prompt in the cell body under %%llm")
        if args.model:
            model = args.model.strip()
        elif args.task:
            model = ""  # the routing table picks it, below (it needs litellm: seconds, once)
        else:
            model = (self.default_model or "").strip()
        if "," in model:
            models = [m.strip() for m in model.split(",") if m.strip()]
            if not models:
                raise UsageError(
                    f"-m {model!r} names no model: write e.g. -m gpt-4o, or -m gpt-4o,local "
                    "to compare"
                )
            if len(models) > 1:
                return self._run_compare(args, prompt, models)
            model = models[0]  # "-m gpt-4o," is one model: an ordinary call
        # Something visible at once, before anything slow (even importing the pipeline): the
        # slow parts (opening the ledger, importing litellm, starting the local model) then say
        # what they are doing on the status line.
        view = StreamView(
            choose_mode(self.display_mode, self.shell), args.format, self.updates_per_second
        )
        view.start()
        result = None
        with Guard(view):
            request = self._request(args, prompt, model)
            request.validate()
            if args.task and not args.model:
                request.model = self._route(args.task, view)
            from .core import start

            stream = start(request, self.settings(), self.book(), status=view.status)
            result = show_stream(view, stream, buffered=args.no_stream)
        if args.out and result is not None:
            shell.user_ns[args.out] = result
        return None

    def _route(self, task: str, view: StreamView) -> str:
        """The model the routing table picks for ``task`` (it needs litellm: seconds, once)."""
        from . import gateway
        from .models import route_for_task

        if not gateway.loaded():
            view.status("loading providers…")
        return route_for_task(task)

    def _request(self, args: argparse.Namespace, prompt: str, model: str) -> Any:
        from .core import Request

        return Request(
            prompt=prompt,
            model=model or None,
            system=args.system,
            max_tokens=args.max_tokens
            if args.max_tokens is not None
            else (self.max_tokens or None),
            temperature=args.temperature if args.temperature is not None else self.temperature,
            agent=args.agent,
            user=args.user,
            tags=_tags(args.tag),
            chat=args.chat,
            execution_count=getattr(self.shell, "execution_count", None),
            task="generate" if args.task == "generate" else "standard",
        )

    def _run_compare(self, args: argparse.Namespace, prompt: str, models: list[str]) -> Any:
        """``-m a,b,c``: every model at once, side by side, then a table."""
        from .comparison import prepare, show_comparison
        from .display import CompareView

        if len(set(models)) != len(models):
            raise UsageError("List each model once in -m (lm.compare(..., repeats=n) repeats them)")
        if args.chat:
            raise UsageError("--chat keeps one conversation: use it with a single -m MODEL")
        jobs = [(self._request(args, prompt, m), 0) for m in models]
        for request, _ in jobs:
            request.validate()
        view = CompareView(
            choose_mode(self.display_mode, self.shell), models, self.updates_per_second
        )
        view.start("preparing the calls…")
        with Guard(view, "Interrupted before the requests were sent") as setup:
            cfg, book = self.settings(), self.book()
            # unknown model, no key, too many tokens: a usage error, nothing sent
            waited = prepare(jobs, cfg, book, say=view.status)
        if setup.interrupted:
            return None
        frame = show_comparison(jobs, view, cfg, book, waited_s=waited)
        if args.out and frame is not None:
            shell: Any = self.shell
            shell.user_ns[args.out] = frame
        return None

    # -- %llm subcommands ----------------------------------------------------------------------
    def _subcommand(self, line: str) -> Any:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%llm: cannot parse {line!r} ({exc})") from None
        if not words:
            return self._cmd_config([])
        name, rest = words[0], words[1:]
        if name not in self.subcommands:
            raise UsageError(
                f"Unknown %llm subcommand {name!r}: use one of {', '.join(self.subcommands)} "
                "(the prompt goes in a %%llm cell)"
            )
        try:
            return self.subcommands[name](rest)
        except errors.UsageProblem as exc:
            raise UsageError(str(exc)) from None

    def _cmd_models(self, rest: list[str]) -> Any:
        import pandas as pd

        from .config import KEY_PREFIX
        from .local import server
        from .models import all_aliases

        cfg = settings()
        rows = []
        for alias, model in all_aliases(self.book()).items():
            rows.append({"name": alias, "model": model})
        frame = pd.DataFrame(rows)
        keys = []
        for provider in KEY_PREFIX:
            pool = cfg.keys(provider)
            keys.append(
                {
                    "provider": provider,
                    "key": "✓" if pool else "✗",
                    "keys": ", ".join(k.alias for k in pool.keys)
                    or f"set {cfg.key_env_name(provider)}",
                }
            )
        display(frame)
        display(pd.DataFrame(keys))
        print(server().status())
        return None

    def _cmd_ledger(self, rest: list[str]) -> Any:
        parser = _LineParser(prog="ledger", add_help=False)
        parser.add_argument("--today", action="store_true")
        parser.add_argument("--by", default="model")
        opts = parser.parse_args(rest)
        book = self.book()
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

    def _cmd_budget(self, rest: list[str]) -> Any:
        import os

        from .budget import usd
        from .config import reload_settings

        if rest:
            value = check_number(
                "DAILY_BUDGET_USD",
                rest[0],
                where=f"%llm budget {rest[0]!r}",
                fix="give dollars, e.g. %llm budget 5",
            )
            os.environ["DAILY_BUDGET_USD"] = str(value)
            reload_settings()
        cfg = settings()
        spent = self.book().cost_today()
        if cfg.daily_budget_usd is None:
            print(f"Spent today: ${spent:.6f}. No daily budget: set one with %llm budget USD")
        else:
            share = spent / cfg.daily_budget_usd if cfg.daily_budget_usd else float("inf")
            print(
                f"Spent today: ${spent:.6f} of {usd(cfg.daily_budget_usd)} ({share:.0%}); "
                f"alert at {cfg.budget_alert_threshold:.0%}"
            )
        return None

    def _cmd_local(self, rest: list[str]) -> Any:
        from .local import server

        action = rest[0] if rest else "status"
        actions = {"start": server().start, "stop": server().stop, "status": server().status}
        if action not in actions:
            raise UsageError(f"%llm local {action!r}: use start, stop or status")
        print(actions[action]())
        return None

    def _cmd_config(self, rest: list[str]) -> Any:
        cfg = self.settings()
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
            f"max_tokens = {self.max_tokens or 'by task'}",
            f"temperature = {self.temperature}",
            f"display_mode = {self.display_mode}",
            f"store_text = {cfg.store_text}",
        ]
        print("\n".join(lines))
        return None

    def _cmd_alias(self, rest: list[str]) -> Any:
        from .models import add_alias

        if len(rest) != 2:
            raise UsageError("%llm alias NAME MODEL: e.g. %llm alias fast gpt-4o-mini")
        target = add_alias(self.book(), rest[0], rest[1])
        print(f"{rest[0]} → {rest[1]}" + (f" (→ {target})" if target != rest[1] else ""))
        return None

    def _cmd_price(self, rest: list[str]) -> Any:
        if len(rest) != 3:
            raise UsageError("%llm price MODEL IN_PER_1M OUT_PER_1M: e.g. %llm price my-model 3 15")
        pin, pout = (
            check_number(
                "price",
                raw,
                where=f"%llm price {rest[0]}: {side}_PER_1M={raw!r}",
                fix=f"give dollars per million tokens, e.g. %llm price {rest[0]} 3 15",
            )
            for side, raw in (("IN", rest[1]), ("OUT", rest[2]))
        )
        self.book().set_price(rest[0], pin, pout)
        print(f"{rest[0]}: ${pin}/1M input, ${pout}/1M output (kept in the ledger)")
        return None

    def _cmd_reset(self, rest: list[str]) -> Any:
        from .core import reset_chat

        names = reset_chat(rest[0] if rest else None)
        print(f"Forgot chat(s): {', '.join(names)}" if names else "No chat to forget")
        return None

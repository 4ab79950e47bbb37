"""``%%llm`` and ``%llm``: a thin notebook face over :mod:`llm_magic.core`.

Each magic parses its arguments, then hands off to plain functions; subcommands of ``%llm`` go
through a dict of small functions. Settings are traitlets, so ``%config LLMMagics.x = …`` works.
"""

from __future__ import annotations

import argparse
import dataclasses
import keyword
import os
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, kwds, magic_arguments, parse_argstring
from traitlets import Bool, Enum, Float, Int, TraitError, Unicode, default, validate

from . import _commands, errors
from ._cell import Guard, show_stream
from ._interpolate import interpolate
from .config import settings
from .display import StreamView, choose_mode
from .vocab import DEFAULT_MAX_TOKENS, DISPLAY_MODES, FORMATS, TASKS

__all__ = ["LLMMagics"]


def _tags(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--tag {item!r} is not KEY=VALUE: write e.g. --tag experiment=tides")
        out[key.strip()] = value.strip()
    return out


@magics_class
class LLMMagics(Magics):
    """Talk to LLMs from cells; every call lands in the ledger (``lm.ledger().df``)."""

    default_model = Unicode(
        help="Model used when -m is absent (env DEFAULT_MODEL; 'local' = embedded SmolLM2)."
    ).tag(config=True)
    max_tokens = Int(
        0,
        help="Default max_tokens for every call (0 = by task: "
        + ", ".join(f"{n} {task}" for task, n in DEFAULT_MAX_TOKENS.items())
        + ").",
    ).tag(config=True)
    temperature = Float(0.0, help="Default sampling temperature.").tag(config=True)
    display_mode = Enum(
        list(DISPLAY_MODES),
        "auto",
        help="How answers stream: ipywidgets Output, an updated display, or plain text.",
    ).tag(config=True)
    updates_per_second = Float(30.0, help="At most this many screen updates per second.").tag(
        config=True
    )
    store_text = Bool(True, help="Keep prompt and response text in the ledger.").tag(config=True)
    ledger = Unicode(help="Ledger path or sqlite:/// URL (env LLM_MAGIC_LEDGER).").tag(config=True)
    cache = Bool(
        help="Answer temperature-0 calls identical to an earlier ok call from the ledger "
        "(env LLM_MAGIC_CACHE; --cache asks for one call, at any temperature)."
    ).tag(config=True)

    @default("default_model")
    def _default_model(self) -> str:
        return settings().default_model

    @default("ledger")
    def _default_ledger(self) -> str:
        return settings().ledger

    @default("store_text")
    def _default_store_text(self) -> bool:
        return settings().store_text

    @default("cache")
    def _default_cache(self) -> bool:
        return settings().cache

    @default("display_mode")
    def _default_display(self) -> str:
        mode = os.environ.get("LLM_MAGIC_DISPLAY", "auto").strip() or "auto"
        return mode if mode in DISPLAY_MODES else "auto"

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

    # -- helpers -------------------------------------------------------------------------------
    def settings(self) -> Any:
        """Environment settings with this object's traitlets laid over them."""
        return dataclasses.replace(
            settings(),
            default_model=self.default_model,
            ledger=self.ledger,
            store_text=self.store_text,
            cache=self.cache,
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
    @argument(
        "--schema",
        metavar="VAR",
        help="structured output: VAR is a pydantic model class or a JSON schema dict (implies "
        "-f json; the Result's .data is the validated object)",
    )
    @argument("--no-stream", action="store_true", help="show the answer only when complete")
    @argument(
        "--tools",
        metavar="VAR",
        help="offer the tools in notebook variable VAR (a list of functions) and run them",
    )
    @argument(
        "--max-tool-rounds", type=int, help="with --tools: at most this many requests (default 5)"
    )
    @argument(
        "--cache-prompt",
        action="store_true",
        help="mark the system prompt and long context for Anthropic's prompt cache",
    )
    @argument(
        "--cache",
        action="store_true",
        default=None,
        help="answer from the ledger if an identical request got an ok answer (nothing sent, "
        "$0; %%llm cache clear forgets)",
    )
    @argument("words", nargs="*", help="subcommand for the line magic (see below)")
    @kwds(epilog=_commands.summary())
    @line_cell_magic
    def llm(self, line: str, cell: str | None = None) -> Any:
        """Ask an LLM; the cell body is the prompt, streamed into the notebook.

        Example::

            %%llm -m local --max-tokens 64 -o answer
            Write a haiku about {topic}.

        ``{name}`` is replaced by the value of ``name`` in the notebook (unknown names and code
        braces are left alone; ``{{``/``}}`` give literal braces). ``-m a,b`` compares models.
        ``--schema Person -o p`` answers in JSON valid against ``Person``: ``p.data``.
        """
        if cell is None:  # %llm SUBCOMMAND: parse, then hand off
            fn, opts = _commands.parse(line)
            return _commands.call(self, fn, opts)
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
        if args.schema and args.format == "markdown":  # the default: --schema implies -f json
            args.format = "json"
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
            **self._tools(args),
            schema=self._schema(args.schema),
            cache_prompt=args.cache_prompt,
            cache=args.cache,  # None: LLMMagics.cache decides (temperature 0 only)
        )

    def _tools(self, args: argparse.Namespace) -> dict[str, Any]:
        """``--tools VAR``: the tools in the notebook's ``VAR``, to be run (Request fields)."""
        if args.tools is None:
            if args.max_tool_rounds is not None:
                raise UsageError("--max-tool-rounds goes with --tools VAR (the tools to run)")
            return {}
        ns = self.shell.user_ns if self.shell is not None else {}
        if args.tools not in ns:
            raise UsageError(
                f"--tools {args.tools}: no such variable in the notebook: define it first, "
                f"e.g. {args.tools} = [get_weather] (a list of functions)"
            )
        rounds = args.max_tool_rounds if args.max_tool_rounds is not None else 5
        return {"tools": ns[args.tools], "run_tools": True, "max_tool_rounds": rounds}

    def _schema(self, name: str | None) -> Any:
        """``--schema VAR``: the notebook's ``VAR`` (checked when the call is planned)."""
        if not name:
            return None
        shell: Any = self.shell
        ns = shell.user_ns if shell is not None else {}
        if name not in ns:
            raise UsageError(
                f"--schema {name}: no variable {name!r} in the notebook: define it first, as a "
                "pydantic model class or a JSON schema dict"
            )
        return ns[name]

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

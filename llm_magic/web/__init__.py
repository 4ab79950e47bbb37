"""``python -m llm_magic serve``: the pipeline behind a small FastAPI app (server-sent events,
reconnection, a token on every route). Face layer; never imports IPython."""

from __future__ import annotations

from .app import create_app, serve_options

__all__ = ["create_app", "serve_options"]

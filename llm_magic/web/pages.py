"""The pages (``/``, ``/spend``, static files): helper page's module; a stub until it lands."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()

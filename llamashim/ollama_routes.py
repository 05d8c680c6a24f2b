"""Placeholder until the Ollama dialect lands: every /api/* path answers an Ollama-shaped 404."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.web.server import Request

from llamashim.errors import ShimError

if TYPE_CHECKING:
    from llamashim.app import Routes


class OllamaRoutes:
    def __init__(self, routes: Routes) -> None:
        self.routes = routes

    async def dispatch(self, request: Request, name: str) -> bytes | None:
        raise ShimError(404, f"unknown Ollama API path /api/{name}")

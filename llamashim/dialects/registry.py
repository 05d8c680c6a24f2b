"""Every client API llamashim speaks. Adding a dialect is one module plus one line in :data:`ROUTES`.

A routes class has ``dialect`` (its :class:`~llamashim.web.dialect.Dialect`), ``mounts`` (the path prefixes its
Klein resource serves), ``__init__(deps: RouteDeps)``, ``resource()``, and optionally ``services()`` (services it
owns, such as a store, started and stopped with the daemon).
"""

from __future__ import annotations

from typing import Any

from llamashim.dialects.anthropic.routes import AnthropicRoutes
from llamashim.dialects.ollama.routes import OllamaRoutes
from llamashim.dialects.openai_chat.dialect import OPENAI
from llamashim.dialects.openai_chat.routes import OpenAIChatRoutes, OpenAIEmbeddingsRoutes
from llamashim.dialects.responses.routes import ResponsesRoutes
from llamashim.web.dialect import DialectRegistry

ROUTES: tuple[Any, ...] = (OpenAIChatRoutes, OpenAIEmbeddingsRoutes, OllamaRoutes, ResponsesRoutes, AnthropicRoutes)


def default_registry() -> DialectRegistry:
    """The dialects by path; OpenAI's shapes answer every path no dialect claims."""
    return DialectRegistry(OPENAI, [routes.dialect for routes in ROUTES if routes.dialect is not OPENAI])

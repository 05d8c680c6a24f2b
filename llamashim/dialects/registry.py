"""Every client API llamashim speaks, and the dialect that answers paths none of them claims.

Adding a dialect is one package (``dialects/<name>/``: its :class:`~llamashim.web.dialect.Dialect`, translation,
encoder and a :class:`~llamashim.web.routing.DialectRoutes` subclass) plus one line in :data:`ROUTES`.
"""

from __future__ import annotations

from llamashim.dialects.anthropic.routes import AnthropicRoutes
from llamashim.dialects.gemini.routes import GeminiRoutes
from llamashim.dialects.ollama.routes import OllamaRoutes
from llamashim.dialects.openai_chat.dialect import OPENAI
from llamashim.dialects.openai_chat.routes import OpenAIChatRoutes, OpenAIEmbeddingsRoutes
from llamashim.dialects.responses.routes import ResponsesRoutes
from llamashim.web.dialect import Dialect
from llamashim.web.routing import DialectRoutes

ROUTES: tuple[type[DialectRoutes], ...] = (
    OpenAIChatRoutes,
    OpenAIEmbeddingsRoutes,
    OllamaRoutes,
    ResponsesRoutes,
    AnthropicRoutes,
    GeminiRoutes,
)

FALLBACK: Dialect = OPENAI
"""The shapes of llamashim's own routes and of the pass-through (OpenAI's, as llama-server's own errors are)."""

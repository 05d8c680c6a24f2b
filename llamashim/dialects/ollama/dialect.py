"""The Ollama dialect's wire shapes (pure): ``{"error": "..."}`` before the first byte and as the last NDJSON line
of a stream (a context overflow in Ollama's words); NDJSON has no heartbeat."""

from __future__ import annotations

from llamashim import jsonutil
from llamashim.errors import Described, ShimError, context_overflow
from llamashim.stream.items import StreamError
from llamashim.web.dialect import Dialect

NDJSON = b"application/x-ndjson"


class OllamaDialect(Dialect):
    name = "ollama"
    # What Ollama clients (VS Code Copilot among them) read before they send a key.
    open_paths = ("/api/version", "/api/tags", "/api/show")
    stream_content_type = NDJSON

    def error_body(self, err: ShimError) -> bytes:
        return jsonutil.dumps({"error": error_message(err)})

    def stream_error(self, err: StreamError) -> bytes:
        return jsonutil.dumps({"error": error_message(err)}) + b"\n"


def error_message(err: Described) -> str:
    """An error's message as Ollama says it: a context overflow in Ollama's own words ("the input length exceeds the
    context length", its runner's refusal), with the numbers."""
    overflow = context_overflow(err)
    if overflow is None:
        return err.message
    return (f"the input length exceeds the context length ({overflow.prompt_tokens} tokens; the context length "
            f"is {overflow.window})")


OLLAMA = OllamaDialect()

"""The Ollama dialect's wire shapes (pure): ``{"error": "..."}`` before the first byte and as the last NDJSON line
of a stream; NDJSON has no heartbeat."""

from __future__ import annotations

from llamashim import jsonutil
from llamashim.errors import ShimError
from llamashim.stream.items import StreamError
from llamashim.web.dialect import Dialect

NDJSON = b"application/x-ndjson"


class OllamaDialect(Dialect):
    name = "ollama"
    # What Ollama clients (VS Code Copilot among them) read before they send a key.
    open_paths = ("/api/version", "/api/tags", "/api/show")
    stream_content_type = NDJSON

    def error_body(self, err: ShimError) -> bytes:
        return jsonutil.dumps({"error": err.message})

    def stream_error(self, err: StreamError) -> bytes:
        return jsonutil.dumps({"error": err.message}) + b"\n"


OLLAMA = OllamaDialect()

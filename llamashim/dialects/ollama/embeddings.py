"""Ollama embeddings (pure): ``/api/embed`` and the legacy ``/api/embeddings`` ↔ OpenAI ``/v1/embeddings``."""

from __future__ import annotations

from typing import Any

from llamashim.errors import BadRequest


def embed_request(body: dict[str, Any], legacy: bool) -> dict[str, Any]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required")
    value = body.get("prompt") if legacy else body.get("input")
    if isinstance(value, str):
        inputs: Any = value
    elif isinstance(value, list) and all(isinstance(v, str) for v in value) and not legacy:
        inputs = value
    else:
        raise BadRequest("prompt must be a string" if legacy else "input must be a string or a list of strings")
    return {"model": model, "input": inputs}


def embed_body(reply: Any, model: str, legacy: bool) -> dict[str, Any]:
    data = reply.get("data") if isinstance(reply, dict) else None
    vectors = [d.get("embedding") for d in data or [] if isinstance(d, dict)]
    if legacy:
        return {"embedding": vectors[0] if vectors else []}
    usage = reply.get("usage") if isinstance(reply, dict) else None
    prompt = (usage or {}).get("prompt_tokens", 0)
    return {"model": model, "embeddings": vectors, "prompt_eval_count": prompt}

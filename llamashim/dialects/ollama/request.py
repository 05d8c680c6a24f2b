"""Ollama requests → OpenAI chat requests (pure): ``/api/chat`` and templated ``/api/generate`` bodies, and the
pieces :mod:`llamashim.dialects.ollama.completion` shares for raw and fill-in-the-middle generation (``options``,
``format``, ``stream``, ``model``)."""

from __future__ import annotations

import base64
from typing import Any

from llamashim import jsonutil
from llamashim.errors import BadRequest

# Ollama option → OpenAI / llama-server request field.
OPTION_MAP = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "num_predict": "max_tokens",
    "stop": "stop",
    "seed": "seed",
    "repeat_penalty": "repeat_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "typical_p": "typical_p",
    "repeat_last_n": "repeat_last_n",
    "mirostat": "mirostat",
    "mirostat_tau": "mirostat_tau",
    "mirostat_eta": "mirostat_eta",
}


# llama-server's own sampling fields, passed through when given in ``options`` (Ollama has no equivalent).
LLAMA_SERVER_OPTIONS = frozenset(
    ("logit_bias", "grammar", "json_schema", "n_probs", "dry_multiplier", "dry_base", "dry_allowed_length",
     "xtc_probability", "xtc_threshold", "top_n_sigma", "samplers", "ignore_eos")
)


def map_options(body: dict[str, Any], out: dict[str, Any], option_map: dict[str, str] = OPTION_MAP) -> list[str]:
    """Map ``options`` into ``out`` (Ollama name → ``option_map``'s field, llama-server's own sampling fields as they
    are); returns the names of options that have no upstream equivalent."""
    options = body.get("options")
    if options is None:
        return []
    if not isinstance(options, dict):
        raise BadRequest("options must be an object")
    ignored = []
    for key, value in options.items():
        target = option_map.get(key)
        if target is None and key in LLAMA_SERVER_OPTIONS:
            target = key
        if target is None:
            ignored.append(key)
            continue
        if key == "num_predict" and isinstance(value, int) and value < 0:
            continue  # -1: no limit
        out[target] = value
    return ignored


def ollama_format(body: dict[str, Any]) -> str | dict[str, Any] | None:
    """``format``: ``"json"``, a JSON schema object, or ``None`` (absent or empty); anything else is a 400."""
    fmt = body.get("format")
    if fmt in (None, ""):
        return None
    if fmt == "json":
        return "json"
    if isinstance(fmt, dict):
        return fmt
    raise BadRequest('format must be "json" or a JSON schema object')


def _format(body: dict[str, Any], out: dict[str, Any]) -> None:
    fmt = ollama_format(body)
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}


def _image_part(image: Any, where: str) -> dict[str, Any]:
    if not isinstance(image, str) or not image:
        raise BadRequest(f"{where} must be a base64 string")
    if image.startswith("data:"):
        url = image
    else:
        try:
            raw = base64.b64decode(image[:64] + "=" * (-len(image[:64]) % 4), validate=False)
        except ValueError:
            raise BadRequest(f"{where} is not base64") from None
        mime = "image/png" if raw.startswith(b"\x89PNG") else "image/gif" if raw.startswith(b"GIF8") else (
            "image/webp" if raw[8:12] == b"WEBP" else "image/jpeg"
        )
        url = f"data:{mime};base64,{image}"
    return {"type": "image_url", "image_url": {"url": url}}


def _message(msg: Any, i: int) -> dict[str, Any]:
    if not isinstance(msg, dict):
        raise BadRequest(f"messages[{i}] must be an object")
    role = msg.get("role")
    if not isinstance(role, str):
        raise BadRequest(f"messages[{i}].role is missing")
    content = msg.get("content")
    if content is not None and not isinstance(content, str):
        raise BadRequest(f"messages[{i}].content must be a string")
    out: dict[str, Any] = {"role": role}
    images = msg.get("images")
    if images:
        if not isinstance(images, list):
            raise BadRequest(f"messages[{i}].images must be a list")
        parts: list[dict[str, Any]] = [{"type": "text", "text": content or ""}]
        parts += [_image_part(img, f"messages[{i}].images[{j}]") for j, img in enumerate(images)]
        out["content"] = parts
    else:
        out["content"] = content or ""
    calls = msg.get("tool_calls")
    if calls:
        if not isinstance(calls, list):
            raise BadRequest(f"messages[{i}].tool_calls must be a list")
        mapped = []
        for j, call in enumerate(calls):
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise BadRequest(f"messages[{i}].tool_calls[{j}].function.name is missing")
            args = fn.get("arguments")
            mapped.append(
                {
                    "id": call.get("id") or f"call_{i}_{j}",
                    "type": "function",
                    "function": {
                        "name": fn["name"],
                        "arguments": args if isinstance(args, str) else jsonutil.dumps(args or {}).decode(),
                    },
                }
            )
        out["tool_calls"] = mapped
    if role == "tool":
        if isinstance(msg.get("tool_call_id"), str):
            out["tool_call_id"] = msg["tool_call_id"]
        if isinstance(msg.get("tool_name"), str):
            out["name"] = msg["tool_name"]
    if isinstance(msg.get("thinking"), str) and msg["thinking"] and role == "assistant":
        out["reasoning_content"] = msg["thinking"]
    return out


def _link_tool_results(messages: list[dict[str, Any]]) -> None:
    """Ollama tool results name the tool, not the call: give each the id of the matching earlier call."""
    pending: list[tuple[str, str]] = []
    for msg in messages:
        if msg.get("tool_calls"):
            pending = [(c["function"]["name"], c["id"]) for c in msg["tool_calls"]]
        elif msg["role"] == "tool" and "tool_call_id" not in msg:
            name = msg.get("name")
            for k, (call_name, call_id) in enumerate(pending):
                if name is None or call_name == name:
                    msg["tool_call_id"] = call_id
                    del pending[k]
                    break


def wants_stream(body: dict[str, Any]) -> bool:
    """``stream`` (Ollama streams unless it is ``false``)."""
    stream = body.get("stream", True)
    if stream is None:
        return True
    if not isinstance(stream, bool):
        raise BadRequest("stream must be true or false")
    return stream


def required_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required")
    return model


def _common(body: dict[str, Any], model: str, out: dict[str, Any]) -> list[str]:
    out["model"] = model
    stream = wants_stream(body)
    out["stream"] = stream
    if stream:
        out["stream_options"] = {"include_usage": True}
    _format(body, out)
    return map_options(body, out)


def chat_request_to_openai(body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """An ``/api/chat`` body → (OpenAI chat request, names of ignored options)."""
    model = required_model(body)
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        raise BadRequest("messages must be a list")
    mapped = [_message(m, i) for i, m in enumerate(messages)]
    _link_tool_results(mapped)
    out: dict[str, Any] = {"messages": mapped}
    tools = body.get("tools")
    if tools:
        out["tools"] = tools
    ignored = _common(body, model, out)
    return out, ignored


def generate_request_to_openai(body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """An ``/api/generate`` body without ``raw`` or ``suffix`` → (OpenAI chat request, ignored options).

    ``system`` becomes a system message and ``prompt`` (with ``images``) the user message, so the upstream applies
    the model's chat template as Ollama applies its own. ``raw: true`` and ``suffix`` (fill-in-the-middle) do not
    come here: :mod:`llamashim.dialects.ollama.completion` sends them to llama-server's ``/completion`` and
    ``/infill``.
    """
    model = required_model(body)
    prompt = body.get("prompt") or ""
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string")
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    user: dict[str, Any] = {"role": "user", "content": prompt}
    if body.get("images"):
        user = _message({"role": "user", "content": prompt, "images": body["images"]}, 0)
    messages.append(user)
    out: dict[str, Any] = {"messages": messages}
    ignored = _common(body, model, out)
    return out, ignored

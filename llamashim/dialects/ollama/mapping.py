"""The Ollama dialect (pure): Ollama requests → OpenAI chat requests, the stream → NDJSON, metadata bodies.

Ollama's wire format: NDJSON (``application/x-ndjson``) for ``/api/chat`` and ``/api/generate``, streamed unless
``"stream": false``; tool-call ``arguments`` as JSON objects; the last line ``done: true`` with ``done_reason`` and
counts and durations in nanoseconds; errors as ``{"error": "..."}``. The model metadata (``/api/tags``, ``/api/show``,
``/api/ps``) is built from llama-server's ``/v1/models`` and ``/props``.
"""

from __future__ import annotations

import base64
import datetime
import os
from collections.abc import Callable, Iterable
from typing import Any

from llamashim import jsonutil
from llamashim.errors import BadRequest
from llamashim.jsonutil import obj
from llamashim.stream.deltas import DeltaEncoder, ToolCallDelta, UsageDelta, usage_delta
from llamashim.stream.items import StreamError

Resolve = Callable[[str], str]

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


def now_iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- model names ------------------------------------------------------------------------------------------------


def friendly_name(model_id: str) -> str:
    """``/models/Qwen2.5-7B-Q4.gguf`` → ``Qwen2.5-7B-Q4``."""
    base = os.path.basename(model_id.rstrip("/")) or model_id
    return base[: -len(".gguf")] if base.lower().endswith(".gguf") else base


def resolve_model(requested: str, ids: Iterable[str]) -> str:
    """Map a requested name (upstream id, friendly name, either with ``:latest``) to the upstream id."""
    known = list(ids)
    name = requested[: -len(":latest")] if requested.endswith(":latest") else requested
    for model_id in known:
        if name in (model_id, friendly_name(model_id)):
            return model_id
    if len(known) == 1:
        return known[0]
    return name


def model_entries(models_json: Any) -> list[dict[str, Any]]:
    """The upstream's models as OpenAI entries, whatever shape its ``/v1/models`` has."""
    if isinstance(models_json, list):
        data = models_json
    elif isinstance(models_json, dict):
        listed = models_json.get("data")
        if isinstance(listed, list):
            data = listed
        else:
            data = [
                {"id": m.get("model") or m.get("name"), **{k: v for k, v in m.items() if k not in ("model", "name")}}
                for m in models_json.get("models") or []
                if isinstance(m, dict)
            ]
    else:
        data = []
    out = []
    for entry in data:
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            out.append({"object": "model", "owned_by": "llamacpp", **entry})
    return out


def normalise_openai_models(value: Any) -> dict[str, Any]:
    """``/v1/models`` always in OpenAI's list shape, the upstream's extra fields (meta, aliases) kept."""
    return {"object": "list", "data": model_entries(value)}


# -- requests ---------------------------------------------------------------------------------------------------


def _options(body: dict[str, Any], out: dict[str, Any]) -> list[str]:
    """Map ``options`` into ``out``; returns the names of options that have no upstream equivalent."""
    options = body.get("options")
    if options is None:
        return []
    if not isinstance(options, dict):
        raise BadRequest("options must be an object")
    ignored = []
    for key, value in options.items():
        target = OPTION_MAP.get(key)
        if target is None and key in LLAMA_SERVER_OPTIONS:
            target = key
        if target is None:
            ignored.append(key)
            continue
        if key == "num_predict" and isinstance(value, int) and value < 0:
            continue  # -1: no limit
        out[target] = value
    return ignored


def _format(body: dict[str, Any], out: dict[str, Any]) -> None:
    fmt = body.get("format")
    if fmt in (None, ""):
        return
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}
    else:
        raise BadRequest('format must be "json" or a JSON schema object')


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


def _common(body: dict[str, Any], model: str, out: dict[str, Any]) -> list[str]:
    out["model"] = model
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be true or false")
    out["stream"] = stream
    if stream:
        out["stream_options"] = {"include_usage": True}
    _format(body, out)
    return _options(body, out)


def chat_request_to_openai(body: dict[str, Any], resolve: Resolve) -> tuple[dict[str, Any], list[str]]:
    """An ``/api/chat`` body → (OpenAI chat request, names of ignored options)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required")
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        raise BadRequest("messages must be a list")
    mapped = [_message(m, i) for i, m in enumerate(messages)]
    _link_tool_results(mapped)
    out: dict[str, Any] = {"messages": mapped}
    tools = body.get("tools")
    if tools:
        out["tools"] = tools
    ignored = _common(body, resolve(model), out)
    return out, ignored


def generate_request_to_openai(body: dict[str, Any], resolve: Resolve) -> tuple[dict[str, Any], list[str]]:
    """An ``/api/generate`` body → (OpenAI chat request, ignored options).

    ``system`` becomes a system message and ``prompt`` (with ``images``) the user message. ``raw: true`` asks for no
    chat template; llama-server's chat endpoint always applies one, so the prompt is sent as the sole user message.
    ``suffix`` (fill-in-the-middle) has no chat equivalent; it is passed on as llama-server's ``input_suffix``
    field, which its fill-in-the-middle capable builds use and others ignore.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required")
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
    suffix = body.get("suffix")
    if isinstance(suffix, str) and suffix:
        out["input_suffix"] = suffix
    ignored = _common(body, resolve(model), out)
    return out, ignored


# -- responses ------------------------------------------------------------------------------------------------


def _counts(usage: UsageDelta | None) -> dict[str, int]:
    """Ollama's counts and nanosecond durations from the usage and llama-server's timings."""
    u = usage or UsageDelta(0, 0)
    prompt_ms, predicted_ms = u.prompt_ms or 0.0, u.predicted_ms or 0.0
    return {
        "total_duration": int((prompt_ms + predicted_ms) * 1e6),
        "load_duration": 0,
        "prompt_eval_count": u.prompt_tokens,
        "prompt_eval_duration": int(prompt_ms * 1e6),
        "eval_count": u.completion_tokens,
        "eval_duration": int(predicted_ms * 1e6),
    }


def _done_reason(finish: str | None) -> str:
    return "length" if finish == "length" else "stop"


def _ollama_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for call in calls:
        fn = call.get("function") or {}
        args: Any = fn.get("arguments") or "{}"
        if isinstance(args, str):
            try:
                args = jsonutil.loads(args)
            except jsonutil.JSONError:
                args = {"_raw": args}
        if not isinstance(args, dict):
            args = {"value": args}
        entry: dict[str, Any] = {"function": {"name": fn.get("name") or "", "arguments": args}}
        if call.get("id"):
            entry["id"] = call["id"]
        out.append(entry)
    return out


def _with_text(line: dict[str, Any], content: str, thinking: str, generate: bool) -> dict[str, Any]:
    """Answer text where each endpoint puts it: ``response``/``thinking`` for generate, ``message`` for chat."""
    if generate:
        line["response"] = content
        if thinking:
            line["thinking"] = thinking
    else:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        line["message"] = message
    return line


class OllamaChatEncoder(DeltaEncoder):
    """Pipeline items → Ollama NDJSON lines (``/api/chat``, or ``/api/generate`` with ``generate=True``): one line
    per upstream chunk that carries text or thinking, tool calls and counts on the final ``done`` line."""

    def __init__(self, model: str, clock: Callable[[], float], generate: bool = False) -> None:
        super().__init__()
        self.model = model
        self.clock = clock
        self.generate = generate
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.usage: UsageDelta | None = None
        self._text: list[str] = []
        self._thinking: list[str] = []

    def _line(self, value: dict[str, Any]) -> bytes:
        return jsonutil.dumps(value) + b"\n"

    def _head(self) -> dict[str, Any]:
        return {"model": self.model, "created_at": now_iso(self.clock())}

    def on_text(self, text: str) -> bytes:
        self._text.append(text)
        return b""

    def on_reasoning(self, text: str) -> bytes:
        self._thinking.append(text)
        return b""

    def on_tool_call(self, d: ToolCallDelta) -> bytes:
        entry = self.calls.setdefault(d.index, {"function": {"name": "", "arguments": ""}})
        if d.id:
            entry["id"] = d.id
        if d.name:
            entry["function"]["name"] = d.name
        entry["function"]["arguments"] += d.arguments
        return b""

    def on_finish(self, reason: str) -> bytes:
        self.finish = reason
        return b""

    def on_usage(self, usage: UsageDelta) -> bytes:
        self.usage = usage
        return b""

    def on_chunk_end(self) -> bytes:
        if not self._text and not self._thinking:
            return b""
        text, thought = "".join(self._text), "".join(self._thinking)
        self._text.clear()
        self._thinking.clear()
        line = _with_text(self._head(), text, thought, self.generate)
        line["done"] = False
        return self._line(line)

    def on_done(self) -> bytes:
        line = self._head()
        if self.generate:
            line["response"] = ""
        else:
            message: dict[str, Any] = {"role": "assistant", "content": ""}
            if self.calls:
                message["tool_calls"] = _ollama_calls([self.calls[k] for k in sorted(self.calls)])
            line["message"] = message
        line["done"] = True
        line["done_reason"] = _done_reason(self.finish)
        line.update(_counts(self.usage))
        return self._line(line)

    def on_error(self, err: StreamError) -> bytes:
        return self._line({"error": err.message})


def chat_reply_to_ollama(reply: dict[str, Any], model: str, now: float, generate: bool = False) -> dict[str, Any]:
    """A non-streamed chat.completion → one Ollama ``/api/chat`` (or ``/api/generate``) object."""
    choices = reply.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    content = msg.get("content")
    content = content if isinstance(content, str) else ""
    thinking = msg.get("reasoning_content") or msg.get("reasoning") or ""
    thinking = thinking if isinstance(thinking, str) else ""
    out = _with_text({"model": model, "created_at": now_iso(now)}, content, thinking, generate)
    if not generate and msg.get("tool_calls"):
        out["message"]["tool_calls"] = _ollama_calls(msg["tool_calls"])
    out["done"] = True
    out["done_reason"] = _done_reason(choice.get("finish_reason"))
    out.update(_counts(usage_delta(reply.get("usage"), reply.get("timings"))))
    return out


# -- metadata -----------------------------------------------------------------------------------------------------


def version_body(version: str) -> dict[str, Any]:
    return {"version": version}


def _details(entry: dict[str, Any], props: dict[str, Any] | None) -> dict[str, Any]:
    meta = obj(entry.get("meta"))
    n_params = meta.get("n_params")
    size = ""
    if isinstance(n_params, int) and n_params > 0:
        size = f"{n_params / 1e9:.1f}B" if n_params >= 1e9 else f"{n_params / 1e6:.0f}M"
    quant = (props or {}).get("model_ftype") or meta.get("ftype") or ""
    arch = architecture(entry, props)
    return {
        "parent_model": "",
        "format": "gguf",
        "family": arch,
        "families": [arch],
        "parameter_size": size,
        "quantization_level": str(quant),
    }


def architecture(entry: dict[str, Any], props: dict[str, Any] | None) -> str:
    meta = obj(entry.get("meta"))
    for value in (meta.get("general.architecture"), meta.get("architecture"), (props or {}).get("architecture")):
        if isinstance(value, str) and value:
            return value
    return "llama"


def tags_body(models_json: Any, props: dict[str, Any] | None) -> dict[str, Any]:
    models = []
    for entry in model_entries(models_json):
        meta = obj(entry.get("meta"))
        size = meta.get("size") if isinstance(meta.get("size"), int) else 0
        created = entry.get("created") if isinstance(entry.get("created"), (int, float)) else 0
        models.append(
            {
                "name": friendly_name(entry["id"]),
                "model": entry["id"],
                "modified_at": now_iso(float(created or 0)),
                "size": size,
                "digest": "",
                "details": _details(entry, props),
            }
        )
    return {"models": models}


def context_length(entry: dict[str, Any], props: dict[str, Any] | None) -> int:
    settings = (props or {}).get("default_generation_settings")
    if isinstance(settings, dict) and isinstance(settings.get("n_ctx"), int) and settings["n_ctx"] > 0:
        return int(settings["n_ctx"])
    meta = obj(entry.get("meta"))
    for key in ("n_ctx", "n_ctx_train"):
        if isinstance(meta.get(key), int) and meta[key] > 0:
            return int(meta[key])
    return 4096


def capabilities(props: dict[str, Any] | None) -> list[str]:
    props = props or {}
    caps = ["completion"]
    template_caps = props.get("chat_template_caps")
    if isinstance(template_caps, dict) and (
        template_caps.get("supports_tools") or template_caps.get("supports_tool_calls")
    ):
        caps.append("tools")
    modalities = props.get("modalities")
    if isinstance(modalities, dict) and modalities.get("vision"):
        caps.append("vision")
    return caps


def show_body(model_id: str, props: dict[str, Any] | None, models_json: Any) -> dict[str, Any] | None:
    """``/api/show`` for the upstream model ``model_id`` (``None``: no such model)."""
    entry = next((e for e in model_entries(models_json) if e["id"] == model_id), None)
    if entry is None:
        return None
    arch = architecture(entry, props)
    meta = obj(entry.get("meta"))
    info: dict[str, Any] = {
        "general.architecture": arch,
        "general.basename": friendly_name(model_id),
        "general.name": friendly_name(model_id),
        f"{arch}.context_length": context_length(entry, props),
    }
    if isinstance(meta.get("n_params"), int):
        info["general.parameter_count"] = meta["n_params"]
    if isinstance(meta.get("n_embd"), int):
        info[f"{arch}.embedding_length"] = meta["n_embd"]
    template = (props or {}).get("chat_template")
    return {
        "modelfile": f"FROM {model_id}\n",
        "parameters": "",
        "template": template if isinstance(template, str) else "",
        "details": _details(entry, props),
        "model_info": info,
        "capabilities": capabilities(props),
        "modified_at": now_iso(float(entry.get("created") or 0)),
    }


def ps_body(models_json: Any, props: dict[str, Any] | None) -> dict[str, Any]:
    models = []
    for entry in model_entries(models_json):
        meta = obj(entry.get("meta"))
        size = meta.get("size") if isinstance(meta.get("size"), int) else 0
        models.append(
            {
                "name": friendly_name(entry["id"]),
                "model": entry["id"],
                "size": size,
                "digest": "",
                "details": _details(entry, props),
                "expires_at": "2999-12-31T23:59:59Z",
                "size_vram": 0,
                "context_length": context_length(entry, props),
            }
        )
    return {"models": models}


def embed_request(body: dict[str, Any], resolve: Resolve, legacy: bool) -> dict[str, Any]:
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
    return {"model": resolve(model), "input": inputs}


def embed_body(reply: Any, model: str, legacy: bool) -> dict[str, Any]:
    data = reply.get("data") if isinstance(reply, dict) else None
    vectors = [d.get("embedding") for d in data or [] if isinstance(d, dict)]
    if legacy:
        return {"embedding": vectors[0] if vectors else []}
    usage = reply.get("usage") if isinstance(reply, dict) else None
    prompt = (usage or {}).get("prompt_tokens", 0)
    return {"model": model, "embeddings": vectors, "prompt_eval_count": prompt}

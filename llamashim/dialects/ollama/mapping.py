"""The Ollama dialect (pure): Ollama requests → OpenAI chat requests, the stream → NDJSON, metadata bodies.

Ollama's wire format: NDJSON (``application/x-ndjson``) for ``/api/chat`` and ``/api/generate``, streamed unless
``"stream": false``; tool-call ``arguments`` as JSON objects; the last line ``done: true`` with ``done_reason`` and
counts and durations in nanoseconds; errors as ``{"error": "..."}``. The model metadata (``/api/tags``, ``/api/show``,
``/api/ps``) is built from llama-server's ``/v1/models`` and ``/props``.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Callable, Iterable
from typing import Any

from llamashim import jsonutil
from llamashim.errors import BadRequest
from llamashim.jsonutil import arr, obj
from llamashim.stream.deltas import DeltaEncoder, ToolCallDelta, UsageDelta, usage_delta
from llamashim.stream.items import StreamError
from llamashim.upstream.models import Model

Resolve = Callable[[str], str]


def as_given(name: str) -> str:
    """The model name as the client sent it: the shared flow's model index resolves it."""
    return name

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


_SECOND: list[Any] = [None, ""]  # the last whole second formatted: one strftime a second, not one a line


def now_iso(seconds: float) -> str:
    """``2026-12-01T22:33:20.123456Z`` (Ollama's ``created_at``)."""
    whole = int(seconds)
    if _SECOND[0] != whole:
        _SECOND[0] = whole
        _SECOND[1] = datetime.datetime.fromtimestamp(whole, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_SECOND[1]}.{int((seconds - whole) * 1e6):06d}Z"


# -- model names ------------------------------------------------------------------------------------------------


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


def chat_request_to_openai(body: dict[str, Any], resolve: Resolve = as_given) -> tuple[dict[str, Any], list[str]]:
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
    ignored = _common(body, resolve(model), out)
    return out, ignored


def generate_request_to_openai(body: dict[str, Any], resolve: Resolve = as_given) -> tuple[dict[str, Any], list[str]]:
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
    ignored = _common(body, resolve(model), out)
    return out, ignored


# -- responses ------------------------------------------------------------------------------------------------


def counts(usage: UsageDelta | None) -> dict[str, int]:
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
        line.update(counts(self.usage))
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
    out.update(counts(usage_delta(reply.get("usage"), reply.get("timings"))))
    return out


# -- metadata -----------------------------------------------------------------------------------------------------


def load_reply(model: str, now: float, generate: bool, done_reason: str) -> dict[str, Any]:
    """The answer to Ollama's load (``done_reason: "load"``) or unload (``"unload"``) request: no text."""
    out = _with_text({"model": model, "created_at": now_iso(now)}, "", "", generate)
    out["done"] = True
    out["done_reason"] = done_reason
    return out


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


def _size(entry: dict[str, Any]) -> int:
    meta = obj(entry.get("meta"))
    return meta["size"] if isinstance(meta.get("size"), int) else 0


def tags_body(models: Iterable[Model], props_of: Callable[[Model], dict[str, Any] | None]) -> dict[str, Any]:
    """``/api/tags``: every model of every upstream, ``name`` and ``model`` both its one friendly name."""
    out = []
    for model in models:
        entry = model.first().entry
        created = entry.get("created") if isinstance(entry.get("created"), (int, float)) else 0
        out.append({
            "name": model.name,
            "model": model.name,
            "modified_at": now_iso(float(created or 0)),
            "size": _size(entry),
            "digest": "",
            "details": _details(entry, props_of(model)),
        })
    return {"models": out}


def context_length(entry: dict[str, Any], props: dict[str, Any] | None) -> int:
    settings = (props or {}).get("default_generation_settings")
    if isinstance(settings, dict) and isinstance(settings.get("n_ctx"), int) and settings["n_ctx"] > 0:
        return int(settings["n_ctx"])
    meta = obj(entry.get("meta"))
    for key in ("n_ctx", "n_ctx_train"):
        if isinstance(meta.get(key), int) and meta[key] > 0:
            return int(meta[key])
    return 4096


# What /api/show's ``template`` gains for a model that fills in the middle: Ollama's clients (Continue among them)
# take a ``.Suffix`` in the template, or the ``insert`` capability, to mean that ``suffix`` works. The prompt is
# assembled by llama-server's /infill from the model's own FIM tokens; this line says so in Ollama's template syntax.
INSERT_TEMPLATE = "{{- if .Suffix }}<FIM_PRE>{{ .Prompt }}<FIM_SUF>{{ .Suffix }}<FIM_MID>{{- end }}"


def capabilities(props: dict[str, Any] | None, fim: bool = False) -> list[str]:
    """``completion`` always, ``insert`` when the model fills in the middle (``fim``), ``tools`` when its chat
    template supports tools, ``vision`` when it has vision."""
    props = props or {}
    caps = ["completion"]
    template_caps = props.get("chat_template_caps")
    if isinstance(template_caps, dict) and (
        template_caps.get("supports_tools") or template_caps.get("supports_tool_calls")
    ):
        caps.append("tools")
    if fim:
        caps.append("insert")
    modalities = props.get("modalities")
    if isinstance(modalities, dict) and modalities.get("vision"):
        caps.append("vision")
    return caps


# llama-server's default sampling settings (``/props`` default_generation_settings.params) → Ollama parameter names.
PARAMETER_NAMES = {
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "repeat_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "typical_p": "typical_p",
    "seed": "seed",
}


def _number_text(value: float | int) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def parameters_text(entry: dict[str, Any], props: dict[str, Any] | None) -> str:
    """``/api/show``'s ``parameters`` in Ollama's text form: ``num_ctx`` (the per-slot context), ``stop`` for the
    template's end-of-turn strings, and llama-server's default sampling settings."""
    lines = [f"num_ctx                        {context_length(entry, props)}"]
    settings = obj(obj(props).get("default_generation_settings"))
    params = obj(settings.get("params"))
    stops = [s for s in arr(params.get("stop")) if isinstance(s, str) and s]
    eos = obj(props).get("eos_token")
    if isinstance(eos, str) and eos and eos not in stops:
        stops.append(eos)
    lines += [f"stop                           {jsonutil.dumps(stop).decode()}" for stop in stops]
    for key, name in PARAMETER_NAMES.items():
        value = params.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not (key == "seed" and value < 0):
            lines.append(f"{name:<31}{_number_text(value)}")
    return "\n".join(lines)


def show_body(model: Model, props: dict[str, Any] | None, fim: bool = False) -> dict[str, Any]:
    """``/api/show`` for one model (its first upstream's metadata); ``fim``: it fills in the middle (``insert``
    capability, :data:`INSERT_TEMPLATE` in ``template``)."""
    served = model.first()
    entry = served.entry
    arch = architecture(entry, props)
    meta = obj(entry.get("meta"))
    info: dict[str, Any] = {
        "general.architecture": arch,
        "general.basename": model.name,
        "general.name": model.name,
        f"{arch}.context_length": context_length(entry, props),
    }
    if isinstance(meta.get("n_params"), int):
        info["general.parameter_count"] = meta["n_params"]
    if isinstance(meta.get("n_embd"), int):
        info[f"{arch}.embedding_length"] = meta["n_embd"]
    template = (props or {}).get("chat_template")
    template = template if isinstance(template, str) else ""
    if fim:
        template = f"{template}\n{INSERT_TEMPLATE}" if template else INSERT_TEMPLATE
    return {
        "modelfile": f"FROM {served.id}\n",
        "parameters": parameters_text(entry, props),
        "template": template,
        "details": _details(entry, props),
        "model_info": info,
        "capabilities": capabilities(props, fim),
        "modified_at": now_iso(float(entry.get("created") or 0)),
    }


def ps_body(models: Iterable[Model], props_of: Callable[[Model], dict[str, Any] | None]) -> dict[str, Any]:
    """``/api/ps``: the models loaded now (a router-mode upstream's unloaded ones are left out), each with the real
    per-slot context."""
    out = []
    for model in models:
        if model.served and all(s.status not in ("", "loaded") for s in model.served):
            continue
        entry = model.first().entry
        props = props_of(model)
        out.append({
            "name": model.name,
            "model": model.name,
            "size": _size(entry),
            "digest": "",
            "details": _details(entry, props),
            "expires_at": "2999-12-31T23:59:59Z",
            "size_vram": 0,
            "context_length": context_length(entry, props),
        })
    return {"models": out}


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

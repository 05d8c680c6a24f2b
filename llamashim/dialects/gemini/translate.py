"""Gemini API requests → internal chat requests (pure): what ``POST /v1beta/models/{model}:generateContent`` asks, as
an OpenAI chat body; and what ``:countTokens``, ``:embedContent`` and ``:batchEmbedContents`` ask.

The mapping: ``systemInstruction`` → one system message; ``contents`` (roles ``user`` and ``model``) → user and
assistant messages, part by part — ``text``; ``inlineData`` images (and ``fileData`` image URLs) → ``image_url``
parts; ``functionCall`` → the assistant's ``tool_calls``; ``functionResponse`` → ``tool`` messages (matched to their
call by ``id``, else by name, as Gemini clients that keep no ids need); ``thought: true`` parts → the assistant's
``reasoning_content``. ``tools.functionDeclarations`` (``parameters`` in Gemini's OpenAPI subset, turned into JSON
Schema, or ``parametersJsonSchema`` as it is) → function tools; ``toolConfig.functionCallingConfig`` → ``tool_choice``;
``generationConfig`` → sampling, ``max_tokens``, ``stop``, ``response_format`` and the template's thinking switch.
What llama-server cannot use (Google's own tools, ``safetySettings``, ``cachedContent``, code execution parts) is
left out with a debug line, never refused.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llamashim import jsonutil
from llamashim.errors import BadRequest
from llamashim.jsonutil import arr, obj

Log = Callable[..., None]
JSON = dict[str, Any]

SAMPLING = {"temperature": "temperature", "topP": "top_p", "topK": "top_k", "seed": "seed",
            "presencePenalty": "presence_penalty", "frequencyPenalty": "frequency_penalty"}
CALLING_MODES = {"AUTO": "auto", "VALIDATED": "auto", "MODE_UNSPECIFIED": "auto", "ANY": "required", "NONE": "none"}
# Gemini's Schema (an OpenAPI 3.0 subset) → JSON Schema: int64 fields arrive as strings in proto3's JSON form
_INT_FIELDS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")
_SCHEMA_DROPPED = ("nullable", "propertyOrdering", "example")
_SNAKE = re.compile(r"[A-Z]")


@dataclass(slots=True)
class GeminiRequest:
    """One translated request: ``chat_body`` a plain OpenAI chat body (its ``model`` the client's name),
    ``include_thoughts`` whether the answer carries thought parts (``thinkingConfig.includeThoughts``)."""

    chat_body: JSON
    model: str
    include_thoughts: bool = False
    dropped: Counter[str] = field(default_factory=Counter)


def request_to_chat(body: Any, *, model: str, stream: bool, log: Log) -> GeminiRequest:
    """A ``generateContent`` body → the internal chat request; :class:`BadRequest` when it is malformed."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    dropped: Counter[str] = Counter()
    system = _system(get_field(body, "systemInstruction"))
    messages = ([{"role": "system", "content": system}] if system else []) + contents_to_messages(
        body.get("contents"), dropped)
    out: JSON = {"model": model, "messages": messages, "stream": stream}
    if stream:
        out["stream_options"] = {"include_usage": True}
    config = obj(get_field(body, "generationConfig"))
    _generation(config, out)
    include = _thinking(obj(get_field(config, "thinkingConfig")), out)
    _tools(body.get("tools"), obj(get_field(obj(get_field(body, "toolConfig")), "functionCallingConfig")), out, log)
    for name in ("safetySettings", "cachedContent"):
        if get_field(body, name):
            dropped[name] += 1
    if dropped:
        kinds = ", ".join(f"{kind} x{n}" if n > 1 else kind for kind, n in sorted(dropped.items()))
        log("gemini: left out what has no chat equivalent: {kinds}", kinds=kinds)
    return GeminiRequest(out, model, include, dropped)


def get_field(message: JSON, name: str) -> Any:
    """A protocol field by its JSON name (``lowerCamelCase``) or its proto name (``snake_case``): Google's parsers
    take both, and clients send both (google-genai 3.6.1 sends ``thinkingConfig: {"include_thoughts": …}``)."""
    if name in message:
        return message[name]
    return message.get(_SNAKE.sub(lambda m: "_" + m.group(0).lower(), name))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


# -- contents ---------------------------------------------------------------------------------------------------


def _system(value: Any) -> str:
    """``systemInstruction`` (a Content, or a plain string) as one string."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, dict):
        raise BadRequest("systemInstruction must be a Content object")
    return "\n\n".join(p["text"] for p in arr(value.get("parts")) if isinstance(p, dict) and
                       isinstance(p.get("text"), str))


@dataclass(slots=True)
class _Calls:
    """Function calls seen so far, for matching responses that carry no ``id`` (by name, in order)."""

    unanswered: list[tuple[str, str]] = field(default_factory=list)  # (id, name)

    def answer(self, call_id: Any, name: str, i: int, j: int) -> str:
        if isinstance(call_id, str) and call_id:
            self.unanswered = [c for c in self.unanswered if c[0] != call_id]
            return call_id
        for pos, (cid, cname) in enumerate(self.unanswered):
            if cname == name:
                del self.unanswered[pos]
                return cid
        return f"call_{i}_{j}"


def contents_to_messages(value: Any, dropped: Counter[str]) -> list[JSON]:
    if not isinstance(value, list) or not value:
        raise BadRequest("contents must be a non-empty list")
    out: list[JSON] = []
    calls = _Calls()
    for i, content in enumerate(value):
        if not isinstance(content, dict):
            raise BadRequest(f"contents[{i}] must be an object")
        role = content.get("role") or "user"
        if role not in ("user", "model", "function", "tool"):
            raise BadRequest(f'contents[{i}].role must be "user" or "model"')
        parts = content.get("parts")
        if not isinstance(parts, list):
            raise BadRequest(f"contents[{i}].parts must be a list")
        if role == "model":
            out.append(_model_turn(parts, i, calls, dropped))
        else:
            out.extend(_user_turn(parts, i, calls, dropped))
    return out


def _model_turn(parts: list[Any], i: int, calls: _Calls, dropped: Counter[str]) -> JSON:
    texts: list[str] = []
    reasoning: list[str] = []
    tool_calls: list[JSON] = []
    for j, part in enumerate(parts):
        p = obj(part)
        if isinstance(p.get("text"), str):
            (reasoning if p.get("thought") is True else texts).append(p["text"])
        elif isinstance(get_field(p, "functionCall"), dict):
            tool_calls.append(_tool_call(get_field(p, "functionCall"), i, j, calls))
        else:
            dropped[_part_kind(p)] += 1
    out: JSON = {"role": "assistant", "content": "".join(texts)}
    if tool_calls:
        out["tool_calls"] = tool_calls
    if reasoning:
        out["reasoning_content"] = "".join(reasoning)
    return out


def _user_turn(parts: list[Any], i: int, calls: _Calls, dropped: Counter[str]) -> list[JSON]:
    """One user turn → its function responses (as ``tool`` messages) first, then a user message with the rest."""
    results: list[JSON] = []
    chat_parts: list[JSON] = []
    for j, part in enumerate(parts):
        p = obj(part)
        if isinstance(p.get("text"), str):
            if p.get("thought") is not True:
                chat_parts.append({"type": "text", "text": p["text"]})
        elif isinstance(get_field(p, "functionResponse"), dict):
            results.append(_tool_result(get_field(p, "functionResponse"), i, j, calls))
        elif isinstance(get_field(p, "inlineData"), dict) or isinstance(get_field(p, "fileData"), dict):
            image = _image(p)
            if image is None:
                dropped[_part_kind(p)] += 1
            else:
                chat_parts.append(image)
        else:
            dropped[_part_kind(p)] += 1
    if chat_parts or not results:
        if all(c["type"] == "text" for c in chat_parts):
            results.append({"role": "user", "content": "".join(c["text"] for c in chat_parts)})
        else:
            results.append({"role": "user", "content": chat_parts})
    return results


def _part_kind(part: JSON) -> str:
    keys = [k for k in part if _camel(k) not in ("thought", "thoughtSignature")]
    data = get_field(part, "inlineData") or get_field(part, "fileData")
    if isinstance(data, dict):
        return f"{_camel(keys[0])} ({get_field(data, 'mimeType') or 'no mimeType'})"
    return keys[0] if keys else "empty part"


def _image(part: JSON) -> JSON | None:
    """An image part as an ``image_url`` (a data URL for ``inlineData``, the URI of an http(s) ``fileData``)."""
    inline = obj(get_field(part, "inlineData"))
    mime = get_field(inline, "mimeType")
    if isinstance(mime, str) and mime.startswith("image/") and isinstance(inline.get("data"), str):
        return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{inline['data']}"}}
    file = obj(get_field(part, "fileData"))
    uri, mime = get_field(file, "fileUri"), get_field(file, "mimeType")
    if isinstance(uri, str) and uri.startswith(("http://", "https://")) and (
            not isinstance(mime, str) or mime.startswith("image/")):
        return {"type": "image_url", "image_url": {"url": uri}}
    return None


def _tool_call(call: JSON, i: int, j: int, calls: _Calls) -> JSON:
    name = call.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"contents[{i}].parts[{j}].functionCall.name is missing")
    call_id = call.get("id")
    call_id = call_id if isinstance(call_id, str) and call_id else f"call_{i}_{j}"
    calls.unanswered.append((call_id, name))
    args = call.get("args")
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": jsonutil.dumps(args if isinstance(args, dict) else {}).decode()}}


def _tool_result(response: JSON, i: int, j: int, calls: _Calls) -> JSON:
    name = response.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"contents[{i}].parts[{j}].functionResponse.name is missing")
    value = response.get("response")
    # {"output": "..."} / {"error": "..."} (what Gemini CLI and the SDKs send) reads as the text itself
    key, only = next(iter(value.items())) if isinstance(value, dict) and len(value) == 1 else ("", None)
    if key in ("output", "result", "content") and isinstance(only, str):
        text = only
    elif key == "error" and isinstance(only, str):
        text = f"Error: {only}"
    else:
        text = jsonutil.dumps(value if value is not None else {}).decode()
    return {"role": "tool", "tool_call_id": calls.answer(response.get("id"), name, i, j), "content": text}


# -- options ----------------------------------------------------------------------------------------------------


def _number(config: JSON, key: str) -> float | int | None:
    value = get_field(config, key)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise BadRequest(f"generationConfig.{key} must be a number")
    return value


def _generation(config: JSON, out: JSON) -> None:
    for key, name in SAMPLING.items():
        value = _number(config, key)
        if value is not None:
            out[name] = value
    count = _number(config, "candidateCount")
    if count is not None and count != 1:
        raise BadRequest("generationConfig.candidateCount: only 1 candidate is supported here")
    most = _number(config, "maxOutputTokens")
    if most is not None:
        out["max_tokens"] = int(most)
    stops = get_field(config, "stopSequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise BadRequest("generationConfig.stopSequences must be a list of strings")
        if stops:
            out["stop"] = stops
    _response_format(config, out)


def _response_format(config: JSON, out: JSON) -> None:
    """``responseMimeType: application/json`` → JSON mode; with ``responseJsonSchema`` (JSON Schema) or
    ``responseSchema`` (Gemini's Schema) → that schema, which llama-server turns into a grammar."""
    mime = get_field(config, "responseMimeType")
    schema: Any = get_field(config, "responseJsonSchema")
    if schema is None and get_field(config, "responseSchema") is not None:
        schema = schema_to_json_schema(get_field(config, "responseSchema"))
    if schema is not None:
        if not isinstance(schema, dict):
            raise BadRequest("generationConfig.responseJsonSchema must be a JSON Schema object")
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    elif mime == "application/json":
        out["response_format"] = {"type": "json_object"}


def _thinking(config: JSON, out: JSON) -> bool:
    """``thinkingConfig`` → the template's ``enable_thinking`` (a budget of 0 turns thinking off; a positive one is
    passed on as llama-server's budget); whether thought parts are wanted back."""
    budget = get_field(config, "thinkingBudget")
    if isinstance(budget, int) and not isinstance(budget, bool):
        out["chat_template_kwargs"] = {"enable_thinking": budget != 0}
        if budget > 0:
            out["thinking_budget_tokens"] = budget
    level = get_field(config, "thinkingLevel")
    if isinstance(level, str) and level and level != "THINKING_LEVEL_UNSPECIFIED":
        out.setdefault("chat_template_kwargs", {})["reasoning_effort"] = level.lower()
    return get_field(config, "includeThoughts") is True


def _tools(value: Any, calling: JSON, out: JSON, log: Log) -> None:
    """``functionDeclarations`` → function tools (narrowed to ``allowedFunctionNames``); Google's own tools left
    out; the calling mode → ``tool_choice``."""
    if value is None:
        return
    if not isinstance(value, list):
        raise BadRequest("tools must be a list")
    functions: list[JSON] = []
    hosted: list[str] = []
    for k, tool in enumerate(value):
        if not isinstance(tool, dict):
            raise BadRequest(f"tools[{k}] must be an object")
        hosted.extend(name for name in tool if _camel(name) != "functionDeclarations")
        declarations = get_field(tool, "functionDeclarations") or []
        if not isinstance(declarations, list):
            raise BadRequest(f"tools[{k}].functionDeclarations must be a list")
        functions.extend(_function(d, k, n) for n, d in enumerate(declarations))
    if hosted:
        log("gemini: left out tools llama-server cannot run: {names}", names=", ".join(sorted(set(hosted))))
    allowed = get_field(calling, "allowedFunctionNames")
    if isinstance(allowed, list) and allowed:
        functions = [f for f in functions if f["function"]["name"] in allowed]
    if not functions:
        return
    out["tools"] = functions
    out["parallel_tool_calls"] = True  # Gemini models call several functions at once; llama-server's default is not to
    mode = calling.get("mode", "AUTO")
    if mode not in CALLING_MODES:
        raise BadRequest("toolConfig.functionCallingConfig.mode must be AUTO, ANY, NONE or VALIDATED")
    choice = CALLING_MODES[mode]  # ANY with allowedFunctionNames: "required" among the narrowed tools (llama-server
    if choice != "auto":          # takes "required", not a named function)
        out["tool_choice"] = choice


def _function(declaration: Any, k: int, n: int) -> JSON:
    d = obj(declaration)
    name = d.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"tools[{k}].functionDeclarations[{n}].name is missing")
    fn: JSON = {"name": name}
    if isinstance(d.get("description"), str):
        fn["description"] = d["description"]
    if get_field(d, "parametersJsonSchema") is not None:
        fn["parameters"] = get_field(d, "parametersJsonSchema")  # JSON Schema already (repaired downstream)
    elif d.get("parameters") is not None:
        fn["parameters"] = schema_to_json_schema(d["parameters"])
    return {"type": "function", "function": fn}


def schema_to_json_schema(schema: Any) -> Any:
    """Gemini's ``Schema`` (OpenAPI 3.0 subset: upper-case ``type``, ``nullable``, int64 bounds as strings) → JSON
    Schema, recursively; anything else is returned as it is."""
    if isinstance(schema, list):
        return [schema_to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: JSON = {}
    for name, value in schema.items():
        key = _camel(name)
        if key in _SCHEMA_DROPPED:
            continue
        if key == "type" and isinstance(value, str):
            out["type"] = value.lower()
        elif key in _INT_FIELDS and isinstance(value, str) and value.isdigit():
            out[key] = int(value)
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: schema_to_json_schema(s) for name, s in value.items()}
        elif key in ("items", "anyOf", "oneOf", "allOf"):
            out[key] = schema_to_json_schema(value)
        else:
            out[key] = value
    if get_field(schema, "nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if out.get("type") == "type_unspecified":
        del out["type"]
    return out


# -- countTokens and embeddings ---------------------------------------------------------------------------------


def count_request(body: Any, *, model: str, log: Log) -> JSON:
    """A ``countTokens`` body (``contents``, or a whole ``generateContentRequest``) → the chat body to count."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    inner = get_field(body, "generateContentRequest")
    request = inner if isinstance(inner, dict) else body
    return request_to_chat(request, model=model, stream=False, log=log).chat_body


def embed_inputs(body: Any, batch: bool) -> list[str]:
    """The texts of an ``embedContent`` body (one ``content``) or a ``batchEmbedContents`` body (``requests``)."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    if not batch:
        return [_content_text(body.get("content"), "content")]
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise BadRequest("requests must be a non-empty list")
    return [_content_text(obj(r).get("content"), f"requests[{k}].content") for k, r in enumerate(requests)]


def embed_dimensions(body: Any, batch: bool) -> list[int | None]:
    """Each input's ``outputDimensionality`` (a vector is cut to it, as Gemini's embeddings are), or ``None``."""
    items = arr(obj(body).get("requests")) if batch else [body]
    dims = [get_field(obj(item), "outputDimensionality") for item in items]
    return [d if isinstance(d, int) and d > 0 else None for d in dims]


def _content_text(content: Any, where: str) -> str:
    if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
        raise BadRequest(f"{where} must be a Content object with parts")
    texts = [p["text"] for p in content["parts"] if isinstance(p, dict) and isinstance(p.get("text"), str)]
    if not texts:
        raise BadRequest(f"{where} has no text part to embed")
    return "\n".join(texts)


def embeddings_reply(reply: Any, dimensions: list[int | None], batch: bool) -> JSON:
    """An OpenAI ``/v1/embeddings`` answer → ``{"embedding": {"values"}}`` or ``{"embeddings": [...]}``."""
    data = sorted((d for d in arr(obj(reply).get("data")) if isinstance(d, dict)),
                  key=lambda d: d.get("index", 0) if isinstance(d.get("index"), int) else 0)
    vectors = []
    for k, item in enumerate(data):
        values = arr(item.get("embedding"))
        cut = dimensions[k] if k < len(dimensions) else None
        vectors.append({"values": values[:cut] if cut else values})
    if batch:
        return {"embeddings": vectors}
    return {"embedding": vectors[0] if vectors else {"values": []}}

"""Ollama's model metadata (pure): ``/api/version``, ``/api/tags``, ``/api/show`` and ``/api/ps`` bodies, built from
llama-server's ``/v1/models`` and ``/props``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from llamashim import jsonutil
from llamashim.dialects.ollama.encoder import now_iso
from llamashim.jsonutil import arr, obj
from llamashim.upstream.models import Model, context_window


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
    """Ollama's ``num_ctx``: the real window when the upstream says it, else its best guess (Ollama always has one)."""
    window = context_window(props)
    if window is not None:
        return window
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

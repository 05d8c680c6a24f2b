"""The model index (pure): which upstream serves which model, under which names.

Built from each upstream's ``/v1/models`` (a router-mode llama-server lists several models with their load status)
and ``/props``, or from the ``models:`` an upstream is configured with. Every model has **one friendly name** —
the upstream id's file name without ``.gguf`` (``/models/Qwen2.5-7B-Q4.gguf`` → ``Qwen2.5-7B-Q4``) — the name
``/v1/models``, ``/api/tags``, ``/api/show`` and ``/api/ps`` list; the upstream ids stay aliases. Several upstreams
serving a model under the same friendly name are one model with several upstreams to choose from.

A requested name resolves, in order, as: an exact upstream id or friendly name, the same without ``:latest``, a
``models.aliases`` glob, ``models.default`` when the request names none; a configured glob (``models: ["qwen*"]``
of a router upstream that loads on demand) serves a name nothing else matched. Anything else is unknown.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

JSON = dict[str, Any]
GLOB_CHARS = frozenset("*?[")


def friendly_name(model_id: str) -> str:
    """``/models/Qwen2.5-7B-Q4.gguf`` → ``Qwen2.5-7B-Q4``."""
    base = os.path.basename(model_id.rstrip("/")) or model_id
    return base[: -len(".gguf")] if base.lower().endswith(".gguf") else base


def model_entries(models_json: Any) -> list[JSON]:
    """An upstream's models as OpenAI entries, whatever shape its ``/v1/models`` has (a bare list, OpenAI's list,
    or Ollama's ``models`` array of older builds)."""
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
    return [{"object": "model", "owned_by": "llamacpp", **e} for e in data
            if isinstance(e, dict) and isinstance(e.get("id"), str)]


def load_status(entry: JSON) -> str:
    """A router-mode entry's ``status.value`` (``loaded``, ``loading``, ``unloaded``, ``failed``); ``""`` for a
    single-model server, whose one model is always loaded."""
    status = entry.get("status")
    if isinstance(status, dict) and isinstance(status.get("value"), str):
        return str(status["value"])
    return ""


@dataclass(frozen=True)
class Served:
    """One upstream serving one model: the id to send it, its ``/v1/models`` entry and its ``/props``."""

    upstream: str
    id: str
    entry: JSON
    props: JSON | None
    status: str = ""


@dataclass
class Model:
    """One model as clients see it: its friendly name and every upstream that serves it."""

    name: str
    served: list[Served] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return sorted({s.id for s in self.served})

    def first(self) -> Served:
        return self.served[0]


@dataclass(frozen=True)
class Resolved:
    """A requested name resolved: the model, and the upstreams to choose from (with the id each wants)."""

    model: Model
    requested: str


class UnknownModel(LookupError):
    def __init__(self, requested: str, known: Sequence[str]) -> None:
        super().__init__(requested)
        self.requested = requested
        self.known = list(known)


class ModelIndex:
    def __init__(self, aliases: Iterable[tuple[str, str]] = (), default: str | None = None) -> None:
        self.aliases = dict(aliases)
        self.default = default
        self._served: dict[str, list[Served]] = {}  # upstream name -> what it serves
        self._globs: dict[str, tuple[str, ...]] = {}  # upstream name -> configured globs
        self._order: list[str] = []  # upstream order, as configured
        self._models: dict[str, Model] = {}
        self._names: dict[str, Model] = {}  # every id and friendly name → its model (one lookup per request)

    # -- building ---------------------------------------------------------------------------------------------

    def set_upstream(self, name: str, models_json: Any, props: JSON | None, configured: Sequence[str] = ()) -> None:
        """What upstream ``name`` serves now (replaces what it served before)."""
        if name not in self._order:
            self._order.append(name)
        exact = [m for m in configured if not GLOB_CHARS & set(m)]
        self._globs[name] = tuple(m for m in configured if GLOB_CHARS & set(m))
        if configured:
            listed = {e["id"]: e for e in model_entries(models_json)}
            entries = [listed.get(m, {"id": m, "object": "model", "owned_by": "llamacpp"}) for m in exact]
        else:
            entries = model_entries(models_json)
            if not entries:
                self._globs[name] = ("*",)  # it lists nothing (yet, or ever): it may serve whatever is asked
        self._served[name] = [Served(name, e["id"], e, props, load_status(e)) for e in entries]
        self._rebuild()

    def _rebuild(self) -> None:
        models: dict[str, Model] = {}
        for upstream in self._order:
            for served in self._served.get(upstream, ()):
                key = friendly_name(served.id)
                models.setdefault(key, Model(key)).served.append(served)
        self._models = models
        names: dict[str, Model] = {}
        for model in models.values():
            for served in model.served:
                names.setdefault(served.id, model)
        for model in models.values():
            names[model.name] = model
        self._names = names

    # -- reading ----------------------------------------------------------------------------------------------

    def models(self) -> list[Model]:
        return list(self._models.values())

    def names(self) -> list[str]:
        return list(self._models)

    def upstreams_of(self, model: str) -> list[str]:
        found = self._models.get(model)
        return [s.upstream for s in found.served] if found is not None else []

    def find(self, name: str) -> Model | None:
        """The model ``name`` is (an upstream id or friendly name, ``:latest`` accepted), without aliases."""
        names = self._names
        for candidate in (name, name.removesuffix(":latest")):
            found = names.get(candidate) or names.get(friendly_name(candidate))
            if found is not None:
                return found
        return None

    def resolve(self, requested: str | None) -> Resolved:
        """The model a request's ``model`` names (see the module docstring); :class:`UnknownModel` otherwise."""
        name = requested or ""
        found = self.find(name) if name else None
        target = name
        if found is None:
            target = resolve_model(name, self.aliases, self.default) or name  # an alias, or the default
            if target:
                found = self.find(target)
        if found is None and not target and len(self._models) == 1:
            found = next(iter(self._models.values()))  # one model: a request that names none means it
        if found is None:
            found = self._glob(target)  # what an upstream serves by a configured glob (or lists nothing at all)
        if found is None and name and len(self._models) == 1 and not self._any_globs():
            # One upstream model and no way to tell names apart: llama-server itself ignores the name.
            found = next(iter(self._models.values()))
        if found is None:
            raise UnknownModel(name, self.names())
        return Resolved(found, name)

    def _any_globs(self) -> bool:
        return any(self._globs.values())

    def _glob(self, name: str) -> Model | None:
        served = [Served(upstream, name, {"id": name, "object": "model", "owned_by": "llamacpp"}, None)
                  for upstream in self._order
                  if any(fnmatchcase(name, pattern) for pattern in self._globs.get(upstream, ()))]
        return Model(friendly_name(name) or "default", served) if served else None


def listing(models: Iterable[Model]) -> JSON:
    """``/v1/models`` from the index: OpenAI's list shape, one entry per friendly name, the upstream ids (and
    the upstream's own aliases) as ``aliases``, the first upstream's extra fields (``meta``) kept. A model whose
    window is known (:func:`model_window`) says it as ``context_length`` (OpenRouter's field, which Cline, Roo Code
    and other OpenAI-compatible clients read) and ``max_model_len`` (vLLM's, which Continue reads)."""
    data = []
    for model in models:
        first = model.first().entry
        aliases = sorted({*model.ids, *(a for s in model.served for a in s.entry.get("aliases") or ()
                                        if isinstance(a, str))} - {model.name})
        extra = {k: v for k, v in first.items() if k not in ("id", "aliases", "status")}
        entry: JSON = {**extra, "id": model.name, "object": "model", "owned_by": first.get("owned_by", "llamacpp"),
                       "aliases": aliases, "upstreams": [s.upstream for s in model.served]}
        window = model_window(model)
        if window is not None:
            entry["context_length"] = entry["max_model_len"] = window
        status = [s.status for s in model.served if s.status]
        if status:
            entry["status"] = {"value": "loaded" if "loaded" in status else status[0]}
        data.append(entry)
    return {"object": "list", "data": data}


def context_window(props: JSON | None) -> int | None:
    """A model's real context window per request, in tokens: what one slot of llama-server holds
    (``/props`` ``default_generation_settings.n_ctx``: ``--ctx-size`` divided among ``--parallel`` slots). ``None``
    when the upstream does not say (an old build, a router-mode server, a glob-served model): the trained context
    (``n_ctx_train``) is not the truth, llama-server refuses far below it."""
    settings = (props or {}).get("default_generation_settings")
    n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
    return n_ctx if isinstance(n_ctx, int) and not isinstance(n_ctx, bool) and n_ctx > 0 else None


def model_window(model: Model, by_upstream: Mapping[str, JSON | None] | None = None) -> int | None:
    """The context window a model is reported with: that of its first upstream with ``/props`` (as
    :func:`props_of`, which Ollama's ``/api/show`` reads too), ``None`` when unknown."""
    return context_window(props_of(model, by_upstream or {}))


def props_of(model: Model, by_upstream: Mapping[str, JSON | None]) -> JSON | None:
    """The ``/props`` of the first upstream of ``model`` that has them."""
    for served in model.served:
        props = served.props if served.props is not None else by_upstream.get(served.upstream)
        if props is not None:
            return props
    return None


def resolve_model(name: str, aliases: Mapping[str, str], default: str | None) -> str | None:
    """The upstream model to ask for when a client names ``name``.

    ``aliases`` maps glob patterns (:func:`fnmatch.fnmatchcase`, compared case-insensitively) to upstream names;
    the first pattern in mapping order that matches wins, so put specific patterns first (``claude-*haiku*``
    before ``claude-*``). A pattern whose target is empty stands for ``default``. An empty ``name`` gets
    ``default``; a name no pattern matches passes through unchanged.
    """
    if not name:
        return default
    lowered = name.lower()
    for pattern, target in aliases.items():
        if fnmatchcase(lowered, pattern.lower()):
            return target or default
    return name

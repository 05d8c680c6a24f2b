"""The model index (pure): one friendly name per model, resolution order, router status, wildcards, ``listing``."""

from __future__ import annotations

from typing import Any

import pytest

from llamashim.upstream.models import ModelIndex, UnknownModel, friendly_name, listing, load_status, model_entries

PATH_A = "/models/Qwen2.5-7B-Q4.gguf"


def models(*ids: str, **extra: Any) -> dict[str, Any]:
    """An upstream's ``/v1/models`` answer listing ``ids``."""
    return {"object": "list", "data": [{"id": i, "object": "model", "owned_by": "llamacpp", **extra} for i in ids]}


def router(**status: str) -> dict[str, Any]:
    """A router-mode llama-server's ``/v1/models``: each model with its ``status.value``."""
    return {"object": "list", "data": [{"id": i, "object": "model", "status": {"value": v}} for i, v in status.items()]}


def two(aliases: Any = (), default: str | None = None) -> ModelIndex:
    """Upstream A serves the Qwen file, B serves ``llama-3``."""
    index = ModelIndex(aliases, default)
    index.set_upstream("a", models(PATH_A), {"total_slots": 2})
    index.set_upstream("b", models("llama-3"), None)
    return index


def upstream_of(index: ModelIndex, requested: str | None) -> list[str]:
    return [s.upstream for s in index.resolve(requested).model.served]


def test_friendly_name_is_the_file_name_without_gguf() -> None:
    """A path's base name without ``.gguf`` (any case); other ids stay as they are."""
    assert friendly_name(PATH_A) == "Qwen2.5-7B-Q4"
    assert friendly_name("/m/x.GGUF") == "x"
    assert friendly_name("alpha") == "alpha"
    assert friendly_name("dir/") == "dir"


def test_model_entries_accepts_every_listing_shape() -> None:
    """OpenAI's list, a bare list and Ollama's ``models`` array all give OpenAI entries; junk gives none."""
    assert [e["id"] for e in model_entries(models("x"))] == ["x"]
    assert [e["id"] for e in model_entries([{"id": "y"}, {"nope": 1}, "z"])] == ["y"]
    assert [e["id"] for e in model_entries({"models": [{"model": "m1"}, {"name": "m2"}]})] == ["m1", "m2"]
    assert model_entries(None) == [] and model_entries("x") == []
    assert model_entries([{"id": "y"}])[0]["owned_by"] == "llamacpp"


def test_one_friendly_name_per_model_and_every_name_resolves() -> None:
    """The friendly name, ``:latest``, the upstream id and the file name all reach the same model."""
    index = two()
    assert index.names() == ["Qwen2.5-7B-Q4", "llama-3"]
    for name in ("Qwen2.5-7B-Q4", "Qwen2.5-7B-Q4:latest", PATH_A, PATH_A + ":latest", "Qwen2.5-7B-Q4.gguf"):
        resolved = index.resolve(name)
        assert resolved.model.name == "Qwen2.5-7B-Q4", name
        assert resolved.requested == name
        assert [(s.upstream, s.id) for s in resolved.model.served] == [("a", PATH_A)]
    assert upstream_of(index, "llama-3:latest") == ["b"]


def test_two_upstreams_serving_one_model_are_one_model() -> None:
    """The same friendly name from two upstreams is one model with both upstreams, in configuration order."""
    index = ModelIndex()
    index.set_upstream("gpu0", models("/srv/a/qwen.gguf"), None)
    index.set_upstream("gpu1", models("/other/qwen.gguf"), None)
    index.set_upstream("gpu0", models("/srv/a/qwen.gguf"), None)  # a refresh keeps the configured order
    (model,) = index.models()
    assert model.name == "qwen"
    assert [(s.upstream, s.id) for s in model.served] == [("gpu0", "/srv/a/qwen.gguf"), ("gpu1", "/other/qwen.gguf")]
    assert model.ids == ["/other/qwen.gguf", "/srv/a/qwen.gguf"]
    assert index.upstreams_of("qwen") == ["gpu0", "gpu1"] and index.upstreams_of("nope") == []
    assert upstream_of(index, "/other/qwen.gguf") == ["gpu0", "gpu1"]


def test_set_upstream_replaces_what_it_served() -> None:
    """What an upstream serves is replaced on refresh: a model it no longer lists goes away."""
    index = two()
    index.set_upstream("b", models("mistral"), None)
    assert index.names() == ["Qwen2.5-7B-Q4", "mistral"]
    index.set_upstream("b", models("gemma"), None)
    assert index.names() == ["Qwen2.5-7B-Q4", "gemma"]


def test_router_mode_entries_keep_their_load_status() -> None:
    """A router-mode upstream lists several models; each served entry carries ``status.value``."""
    index = ModelIndex()
    index.set_upstream("r", router(alpha="loaded", beta="unloaded"), {"role": "router"})
    assert index.names() == ["alpha", "beta"]
    assert index.resolve("beta").model.first().status == "unloaded"
    assert index.resolve("alpha").model.first().status == "loaded"
    assert load_status({"id": "x"}) == "" and load_status({"status": "loaded"}) == ""
    data = {e["id"]: e for e in listing(index.models())["data"]}
    assert data["alpha"]["status"] == {"value": "loaded"} and data["beta"]["status"] == {"value": "unloaded"}


def test_listing_status_is_loaded_when_any_upstream_has_it_loaded() -> None:
    """One model on two router upstreams, loaded on one: listed as loaded."""
    index = ModelIndex()
    index.set_upstream("r1", router(alpha="unloaded"), None)
    index.set_upstream("r2", router(alpha="loaded"), None)
    (entry,) = listing(index.models())["data"]
    assert entry["status"] == {"value": "loaded"} and entry["upstreams"] == ["r1", "r2"]


def test_configured_ids_replace_the_listing_and_globs_serve_the_rest() -> None:
    """``models:`` ids are what the upstream serves (its listed entry kept when listed); a glob serves any name
    nothing else matched, sending the requested name as the id."""
    index = ModelIndex()
    index.set_upstream("r", models("alpha", "beta", meta={"n_ctx": 4096}), None, ["alpha", "gamma", "qwen*"])
    assert index.names() == ["alpha", "gamma"]  # beta is listed but not configured
    assert index.resolve("alpha").model.first().entry["meta"] == {"n_ctx": 4096}
    assert index.resolve("gamma").model.first().entry == {"id": "gamma", "object": "model", "owned_by": "llamacpp"}
    resolved = index.resolve("qwen2-7b")
    assert resolved.model.name == "qwen2-7b"
    assert [(s.upstream, s.id) for s in resolved.model.served] == [("r", "qwen2-7b")]
    with pytest.raises(UnknownModel) as info:
        index.resolve("beta")
    assert info.value.known == ["alpha", "gamma"]


def test_aliases_first_matching_glob_wins_and_empty_target_means_default() -> None:
    """``models.aliases`` globs in the order written (case-insensitive); an empty target stands for the default."""
    index = two([("claude-*haiku*", "llama-3"), ("claude-*", ""), ("GPT-*", PATH_A)], default="llama-3")
    assert upstream_of(index, "claude-3-5-haiku-latest") == ["b"]
    assert upstream_of(index, "claude-sonnet-4") == ["b"]  # empty target → default
    assert upstream_of(index, "gpt-4o") == ["a"]
    index = two([("claude-*", "")], default="Qwen2.5-7B-Q4")
    assert upstream_of(index, "claude-opus") == ["a"]


def test_exact_names_win_over_aliases() -> None:
    """A name that is a model's own is never rewritten by an alias glob that also matches it."""
    index = two([("*", "llama-3")])
    assert upstream_of(index, "Qwen2.5-7B-Q4") == ["a"]
    assert upstream_of(index, "something-else") == ["b"]


def test_no_model_named_goes_to_the_default_or_the_only_model() -> None:
    """No ``model`` (or an empty one): ``models.default``; with no default and one model, that model."""
    index = two(default="llama-3")
    assert upstream_of(index, None) == ["b"] and upstream_of(index, "") == ["b"]
    single = ModelIndex()
    single.set_upstream("only", models(PATH_A), None)
    assert single.resolve(None).model.name == "Qwen2.5-7B-Q4"
    # one model and no globs: any name is that model (llama-server itself ignores the name)
    assert single.resolve("gpt-4o").model.name == "Qwen2.5-7B-Q4"


def test_unknown_with_several_models_lists_the_names() -> None:
    """An unknown name, or none without a default, among several models is UnknownModel with the names."""
    index = two()
    with pytest.raises(UnknownModel) as info:
        index.resolve("gpt-4o")
    assert info.value.requested == "gpt-4o" and info.value.known == ["Qwen2.5-7B-Q4", "llama-3"]
    with pytest.raises(UnknownModel) as info:
        index.resolve(None)
    assert info.value.requested == "" and info.value.known == ["Qwen2.5-7B-Q4", "llama-3"]
    empty = ModelIndex()
    with pytest.raises(UnknownModel) as info:
        empty.resolve("x")
    assert info.value.known == []


def test_an_upstream_that_lists_nothing_is_a_wildcard() -> None:
    """An upstream with an empty ``/v1/models`` may serve any name nothing listed matches; listed names still go
    to their own upstream, and a wildcard is not listed."""
    index = ModelIndex()
    index.set_upstream("a", models("alpha"), None)
    index.set_upstream("w", {"data": []}, None)
    assert upstream_of(index, "alpha") == ["a"]
    resolved = index.resolve("anything-at-all")
    assert [(s.upstream, s.id) for s in resolved.model.served] == [("w", "anything-at-all")]
    assert index.names() == ["alpha"] and [e["id"] for e in listing(index.models())["data"]] == ["alpha"]
    # once it lists its models it is no wildcard any more
    index.set_upstream("w", models("omega"), None)
    assert upstream_of(index, "omega") == ["w"]
    with pytest.raises(UnknownModel):
        index.resolve("anything-at-all")


def test_listing_shape() -> None:
    """OpenAI's list: one entry per friendly name, upstream ids and their own aliases as ``aliases`` (never the
    name itself), the upstreams, the first upstream's extra fields kept."""
    index = ModelIndex()
    index.set_upstream("a", {"data": [{"id": PATH_A, "aliases": [PATH_A, "qwen-alias"], "created": 7,
                                       "meta": {"n_ctx": 4096}, "owned_by": "me"}]}, None)
    index.set_upstream("b", models("Qwen2.5-7B-Q4"), None)
    body = listing(index.models())
    assert body["object"] == "list"
    (entry,) = body["data"]
    assert entry == {"id": "Qwen2.5-7B-Q4", "object": "model", "owned_by": "me", "created": 7,
                     "meta": {"n_ctx": 4096}, "aliases": [PATH_A, "qwen-alias"], "upstreams": ["a", "b"]}
    assert listing([]) == {"object": "list", "data": []}


def test_alias_target_served_by_a_configured_glob() -> None:
    """An alias whose target only a configured glob serves reaches that upstream, asking for the target."""
    index = ModelIndex([("gpt-*", "qwen-7b")])
    index.set_upstream("a", models("alpha"), None)
    index.set_upstream("b", models("beta"), None)
    index.set_upstream("r", {"data": []}, None, ["qwen*"])
    served = index.resolve("gpt-4o").model.served
    assert [(s.upstream, s.id) for s in served] == [("r", "qwen-7b")]


def test_alias_target_sent_to_a_wildcard_upstream() -> None:
    """An aliased name sent to an upstream that lists nothing carries the alias target as its model."""
    index = ModelIndex([("gpt-*", "qwen-7b")])
    index.set_upstream("a", models("alpha"), None)
    index.set_upstream("w", {"data": []}, None)
    assert [(s.upstream, s.id) for s in index.resolve("gpt-4o").model.served] == [("w", "qwen-7b")]


def test_default_served_by_a_configured_glob() -> None:
    """A request naming no model goes to ``models.default`` even when only a configured glob serves it."""
    index = ModelIndex(default="qwen-7b")
    index.set_upstream("a", models("alpha"), None)
    index.set_upstream("b", models("beta"), None)
    index.set_upstream("r", {"data": []}, None, ["qwen*"])
    assert [(s.upstream, s.id) for s in index.resolve(None).model.served] == [("r", "qwen-7b")]

"""Several upstreams over loopback: two fake llama-servers behind the real service tree, configured with
``upstreams:`` in a YAML file — routing by model, unknown models per dialect, spreading, affinity and spill-over, a
Responses follow-up going back to the upstream of its previous turn, failover before (never after) the first byte,
probes bringing a dead upstream back, ``/health``, ``/v1/models`` and config validation."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import yaml
from autobahn.twisted.websocket import connectWS
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from llamashim import jsonutil
from llamashim.config import ConfigError, load_config
from llamashim.dialects.responses.routes import upstream_tag_of
from llamashim.testing.fake_llama import FakeLlama
from llamashim.upstream.choice import conversation_key, upstream_tag, weight
from tests.integration.support import Shim, fetch, http_request, raw_connect, reactor, start_shim, timeout
from tests.integration.test_responses_websocket import ClientFactory
from tests.support import logged

ALPHA = "/models/alpha.gguf"
SAME = "/models/same-7B.gguf"


class Holding(Resource):
    """The fake's resource, but ``GET /v1/models`` can be held unanswered until :meth:`release`."""

    isLeaf = True

    def __init__(self, fake: FakeLlama) -> None:
        super().__init__()
        self.fake = fake
        self.hold = False
        self.held: list[Request] = []

    def render(self, request: Request) -> bytes | int:
        if self.hold and request.method == b"GET" and request.path == b"/v1/models":
            self.held.append(request)
            return NOT_DONE_YET
        return self.fake.handle(request)

    def release(self) -> None:
        self.hold = False
        held, self.held = self.held, []
        for request in held:
            if not request.finished and not request._disconnected:
                body = self.fake.handle(request)
                assert isinstance(body, bytes)
                request.write(body)
                request.finish()


@dataclass
class Upstream:
    """One fake llama-server on a loopback port that can be killed (refusing connections) and revived."""

    fake: FakeLlama
    resource: Holding
    factory: WrappingFactory
    port: IListeningPort | None = None
    number: int = 0

    @classmethod
    def start(cls, model: str, clock: Any = None) -> Upstream:
        fake = FakeLlama(clock or reactor, model)
        resource = Holding(fake)
        site = Site(resource)
        site.noisy = False
        up = cls(fake, resource, WrappingFactory(site))
        up.listen()
        return up

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.number}"

    def listen(self) -> None:
        self.port = reactor.listenTCP(self.number, self.factory, interface="127.0.0.1")
        self.number = self.port.getHost().port  # type: ignore[union-attr]

    async def kill(self) -> None:
        """Stop listening and drop every open connection: new connections are refused."""
        if self.port is not None:
            await maybeDeferred(self.port.stopListening)
            self.port = None
        for wrapper in list(self.factory.protocols):
            wrapper.transport.abortConnection()

    def chats(self) -> list[Any]:
        return self.fake.chat_requests()


@dataclass
class Env:
    shim: Shim
    ups: dict[str, Upstream]
    clocks: list[Clock] = field(default_factory=list)

    @property
    def upstreams(self) -> Any:
        return self.shim.service.upstreams

    async def post(self, path: str, body: Any) -> tuple[int, Any, bytes]:
        return await fetch(self.shim.url + path, "POST", jsonutil.dumps(body), {"Content-Type": "application/json"})

    async def get(self, path: str) -> tuple[int, Any, bytes]:
        return await fetch(self.shim.url + path)

    def start_post(self, path: str, body: Any) -> Deferred[tuple[int, Any, bytes]]:
        return Deferred.fromCoroutine(self.post(path, body))

    async def metrics(self) -> str:
        status, _, body = await self.get("/metrics")
        assert status == 200
        return body.decode()

    async def chats_arrived(self, n: int) -> None:
        """Wait until the fakes together have received ``n`` chat requests."""
        while sum(len(u.chats()) for u in self.ups.values()) < n:
            arrivals = [u.fake.next_request() for u in self.ups.values()]
            await timeout(DeferredList(arrivals, fireOnOneCallback=True, consumeErrors=True))

    def release(self) -> None:
        """Let every held stream run to its end."""
        for clock in self.clocks:
            for _ in range(1000):
                if not clock.getDelayedCalls():
                    break
                clock.advance(1.0)


async def make_env(tmp_path: Path, ups: dict[str, Upstream], extra: dict[str, Any] | None = None,
                   per_upstream: dict[str, dict[str, Any]] | None = None, wait_for_index: bool = True) -> Env:
    """The real service tree over ``ups``, configured by a YAML file with an ``upstreams:`` list."""
    doc: dict[str, Any] = {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "upstreams": [{"name": name, "url": up.url, **(per_upstream or {}).get(name, {})} for name, up in ups.items()],
        "tools": {"streaming": "native"},
        **(extra or {}),
    }
    path = tmp_path / "llamashim.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config({"config": str(path)}, {})
    assert [s.name for s in cfg.upstream_specs()] == list(ups)
    env = Env(await start_shim(cfg), ups)
    if wait_for_index:
        # The refresh the set's timer starts at once: wait for it (a waiter on the one in progress), so that the
        # index holds what each fake serves before the test's first request.
        members = env.upstreams.members.values()
        await timeout(DeferredList([env.upstreams._refresh_once(m) for m in members], consumeErrors=True))
    return env


async def close(env: Env) -> None:
    env.release()
    await env.shim.stop()
    for up in env.ups.values():
        await up.kill()


def chat(model: str | None, text: str = "hi", stream: bool = False, history: list[dict[str, str]] | None = None
         ) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [*(history or []), {"role": "user", "content": text}], "stream": stream}
    if model is not None:
        body["model"] = model
    return body


def homed(text: str = "hi", stream: bool = False, home: str = "a") -> dict[str, Any]:
    """A new conversation of ``same-7B`` whose rendezvous order puts upstream ``home`` (``a``) first of ``a`` and
    ``b`` (``text``, with a number added when needed): where its requests go while ``home`` is up and has room."""
    for n in range(1000):
        body = chat("same-7B", f"{text} {n}" if n else text, stream=stream)
        key = conversation_key("same-7B", body["messages"])
        assert key is not None
        if max(("a", "b"), key=lambda name: weight(key, name)) == home:
            return body
    raise AssertionError("no text homes at a")


def turn(k: int, stream: bool = False) -> dict[str, Any]:
    """Turn ``k`` of one conversation (system prompt, first user message ``first``), its history included."""
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"}]
    for i in range(k):
        messages += [{"role": "assistant", "content": f"answer {i}"}, {"role": "user", "content": f"more {i}"}]
    return {"model": "same-7B", "messages": messages, "stream": stream}


def gauge(text: str, name: str, upstream: str) -> float:
    match = re.search(rf'^{name}{{upstream="{upstream}"}} (\S+)$', text, re.M)
    assert match is not None, (name, upstream, text)
    return float(match.group(1))


def when_logged(predicate: Callable[[dict[str, Any]], bool]) -> tuple[Deferred[dict[str, Any]], Callable[[], None]]:
    """A Deferred firing with the first log event ``predicate`` accepts, and how to stop watching."""
    d: Deferred[dict[str, Any]] = Deferred()

    def observe(event: dict[str, Any]) -> None:
        if not d.called and predicate(event):
            d.callback(event)

    globalLogPublisher.addObserver(observe)  # type: ignore[arg-type]
    return d, lambda: globalLogPublisher.removeObserver(observe)  # type: ignore[arg-type]


@pytest_twisted.async_yield_fixture
async def by_model(tmp_path: Path) -> AsyncIterator[Env]:
    """Upstream ``a`` serves ``/models/alpha.gguf`` (friendly ``alpha``), ``b`` serves ``beta``."""
    env = await make_env(tmp_path, {"a": Upstream.start(ALPHA), "b": Upstream.start("beta")})
    yield env
    await close(env)


@pytest_twisted.async_yield_fixture
async def same_model(tmp_path: Path) -> AsyncIterator[Env]:
    """Both upstreams serve ``same-7B``; their streams are held until ``release`` (each fake has its own clock)."""
    clocks = [Clock(), Clock()]
    ups = {"a": Upstream.start(SAME, clocks[0]), "b": Upstream.start(SAME, clocks[1])}
    for up in ups.values():
        up.fake.chunk_interval = 1.0
    env = await make_env(tmp_path, ups, per_upstream={"a": {"max_concurrent": 2}, "b": {"max_concurrent": 2}})
    env.clocks = clocks
    yield env
    await close(env)


# -- routing by model -------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_openai_requests_go_to_the_upstream_of_their_model(by_model: Env) -> None:
    """Chat and embeddings for ``alpha`` reach fake a (with its upstream id), ``beta`` fake b; nothing crosses."""
    env = by_model
    a, b = env.ups["a"], env.ups["b"]
    for name in ("alpha", "alpha:latest", ALPHA):
        status, _, body = await env.post("/v1/chat/completions", chat(name))
        assert status == 200, body
    status, _, _ = await env.post("/v1/chat/completions", chat("beta", stream=True))
    assert status == 200
    assert [r.body["model"] for r in a.chats()] == [ALPHA, ALPHA, ALPHA]
    assert [r.body["model"] for r in b.chats()] == ["beta"]
    status, _, _ = await env.post("/v1/embeddings", {"model": "beta", "input": "x"})
    assert status == 200
    assert [r.path for r in b.fake.requests if r.method == "POST"][-1] == "/v1/embeddings"
    assert not [r for r in a.fake.requests if r.path == "/v1/embeddings"]
    text = await env.metrics()
    assert 'llamashim_upstream_requests_total{status="200",upstream="a"} 3.0' in text
    assert 'llamashim_upstream_requests_total{status="200",upstream="b"} 2.0' in text


@pytest_twisted.ensureDeferred
async def test_a_request_during_the_first_refresh_waits_for_the_index(tmp_path: Path) -> None:
    """A request that arrives while the start-up refresh is still reading ``/v1/models`` goes to its model's
    upstream, not wherever the empty (wildcard) index would send it."""
    ups = {"a": Upstream.start(ALPHA), "b": Upstream.start("beta")}
    for up in ups.values():
        up.resource.hold = True  # the timer's first refresh is held at GET /v1/models
    env = await make_env(tmp_path, ups, wait_for_index=False)
    upstreams = env.upstreams
    original = upstreams.ensure_index

    async def ensure_index(max_age: float | None = None) -> None:
        def release() -> None:
            for up in ups.values():
                up.resource.release()

        reactor.callLater(0, release)  # once the request is here
        await original(max_age)

    upstreams.ensure_index = ensure_index
    try:
        status, _, body = await env.post("/v1/chat/completions", chat("beta"))
        assert status == 200, body
        assert [r.body["model"] for r in ups["b"].chats()] == ["beta"] and ups["a"].chats() == []
    finally:
        await close(env)


@pytest_twisted.ensureDeferred
async def test_access_log_names_the_upstream(by_model: Env) -> None:
    """The access line of a chat request says ``upstream=`` the member that served it."""
    env = by_model
    seen, stop = when_logged(lambda e: e.get("log_namespace") == "llamashim.access" and e.get("path") ==
                             "/v1/chat/completions")
    try:
        status, _, _ = await env.post("/v1/chat/completions", chat("beta"))
        event = await timeout(seen)
    finally:
        stop()
    assert status == 200 and event["upstream"] == "b"


@pytest_twisted.ensureDeferred
async def test_anthropic_messages_go_to_the_upstream_of_their_model(by_model: Env) -> None:
    """``/v1/messages`` naming ``beta`` is served by fake b."""
    env = by_model
    status, _, body = await env.post("/v1/messages", {"model": "beta", "max_tokens": 16,
                                                      "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200, body
    assert jsonutil.loads(body)["model"] == "beta"
    assert [r.body["model"] for r in env.ups["b"].chats()] == ["beta"] and env.ups["a"].chats() == []


@pytest_twisted.ensureDeferred
async def test_ollama_chat_goes_to_the_upstream_of_its_model(by_model: Env) -> None:
    """``/api/chat`` naming ``beta`` is served by fake b."""
    env = by_model
    status, _, body = await env.post("/api/chat", {"model": "beta", "stream": False,
                                                   "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200, body
    assert [r.body["model"] for r in env.ups["b"].chats()] == ["beta"] and env.ups["a"].chats() == []


@pytest_twisted.ensureDeferred
async def test_ollama_tags_list_the_union_by_friendly_name(by_model: Env) -> None:
    """``/api/tags`` lists both upstreams' models, ``name`` and ``model`` both the friendly name."""
    status, _, body = await by_model.get("/api/tags")
    assert status == 200
    assert sorted((m["name"], m["model"]) for m in jsonutil.loads(body)["models"]) == [("alpha", "alpha"),
                                                                                       ("beta", "beta")]


@pytest_twisted.ensureDeferred
async def test_ollama_show_and_ps_answer_from_the_union(by_model: Env) -> None:
    """``/api/show`` knows each upstream's model by friendly name, ``:latest`` and upstream id; ``/api/ps`` lists
    both; an unknown name is Ollama's 404."""
    env = by_model
    for name in ("beta", "alpha", "alpha:latest", ALPHA):
        status, _, body = await env.post("/api/show", {"model": name})
        assert status == 200, (name, body)
    status, _, body = await env.post("/api/show", {"model": "nope"})
    assert status == 404 and isinstance(jsonutil.loads(body)["error"], str)
    status, _, body = await env.get("/api/ps")
    assert status == 200
    assert sorted(m["model"] for m in jsonutil.loads(body)["models"]) == ["alpha", "beta"]


@pytest_twisted.ensureDeferred
async def test_unknown_model_is_a_404_listing_the_models(by_model: Env) -> None:
    """An unknown model is OpenAI's 404 ``model_not_found`` naming the models; nothing reaches an upstream."""
    env = by_model
    status, _, body = await env.post("/v1/chat/completions", chat("gpt-4o"))
    assert status == 404
    err = jsonutil.loads(body)["error"]
    assert err["code"] == "model_not_found" and err["type"] == "not_found_error"
    assert "gpt-4o" in err["message"] and "alpha, beta" in err["message"]
    status, _, body = await env.post("/v1/chat/completions", chat(None))  # several models, no default
    assert status == 404 and "alpha, beta" in jsonutil.loads(body)["error"]["message"]
    status, _, body = await env.post("/v1/embeddings", {"model": "gpt-4o", "input": "x"})
    assert status == 404 and jsonutil.loads(body)["error"]["code"] == "model_not_found"
    assert env.ups["a"].chats() == [] and env.ups["b"].chats() == []


@pytest_twisted.ensureDeferred
async def test_unknown_model_on_anthropic_messages(by_model: Env) -> None:
    """``/v1/messages`` with an unknown model is Anthropic's error shape, a 404 naming the models."""
    status, _, body = await by_model.post("/v1/messages", {"model": "claude-x", "max_tokens": 8,
                                                           "messages": [{"role": "user", "content": "hi"}]})
    assert status == 404
    value = jsonutil.loads(body)
    assert value["type"] == "error" and value["error"]["type"] == "not_found_error"
    assert "alpha, beta" in value["error"]["message"]


@pytest_twisted.ensureDeferred
async def test_unknown_model_on_ollama_chat(by_model: Env) -> None:
    """``/api/chat`` with an unknown model is Ollama's ``{"error": ...}`` 404 naming the models."""
    status, _, body = await by_model.post("/api/chat", {"model": "llama9", "stream": False,
                                                        "messages": [{"role": "user", "content": "hi"}]})
    assert status == 404
    value = jsonutil.loads(body)
    assert isinstance(value["error"], str) and "alpha, beta" in value["error"]


@pytest_twisted.ensureDeferred
async def test_models_is_the_union_by_friendly_name(by_model: Env) -> None:
    """``/v1/models`` lists one entry per model by friendly name, the upstream id as an alias, and its upstream."""
    status, _, body = await by_model.get("/v1/models")
    assert status == 200
    data = {e["id"]: e for e in jsonutil.loads(body)["data"]}
    assert sorted(data) == ["alpha", "beta"]
    assert ALPHA in data["alpha"]["aliases"] and data["alpha"]["upstreams"] == ["a"]
    assert data["beta"]["upstreams"] == ["b"] and data["alpha"]["object"] == "model"
    assert data["alpha"]["meta"]["n_ctx"] == 4096  # the upstream's own fields are kept


@pytest_twisted.ensureDeferred
async def test_default_and_aliases_route_by_model(tmp_path: Path) -> None:
    """``models.default`` takes requests naming no model, ``models.aliases`` globs map client names."""
    env = await make_env(tmp_path, {"a": Upstream.start(ALPHA), "b": Upstream.start("beta")},
                         {"models": {"default": "beta", "aliases": {"gpt-*": "alpha", "claude-*": ""}}})
    try:
        for model, where in ((None, "b"), ("gpt-4o", "a"), ("claude-3", "b")):
            status, _, body = await env.post("/v1/chat/completions", chat(model))
            assert status == 200, body
            assert len(env.ups[where].chats()) >= 1, model
        assert [r.body["model"] for r in env.ups["a"].chats()] == [ALPHA]
        assert [r.body["model"] for r in env.ups["b"].chats()] == ["beta", "beta"]
    finally:
        await close(env)


# -- choosing among the upstreams of one model ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_parallel_streams_spread_over_both_upstreams(same_model: Env) -> None:
    """Four streams of four conversations, held open, go two to each upstream (llamashim's in-flight count)."""
    env = same_model
    pending = [env.start_post("/v1/chat/completions", chat("same-7B", f"question {i}", stream=True))
               for i in range(4)]
    await env.chats_arrived(4)
    assert (len(env.ups["a"].chats()), len(env.ups["b"].chats())) == (2, 2)
    text = await env.metrics()
    assert gauge(text, "llamashim_upstream_in_flight", "a") == 2 and gauge(text, "llamashim_upstream_in_flight",
                                                                           "b") == 2
    env.release()
    results = await timeout(DeferredList(pending, fireOnOneErrback=True, consumeErrors=True))
    for _, (status, _, body) in results:
        assert status == 200 and body.endswith(b"data: [DONE]\n\n")
    assert env.upstreams.members["a"].in_flight == 0 and env.upstreams.members["b"].in_flight == 0


@pytest_twisted.ensureDeferred
async def test_conversation_affinity_then_spill_over_when_full(same_model: Env) -> None:
    """A conversation's turns go to the first upstream of its rendezvous order while it has room (even when busier
    than the other); when it is full (``max_concurrent: 2``) the next turns go to the next in the order, and once it
    has room again the conversation is back on it."""
    env = same_model
    key = conversation_key("same-7B", turn(0)["messages"])
    assert key is not None
    home, away = sorted(("a", "b"), key=lambda n: weight(key, n), reverse=True)
    ups = {"home": env.ups[home], "away": env.ups[away]}

    def counts() -> tuple[int, int]:
        return len(ups["home"].chats()), len(ups["away"].chats())

    status, _, _ = await env.post("/v1/chat/completions", turn(0))
    assert status == 200 and counts() == (1, 0)
    # another conversation held on the same upstream: home is now busier than away
    other = env.start_post("/v1/chat/completions", homed("unrelated", stream=True, home=home))
    await env.chats_arrived(2)
    assert counts() == (2, 0)
    # turn 2: home has 1 in flight, away none — still home
    status, _, _ = await env.post("/v1/chat/completions", turn(1))
    assert status == 200 and counts() == (3, 0)
    # turn 3, streamed and held: still home (1 < 2), which is now full
    held = env.start_post("/v1/chat/completions", turn(2, stream=True))
    await env.chats_arrived(4)
    assert counts() == (4, 0) and env.upstreams.members[home].in_flight == 2
    # turns 4 and 5: home is full — the next in the conversation's order
    for k in (3, 4):
        status, _, _ = await env.post("/v1/chat/completions", turn(k))
        assert status == 200
    assert counts() == (4, 2)
    env.release()
    for d in (other, held):
        status, _, body = await timeout(d)
        assert status == 200 and body.endswith(b"data: [DONE]\n\n")
    # room again: turn 6 is back home, where the conversation's prompt is cached
    status, _, _ = await env.post("/v1/chat/completions", turn(5))
    assert status == 200 and counts() == (5, 2)


async def ask(env: Env, transport: str, body: dict[str, Any]) -> str:
    """One Responses turn over HTTP or a new WebSocket: the response's id (after its terminal event)."""
    if transport == "http":
        status, _, data = await env.post("/v1/responses", body)
        assert status == 200, data
        return str(jsonutil.loads(data)["id"])
    factory = ClientFactory(f"ws://127.0.0.1:{env.shim.port_number}/v1/responses", {})
    connectWS(factory)
    client = await timeout(factory.opened)
    try:
        messages = await client.create(**body)
    finally:
        client.sendClose()
        await timeout(client.closed)
    assert messages[-1]["type"] == "response.completed", messages[-1]
    return str(messages[-1]["response"]["id"])


@pytest.mark.parametrize("transport", ["http", "websocket"])
@pytest_twisted.ensureDeferred
async def test_a_responses_follow_up_goes_back_to_the_upstream_that_served_its_previous_turn(
        tmp_path: Path, transport: str) -> None:
    """The first turn of a Responses conversation spilled over (the first upstream of its order was full); its
    follow-up, sent when both have room, goes where the first turn was served — its id carries that upstream's tag —
    not back to the conversation's first upstream; the debug line says why. An id without a tag (minted before ids
    carried one) is continued as before, by the conversation's order."""
    held_clock = Clock()
    ups = {"a": Upstream.start(SAME, held_clock), "b": Upstream.start(SAME)}
    ups["a"].fake.chunk_interval = 1.0  # a's streams are held until release(); b's run at once
    env = await make_env(tmp_path, ups, {"responses": {"store_path": str(tmp_path / "responses.sqlite3")}},
                         per_upstream={"a": {"max_concurrent": 2}, "b": {"max_concurrent": 2}})
    env.clocks = [held_clock]

    def counts() -> tuple[int, int]:
        return len(ups["a"].chats()), len(ups["b"].chats())

    try:
        held = [env.start_post("/v1/chat/completions", homed(f"busy {i}", stream=True)) for i in range(2)]
        await env.chats_arrived(2)
        text = homed("Name a fruit.")["messages"][-1]["content"]  # a conversation whose order puts a first
        first = await ask(env, transport, {"model": "same-7B", "input": text})
        assert counts() == (2, 1) and upstream_tag_of(first) == upstream_tag("b")  # a full: spilled over to b
        env.release()
        await timeout(DeferredList(held, fireOnOneErrback=True, consumeErrors=True))
        with logged() as events:
            second = await ask(env, transport, {"model": "same-7B", "input": "And a colour?",
                                                "previous_response_id": first})
        assert counts() == (2, 2) and upstream_tag_of(second) == upstream_tag("b")
        reasons = [e["reason"] for e in events if e.get("log_format", "").startswith("model {model} -> upstream")]
        assert reasons == ["the upstream of the previous response (its prompt cache)"]
        old = first[:-8]  # the same response under an id minted before ids carried a tag
        with closing(sqlite3.connect(tmp_path / "responses.sqlite3")) as db, db:
            db.execute("INSERT INTO responses SELECT ?, owner, created, response, input_items, conversation "
                       "FROM responses WHERE id = ?", (old, first))
        await ask(env, "http", {"model": "same-7B", "input": "And a city?", "previous_response_id": old})
        assert counts() == (3, 2)  # the conversation's order: a
    finally:
        await close(env)


# -- failover ---------------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_refused_upstream_fails_over_is_marked_down_and_comes_back(tmp_path: Path) -> None:
    """Upstream a refuses connections: new requests (plain and streamed) succeed on b with no client-visible
    error, a is ``llamashim_upstream_up 0``; listening again, the set's timer probes it back up by itself."""
    env = await make_env(tmp_path, {"a": Upstream.start(SAME), "b": Upstream.start(SAME)})
    a, b = env.ups["a"], env.ups["b"]
    try:
        status, _, _ = await env.post("/v1/chat/completions", homed("warm-up"))
        assert status == 200 and len(a.chats()) == 1
        await a.kill()
        status, _, body = await env.post("/v1/chat/completions", homed("one"))
        assert status == 200, body
        assert jsonutil.loads(body)["choices"][0]["message"]["content"] == "Hello, world!"
        status, _, body = await env.post("/v1/chat/completions", homed("two", stream=True))
        assert status == 200 and body.endswith(b"data: [DONE]\n\n") and b'"error"' not in body
        assert len(b.chats()) == 2 and len(a.chats()) == 1
        member = env.upstreams.members["a"]
        assert not member.up and "connection refused" in member.reason
        assert gauge(await env.metrics(), "llamashim_upstream_up", "a") == 0
        assert gauge(await env.metrics(), "llamashim_upstream_up", "b") == 1
        back, stop = when_logged(lambda e: e.get("log_format") == "upstream {name} is back" and e.get("name") == "a")
        try:
            a.listen()  # the same port
            await timeout(back, 15)  # the TimerService's probe (1 s ticks, back-off from 1 s)
        finally:
            stop()
        assert member.up and gauge(await env.metrics(), "llamashim_upstream_up", "a") == 1
        status, _, body = await env.get("/health")
        assert status == 200 and jsonutil.loads(body)["upstreams"] == {"a": "ok", "b": "ok"}
        status, _, _ = await env.post("/v1/chat/completions", homed("three"))
        assert status == 200 and len(a.chats()) == 2  # both idle: a again
    finally:
        await close(env)


@pytest_twisted.ensureDeferred
async def test_embeddings_fail_over_before_the_first_byte(tmp_path: Path) -> None:
    """An embeddings request whose chosen upstream refuses connections is served by the other one."""
    env = await make_env(tmp_path, {"a": Upstream.start(SAME), "b": Upstream.start(SAME)})
    try:
        await env.ups["a"].kill()
        status, _, body = await env.post("/v1/embeddings", {"model": "same-7B", "input": "x"})
        assert status == 200, body
        assert [r.path for r in env.ups["b"].fake.requests if r.method == "POST"] == ["/v1/embeddings"]
    finally:
        await close(env)


@pytest_twisted.ensureDeferred
async def test_probe_with_back_off_while_down(tmp_path: Path) -> None:
    """A down upstream's failed probe doubles its back-off; a probe that answers brings it back and refreshes it."""
    env = await make_env(tmp_path, {"a": Upstream.start(SAME), "b": Upstream.start(SAME)})
    a = env.ups["a"]
    upstreams = env.upstreams
    member = upstreams.members["a"]
    try:
        await a.kill()
        status, _, _ = await env.post("/v1/chat/completions", homed("one"))
        assert status == 200 and not member.up and member.health.backoff == 1.0
        await timeout(upstreams.probe(member))
        assert not member.up and member.health.backoff == 2.0
        assert member.health.next_probe > reactor.seconds() + 1.0
        await timeout(upstreams.probe(member))
        assert member.health.backoff == 4.0
        a.listen()
        await timeout(upstreams.probe(member))
        assert member.up and member.health.backoff == 1.0 and member.reason == ""
    finally:
        await close(env)


@pytest_twisted.ensureDeferred
async def test_loading_upstream_503_fails_over_and_is_skipped(tmp_path: Path) -> None:
    """An upstream answering 503 (loading) before the first byte: the request is served by the other, and the
    loading one is skipped until it is healthy."""
    env = await make_env(tmp_path, {"a": Upstream.start(SAME), "b": Upstream.start(SAME)})
    a, b = env.ups["a"], env.ups["b"]
    try:
        a.fake.status_override = 503
        status, _, body = await env.post("/v1/chat/completions", homed("one", stream=True))
        assert status == 200 and body.endswith(b"data: [DONE]\n\n")
        assert len(a.chats()) == 1 and len(b.chats()) == 1
        assert env.upstreams.members["a"].loading
        status, _, _ = await env.post("/v1/chat/completions", homed("two"))
        assert status == 200 and len(a.chats()) == 1 and len(b.chats()) == 2  # a skipped
    finally:
        await close(env)


@pytest_twisted.ensureDeferred
async def test_every_upstream_down_is_the_real_error(tmp_path: Path) -> None:
    """Both upstreams of a model refuse connections: each is tried once, and the client gets a 502."""
    env = await make_env(tmp_path, {"a": Upstream.start(SAME), "b": Upstream.start(SAME)})
    try:
        await env.ups["a"].kill()
        await env.ups["b"].kill()
        status, _, body = await env.post("/v1/chat/completions", chat("same-7B"))
        assert status == 502 and "connection refused" in jsonutil.loads(body)["error"]["message"]
        status, _, body = await env.post("/v1/chat/completions", chat("same-7B"))  # both marked down: tried anyway
        assert status == 502
    finally:
        await close(env)


@pytest_twisted.ensureDeferred
async def test_stream_cut_after_the_first_byte_is_not_retried(tmp_path: Path) -> None:
    """A stream cut mid-way ends with the terminal error frame; the other upstream never sees the request."""
    env = await make_env(tmp_path, {"a": Upstream.start(SAME), "b": Upstream.start(SAME)})
    a, b = env.ups["a"], env.ups["b"]
    try:
        a.fake.fault = "drop_mid_stream"
        status, _, body = await env.post("/v1/chat/completions", homed("one", stream=True))
        assert status == 200
        frames = [f for f in body.split(b"\n\n") if f]
        assert b'"content":"Hello"' in body
        last = jsonutil.loads(frames[-1].removeprefix(b"data: "))
        assert "error" in last and last["error"]["message"]
        assert b"[DONE]" not in body
        assert len(a.chats()) == 1 and b.chats() == []
    finally:
        await close(env)


@pytest_twisted.ensureDeferred
async def test_client_leaving_before_the_first_byte_is_no_upstream_failure(tmp_path: Path) -> None:
    """A client that hangs up while its upstream is still silent: the upstream request is cancelled, the upstream
    stays up, and the request is not sent to another upstream."""
    held = Clock()
    env = await make_env(tmp_path, {"a": Upstream.start(SAME, held), "b": Upstream.start(SAME)})
    a, b = env.ups["a"], env.ups["b"]
    a.fake.fault = "slow_headers"  # on a clock nobody advances: no byte, ever
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)  # type: ignore[arg-type]
    try:
        arrived = a.fake.next_request()
        client = await raw_connect(env.shim.url, http_request(
            "POST", "/v1/chat/completions", jsonutil.dumps(homed("one", stream=True)),
            {"Content-Type": "application/json"}))
        seen = await timeout(arrived)
        assert client.transport is not None
        client.transport.loseConnection()
        await timeout(seen.lost)  # llamashim gave up the upstream request
        await timeout(deferLater(reactor, 0.0))
        member = env.upstreams.members["a"]
        assert member.up, member.reason
        assert b.chats() == []
        assert not [e for e in events if "failed before the first byte" in str(e.get("log_format"))]
    finally:
        globalLogPublisher.removeObserver(events.append)  # type: ignore[arg-type]
        await close(env)


# -- health -----------------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_health_names_the_models_without_an_upstream(by_model: Env) -> None:
    """``/health`` is 200 while every model has an upstream up; 503 naming ``alpha`` once its only upstream is
    gone; 200 again when it is back."""
    env = by_model
    status, _, body = await env.get("/health")
    assert status == 200 and jsonutil.loads(body) == {"status": "ok", "upstreams": {"a": "ok", "b": "ok"}}
    await env.ups["a"].kill()
    status, _, body = await env.get("/health")
    value = jsonutil.loads(body)
    assert status == 503 and value["models_without_upstream"] == ["alpha"]
    assert "alpha" in value["reason"] and "beta" not in value["reason"]
    assert value["upstreams"]["b"] == "ok" and "connection refused" in value["upstreams"]["a"]
    status, _, _ = await env.post("/v1/chat/completions", chat("beta"))
    assert status == 200  # the other model is still served
    env.ups["a"].listen()
    status, _, _ = await env.get("/health")
    assert status == 200


@pytest_twisted.ensureDeferred
async def test_health_is_ok_while_a_model_has_one_upstream_up(same_model: Env) -> None:
    """One of two upstreams of a model gone: still 200, its state in ``upstreams``."""
    env = same_model
    await env.ups["b"].kill()
    status, _, body = await env.get("/health")
    value = jsonutil.loads(body)
    assert status == 200 and value["upstreams"]["a"] == "ok" and value["upstreams"]["b"] != "ok"


# -- configuration ----------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_startup_line_names_the_configured_upstreams(tmp_path: Path) -> None:
    """The start-up line says where requests go: the configured upstreams, not the unused default URL."""
    ups = {"a": Upstream.start(ALPHA), "b": Upstream.start("beta")}
    seen, stop = when_logged(lambda e: "llamashim listening on" in str(e.get("log_format")))
    try:
        env = await make_env(tmp_path, ups)
        event = await timeout(seen)
    finally:
        stop()
    try:
        assert "8080" not in str(event["upstream"])
        assert ups["a"].url in str(event["upstream"]) and ups["b"].url in str(event["upstream"])
    finally:
        await close(env)


def config_error(tmp_path: Path, doc: Any, cli: dict[str, Any] | None = None,
                 environ: dict[str, str] | None = None) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as info:
        load_config({"config": str(path), **(cli or {})}, environ or {})
    message = str(info.value)
    assert "\n" not in message
    return message


URL_A, URL_B = "http://127.0.0.1:9001", "http://127.0.0.1:9002"


def test_config_rejects_a_name_used_twice(tmp_path: Path) -> None:
    """Two upstreams with one name stop start-up with one line naming it."""
    message = config_error(tmp_path, {"upstreams": [{"name": "gpu", "url": URL_A}, {"name": "gpu", "url": URL_B}]})
    assert "upstreams[1]" in message and "'gpu'" in message and "twice" in message


def test_config_rejects_url_and_spawn_together_or_neither(tmp_path: Path) -> None:
    """An upstream needs exactly one of url and spawn."""
    message = config_error(tmp_path, {"upstreams": [{"name": "x", "url": URL_A, "spawn": {"model": "/m.gguf"}}]})
    assert "upstreams[0]" in message and "url or spawn" in message
    message = config_error(tmp_path, {"upstreams": [{"name": "x"}]})
    assert "url or spawn" in message


def test_config_rejects_upstreams_with_the_one_upstream_settings(tmp_path: Path) -> None:
    """``upstreams:`` with ``--upstream``, ``UPSTREAM`` or ``upstream.url`` in the file is one line naming both."""
    doc = {"upstreams": [{"name": "a", "url": URL_A}]}
    message = config_error(tmp_path, doc, cli={"upstream": URL_B})
    assert "upstreams" in message and "--upstream" in message
    message = config_error(tmp_path, doc, environ={"UPSTREAM": URL_B})
    assert "UPSTREAM" in message
    message = config_error(tmp_path, {**doc, "upstream": {"url": URL_B}})
    assert "upstream.url" in message
    message = config_error(tmp_path, doc, cli={"spawn_model": "/m.gguf"})
    assert "upstream.spawn" in message


def test_config_rejects_bad_entries(tmp_path: Path) -> None:
    """Unknown keys, a missing name, an empty list and a bad max_concurrent are one-line errors."""
    assert "unknown key 'weight'" in config_error(tmp_path, {"upstreams": [{"name": "a", "url": URL_A, "weight": 2}]})
    assert "needs a name" in config_error(tmp_path, {"upstreams": [{"url": URL_A}]})
    assert "non-empty list" in config_error(tmp_path, {"upstreams": []})
    assert "max_concurrent" in config_error(tmp_path, {"upstreams": [{"name": "a", "url": URL_A,
                                                                       "max_concurrent": 0}]})
    assert "is not an http:// or https:// URL" in config_error(tmp_path, {"upstreams": [{"name": "a",
                                                                                        "url": "ftp://x"}]})


def test_config_error_names_the_entry_key_before_the_file(tmp_path: Path) -> None:
    """A bad value in an entry says ``upstreams[0].url in FILE`` (and ``upstreams[0].spawn.model in FILE``)."""
    path = tmp_path / "bad.yaml"
    message = config_error(tmp_path, {"upstreams": [{"name": "a", "url": "ftp://x"}]})
    assert message.startswith(f"upstreams[0].url in {path}:"), message
    message = config_error(tmp_path, {"upstreams": [{"name": "a", "spawn": {"args": []}}]})
    assert message.startswith(f"upstreams[0].spawn.model in {path}:"), message


def test_config_upstreams_inherit_the_upstream_client_settings(tmp_path: Path) -> None:
    """Each entry's client settings default to ``upstream:``'s; the shorthand is one upstream named default."""
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump({
        "upstream": {"connect_timeout": 3, "api_key": "k"},
        "upstreams": [{"name": "a", "url": URL_A, "models": ["alpha", "q*"], "max_concurrent": 4},
                      {"name": "b", "url": URL_B + "/", "connect_timeout": 1, "api_key": "kb"}],
    }))
    specs = load_config({"config": str(path)}, {}).upstream_specs()
    assert [(s.name, s.url, s.models, s.max_concurrent, s.connect_timeout, s.api_key) for s in specs] == [
        ("a", URL_A, ("alpha", "q*"), 4, 3.0, "k"), ("b", URL_B, (), None, 1.0, "kb")]
    (one,) = load_config({"upstream": URL_A}, {}).upstream_specs()
    assert (one.name, one.url, one.spawn) == ("default", URL_A, None)

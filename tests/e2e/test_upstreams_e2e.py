"""Several real llama-servers behind one llamashim (``upstreams:``): the tiny model under two aliases, twice under
the same alias, and a router-mode server over two names of it — model listing through the ``openai`` and ``ollama``
clients, routing by model, 16 parallel streams spread over two upstreams, prompt-cache affinity, a killed upstream
(failover, the terminal frame of a cut stream, rejoining after restart) and router-mode loading by name.

One daemon, module-scoped, over four llama-servers (each ``-c 4096 -np 2 --jinja --chat-template-file T``):

* ``one`` and ``two``: ``--alias tiny`` (one model, two upstreams);
* ``x``: ``--alias /models/tiny-x.gguf`` (upstream id a path, friendly name ``tiny-x``);
* ``router``: ``--models-dir DIR --models-max 2`` with ``alpha.gguf`` and ``beta.gguf`` (symlinks to the model).

Which upstream served a request is read from llamashim's access log (``upstream=NAME id=REQUEST_ID``).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
import yaml

from llamashim.testing.provision import RealLlamaPaths
from tests.e2e.daemon import Daemon, free_port, running_daemon, stop_process

PATH_ID = "/models/tiny-x.gguf"
TIMEOUT = 300.0  # generous: a loaded CI box runs the tiny model at a few tokens a second


@dataclass
class Llama:
    """One real llama-server, restartable on its port."""

    name: str
    args: list[str]
    paths: RealLlamaPaths
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [self.paths.binary, *self.args, "--host", "127.0.0.1", "--port", str(self.port), "--jinja",
               "--chat-template-file", self.paths.template]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def wait_healthy(self, seconds: float = 120.0) -> None:
        """Poll ``/health`` (a real process, with a deadline) until it answers ok."""
        deadline = time.monotonic() + seconds
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server {self.name} exited with {self.proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.2)  # polling an external process for readiness, with a deadline
        raise TimeoutError(f"llama-server {self.name} did not become healthy in {seconds:.0f} s")

    def kill(self) -> None:
        """SIGKILL: a crash, connections reset mid-answer."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)  # SIGTERM first: a router stops the model instances it started


@dataclass
class Fleet:
    shim: Daemon
    llamas: dict[str, Llama]

    def log(self) -> str:
        """The daemon's log (at level debug it goes to standard output)."""
        return self.shim.stdout_path.read_text(errors="replace")

    def access(self, request_id: str, deadline: float = 10.0) -> str:
        """The upstream llamashim's access log names for the request ``request_id`` (polled: the log is a file)."""
        pattern = re.compile(rf"upstream=(\S+) upstream_ttfb=\S+ tokens=\S+ id={re.escape(request_id)}\b")
        end = time.monotonic() + deadline
        while True:
            match = pattern.search(self.log())
            if match is not None:
                return match.group(1)
            if time.monotonic() > end:
                raise AssertionError(f"no access line for {request_id}")
            time.sleep(0.05)  # the daemon is a separate process writing its log file; polled with a deadline

    def post(self, body: dict[str, Any], request_id: str | None = None, path: str = "/v1/chat/completions"
             ) -> tuple[str, httpx.Response]:
        rid = request_id or uuid.uuid4().hex
        response = httpx.post(self.shim.url + path, json=body, headers={"X-Request-Id": rid}, timeout=TIMEOUT)
        return rid, response

    def stream(self, body: dict[str, Any], request_id: str | None = None) -> tuple[str, list[str]]:
        """A streamed chat through llamashim: the request id and every ``data:`` payload."""
        rid = request_id or uuid.uuid4().hex
        with httpx.stream("POST", self.shim.url + "/v1/chat/completions", json={**body, "stream": True},
                          headers={"X-Request-Id": rid}, timeout=TIMEOUT) as response:
            assert response.status_code == 200, response.read()
            return rid, [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]

    def metrics(self) -> str:
        return httpx.get(self.shim.url + "/metrics", timeout=10).text

    def gauge(self, name: str, upstream: str) -> float:
        match = re.search(rf'^{name}{{upstream="{upstream}"}} (\S+)$', self.metrics(), re.M)
        assert match is not None, (name, upstream)
        return float(match.group(1))


@pytest.fixture(scope="module")
def fleet(real_llama_paths: RealLlamaPaths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Four llama-servers started in parallel, and llamashim over them (debug log: its routing reasons)."""
    tmp = tmp_path_factory.mktemp("upstreams")
    models_dir = tmp / "models"
    models_dir.mkdir()
    for name in ("alpha", "beta"):
        (models_dir / f"{name}.gguf").symlink_to(real_llama_paths.model)
    common = ["-c", "4096", "-np", "2"]
    llamas = {
        "one": Llama("one", ["-m", real_llama_paths.model, *common, "--alias", "tiny"], real_llama_paths,
                     tmp / "one.log"),
        "two": Llama("two", ["-m", real_llama_paths.model, *common, "--alias", "tiny"], real_llama_paths,
                     tmp / "two.log"),
        "x": Llama("x", ["-m", real_llama_paths.model, *common, "--alias", PATH_ID], real_llama_paths, tmp / "x.log"),
        "router": Llama("router", ["--models-dir", str(models_dir), "--models-max", "2", "-c", "4096"],
                        real_llama_paths, tmp / "router.log"),
    }
    try:
        for llama in llamas.values():
            llama.start()
        for llama in llamas.values():
            llama.wait_healthy()
        config = tmp / "llamashim.yaml"
        config.write_text(yaml.safe_dump({
            "upstreams": [{"name": name, "url": llama.url} for name, llama in llamas.items()],
            "log": {"level": "debug"},
            "responses": {"store_path": str(tmp / "responses.sqlite3")},
        }))
        with running_daemon(None, "--config", str(config), tmp=tmp) as shim:
            yield Fleet(shim, llamas)
    finally:
        for llama in llamas.values():
            llama.stop()


def chat(model: str, text: str, max_tokens: int = 8, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
            "temperature": 0, **extra}


# -- (a) two aliases: listing and routing -----------------------------------------------------------------------


def test_openai_client_lists_the_union(fleet: Fleet) -> None:
    """The ``openai`` client's ``models.list()`` has every model of every upstream, once, by friendly name."""
    client = openai.OpenAI(base_url=fleet.shim.url + "/v1", api_key="unused", timeout=TIMEOUT)
    listed = {m.id: m for m in client.models.list().data}
    assert sorted(listed) == ["alpha", "beta", "tiny", "tiny-x"]
    extra = listed["tiny-x"].model_extra or {}
    assert PATH_ID in extra["aliases"] and extra["upstreams"] == ["x"]
    assert (listed["tiny"].model_extra or {})["upstreams"] == ["one", "two"]
    assert (listed["alpha"].model_extra or {})["upstreams"] == ["router"]


def test_requests_go_to_the_upstream_of_their_model(fleet: Fleet) -> None:
    """``tiny-x`` (by friendly name, ``:latest`` or upstream id) is served by x; ``tiny`` by one or two."""
    client = openai.OpenAI(base_url=fleet.shim.url + "/v1", api_key="unused", timeout=TIMEOUT)
    for model, where in (("tiny-x", {"x"}), (PATH_ID, {"x"}), ("tiny-x:latest", {"x"}), ("tiny", {"one", "two"})):
        rid = uuid.uuid4().hex
        reply = client.chat.completions.create(**chat(model, "Say hi."), extra_headers={"X-Request-Id": rid})
        assert reply.choices[0].message.content, model
        assert fleet.access(rid) in where, model
    status = httpx.post(fleet.shim.url + "/v1/chat/completions", json=chat("gpt-4o", "hi"), timeout=TIMEOUT)
    assert status.status_code == 404
    message = status.json()["error"]["message"]
    assert all(name in message for name in ("alpha", "beta", "tiny", "tiny-x")), message


# -- (c) router mode --------------------------------------------------------------------------------------------


def test_router_mode_serves_each_model_it_names(fleet: Fleet) -> None:
    """``alpha`` and ``beta`` (one router-mode llama-server, loading on demand) are served by the model each names:
    the reply's ``model`` is llama-server's, and afterwards both are listed as loaded."""
    def ask(model: str) -> tuple[str, httpx.Response]:
        return fleet.post(chat(model, "Say hi."))

    with ThreadPoolExecutor(2) as pool:  # the two loads overlap
        answers = dict(zip(("alpha", "beta"), pool.map(ask, ("alpha", "beta")), strict=True))
    for model, (rid, response) in answers.items():
        assert response.status_code == 200, response.text
        assert response.json()["model"] == model
        assert fleet.access(rid) == "router"
    direct = httpx.get(fleet.llamas["router"].url + "/v1/models", timeout=10).json()
    assert {e["id"]: e["status"]["value"] for e in direct["data"]} == {"alpha": "loaded", "beta": "loaded"}
    listed = {e["id"]: e for e in httpx.get(fleet.shim.url + "/v1/models", timeout=30).json()["data"]}
    assert listed["alpha"]["status"] == {"value": "loaded"} and listed["beta"]["status"] == {"value": "loaded"}


# -- (d) the ollama client --------------------------------------------------------------------------------------


def test_ollama_client_chats_with_the_default_upstreams_model(fleet: Fleet) -> None:
    """``ollama.Client.chat`` by the friendly name of the first upstream's model works and is served there."""
    client = ollama.Client(host=fleet.shim.url, timeout=TIMEOUT, headers={"X-Request-Id": "ollama-tiny-1"})
    reply = client.chat(model="tiny", messages=[{"role": "user", "content": "Say hi."}], options={"num_predict": 8})
    assert reply.message.content and reply.done
    assert fleet.access("ollama-tiny-1") in {"one", "two"}


def test_ollama_client_list_shows_every_friendly_name(fleet: Fleet) -> None:
    """``ollama.Client.list()`` shows each model's friendly name in ``.model`` (the union of the upstreams)."""
    listed = ollama.Client(host=fleet.shim.url, timeout=TIMEOUT).list()
    assert sorted(m.model for m in listed.models if m.model) == ["alpha", "beta", "tiny", "tiny-x"]


def test_ollama_client_chats_by_friendly_name_and_upstream_id(fleet: Fleet) -> None:
    """``ollama.Client.chat`` with ``tiny-x`` and with its upstream id ``/models/tiny-x.gguf`` is served by x."""
    for i, model in enumerate(("tiny-x", PATH_ID)):
        rid = f"ollama-x-{i}-{uuid.uuid4().hex[:8]}"
        client = ollama.Client(host=fleet.shim.url, timeout=TIMEOUT, headers={"X-Request-Id": rid})
        reply = client.chat(model=model, messages=[{"role": "user", "content": "Say hi."}],
                            options={"num_predict": 8})
        assert reply.message.content
        assert fleet.access(rid) == "x", model


# -- (b) one model on two upstreams -----------------------------------------------------------------------------


def test_sixteen_parallel_streams_spread_over_both_upstreams(fleet: Fleet) -> None:
    """16 streams of 16 conversations for ``tiny`` all end with ``[DONE]``, spread over one and two."""
    def one_stream(i: int) -> tuple[str, list[str]]:
        return fleet.stream(chat("tiny", f"Conversation {i}: name a colour.", max_tokens=4))

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one_stream, range(16)))
    for _, payloads in results:
        assert payloads[-1] == "[DONE]" and not any('"error"' in p for p in payloads)
    counts = Counter(fleet.access(rid) for rid, _ in results)
    assert set(counts) == {"one", "two"} and min(counts.values()) >= 4, counts


def test_follow_up_turns_reuse_the_prompt_cache_of_their_upstream(fleet: Fleet) -> None:
    """A conversation's second and third turns go to the upstream of its first (debug log: affinity) and find
    its prompt in the cache (``timings.cache_n``); the same turn sent to the other upstream finds nearly nothing."""
    system = (f"[{uuid.uuid4().hex}] You are a careful assistant for a travel agency. You answer questions about "
              "cities, museums, food and trains in Europe with short, friendly, factual sentences.")
    messages: list[dict[str, str]] = [{"role": "system", "content": system},
                                      {"role": "user", "content": "Which city is the capital of France?"}]
    rid, first = fleet.post({"model": "tiny", "messages": messages, "max_tokens": 8, "temperature": 0})
    assert first.status_code == 200, first.text
    home = fleet.access(rid)
    other = "two" if home == "one" else "one"
    prompt_tokens = first.json()["usage"]["prompt_tokens"]
    for n, question in enumerate(("And of Italy?", "And of Spain?")):
        messages = [*messages, {"role": "assistant", "content": first.json()["choices"][0]["message"]["content"]},
                    {"role": "user", "content": question}]
        body = {"model": "tiny", "messages": messages, "max_tokens": 8, "temperature": 0}
        offset = len(fleet.log())
        rid, turn = fleet.post(body)
        assert turn.status_code == 200, turn.text
        assert fleet.access(rid) == home
        reasons = re.findall(r"model tiny -> upstream (\S+): (.*)", fleet.log()[offset:])
        assert reasons and reasons[-1] == (home, "conversation affinity (its prompt cache)"), reasons
        cached = turn.json()["timings"]["cache_n"]
        assert cached >= 0.8 * prompt_tokens, (cached, prompt_tokens)
        assert turn.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == cached
        if n == 0:  # what a round-robin choice would have done: the same turn on the other upstream (once: it then
            # holds this prefix itself)
            elsewhere = httpx.post(fleet.llamas[other].url + "/v1/chat/completions", json=body,
                                   timeout=TIMEOUT).json()
            assert elsewhere["timings"]["cache_n"] < cached / 2, (elsewhere["timings"], cached)
        first = turn


def test_killed_upstream_fails_over_cuts_its_stream_and_rejoins(fleet: Fleet) -> None:
    """Kill the upstream serving a long stream: that stream ends with the terminal ``error`` frame, new requests
    succeed on the other with no client-visible error, it is marked down; restarted on its port, it rejoins."""
    long_body = chat("tiny", "Tell me a very long story about a dragon.", max_tokens=2000, ignore_eos=True)
    rid = uuid.uuid4().hex
    payloads: list[str] = []
    with httpx.stream("POST", fleet.shim.url + "/v1/chat/completions", json={**long_body, "stream": True},
                      headers={"X-Request-Id": rid}, timeout=TIMEOUT) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        for line in lines:  # the stream is under way: its upstream is the one with a request in flight
            if line.startswith("data: ") and '"content"' in line:
                payloads.append(line[6:])
                break
        victim = next(n for n in ("one", "two") if fleet.gauge("llamashim_upstream_in_flight", n) == 1)
        survivor = "two" if victim == "one" else "one"
        fleet.llamas[victim].kill()
        payloads += [line[6:] for line in lines if line.startswith("data: ")]
    last = json.loads(payloads[-1])
    assert "error" in last and last["error"]["message"], payloads[-3:]
    assert "[DONE]" not in payloads
    assert fleet.access(rid) == victim
    # At once, before anything marked it down: parallel requests, some of which choose the dead one (least busy)
    # and fail over before their first byte.
    with ThreadPoolExecutor(4) as pool:
        after = list(pool.map(lambda i: fleet.post(chat("tiny", f"After the crash {i}: say hi.")), range(4)))
    for rid, response in after:
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] is not None
        assert fleet.access(rid) == survivor
    assert f"upstream {victim} failed before the first byte" in fleet.log()
    rid, streamed = fleet.stream(chat("tiny", "After the crash: name a fruit."))
    assert streamed[-1] == "[DONE]" and fleet.access(rid) == survivor
    health = httpx.get(fleet.shim.url + "/health", timeout=30)
    assert health.status_code == 200 and health.json()["upstreams"][survivor] == "ok"
    assert health.json()["upstreams"][victim] != "ok" and fleet.gauge("llamashim_upstream_up", victim) == 0
    fleet.llamas[victim].start()  # the same port
    fleet.llamas[victim].wait_healthy()
    deadline = time.monotonic() + 60
    while fleet.gauge("llamashim_upstream_up", victim) != 1:  # the set's probe, with back-off
        assert time.monotonic() < deadline, f"{victim} did not rejoin"
        time.sleep(0.5)  # polling the daemon (a separate process) with a deadline
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: fleet.stream(chat("tiny", f"Rejoined {i}: name a city.", max_tokens=8)),
                                range(4)))
    assert {fleet.access(r) for r, _ in results} == {"one", "two"}
    assert all(p[-1] == "[DONE]" for _, p in results)

"""End-to-end past one box: two llamashim instances behind HAProxy (round robin, per request), sharing one real
PostgreSQL Responses store, in front of two real llama-servers serving the same model.

What is proven: a Responses conversation continues through either instance (``previous_response_id`` found in the
shared store); every conversation keeps its upstream whichever instance a turn lands on (rendezvous order: the
instances agree with nothing shared), and both upstreams serve; killing one instance costs no stream the other
accepted, and HAProxy's next requests go to the survivor; a streamed Responses turn on one instance is continued on
the other the moment its ``response.completed`` arrives (the end goes out after the shared store's write).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llamashim.testing.provision import RealLlamaPaths
from tests.e2e.conftest import RealLlama, _llama_server
from tests.e2e.daemon import Daemon, _wait_listening, free_port, running_daemon, stop_process
from tests.integration.postgres import Postgres, start_postgres

TIMEOUT = 120.0


@dataclass
class Pair:
    """The two instances, the balancer in front of them and the two upstreams behind them."""

    url: str  # HAProxy's
    instances: dict[str, Daemon]
    llamas: dict[str, RealLlama]

    def served_by(self, request_id: str, deadline: float = 10.0) -> tuple[str, str]:
        """(instance, upstream) of the request ``request_id``, from the instances' access lines (polled)."""
        pattern = re.compile(rf"upstream=(\S+) upstream_ttfb=\S+ tokens=\S+ id={re.escape(request_id)}\b")
        end = time.monotonic() + deadline
        while True:
            for name, daemon in self.instances.items():
                found = pattern.search(daemon.log_path.read_text(errors="replace"))
                if found:
                    return name, found.group(1)
            assert time.monotonic() < end, f"no access line for {request_id}"
            time.sleep(0.05)

    def post(self, path: str, body: dict[str, Any]) -> tuple[str, httpx.Response]:
        rid = f"pair-{uuid.uuid4().hex[:12]}"
        response = httpx.post(self.url + path, json=body, headers={"X-Request-Id": rid}, timeout=TIMEOUT)
        return rid, response


def _haproxy_config(port: int, backends: dict[str, int]) -> str:
    servers = "\n".join(f"    server {name} 127.0.0.1:{p} check inter 200ms fall 1 rise 1"
                        for name, p in backends.items())
    return f"""global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 300s
    timeout server 300s
    retries 2
    option redispatch
frontend in
    bind 127.0.0.1:{port}
    default_backend llamashims
backend llamashims
    balance roundrobin
    option httpchk
    http-check send meth GET uri /health ver HTTP/1.1 hdr Host 127.0.0.1
    http-reuse never
{servers}
"""


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pair(real_llama_paths: RealLlamaPaths, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Pair]:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(haproxy).exists(), "HAProxy is needed (./run-tests installs Debian's haproxy)"
    tmp = tmp_path_factory.mktemp("pair")
    store_url = postgres.url(postgres.new_database())
    with ExitStack() as stack:
        llamas = {name: stack.enter_context(_llama_server(real_llama_paths, tmp / f"{name}.log", "-c", "4096", "-np",
                                                          "2", "--alias", "tiny"))
                  for name in ("one", "two")}
        config = tmp / "llamashim.yaml"
        config.write_text(yaml.safe_dump({
            "upstreams": [{"name": name, "url": llama.url} for name, llama in llamas.items()],
            "responses": {"store_url": store_url},
        }))
        instances = {}
        for name in ("a", "b"):
            (tmp / name).mkdir()
            instances[name] = stack.enter_context(running_daemon(None, "--config", str(config), tmp=tmp / name))
        port = free_port()
        (tmp / "haproxy.cfg").write_text(_haproxy_config(port, {n: d.port for n, d in instances.items()}))
        with open(tmp / "haproxy.log", "wb") as log:
            proxy = subprocess.Popen([haproxy, "-f", str(tmp / "haproxy.cfg"), "-db"], stdout=log,
                                     stderr=subprocess.STDOUT)
        stack.callback(stop_process, proxy)
        _wait_listening(port, proxy, time.monotonic() + 30)
        yield Pair(f"http://127.0.0.1:{port}", instances, llamas)


def _ask(text: str, previous: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "tiny", "input": text, "max_output_tokens": 8, "temperature": 0, "store": True}
    if previous is not None:
        body["previous_response_id"] = previous
    return body


def test_a_responses_conversation_continues_through_either_instance(pair: Pair) -> None:
    """Four turns of one Responses conversation through the round-robin balancer: every turn after the first finds
    its previous response in the shared PostgreSQL store, and the turns land on both instances."""
    previous: str | None = None
    where = []
    for text in ("Name a fruit.", "And a colour?", "And a city?", "And a number?"):
        rid, response = pair.post("/v1/responses", _ask(text, previous))
        assert response.status_code == 200, response.text
        previous = response.json()["id"]
        where.append(pair.served_by(rid)[0])
    assert set(where) == {"a", "b"}, where


def test_conversations_keep_their_upstream_through_either_instance(pair: Pair) -> None:
    """Eight conversations of three turns each, every turn through the balancer: each conversation's turns are all
    on one upstream though they land on both instances, and both upstreams serve conversations."""
    homes: dict[int, set[str]] = {}
    instances: set[str] = set()
    for k in range(8):
        messages: list[dict[str, str]] = [{"role": "user", "content": f"Conversation {k}: name an animal."}]
        for turn in range(3):
            rid, response = pair.post("/v1/chat/completions", {"model": "tiny", "messages": messages,
                                                                "max_tokens": 6, "temperature": 0})
            assert response.status_code == 200, response.text
            instance, upstream = pair.served_by(rid)
            homes.setdefault(k, set()).add(upstream)
            instances.add(instance)
            messages += [{"role": "assistant", "content": response.json()["choices"][0]["message"]["content"]},
                         {"role": "user", "content": f"And another, {turn}?"}]
    assert all(len(upstreams) == 1 for upstreams in homes.values()), homes
    assert {u for upstreams in homes.values() for u in upstreams} == {"one", "two"}, homes
    assert instances == {"a", "b"}


def _streamed_then_continued(first: httpx.Client, then: httpx.Client, text: str) -> httpx.Response:
    """A streamed Responses turn through ``first``; the moment its end event arrives (``response.completed``, or
    ``response.incomplete`` at ``max_output_tokens``; the stream not even closed), the follow-up through ``then``
    (its connection already open)."""
    with first.stream("POST", "/v1/responses", json={**_ask(text), "stream": True}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            event = json.loads(line[6:]) if line.startswith("data: ") else {}
            if event.get("type") in ("response.completed", "response.incomplete"):  # (incomplete: max_output_tokens)
                return then.post("/v1/responses", json=_ask("And another?", event["response"]["id"]))
    raise AssertionError("the stream ended without its end event")


def test_a_streamed_turn_continues_at_once_on_the_other_instance(pair: Pair) -> None:
    """Twenty times: a streamed Responses turn on instance a and, the moment its end event arrives, the follow-up on
    instance b over a warm connection — found in the shared PostgreSQL store every time (the end goes out after the
    write)."""
    with httpx.Client(base_url=pair.instances["a"].url, timeout=TIMEOUT) as a, \
            httpx.Client(base_url=pair.instances["b"].url, timeout=TIMEOUT) as b:
        assert b.get("/health").status_code == 200  # b's connection is open before the race
        statuses = [_streamed_then_continued(a, b, f"Name a fruit ({k}).").status_code for k in range(20)]
    assert statuses.count(404) == 0 and set(statuses) == {200}, statuses


def _stream(url: str, started: threading.Event) -> list[str]:
    """A chat stream straight to one instance: its ``data:`` payloads (``started`` set at the first one)."""
    body = {"model": "tiny", "stream": True, "max_tokens": 48, "temperature": 0,
            "messages": [{"role": "user", "content": "Count slowly from one to twenty."}]}
    payloads = []
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=TIMEOUT) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                payloads.append(line[6:])
                started.set()
    return payloads


def test_killing_one_instance_costs_no_stream_the_other_accepted(pair: Pair) -> None:
    """Streams running on instance b while instance a is killed (SIGKILL) all end with ``[DONE]``; the balancer's
    next requests are served (by b). Runs last in this module: a stays down."""
    started = [threading.Event() for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(_stream, pair.instances["b"].url, event) for event in started]
        assert all(event.wait(TIMEOUT) for event in started)  # every stream under way
        pair.instances["a"].proc.send_signal(signal.SIGKILL)
        results = [f.result(timeout=TIMEOUT) for f in running]
    for payloads in results:
        assert payloads and payloads[-1] == "[DONE]" and not any('"error"' in p for p in payloads), payloads[-3:]
    for _ in range(4):
        rid, response = pair.post("/v1/chat/completions", {"model": "tiny", "max_tokens": 4, "messages": [
            {"role": "user", "content": "Say hi."}]})
        assert response.status_code == 200, response.text
        assert pair.served_by(rid)[0] == "b"

"""``llamashim doctor`` against the fake llama-server over loopback: its probes, the old-build modes, a server that
wants a key, and the command itself (``--json``, ``--for``) as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.web.resource import Resource
from twisted.web.server import Request

from llamashim.ops.doctor import probe
from llamashim.ops.doctor_report import FAIL, OK, WARN, Report, diagnose, exit_status
from llamashim.testing.fake_llama import FakeLlama
from tests.e2e.daemon import _wait_listening, free_port, stop_process
from tests.integration.support import listen, reactor, timeout

BIN = Path(sys.executable).parent


class Env:
    def __init__(self, fake: FakeLlama, url: str) -> None:
        self.fake = fake
        self.url = url

    async def report(self, **kw: Any) -> Report:
        return diagnose(await timeout(Deferred.fromCoroutine(probe(reactor, self.url, timeout=10.0, **kw)),
                                      30.0))


@pytest_twisted.async_yield_fixture
async def env() -> AsyncIterator[Env]:
    fake = FakeLlama(reactor)
    fake.tool_calls = [("get_weather", '{"city": "Paris"}')]
    fake.content = []
    port, url = listen(fake.resource())
    yield Env(fake, url)
    await maybeDeferred(port.stopListening)


def check(report: Report, name: str) -> Any:
    return next(c for c in report.checks if c.name == name)


@pytest_twisted.ensureDeferred
async def test_a_capable_server(env: Env) -> None:
    """A current build with 16,384 tokens a slot: tools work and stream, embeddings work; Copilot and Codex CLI
    will work, Claude Code needs more context per slot."""
    env.fake.n_ctx = 65536  # the fake's 4 slots get 16,384 each
    report = await env.report()
    assert check(report, "tool call").status == OK and "Paris" in check(report, "tool call").summary
    assert check(report, "streamed tools").status == OK and check(report, "embeddings").status == OK
    assert report.facts["n_ctx_per_slot"] == 16384 and report.facts["total_slots"] == 4
    assert exit_status(report, ["copilot", "codex"]) == 0 and exit_status(report, ["claude"]) == 1
    claude = report.verdict("claude")
    assert claude is not None and claude.fixes == ("-c 131072 -np 4, or -c 32768 -np 1 (-c is shared among the -np "
                                                   "slots)",)
    probes = [(r.method, r.path) for r in env.fake.requests]
    assert ("POST", "/v1/chat/completions") in probes and ("POST", "/v1/embeddings") in probes
    chats = env.fake.chat_requests()
    assert [c.body["stream"] for c in chats] == [False, True] and chats[0].body["tool_choice"] == "required"


@pytest.mark.parametrize(("old_build", "words"), [("refuse_stream_tools", "refuses streamed tool calls"),
                                                   ("json_for_stream", "one JSON body")])
@pytest_twisted.ensureDeferred
async def test_old_builds_that_cannot_stream_tool_calls(env: Env, old_build: str, words: str) -> None:
    """The fake's old-build modes: the streamed probe is a warning (llamashim synthesizes), not a failure."""
    env.fake.old_build = old_build
    env.fake.n_ctx = 65536
    report = await env.report()
    c = check(report, "streamed tools")
    assert c.status == WARN and words in c.summary and "synthesizes" in c.summary
    assert exit_status(report, ["codex"]) == 0


@pytest_twisted.ensureDeferred
async def test_a_template_without_tools(env: Env) -> None:
    """A server whose template has no tools: the template fails, the fix names --chat-template-file, and --for
    codex exits 1."""
    env.fake.tools_capability = False
    env.fake.tool_calls = []
    env.fake.content = ["It is sunny."]
    report = await env.report()
    assert check(report, "template").status == FAIL and "--chat-template-file" in check(report, "template").fix
    assert check(report, "tool call").status == FAIL
    assert exit_status(report, ["codex"]) == 1


@pytest_twisted.ensureDeferred
async def test_a_loading_server_and_quick_mode(env: Env) -> None:
    """While the model loads, health is a warning; --quick asks no chat question at all."""
    env.fake.loading = True
    report = await env.report(quick=True)
    assert check(report, "health").status == WARN and check(report, "tool call").summary == "not tried (--quick)"
    assert env.fake.chat_requests() == []


class KeyRequired(Resource):
    """llama-server with --api-key: every path but /health wants the key."""

    isLeaf = True

    def __init__(self, inner: Resource, key: bytes) -> None:
        super().__init__()
        self.inner, self.key = inner, key

    def render(self, request: Request) -> bytes | int:
        if request.path != b"/health" and request.getHeader(b"authorization") != b"Bearer " + self.key:
            request.setResponseCode(401)
            return b'{"error":{"code":401,"message":"Invalid API Key","type":"authentication_error"}}'
        return self.inner.render(request)  # type: ignore[no-any-return]


@pytest_twisted.ensureDeferred
async def test_a_server_that_wants_a_key() -> None:
    """Without the key: one failing line naming --api-key; with it: the full report, the key marked required."""
    fake = FakeLlama(reactor)
    port, url = listen(KeyRequired(fake.resource(), b"sk-llama"))
    try:
        report = diagnose(await timeout(Deferred.fromCoroutine(probe(reactor, url, quick=True, timeout=10.0))))
        assert check(report, "API key").status == FAIL and exit_status(report, []) == 1
        report = diagnose(await timeout(Deferred.fromCoroutine(
            probe(reactor, url, api_key="sk-llama", quick=True, timeout=10.0))))
        assert check(report, "API key").status == OK and check(report, "slots").status == OK
    finally:
        await maybeDeferred(port.stopListening)


@pytest.fixture
def fake_process() -> Iterator[str]:
    """The fake llama-server as its own process (``python -m llamashim.testing.fake_llama``)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llamashim.testing.fake_llama", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(port, proc, time.monotonic() + 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def test_the_command_prints_json_and_exits_by_client(fake_process: str) -> None:
    """`llamashim doctor URL --json --for codex`: the JSON report, exit 1 (1,024 tokens a slot is too little);
    without --for, exit 0; the text report names the fix."""
    result = subprocess.run([str(BIN / "llamashim"), "doctor", fake_process, "--json", "--for", "codex"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    value = json.loads(result.stdout)
    codex = next(c for c in value["clients"] if c["name"] == "codex")
    assert codex["ok"] is False and "needs ~6,500 tokens per slot, has 1,024" in codex["problems"]
    text = subprocess.run([str(BIN / "llamashim"), "doctor", fake_process], capture_output=True, text=True,
                          timeout=120)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(f"llamashim doctor: {fake_process}\n") and "→ -c " in text.stdout

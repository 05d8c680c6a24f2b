"""The chat flow every dialect shares: one :class:`ChatCall` → the upstream → a stream, a synthesized stream, or
one JSON reply, in the dialect's wire format.

What is shared: tool repair, the upstream call, the tool-call streaming modes (DESIGN.md "Tool-call streaming"),
reply normalisation, reasoning routing of replies, verbose logging, starting the stream, heartbeats, and the
request context's usage and timing. What a dialect brings, in the call: the internal request body, its encoder and
its reply shaping. Modes:

* ``native`` — stream from the upstream through the conformance layer;
* ``synthesize`` — ask with ``stream: false``, send the dialect's heartbeat while waiting, synthesize the stream;
* ``auto`` — native, but fall back to synthesis (once, only while nothing has reached the client) when the upstream
  refuses streamed tools or answers a stream request with plain JSON; the fallback is remembered per upstream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet.defer import maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from llamashim import jsonutil
from llamashim.chat.call import ChatCall
from llamashim.chat.repair import repair_chat_request
from llamashim.chat.tokens import count_prompt_tokens
from llamashim.errors import ShimError
from llamashim.stream.items import Stage
from llamashim.stream.pipeline import StreamPipeline, usage_counts
from llamashim.stream.reasoning import ReasoningRouter, ReasoningStyle, apply_to_reply
from llamashim.stream.tools import (
    ToolCallConformance,
    is_stream_tools_refusal,
    normalise_reply,
    reply_from_json_stream_answer,
    synthesize_items,
)
from llamashim.upstream.body import BytesProducer, collect_body, json_reply, upstream_error
from llamashim.upstream.client import UpstreamClient
from llamashim.upstream.set import Pick, UpstreamSet
from llamashim.web.context import context_of
from llamashim.web.relay import relay
from llamashim.web.respond import send_json, start_stream

T = TypeVar("T")

# Facts learnt about an upstream at run time, kept per upstream (UpstreamClient.facts).
FACT_STREAM_TOOLS_REFUSED = "stream_tools_refused"
FACT_STREAM_ANSWERS_JSON = "stream_answers_json"

# Headers of the client's request that go upstream with a chat call.
FORWARDED = (b"authorization", b"x-request-id")


@dataclass(frozen=True)
class ChatSettings:
    """The configuration the flow runs with (from ``tools``, ``server``, ``thinking``, ``log`` and ``limits``)."""

    tools_mode: str
    chunk_size: int
    synthesis_heartbeat: float  # seconds between heartbeats while a synthesized answer is awaited
    stream_heartbeat: float  # seconds of client silence before a heartbeat during a native stream (0: none)
    max_reply_bytes: int
    style: ReasoningStyle
    verbose: bool = False
    thinking_debug: bool = False


def fails_over(err: ShimError) -> bool:
    """An upstream-side failure another upstream may not have: unreachable, timed out, 502/503/504."""
    return err.status in (502, 503, 504)


def with_model(body: dict[str, Any], pick: Pick) -> dict[str, Any]:
    """``body`` asking the chosen upstream for the model by the id it knows it under."""
    return {**body, "model": pick.served.id} if pick.served.id else body


def _model(body: dict[str, Any]) -> str | None:
    model = body.get("model")
    return model if isinstance(model, str) and model else None


def forwarded_headers(request: Request) -> Headers:
    headers = Headers({b"content-type": [b"application/json"]})
    for name in FORWARDED:
        value = request.requestHeaders.getRawHeaders(name)
        if value:
            headers.setRawHeaders(name, value)
    return headers


class ChatFlow:
    log = Logger()

    def __init__(self, upstreams: UpstreamSet, settings: ChatSettings) -> None:
        self.upstreams = upstreams
        self.settings = settings
        self.clock = upstreams.reactor

    # -- logging ------------------------------------------------------------------------------------------------

    def verbose(self, what: str, body: bytes) -> None:
        if self.settings.verbose:
            self.log.info("{what}: {body}", what=what, body=body.decode("utf-8", "replace"))

    def _thinking_debug(self, destination: str, fragment: str) -> None:
        self.log.info("thinking -> {destination}: {fragment!r}", destination=destination, fragment=fragment)

    # -- the flow -----------------------------------------------------------------------------------------------

    async def run(self, request: Request, call: ChatCall) -> bytes | None:
        """Answer ``request``: returns the body of a non-streamed reply; streams and finishes it otherwise.

        The upstream is chosen per model (:meth:`UpstreamSet.pick`); one that fails before anything reached the
        client (unreachable, timed out, 502/503/504) is marked down and the request goes to the next upstream
        serving the model. After the first byte a failure is the stream's: its terminal frame.
        """
        call.body = repair_chat_request(call.body, self.log.debug)

        async def answer(pick: Pick) -> bytes | None:
            body = with_model(call.body, pick)
            self.verbose("request", jsonutil.dumps(body))  # as it goes upstream: the upstream's model id
            return await self._run_on(request, call, pick.member.client, body)

        return await self.on_upstream(request, _model(call.body), call.body.get("messages"), answer)

    async def on_upstream(
        self, request: Request, model: str | None, messages: Any, work: Callable[[Pick], Awaitable[T]]
    ) -> T:
        """Run ``work`` on the upstream chosen for ``model``; one that fails before anything reached the client
        (unreachable, timed out, 502/503/504) is marked down and ``work`` runs again on the next upstream serving
        the model. Every upstream-bound route goes through here."""
        await self.upstreams.ensure_index()
        ctx = context_of(request)
        tried: set[str] = set()
        while True:
            pick = self.upstreams.pick(model, messages, frozenset(tried))
            ctx.upstream = pick.member.name
            self.upstreams.started(pick)
            limit = pick.member.limit
            try:
                if limit is not None:  # its max_concurrent: the choice avoided it while another had room
                    await limit.acquire()
                try:
                    result = await work(pick)
                finally:
                    if limit is not None:
                        limit.release()
                self.upstreams.succeeded(pick.member)
                return result
            except ShimError as e:
                if request.startedWriting or ctx.client_gone or not fails_over(e):
                    raise
                self.upstreams.failed(pick.member, e)
                tried.add(pick.member.name)
                if not any(s.upstream not in tried for s in pick.resolved.model.served):
                    raise
                self.log.info("upstream {name} failed before the first byte ({message}); trying another for "
                              "{model} (id={request_id})", name=pick.member.name, message=e.message,
                              model=pick.resolved.model.name, request_id=ctx.request_id.decode("ascii", "replace"))
            finally:
                self.upstreams.ended(pick)

    async def count_tokens(self, request: Request, body: dict[str, Any]) -> int:
        """The prompt tokens of a chat request, counted by the upstream its model would go to."""

        async def count(pick: Pick) -> int:
            return await count_prompt_tokens(pick.member.client, with_model(body, pick), forwarded_headers(request))

        return await self.on_upstream(request, _model(body), body.get("messages"), count)

    async def _run_on(
        self, request: Request, call: ChatCall, client: UpstreamClient, body: dict[str, Any]
    ) -> bytes | None:
        if not call.stream:
            return await self._reply(request, call, client, body)
        has_tools = bool(body.get("tools"))
        mode = self.settings.tools_mode
        facts = client.facts
        if mode == "synthesize" or (
            mode == "auto" and ((has_tools and FACT_STREAM_TOOLS_REFUSED in facts) or FACT_STREAM_ANSWERS_JSON in facts)
        ):
            await self._synthesize(request, call, client, body)
            return None
        response = await self._post(request, call, client, body)
        if response.code != 200:
            data = await collect_body(response, self.clock, client.idle_timeout, self.settings.max_reply_bytes)
            if has_tools and mode == "auto" and is_stream_tools_refusal(response.code, data):
                self._learn(client, FACT_STREAM_TOOLS_REFUSED, f"refuses streamed tool calls ({response.code}); "
                            "synthesizing tool-call streams from now on")
                await self._synthesize(request, call, client, body)
                return None
            raise upstream_error(response.code, data)
        ctype = response.headers.getRawHeaders(b"content-type", [b""])[0]
        pipeline = self._pipeline(call)
        if b"text/event-stream" not in ctype:
            # An old build answers a stream request with one JSON reply: turn it into a stream.
            data = await collect_body(response, self.clock, client.idle_timeout, self.settings.max_reply_bytes)
            answer = reply_from_json_stream_answer(data)
            if answer is None:
                raise ShimError(502, "upstream answered a streaming request with neither a stream nor a chat reply")
            if mode == "auto":
                self._learn(client, FACT_STREAM_ANSWERS_JSON, "answers streaming requests with plain JSON; "
                            "synthesizing streams from now on")
            await self._emit_synthesized(request, call, pipeline, answer)
            return None
        self._start(request, call, pipeline)
        try:
            await relay(
                request,
                response,
                pipeline,
                self.clock,
                client.idle_timeout,
                heartbeat=call.dialect.heartbeat(),
                heartbeat_seconds=self.settings.stream_heartbeat,
            )
        finally:
            context_of(request).usage = pipeline.usage
        if pipeline.error is None:
            await self._complete(call)
        return None

    def _learn(self, client: UpstreamClient, fact: str, what: str) -> None:
        if fact not in client.facts:
            client.facts[fact] = True
            self.log.info("upstream {url} {what}", url=client.base_url, what=what)

    def _pipeline(self, call: ChatCall) -> StreamPipeline:
        debug = self._thinking_debug if self.settings.thinking_debug else None
        stages: list[Stage] = [
            ToolCallConformance(call.include_usage),
            ReasoningRouter(call.reasoning_mode, self.settings.style, debug),
        ]
        return StreamPipeline(stages, call.encoder)

    def _start(self, request: Request, call: ChatCall, pipeline: StreamPipeline) -> None:
        """The stream begins: headers, and the terminal frame a later failure ends it with."""
        if not request.startedWriting:
            start_stream(request, call.dialect.stream_content_type)
        context_of(request).terminal_frame = lambda err: pipeline.fail(err.message, err.type, err.code)

    async def _complete(self, call: ChatCall) -> None:
        if call.on_complete is not None:
            await maybeDeferred(call.on_complete)

    async def _post(self, request: Request, call: ChatCall, client: UpstreamClient, body: dict[str, Any]) -> Any:
        started = self.clock.seconds()
        response = await client.request(
            b"POST", call.path, forwarded_headers(request), BytesProducer(jsonutil.dumps(body))
        )
        ctx = context_of(request)
        if ctx.upstream_ttfb is None:
            ctx.upstream_ttfb = self.clock.seconds() - started
        return response

    async def _reply_json(
        self, request: Request, call: ChatCall, client: UpstreamClient, body: dict[str, Any]
    ) -> dict[str, Any]:
        body = {k: v for k, v in body.items() if k != "stream_options"}
        body["stream"] = False
        response = await self._post(request, call, client, body)
        reply = await json_reply(response, self.clock, client.idle_timeout, "reply", self.settings.max_reply_bytes)
        if not isinstance(reply, dict):
            raise ShimError(502, "upstream sent a reply that is not a JSON object", "upstream_error")
        return reply

    async def _reply(self, request: Request, call: ChatCall, client: UpstreamClient, body: dict[str, Any]) -> bytes:
        reply = await self._reply_json(request, call, client, body)
        if isinstance(reply.get("usage"), dict):
            context_of(request).usage = usage_counts(reply["usage"])
        reply, _ = apply_to_reply(normalise_reply(reply), call.reasoning_mode, self.settings.style)
        out = call.reply(reply)
        data = out if isinstance(out, bytes) else jsonutil.dumps(out)
        self.verbose("response", data)
        await self._complete(call)
        return send_json(request, data)

    async def _emit_synthesized(
        self, request: Request, call: ChatCall, pipeline: StreamPipeline, reply: dict[str, Any]
    ) -> None:
        self._start(request, call, pipeline)
        out = pipeline.push(synthesize_items(reply, self.settings.chunk_size, call.include_usage))
        context_of(request).usage = pipeline.usage
        if out:
            request.write(out)
        if pipeline.error is None:
            await self._complete(call)
        if not request.finished:
            request.finish()

    async def _synthesize(
        self, request: Request, call: ChatCall, client: UpstreamClient, body: dict[str, Any]
    ) -> None:
        pipeline = self._pipeline(call)
        beat = self._heartbeats(request, call, pipeline)
        try:
            reply = await self._reply_json(request, call, client, body)
        finally:
            if beat is not None and beat.running:
                beat.stop()
        # A failure after heartbeats went out propagates as a ShimError: the route's error handler ends the
        # started stream with the terminal frame registered by _start.
        await self._emit_synthesized(request, call, pipeline, reply)

    def _heartbeats(self, request: Request, call: ChatCall, pipeline: StreamPipeline) -> LoopingCall | None:
        heartbeat = call.dialect.heartbeat()
        if heartbeat is None or self.settings.synthesis_heartbeat <= 0:
            return None
        def tick() -> None:
            self._start(request, call, pipeline)
            request.write(heartbeat)

        beat = LoopingCall(tick)
        beat.clock = self.clock
        beat.start(self.settings.synthesis_heartbeat, now=False)
        return beat

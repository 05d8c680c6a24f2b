"""The chat-completion flow shared by both dialects: repair → upstream → (stream | synthesize | JSON).

The dialect-specific parts are only the request mapping before and the encoder/reply shaping after, so the OpenAI
routes and the Ollama routes both call :meth:`ChatFlow.run` with a :class:`ChatPlan` that says how to present the
answer. Tool-call streaming modes (DESIGN.md "Tool-call streaming"):

* ``native`` — stream from the upstream through the conformance layer;
* ``synthesize`` — ask with ``stream: false``, send heartbeat comments while waiting, synthesize the stream;
* ``auto`` — native, but fall back to synthesis (once, only while nothing has reached the client) when the upstream
  refuses streamed tools or answers a stream request with plain JSON; the fallback is remembered per upstream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from llamashim import jsonutil
from llamashim.errors import ShimError
from llamashim.http_util import BytesProducer, start_sse, upstream_error
from llamashim.pipeline import StreamPipeline, usage_counts
from llamashim.relay import collect_body, json_reply, relay
from llamashim.sse import encode_comment
from llamashim.stream_items import Item, Stage
from llamashim.tool_stream import (
    is_stream_tools_refusal,
    reply_from_json_stream_answer,
    synthesize_items,
)
from llamashim.upstream import UpstreamClient

CHAT_PATH = b"/v1/chat/completions"
FACT_STREAM_TOOLS = "stream_tools"
FACT_STREAM_JSON = "stream_answers_json"


@dataclass
class ChatPlan:
    """How one chat request is to be answered."""

    body: dict[str, Any]
    stream: bool
    stages: list[Stage]
    encoder: Callable[[list[Item]], bytes]
    start_stream: Callable[[Request], None] = start_sse
    heartbeat: Callable[[], bytes] | None = field(default=lambda: encode_comment("keep-alive"))
    on_reply: Callable[[dict[str, Any]], bytes] | None = None  # non-streamed: reply JSON → response body
    headers: Headers = field(default_factory=Headers)
    path: bytes = CHAT_PATH


class ChatFlow:
    log = Logger()

    def __init__(
        self,
        upstream: UpstreamClient,
        tools_mode: str = "auto",
        chunk_size: int = 50,
        heartbeat_seconds: float = 5.0,
        max_reply_bytes: int = 64 * 1024 * 1024,
        stream_heartbeat_seconds: float = 0.0,
    ) -> None:
        self.stream_heartbeat_seconds = stream_heartbeat_seconds
        self.upstream = upstream
        self.tools_mode = tools_mode
        self.chunk_size = chunk_size
        self.heartbeat_seconds = heartbeat_seconds
        self.max_reply_bytes = max_reply_bytes

    @property
    def clock(self) -> Any:
        return self.upstream.reactor

    def _mark_ttfb(self, request: Request) -> Callable[[], None]:
        started = self.clock.seconds()

        def mark() -> None:
            if getattr(request, "upstream_ttfb", None) is None:
                request.upstream_ttfb = self.clock.seconds() - started  # type: ignore[attr-defined]

        return mark

    async def _post(self, request: Request, plan: ChatPlan, body: dict[str, Any]) -> Any:
        headers = Headers({b"content-type": [b"application/json"]})
        for name, values in plan.headers.getAllRawHeaders():
            headers.setRawHeaders(name, values)
        mark = self._mark_ttfb(request)
        response = await self.upstream.request(b"POST", plan.path, headers, BytesProducer(jsonutil.dumps(body)))
        mark()
        return response

    async def _reply_json(self, request: Request, plan: ChatPlan, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._post(request, plan, body)
        reply = await json_reply(response, self.clock, self.upstream.idle_timeout, "reply", self.max_reply_bytes)
        if not isinstance(reply, dict):
            raise ShimError(502, "upstream sent a reply that is not a JSON object", "upstream_error")
        return reply

    async def run(self, request: Request, plan: ChatPlan) -> bytes | None:
        """Answer ``request``. Returns a body for non-streamed replies; streams and finishes it otherwise."""
        if not plan.stream:
            body = dict(plan.body)
            body["stream"] = False
            body.pop("stream_options", None)
            reply = await self._reply_json(request, plan, body)
            if isinstance(reply.get("usage"), dict):
                request.usage = usage_counts(reply["usage"])  # type: ignore[attr-defined]
            assert plan.on_reply is not None
            return plan.on_reply(reply)
        has_tools = bool(plan.body.get("tools"))
        mode = self.tools_mode
        if mode == "synthesize" or (
            mode == "auto"
            and (
                (has_tools and self.upstream.facts.get(FACT_STREAM_TOOLS) == "refused")
                or self.upstream.facts.get(FACT_STREAM_JSON) == "yes"
            )
        ):
            await self._synthesize(request, plan)
            return None
        response = await self._post(request, plan, plan.body)
        if response.code != 200:
            data = await collect_body(response, self.clock, self.upstream.idle_timeout, self.max_reply_bytes)
            if has_tools and mode == "auto" and is_stream_tools_refusal(response.code, data):
                if self.upstream.facts.get(FACT_STREAM_TOOLS) != "refused":
                    self.upstream.facts[FACT_STREAM_TOOLS] = "refused"
                    self.log.info(
                        "upstream {url} refuses streamed tool calls ({status}); synthesizing tool-call "
                        "streams from now on",
                        url=self.upstream.base_url,
                        status=response.code,
                    )
                await self._synthesize(request, plan)
                return None
            raise upstream_error(response.code, data)
        ctype = response.headers.getRawHeaders(b"content-type", [b""])[0]
        pipeline = StreamPipeline(plan.stages, plan.encoder)
        if b"text/event-stream" not in ctype:
            # An old build answers a stream request with one JSON reply: turn it into a stream.
            data = await collect_body(response, self.clock, self.upstream.idle_timeout, self.max_reply_bytes)
            answer = reply_from_json_stream_answer(data)
            if answer is None:
                raise ShimError(502, "upstream answered a streaming request with neither a stream nor a chat reply")
            if mode == "auto" and self.upstream.facts.get(FACT_STREAM_JSON) != "yes":
                self.upstream.facts[FACT_STREAM_JSON] = "yes"
                self.log.info(
                    "upstream {url} answers streaming requests with plain JSON; synthesizing streams from now on",
                    url=self.upstream.base_url,
                )
            self._emit_synthesized(request, plan, pipeline, answer)
            return None
        plan.start_stream(request)
        try:
            await relay(
                request,
                response,
                pipeline,
                self.clock,
                self.upstream.idle_timeout,
                heartbeat=plan.heartbeat() if plan.heartbeat is not None else None,
                heartbeat_seconds=self.stream_heartbeat_seconds,
            )
        finally:
            request.usage = pipeline.usage  # type: ignore[attr-defined]
        return None

    def _emit_synthesized(
        self, request: Request, plan: ChatPlan, pipeline: StreamPipeline, reply: dict[str, Any]
    ) -> None:
        include_usage = bool((plan.body.get("stream_options") or {}).get("include_usage"))
        if not request.startedWriting:
            plan.start_stream(request)
        out = pipeline.push(synthesize_items(reply, self.chunk_size, include_usage))
        request.usage = pipeline.usage  # type: ignore[attr-defined]
        if out:
            request.write(out)
        request.finish()

    async def _synthesize(self, request: Request, plan: ChatPlan) -> None:
        body = dict(plan.body)
        body["stream"] = False
        body.pop("stream_options", None)
        pipeline = StreamPipeline(plan.stages, plan.encoder)
        beat: LoopingCall | None = None
        if plan.heartbeat is not None and self.heartbeat_seconds > 0:
            make = plan.heartbeat

            def tick() -> None:
                if not request.startedWriting:
                    plan.start_stream(request)
                request.write(make())

            beat = LoopingCall(tick)
            beat.clock = self.clock
            beat.start(self.heartbeat_seconds, now=False)
        try:
            reply = await self._reply_json(request, plan, body)
        except ShimError as e:
            if not request.startedWriting:
                raise
            out = pipeline.fail(e.message, e.type, e.code)
            if out:
                request.write(out)
            request.finish()
            return
        finally:
            if beat is not None and beat.running:
                beat.stop()
        self._emit_synthesized(request, plan, pipeline, reply)

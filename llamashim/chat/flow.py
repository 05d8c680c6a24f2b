"""The chat flow every dialect shares: one :class:`ChatCall` → the upstream → a stream, a synthesized stream, or
one JSON reply, in the dialect's wire format; and a :class:`CompletionCall` (Ollama's raw and fill-in-the-middle
generation) on the same failover, turn and relay.

What is shared: tool repair, the upstream choice and failover, the tool-call streaming modes (DESIGN.md "Tool-call
streaming"), reply normalisation, reasoning routing of replies, verbose logging, and everything the flow tells the
:class:`~llamashim.chat.turn.Turn` (upstream, timing, usage) and hands it (a reply, a stream and its keep-alives).
What a dialect brings, in the call: the internal request body, its encoder and its reply shaping. Modes:

* ``native`` — stream from the upstream through the conformance layer;
* ``synthesize`` — ask with ``stream: false``, keep the client's connection alive while waiting, synthesize the
  stream;
* ``auto`` — native, but fall back to synthesis (once, only while nothing has reached the client) when the upstream
  refuses streamed tools or answers a stream request with plain JSON; the fallback is remembered per upstream.

The flow writes no HTTP itself: the web edge implements the turn.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IResponse

from llamashim import jsonutil
from llamashim.chat.call import ChatCall, CompletionCall
from llamashim.chat.context import needs_count, refusal
from llamashim.chat.reasoning_memory import ReasoningMemory, ReplayTap
from llamashim.chat.repair import repair_chat_request
from llamashim.chat.tokens import TEMPLATE_FIELDS, count_prompt_tokens
from llamashim.chat.turn import Turn
from llamashim.errors import ShimError
from llamashim.modes import ToolsMode
from llamashim.stream.items import Stage
from llamashim.stream.parse_failure import (
    ParseFailureRecovery,
    from_error_body,
    known_text,
    raw_completion_body,
    recovered_reply,
)
from llamashim.stream.pipeline import StreamPipeline
from llamashim.stream.progress import REQUEST_FIELD, ProgressTap, PromptProgressStage
from llamashim.stream.reasoning import ReasoningRouter, ReasoningStyle, apply_to_reply
from llamashim.stream.rescue import ToolCallRescue, rescue_reply
from llamashim.stream.runaway import MAX_CALLS, MAX_REPEATS, RunawayGuard, limit_reply_calls
from llamashim.stream.tools import (
    ToolCallConformance,
    is_stream_tools_refusal,
    normalise_reply,
    reply_from_json_stream_answer,
    synthesize_items,
)
from llamashim.stream.transform import StreamTransform
from llamashim.stream.usage import Usage
from llamashim.upstream.body import BytesProducer, collect_body, json_reply, upstream_error
from llamashim.upstream.client import UpstreamClient
from llamashim.upstream.set import Pick, UpstreamSet

T = TypeVar("T")

# Seconds an answer's end waits for it to be kept (ChatCall.on_complete: the Responses store's write) before it goes
# out anyway: long enough for any healthy database, short enough that a stuck one never hangs a stream.
COMPLETE_TIMEOUT = 5.0

# Facts learnt about an upstream at run time, kept per upstream (UpstreamClient.facts).
FACT_STREAM_TOOLS_REFUSED = "stream_tools_refused"
FACT_STREAM_ANSWERS_JSON = "stream_answers_json"


@dataclass(frozen=True)
class ChatSettings:
    """The configuration the flow runs with (from ``tools``, ``server``, ``thinking``, ``log`` and ``limits``)."""

    tools_mode: ToolsMode
    chunk_size: int
    synthesis_heartbeat: float  # seconds of silence before a keep-alive while a synthesized answer is awaited
    stream_heartbeat: float  # seconds of silence before a keep-alive during a relayed stream (0: none)
    max_reply_bytes: int
    style: ReasoningStyle
    max_calls: int = MAX_CALLS  # tools.max_calls: tool calls in one answer before it is cut
    max_repeats: int = MAX_REPEATS  # tools.max_repeats: the same call this often and the answer is cut
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


def _is_event_stream(response: IResponse) -> bool:
    return b"text/event-stream" in response.headers.getRawHeaders(b"content-type", [b""])[0]


class ChatFlow:
    log = Logger()

    def __init__(self, upstreams: UpstreamSet, settings: ChatSettings, memory: ReasoningMemory | None = None
                 ) -> None:
        self.upstreams = upstreams
        self.settings = settings
        self.clock: IReactorTime = upstreams.reactor
        self.memory = memory  # thinking.replay: reasoning carried across turns

    # -- logging ------------------------------------------------------------------------------------------------

    def verbose(self, what: str, body: bytes) -> None:
        if self.settings.verbose:
            self.log.info("{what}: {body}", what=what, body=body.decode("utf-8", "replace"))

    def _thinking_debug(self, destination: str, fragment: str) -> None:
        self.log.info("thinking -> {destination}: {fragment!r}", destination=destination, fragment=fragment)

    # -- choosing an upstream -----------------------------------------------------------------------------------

    async def with_upstream(
        self, turn: Turn, model: str | None, messages: Any, work: Callable[[Pick], Awaitable[T]],
        prefer: str | None = None,
    ) -> T:
        """Run ``work`` on the upstream chosen for ``model`` (``prefer``: the tag of the upstream that served the
        previous turn, see :meth:`UpstreamSet.pick`); one that fails before anything reached the client
        (unreachable, timed out, 502/503/504) is marked down and ``work`` runs again on the next upstream serving
        the model. Every upstream-bound route goes through here."""
        await self.upstreams.ensure_index()
        tried: set[str] = set()
        while True:
            pick = self.upstreams.pick(model, messages, frozenset(tried), prefer)
            turn.chose(pick.member.name, pick.resolved.model.name)
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
                if turn.started() or turn.gone() or not fails_over(e):
                    raise
                self.upstreams.failed(pick.member, e)
                tried.add(pick.member.name)
                if not any(s.upstream not in tried for s in pick.resolved.model.served):
                    raise
                self.log.info("upstream {name} failed before the first byte ({message}); trying another for "
                              "{model} (id={request_id})", name=pick.member.name, message=e.message,
                              model=pick.resolved.model.name, request_id=turn.request_id)
            finally:
                self.upstreams.ended(pick)

    async def _post(self, turn: Turn, client: UpstreamClient, path: bytes, body: dict[str, Any]) -> IResponse:
        started = self.clock.seconds()
        response = await client.request(b"POST", path, turn.upstream_headers(), BytesProducer(jsonutil.dumps(body)))
        turn.upstream_answered(self.clock.seconds() - started)
        return response

    # -- chat ---------------------------------------------------------------------------------------------------

    async def run(self, turn: Turn, call: ChatCall) -> bytes | None:
        """Answer a chat call: returns the body of a non-streamed reply; streams and finishes it otherwise.

        The upstream is chosen per model (:meth:`UpstreamSet.pick`); one that fails before anything reached the
        client (unreachable, timed out, 502/503/504) is marked down and the request goes to the next upstream
        serving the model. After the first byte a failure is the stream's: its terminal frame.
        """
        call.body = repair_chat_request(call.body, self.log.debug)

        async def answer(pick: Pick) -> bytes | None:
            if call.on_upstream is not None:
                call.on_upstream(pick.member.tag)
            body = self._restore(turn, pick, with_model(call.body, pick))
            await self._refuse_overflow(turn, pick, body)  # before any keep-alive: a real 400, streamed or not
            self.verbose("request", jsonutil.dumps(body))  # as it goes upstream: the upstream's model id
            if not call.stream:
                return await self._reply(turn, call, pick, body)
            await self._stream(turn, call, pick, body)
            return None

        return await self.with_upstream(turn, call.model, call.body.get("messages"), answer, call.prefer)

    async def _refuse_overflow(self, turn: Turn, pick: Pick, body: dict[str, Any]) -> None:
        """Raise :class:`~llamashim.errors.ContextOverflow` for a prompt that cannot fit the chosen upstream's window
        (:mod:`llamashim.chat.context`): counted exactly only when its cheap bound does not fit; no window, no check;
        a count that fails (an old build without ``/apply-template``) lets the request go on unchecked."""
        window = pick.window
        if window is None or not needs_count(body, window):
            return
        try:
            n = await count_prompt_tokens(pick.member.client, body, turn.upstream_headers())
        except ShimError as e:
            self.log.debug("context pre-check skipped: counting failed ({message})", message=e.message)
            return
        refused = refusal(n, window)
        if refused is not None:
            self.log.info("prompt of {n} tokens cannot fit the {window}-token window of {model}: refused before it "
                          "went upstream (id={request_id})", n=n, window=window, model=pick.resolved.model.name,
                          request_id=turn.request_id)
            raise refused

    async def count_tokens(self, turn: Turn, body: dict[str, Any],
                           on_window: Callable[[int | None], None] | None = None) -> int:
        """The prompt tokens of a chat request, counted by the upstream its model would go to (``on_window`` is
        told that upstream's context window, as :attr:`ChatCall.on_window`)."""

        async def count(pick: Pick) -> int:
            if on_window is not None:
                on_window(pick.window)
            return await count_prompt_tokens(pick.member.client, with_model(body, pick), turn.upstream_headers())

        return await self.with_upstream(turn, _model(body), body.get("messages"), count)

    def _synthesizes(self, call: ChatCall, client: UpstreamClient) -> bool:
        mode, facts = self.settings.tools_mode, client.facts
        return mode == ToolsMode.SYNTHESIZE or (mode == ToolsMode.AUTO and (
            (bool(call.body.get("tools")) and FACT_STREAM_TOOLS_REFUSED in facts) or FACT_STREAM_ANSWERS_JSON in facts
        ))

    async def _stream(self, turn: Turn, call: ChatCall, pick: Pick, body: dict[str, Any]) -> None:
        client = pick.member.client
        pipeline = self._pipeline(turn, call, pick)
        if self._synthesizes(call, client):
            return await self._synthesize(turn, call, pick, body, pipeline)
        # Keep the client waiting while the upstream processes the prompt (llama-server answers a stream's headers
        # with its first token, or its first progress event): keep-alives in its dialect from server.heartbeat
        # seconds on. Its progress events tell the turn how far it is (older builds ignore the field).
        self._prepare(turn, call, pipeline, self.settings.stream_heartbeat)
        response = await self._post(turn, client, call.path, {**body, REQUEST_FIELD: True})
        auto = self.settings.tools_mode == ToolsMode.AUTO
        if response.code != 200:
            data = await collect_body(response, self.clock, client.idle_timeout, self.settings.max_reply_bytes)
            if body.get("tools") and auto and is_stream_tools_refusal(response.code, data):
                self._learn(client, FACT_STREAM_TOOLS_REFUSED, f"refuses streamed tool calls ({response.code}); "
                            "synthesizing tool-call streams from now on")
                return await self._synthesize(turn, call, pick, body, pipeline)
            if from_error_body(response.code, data) is not None:  # the parser failed on the first token
                reply = await self._recover_parse_failure(turn, call, client, body, data)
                return await self._emit_synthesized(turn, call, pipeline, reply)
            raise upstream_error(response.code, data)
        if not _is_event_stream(response):
            # An old build answers a stream request with one JSON reply: turn it into a stream.
            data = await collect_body(response, self.clock, client.idle_timeout, self.settings.max_reply_bytes)
            answer = reply_from_json_stream_answer(data)
            if answer is None:
                raise ShimError(502, "upstream answered a streaming request with neither a stream nor a chat reply")
            if auto:
                self._learn(client, FACT_STREAM_ANSWERS_JSON, "answers streaming requests with plain JSON; "
                            "synthesizing streams from now on")
            return await self._emit_synthesized(turn, call, pipeline, answer)
        try:
            await turn.relay(response, pipeline, client.idle_timeout, finish=not pipeline.hold_end)
        finally:
            turn.counted(pipeline.usage)
        await self._complete_and_end(turn, call, pipeline)
        if pipeline.hold_end:
            turn.finish()

    def _learn(self, client: UpstreamClient, fact: str, what: str) -> None:
        if fact not in client.facts:
            client.facts[fact] = True
            self.log.info("upstream {url} {what}", url=client.base_url, what=what)

    def _pipeline(self, turn: Turn, call: ChatCall, pick: Pick) -> StreamPipeline:
        if call.on_window is not None:  # before its encoder writes a count (anthropic.context_scaling)
            call.on_window(pick.window)
        debug = self._thinking_debug if self.settings.thinking_debug else None
        tools = call.body.get("tools")
        memory = self._memory_for(pick)
        stages: list[Stage] = [PromptProgressStage(turn.progressed)]  # first: no later stage sees a progress chunk
        if tools:  # calls a model wrote as markup in its content -> tool-call deltas (before conformance)
            stages.append(ToolCallRescue(tools))
        stages += [
            # every chunk names the model by its one friendly name (never the upstream's id, e.g. a file path)
            ToolCallConformance(call.include_usage, model=pick.resolved.model.name),
            # a parse-failure error event -> the rescued answer (before the runaway guard, which then sees its calls)
            ParseFailureRecovery(tools, lambda what: self._log_recovered(turn, what)),
        ]
        if tools:  # after conformance: every call has its index and name
            stages.append(RunawayGuard(self.settings.max_calls, self.settings.max_repeats))
        if memory is not None:  # before the router, which may move reasoning elsewhere
            owner = turn.owner
            stages.append(ReplayTap(lambda calls, reasoning: memory.remember(owner, calls, reasoning)))
        stages.append(ReasoningRouter(call.reasoning_mode, self.settings.style, debug))
        # an answer to keep (the Responses store): its end goes out once it is kept (_complete_and_end)
        return StreamPipeline(stages, call.encoder, hold_end=call.on_complete is not None)

    # -- reasoning carried across turns ---------------------------------------------------------------------------

    def _memory_for(self, pick: Pick) -> ReasoningMemory | None:
        """The reasoning memory, when it applies to the chosen upstream's template (``thinking.replay``)."""
        props = pick.served.props if pick.served.props is not None else pick.member.props
        template = (props or {}).get("chat_template")
        if self.memory is None or not self.memory.applies(template if isinstance(template, str) else None):
            return None
        return self.memory

    def _restore(self, turn: Turn, pick: Pick, body: dict[str, Any]) -> dict[str, Any]:
        memory = self._memory_for(pick)
        if memory is None:
            return body
        body, restored = memory.restore(body, turn.owner)
        if restored:  # (never the reasoning itself: it is the user's conversation)
            self.log.debug("reasoning put back into {n} assistant turn(s) (id={request_id})", n=restored,
                           request_id=turn.request_id)
        return body

    def _remember_reply(self, turn: Turn, pick: Pick, reply: dict[str, Any]) -> None:
        memory = self._memory_for(pick)
        choices = reply.get("choices")
        first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        msg = first.get("message")
        if memory is not None and isinstance(msg, dict) and isinstance(msg.get("tool_calls"), list):
            reasoning = msg.get("reasoning_content")
            if isinstance(reasoning, str):
                memory.remember(turn.owner, msg["tool_calls"], reasoning)

    def _prepare(self, turn: Turn, call: ChatCall, pipeline: StreamPipeline, keepalive: float) -> None:
        turn.prepare_stream(lambda err: pipeline.fail(err.message, err.type, err.code), keepalive,
                            pipeline.keepalive, call.stream_content_type)

    async def keep(self, turn: Turn, on_complete: Callable[[], Deferred[None] | None] | None) -> None:
        """Run ``on_complete`` (``ChatCall.on_complete``: the Responses store's write) and wait for it, at most
        ``COMPLETE_TIMEOUT`` seconds: a slower one goes on by itself (it is never cancelled) and the answer goes out
        without it; one that raises is logged and the answer goes out all the same."""
        try:
            kept = on_complete() if on_complete is not None else None
        except Exception:
            self.log.failure("keeping the answer failed; its end goes out all the same (id={request_id})",
                             request_id=turn.request_id)
            return
        if kept is None:
            return
        waiting: Deferred[None] = Deferred()  # (cancelled by the timeout instead of the write itself)
        kept.chainDeferred(waiting)
        started = self.clock.seconds()
        try:
            await waiting.addTimeout(COMPLETE_TIMEOUT, self.clock)
        except TimeoutError:
            self.log.warn("keeping the answer took longer than {seconds:g} s; its end went out without waiting "
                          "(id={request_id})", seconds=COMPLETE_TIMEOUT, request_id=turn.request_id)
        else:
            self.log.debug("answer kept in {ms:.1f} ms before its end went out (id={request_id})",
                           ms=(self.clock.seconds() - started) * 1000, request_id=turn.request_id)

    async def _complete_and_end(self, turn: Turn, call: ChatCall, pipeline: StreamPipeline) -> None:
        """A stream's answer is over: keep it (``on_complete``, when it ended cleanly), then write the end the
        pipeline kept back — whatever keeping it did, so the stream never loses its end."""
        try:
            if pipeline.error is None:
                await self.keep(turn, call.on_complete)
        finally:
            turn.write(pipeline.release())

    async def _reply_json(self, turn: Turn, call: ChatCall, client: UpstreamClient, body: dict[str, Any]
                          ) -> dict[str, Any]:
        body = {k: v for k, v in body.items() if k != "stream_options"}
        body["stream"] = False
        response = await self._post(turn, client, call.path, body)
        if response.code == 500:  # llama-server's chat-parse failure is recovered (stream/parse_failure.py)
            data = await collect_body(response, self.clock, client.idle_timeout, self.settings.max_reply_bytes)
            return await self._recover_parse_failure(turn, call, client, body, data)
        reply = await json_reply(response, self.clock, client.idle_timeout, "reply", self.settings.max_reply_bytes)
        if not isinstance(reply, dict):
            raise ShimError(502, "upstream sent a reply that is not a JSON object", "upstream_error")
        return reply

    # -- llama-server's chat-parse failure (stream/parse_failure.py) ------------------------------------------------

    def _log_recovered(self, turn: Turn, what: str) -> None:
        self.log.warn("upstream chat parser failed on the answer; recovered: {what} (id={request_id})", what=what,
                      request_id=turn.request_id)

    async def _recover_parse_failure(self, turn: Turn, call: ChatCall, client: UpstreamClient,
                                     body: dict[str, Any], data: bytes) -> dict[str, Any]:
        """The reply a 500 parse failure stands for: from the text its message carries when that is all of it (or a
        tail holding a call), else from the generation asked again as raw text; any other 500 is raised."""
        failure = from_error_body(500, data)
        if failure is None:
            raise upstream_error(500, data)
        text = known_text(failure, body.get("tools"))
        if text is None:
            try:
                text = await self._raw_generation(turn, client, body)
            except ShimError as e:
                self.log.warn("asking again as raw text failed: {message}", message=e.message)
                raise upstream_error(500, data) from None
            what = f"the generation asked again as raw text ({len(text)} characters)"
        else:
            lost = f" (the text before pos {failure.pos} is lost)" if failure.pos else ""
            what = f"the {len(text)} characters its message carries{lost}"
        self._log_recovered(turn, what)
        return recovered_reply(text, body.get("tools"), model=_model(body), created=int(self.clock.seconds()))

    async def _raw_generation(self, turn: Turn, client: UpstreamClient, body: dict[str, Any]) -> str:
        """The answer generated again without llama-server's chat parser: ``/apply-template`` renders the prompt,
        ``/completion`` (a plain-content parser) generates with the request's sampling."""
        template = {k: body[k] for k in TEMPLATE_FIELDS if k in body}
        headers = turn.upstream_headers()  # (not _post: the turn's upstream timing is the first answer's)
        response = await client.request(b"POST", b"/apply-template", headers, BytesProducer(jsonutil.dumps(template)))
        rendered = await json_reply(response, self.clock, client.idle_timeout, "/apply-template")
        prompt = rendered.get("prompt") if isinstance(rendered, dict) else None
        if not isinstance(prompt, str):
            raise ShimError(502, "upstream /apply-template answered without a prompt", "upstream_error")
        completion = BytesProducer(jsonutil.dumps(raw_completion_body(prompt, body)))
        response = await client.request(b"POST", b"/completion", headers, completion)
        answer = await json_reply(response, self.clock, client.idle_timeout, "/completion",
                                  self.settings.max_reply_bytes)
        content = answer.get("content") if isinstance(answer, dict) else None
        if not isinstance(content, str):
            raise ShimError(502, "upstream /completion answered without content", "upstream_error")
        return content

    async def _reply(self, turn: Turn, call: ChatCall, pick: Pick, body: dict[str, Any]) -> bytes:
        reply = await self._reply_json(turn, call, pick.member.client, body)
        turn.counted(Usage.of(reply))  # the real tokens, whatever the dialect reports (call.on_window)
        if call.on_window is not None:
            call.on_window(pick.window)
        reply = rescue_reply(reply, call.body.get("tools"))  # calls written as markup in the content
        reply = normalise_reply(reply, model=pick.resolved.model.name)
        reply, cut = limit_reply_calls(reply, self.settings.max_calls, self.settings.max_repeats)
        if cut is not None:
            turn.cut(cut)
        self._remember_reply(turn, pick, reply)
        reply = apply_to_reply(reply, call.reasoning_mode, self.settings.style)
        out = call.reply(reply)
        data = out if isinstance(out, bytes) else jsonutil.dumps(out)
        self.verbose("response", data)
        await self.keep(turn, call.on_complete)
        return turn.reply(data)

    async def _emit_synthesized(
        self, turn: Turn, call: ChatCall, pipeline: StreamPipeline, reply: dict[str, Any]
    ) -> None:
        out = pipeline.push(synthesize_items(reply, self.settings.chunk_size, call.include_usage))
        turn.counted(pipeline.usage)
        if out:
            turn.write(out)
        await self._complete_and_end(turn, call, pipeline)
        turn.finish()

    async def _synthesize(
        self, turn: Turn, call: ChatCall, pick: Pick, body: dict[str, Any], pipeline: StreamPipeline
    ) -> None:
        # Keep-alives while the whole answer is awaited; the first one starts the stream. A failure after one went
        # out propagates as a ShimError: the route's error handler ends the stream with the terminal frame.
        self._prepare(turn, call, pipeline, self.settings.synthesis_heartbeat)
        reply = await self._reply_json(turn, call, pick.member.client, body)
        await self._emit_synthesized(turn, call, pipeline, reply)

    # -- raw and fill-in-the-middle generation -------------------------------------------------------------------

    async def complete(self, turn: Turn, call: CompletionCall) -> bytes | None:
        """Answer a :class:`CompletionCall` on the upstream chosen for its model (with failover), streamed through
        the turn's relay like every other stream, or as one reply."""

        async def generate(pick: Pick) -> bytes | None:
            body = with_model(call.body, pick)
            self.verbose("request", jsonutil.dumps(body))
            return await self._complete_on(turn, call, pick.member.client, body)

        return await self.with_upstream(turn, call.model, None, generate)

    async def _complete_on(
        self, turn: Turn, call: CompletionCall, client: UpstreamClient, body: dict[str, Any]
    ) -> bytes | None:
        transform: StreamTransform = call.transform()
        if call.stream:  # keep-alives while the upstream processes the prompt, and its progress, as for a chat stream
            transform = ProgressTap(transform, turn.progressed)
            turn.prepare_stream(lambda err: transform.fail(err.message, err.type, err.code),
                                self.settings.stream_heartbeat, transform.keepalive)
            body = {**body, REQUEST_FIELD: True}
        response = await self._post(turn, client, call.path, body)
        max_bytes = self.settings.max_reply_bytes
        if response.code != 200:
            raise call.failure(response.code, await collect_body(response, self.clock, client.idle_timeout, max_bytes))
        if call.stream and _is_event_stream(response):
            try:
                await turn.relay(response, transform, client.idle_timeout)
            finally:
                turn.counted(transform.usage)
            return None
        what = call.path.decode("latin-1")
        reply = await json_reply(response, self.clock, client.idle_timeout, what, max_bytes)
        if not isinstance(reply, dict):
            raise ShimError(502, f"upstream {what} answer is not a JSON object", "upstream_error")
        turn.counted(call.usage(reply))
        if not call.stream:
            return turn.reply(jsonutil.dumps(call.reply(reply)))
        turn.write(call.whole(reply))  # a stream request answered with one reply: the same lines at once
        turn.finish()
        return None


"""A faithful fake llama-server for tests and benchmarks.

It replays the shapes a real llama-server (build ``b0-unknown``, the one ``tests/e2e/provision.py`` builds) sends —
key order, the role chunk with ``content: null``, the separate finish chunk with an empty delta, the usage chunk with
``choices: []`` and ``timings``, tool calls streamed as a header fragment then argument fragments — and it can
misbehave on demand. Every knob is an attribute, so a test may change it between requests::

    fake = FakeLlama(reactor)
    fake.content = ["Hel", "lo"]
    fake.tool_calls = [("get_weather", '{"city": "Paris"}')]
    fake.fault = "drop_mid_stream"
    fake.fim_tokens = False  # /infill refuses, as llama-server does for a model without FIM tokens
    site = Site(fake.resource())

Besides chat it answers llama-server's own ``/completion`` and ``/infill`` (the same ``content`` pieces, in their
native shape: SSE events with ``content``/``stop``, the last one ``stop: true`` with ``stop_type``, token counts and
``timings``, no ``[DONE]``).

Run it standalone (for the benchmark or by hand): ``python -m llamashim.testing.fake_llama --port 8080``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from llamashim.testing.agent_script import AgentScript, FirstToolScript, Script

MODEL = "/models/fake-model-7B.Q4_K_M.gguf"
FAULTS = (
    None,
    "drop_mid_stream",
    "data_error",
    "legacy_error",
    "http_500",
    "garbage",
    "slow_headers",
    "close_before_headers",
    "parse_failure",
)
OLD_BUILDS = (None, "refuse_stream_tools", "json_for_stream")


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass
class Seen:
    """One request the fake received."""

    method: str
    path: str
    query: str
    headers: dict[str, list[str]]
    body: Any
    raw: bytes = b""
    lost: Deferred[float] = field(default_factory=Deferred)  # fires with the clock's time if the client left
    done: Deferred[float] = field(default_factory=Deferred)  # fires when the response finished normally


def render(messages: list[Any]) -> str:
    """The prompt the fake's ``/apply-template`` makes of chat messages: each one's role and content, so its
    one-token-per-character ``/tokenize`` gives a predictable count."""
    return "".join(f"<|{m.get('role')}|>{m.get('content')}" if isinstance(m, dict) else str(m) for m in messages)


@dataclass
class RandomFaults:
    """A soak's faults: each chat request gets one of ``choices`` with probability ``rate`` (drawn from ``rng``)."""

    rate: float = 0.0
    choices: tuple[str, ...] = ()
    rng: random.Random = field(default_factory=lambda: random.Random(0))


class FakeLlama:
    def __init__(self, clock: IReactorTime, model: str = MODEL) -> None:
        self.clock = clock
        self.model = model
        # what the model "says"
        self.content: list[str] = ["Hello", ",", " world", "!"]
        self.reasoning: list[str] = []  # streamed as delta.reasoning_content
        self.inline_think: list[str] = []  # streamed inside content as <think>…</think> before the answer
        self.tool_calls: list[tuple[str, str]] = []  # (name, arguments JSON text)
        self.finish_reason: str | None = None  # default: "tool_calls" with tool calls, else "stop"
        self.arg_piece = 4  # characters per streamed argument fragment
        self.fim_tokens = True  # the model has FIM tokens (False: /infill answers llama-server's 501)
        # behaviour
        self.chunk_interval = 0.0  # seconds between streamed chunks (through the injected clock)
        self.fault: str | None = None
        self.fault_after = 2  # chunks sent before a mid-stream fault
        self.random_faults = RandomFaults()  # a soak's: a random fault per request instead of ``fault``
        self._request_faults: weakref.WeakKeyDictionary[Request, str | None] = weakref.WeakKeyDictionary()
        self.remember = True  # keep every request in ``requests`` and stream in ``streams`` (False: a soak)
        # fault "parse_failure": llama-server's chat parser fails on the finished generation (HTTP 500, or the
        # stream's content pieces then an error event and no [DONE]); its message carries the text from pos on
        self.parse_failure_pos = 0
        self.parse_failure_text = ""
        self.parse_failure_message: str | None = None  # another build's message (None: the pos-and-text one)
        self.old_build: str | None = None
        self.slow_headers = 5.0  # seconds of silence before the answer with fault "slow_headers"
        # seconds of silence before answering a chat request that offers tools (an agent's turn: a long prefill);
        # its side requests (titles, quota checks) answer at once
        self.tools_prefill = 0.0
        # prompt-processing progress for a stream that asks (return_progress): False is an older build that ignores
        # the field; its events go out over ``prefill`` seconds, ``prefill_steps`` batches after the first
        self.progress = True
        self.prefill = 0.0
        self.prefill_steps = 3
        self.prompt_cache = 0  # of the 12 prompt tokens, those the prompt cache serves
        # the prompt tokens usage and timings report: 12, or with count_prompt (characters per token) each chat
        # request's own size (its body's characters ÷ count_prompt), so an agent's context grows turn by turn
        self.prompt_tokens = 12
        self.count_prompt = 0
        self.log_requests = False
        self.status_override: int | None = None
        # what /props says
        self.tools_capability = True
        self.vision = False
        self.n_ctx = 4096
        self.chat_template = "{%- for message in messages %}...{%- endfor %}"  # (one that reads reasoning names
        # reasoning_content, as Qwen3's does)
        self.loading = False
        # an agent's tool loop, decided per request from what the agent sent (None: the fields above say what)
        self.script: Script | None = None
        # observations
        self.requests: list[Seen] = []
        self._arrivals: list[Deferred[Seen]] = []
        self._pause_waiters: list[Deferred[None]] = []
        self.pauses = 0  # times a reader's backpressure paused a stream
        self.resumes = 0
        self.streams: list[_Streamer] = []  # every streamed answer (``sent``: frames written, ``paused``)
        self.active = 0
        self._created = 1795532742

    # -- observation -------------------------------------------------------------------------------------------

    @property
    def last(self) -> Seen:
        return self.requests[-1]

    def next_request(self) -> Deferred[Seen]:
        """Fires with the next request the fake receives."""
        d: Deferred[Seen] = Deferred()
        self._arrivals.append(d)
        return d

    def stream_paused(self) -> Deferred[None]:
        """Fires the next time a reader's backpressure pauses one of the fake's streams."""
        d: Deferred[None] = Deferred()
        self._pause_waiters.append(d)
        return d

    def _stream_paused(self) -> None:
        self.pauses += 1
        waiters, self._pause_waiters = self._pause_waiters, []
        for d in waiters:
            d.callback(None)

    def chat_requests(self) -> list[Seen]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    # -- resource ----------------------------------------------------------------------------------------------

    def resource(self) -> Resource:
        return _Root(self)

    def handle(self, request: Request) -> bytes | int:
        assert request.content is not None
        raw = request.content.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except (ValueError, RecursionError):
            body = raw.decode("utf-8", "replace")
        headers = {k.decode().lower(): [v.decode() for v in vs] for k, vs in request.requestHeaders.getAllRawHeaders()}
        seen = Seen(request.method.decode(), request.path.decode(), (request.uri.partition(b"?")[2]).decode(), headers,
                    body, raw)
        if self.remember:
            self.requests.append(seen)
        if self.log_requests:  # as a process: one line per request on standard output, for the tests that run it
            offered = body.get("tools") if isinstance(body, dict) else None
            tools = len(offered) if isinstance(offered, list) else 0
            print(f"request {seen.method} {seen.path} tools={tools}", flush=True)
        arrivals, self._arrivals = self._arrivals, []
        for d in arrivals:
            d.callback(seen)
        self.active += 1
        finished = request.notifyFinish()

        def ended(result: Any) -> None:
            self.active -= 1
            if result is None:
                seen.done.callback(self.clock.seconds())
            else:
                seen.lost.callback(self.clock.seconds())

        finished.addBoth(ended)
        route = self._routes().get((seen.method, seen.path))
        if route is None:
            return self._echo(request, seen)
        return route(request, seen)

    def _routes(self) -> dict[tuple[str, str], Callable[[Request, Seen], bytes | int]]:
        return {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/chat/completions"): self._chat,
            ("GET", "/v1/models"): self._models,
            ("GET", "/models"): self._models,
            ("GET", "/props"): self._props,
            ("GET", "/health"): self._health,
            ("GET", "/slots"): self._slots,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("POST", "/v1/completions"): self._completions,
            ("POST", "/tokenize"): self._tokenize,
            ("POST", "/apply-template"): self._apply_template,
            ("POST", "/completion"): self._completion,
            ("POST", "/infill"): self._infill,
        }

    # -- simple endpoints ----------------------------------------------------------------------------------------

    def _json(self, request: Request, value: Any, status: int = 200) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        return dumps(value)

    def _error(self, request: Request, status: int, message: str, type_: str) -> bytes:
        return self._json(request, {"error": {"code": status, "message": message, "type": type_}}, status)

    def _echo(self, request: Request, seen: Seen) -> bytes:
        request.setHeader(b"x-fake", b"echo")
        return self._json(
            request,
            {"method": seen.method, "path": seen.path, "query": seen.query, "headers": seen.headers,
             "body": seen.raw.decode("utf-8", "replace")},
        )

    def _health(self, request: Request, seen: Seen) -> bytes:
        if self.loading:
            return self._error(request, 503, "Loading model", "unavailable_error")
        return self._json(request, {"status": "ok"})

    def _models(self, request: Request, seen: Seen) -> bytes:
        entry = {
            "id": self.model,
            "aliases": [self.model],
            "tags": [],
            "object": "model",
            "architecture": {"input_modalities": ["text", *(["image"] if self.vision else [])],
                             "output_modalities": ["text"]},
            "created": self._created,
            "owned_by": "llamacpp",
            "meta": {"vocab_type": 2, "n_vocab": 151936, "n_ctx": self.n_ctx, "n_ctx_train": 32768, "n_embd": 3584,
                     "n_params": 7615616512, "size": 4677120000, "ftype": "Q4_K_M"},
        }
        ollama_entry = {"name": self.model, "model": self.model, "modified_at": "", "size": "", "digest": "",
                        "type": "model", "description": "", "tags": [""], "capabilities": ["completion"],
                        "parameters": "", "details": {"parent_model": "", "format": "gguf", "family": "",
                                                      "families": [""], "parameter_size": "",
                                                      "quantization_level": ""}}
        return self._json(request, {"models": [ollama_entry], "object": "list", "data": [entry]})

    def _props(self, request: Request, seen: Seen) -> bytes:
        caps = {
            "supports_object_arguments": True, "supports_parallel_tool_calls": self.tools_capability,
            "supports_preserve_reasoning": False, "supports_reasoning_effort": False,
            "supports_string_content": True, "supports_system_role": True,
            "supports_tool_calls": self.tools_capability, "supports_tools": self.tools_capability,
            "supports_typed_content": False,
        }
        return self._json(
            request,
            {
                "default_generation_settings": {"params": {"temperature": 0.8, "top_k": 40}, "n_ctx": self.n_ctx},
                "total_slots": 4,
                "model_alias": self.model,
                "model_ftype": "Q4_K_M",
                "model_path": self.model,
                "modalities": {"vision": self.vision, "video": False, "audio": False},
                "endpoint_slots": True,
                "chat_template": self.chat_template,
                "chat_template_caps": caps,
                "bos_token": "<|im_start|>",
                "eos_token": "<|im_end|>",
                "build_info": "b0-unknown",
                "is_sleeping": False,
            },
        )

    def _slots(self, request: Request, seen: Seen) -> bytes:
        busy = sum(1 for r in self.chat_requests() if not r.lost.called and not r.done.called)
        return self._json(
            request, [{"id": i, "n_ctx": self.n_ctx // 4, "speculative": False, "is_processing": i < busy}
                      for i in range(4)]
        )

    def _embeddings(self, request: Request, seen: Seen) -> bytes:
        body = seen.body if isinstance(seen.body, dict) else {}
        inputs = body.get("input")
        items = [inputs] if isinstance(inputs, str) else list(inputs or [])
        data = [{"embedding": [round(0.1 * (i + 1) + 0.01 * k, 4) for k in range(4)], "index": i,
                 "object": "embedding"} for i, _ in enumerate(items)]
        n = sum(len(str(x).split()) for x in items)
        return self._json(request, {"model": self.model, "object": "list",
                                    "usage": {"prompt_tokens": n, "total_tokens": n}, "data": data})

    def _completions(self, request: Request, seen: Seen) -> bytes:
        return self._json(request, {"choices": [{"text": "".join(self.content), "index": 0, "logprobs": None,
                                                 "finish_reason": "stop"}], "created": self._created,
                                    "model": self.model, "object": "text_completion", "id": "cmpl-fake"})

    def _tokenize(self, request: Request, seen: Seen) -> bytes:
        text = seen.body.get("content", "") if isinstance(seen.body, dict) else ""
        if self.count_prompt:  # a token per count_prompt characters, as the chat usage counts
            return self._json(request, {"tokens": [1] * (len(text) // self.count_prompt)})
        return self._json(request, {"tokens": [ord(c) for c in text]})

    def _apply_template(self, request: Request, seen: Seen) -> bytes:
        messages = seen.body.get("messages") if isinstance(seen.body, dict) else None
        if not isinstance(messages, list):
            return self._error(request, 400, "messages is required", "invalid_request_error")
        return self._json(request, {"prompt": render(messages)})

    # -- chat ------------------------------------------------------------------------------------------------------

    def _finish(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")

    def _usage(self) -> dict[str, Any]:
        n = len(self.content) + len(self.reasoning) + len(self.inline_think) + 2 * len(self.tool_calls)
        return {"completion_tokens": n, "prompt_tokens": self.prompt_tokens, "total_tokens": n + self.prompt_tokens,
                "prompt_tokens_details": {"cached_tokens": self.prompt_cache}}

    def _timings(self) -> dict[str, Any]:
        n = self._usage()["completion_tokens"]
        return {"cache_n": self.prompt_cache, "prompt_n": self.prompt_tokens - self.prompt_cache, "prompt_ms": 24.0,
                "prompt_per_token_ms": 2.0,
                "prompt_per_second": 500.0, "predicted_n": n, "predicted_ms": 10.0 * n,
                "predicted_per_token_ms": 10.0, "predicted_per_second": 100.0}

    def _content_pieces(self) -> list[str]:
        if not self.inline_think:
            return list(self.content)
        return ["<think>", *self.inline_think, "</think>", "\n\n", *self.content]

    def reply(self) -> dict[str, Any]:
        """The non-streamed chat.completion for the current script."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self._content_pieces())}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.tool_calls:
            message["tool_calls"] = [
                {"type": "function", "function": {"name": name, "arguments": args}, "id": f"fakecall{i:02d}"}
                for i, (name, args) in enumerate(self.tool_calls)
            ]
            if not self.content:
                message["content"] = None
        return {
            "choices": [{"finish_reason": self._finish(), "index": 0, "message": message}],
            "created": self._created,
            "model": self.model,
            "system_fingerprint": "b0-unknown",
            "object": "chat.completion",
            "usage": self._usage(),
            "id": "chatcmpl-fake",
            "timings": self._timings(),
        }

    def frames(self, include_usage: bool) -> list[bytes]:
        """The SSE frames of the streamed answer, as a real llama-server writes them."""

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            value = {
                "choices": [{"finish_reason": finish, "index": 0, "delta": delta}],
                "created": self._created,
                "id": "chatcmpl-fake",
                "model": self.model,
                "system_fingerprint": "b0-unknown",
                "object": "chat.completion.chunk",
            }
            return b"data: " + dumps(value) + b"\n\n"

        out = [chunk({"role": "assistant", "content": None})]
        out += [chunk({"reasoning_content": piece}) for piece in self.reasoning]
        out += [chunk({"content": piece}) for piece in self._content_pieces()]
        for i, (name, args) in enumerate(self.tool_calls):
            first, rest = args[: self.arg_piece], args[self.arg_piece :]
            out.append(chunk({"tool_calls": [{"index": i, "id": f"fakecall{i:02d}", "type": "function",
                                              "function": {"name": name, "arguments": first}}]}))
            for k in range(0, len(rest), self.arg_piece):
                out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": rest[k:k + self.arg_piece]}}]}))
        out.append(chunk({}, self._finish()))
        if not include_usage:  # llama-server puts its timings on the last chunk, whichever it is
            last = json.loads(out[-1].removeprefix(b"data: "))
            out[-1] = b"data: " + dumps({**last, "timings": self._timings()}) + b"\n\n"
        if include_usage:
            usage = {"choices": [], "created": self._created, "id": "chatcmpl-fake", "model": self.model,
                     "system_fingerprint": "b0-unknown", "object": "chat.completion.chunk",
                     "usage": self._usage(), "timings": self._timings()}
            out.append(b"data: " + dumps(usage) + b"\n\n")
        out.append(b"data: [DONE]\n\n")
        return out

    def _chat(self, request: Request, seen: Seen) -> bytes | int:
        body = seen.body if isinstance(seen.body, dict) else {}
        if not isinstance(seen.body, dict):
            return self._error(request, 400, "Failed to parse the request body as JSON", "invalid_request_error")
        if self.count_prompt:
            self.prompt_tokens = len(seen.raw.decode("utf-8", "replace")) // self.count_prompt
        if self.script is not None:
            scripted = self.script.answer(body)
            self.content, self.tool_calls = list(scripted.content), list(scripted.tool_calls)
            if self.log_requests:
                print(f"script: {' '.join(n for n, _ in scripted.tool_calls) or 'text'}", flush=True)
        return self._generate(request, body, self._answer)

    def _generate(
        self, request: Request, body: dict[str, Any], answer: Callable[[Request, dict[str, Any], bool], None]
    ) -> bytes | int:
        """The scripted failures before an answer, then ``answer`` (now, or after ``slow_headers`` seconds)."""
        if self.status_override is not None:
            return self._error(request, self.status_override, "scripted failure", "server_error")
        stream = bool(body.get("stream"))
        fault = self._draw_fault(request)
        if fault == "close_before_headers":
            assert request.channel is not None
            request.channel.transport.loseConnection()  # type: ignore[union-attr]
            return NOT_DONE_YET
        if fault == "http_500":
            return self._error(request, 500, "fake internal error", "server_error")
        if fault == "parse_failure" and answer == self._answer and not stream:
            return self._error(request, 500, self.parse_failure_error(), "server_error")
        if self.old_build == "refuse_stream_tools" and stream and body.get("tools"):
            return self._error(request, 500, "Cannot use tools with stream", "server_error")
        delay = self.slow_headers if fault == "slow_headers" else self.tools_prefill if body.get("tools") else 0
        if delay:
            pending = self.clock.callLater(delay, answer, request, body, stream)
            request.notifyFinish().addErrback(lambda _: pending.cancel() if pending.active() else None)
            return NOT_DONE_YET
        answer(request, body, stream)
        return NOT_DONE_YET

    def _answer(self, request: Request, body: dict[str, Any], stream: bool) -> None:
        if request._disconnected:
            return
        if not stream or self.old_build == "json_for_stream":
            data = self._json(request, self.reply())
            request.write(data)
            request.finish()
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        frames = self.frames(include_usage)
        if self.fault_for(request) == "parse_failure":  # what was parsed before the failure point, then the error event
            error = {"error": {"code": 500, "message": self.parse_failure_error(), "type": "server_error"}}
            parsed = 1 + len(self.reasoning) + len(self._content_pieces())
            frames = [*frames[:parsed], b"data: " + dumps(error) + b"\n\n"]
        self._stream(request, body, frames, self.progress_chunk)

    def _draw_fault(self, request: Request) -> str | None:
        """This request's fault: ``fault``, or a random one (``random_faults``), kept for the request's stream."""
        faults = self.random_faults
        if faults.rate <= 0 or not faults.choices:
            return self.fault
        fault = faults.rng.choice(faults.choices) if faults.rng.random() < faults.rate else None
        self._request_faults[request] = fault
        if fault and self.log_requests:
            print(f"fault {fault}", flush=True)
        return fault

    def fault_for(self, request: Request) -> str | None:
        """The fault a request's answer plays: its drawn one, else ``fault``."""
        return self._request_faults.get(request, self.fault)

    def parse_failure_error(self) -> str:
        """llama-server's message for a chat-parse failure (``common_chat_peg_parse``)."""
        if self.parse_failure_message is not None:
            return self.parse_failure_message
        return f"Failed to parse input at pos {self.parse_failure_pos}: {self.parse_failure_text}"

    # -- prompt-processing progress ------------------------------------------------------------------------------

    def _progress(self, processed: int, time_ms: int) -> dict[str, Any]:
        return {"total": 12, "cache": self.prompt_cache, "processed": processed, "time_ms": time_ms}

    def progress_chunk(self, processed: int, time_ms: int) -> bytes:
        """A chat progress event, as llama-server writes it: a role chunk with ``prompt_progress`` beside choices."""
        value = {"choices": [{"finish_reason": None, "index": 0, "delta": {"role": "assistant", "content": None}}],
                 "created": self._created, "id": "chatcmpl-fake", "model": self.model,
                 "system_fingerprint": "b0-unknown", "object": "chat.completion.chunk",
                 "prompt_progress": self._progress(processed, time_ms)}
        return b"data: " + dumps(value) + b"\n\n"

    def native_progress_event(self, processed: int, time_ms: int) -> bytes:
        """A ``/completion``/``/infill`` progress event, as llama-server writes it."""
        value = {"index": 0, "content": "", "tokens": [0], "stop": False, "id_slot": -1, "tokens_predicted": 0,
                 "tokens_evaluated": 12, "prompt_progress": self._progress(processed, time_ms)}
        return b"data: " + dumps(value) + b"\n\n"

    def _stream(self, request: Request, body: dict[str, Any], frames: list[bytes],
                progress: Callable[[int, int], bytes]) -> None:
        """The stream's headers, its progress events when asked (one at once, then one per batch over ``prefill``
        seconds), then ``frames``."""
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-cache")
        if not (self.progress and body.get("return_progress")):
            _Streamer(self, request, frames).start()
            return
        cache, steps = self.prompt_cache, max(1, self.prefill_steps)
        events = [progress(cache + (12 - cache) * k // steps, int(self.prefill * 1000 * k / steps))
                  for k in range(steps + 1)]
        pending: list[IDelayedCall] = []

        def lost(_: Any) -> None:
            for call in pending:
                if call.active():
                    call.cancel()

        def step(k: int) -> None:
            if request._disconnected or request.finished:
                return
            request.write(events[k])
            if k + 1 < len(events):
                pending[:] = [self.clock.callLater(self.prefill / steps, step, k + 1)]
            else:
                _Streamer(self, request, frames).start()

        request.notifyFinish().addErrback(lost)
        step(0)

    # -- /completion and /infill -----------------------------------------------------------------------------------

    def _completion(self, request: Request, seen: Seen) -> bytes | int:
        if not isinstance(seen.body, dict):
            return self._error(request, 400, "Failed to parse the request body as JSON", "invalid_request_error")
        if "prompt" not in seen.body:
            return self._error(request, 400, "[json.exception.out_of_range.403] key 'prompt' not found",
                               "invalid_request_error")
        return self._generate(request, seen.body, self._native_answer)

    def _infill(self, request: Request, seen: Seen) -> bytes | int:
        if not self.fim_tokens:  # llama-server checks the vocabulary before it reads the body
            return self._error(request, 501, "Infill is not supported by this model: prefix token is missing. "
                               "suffix token is missing. middle token is missing. ", "not_supported_error")
        if not isinstance(seen.body, dict):
            return self._error(request, 400, "Failed to parse the request body as JSON", "invalid_request_error")
        for name in ("input_prefix", "input_suffix"):
            if name not in seen.body:
                return self._error(request, 400, f"[json.exception.out_of_range.403] key '{name}' not found",
                                   "invalid_request_error")
        if "input_extra" in seen.body and not isinstance(seen.body["input_extra"], list):
            return self._error(request, 400, '"input_extra" must be an array of {"filename": string, "text": string}',
                               "invalid_request_error")
        return self._generate(request, seen.body, self._native_answer)

    def native_final(self, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        """The last event of a ``/completion``/``/infill`` stream (``stream``), or the whole non-streamed answer."""
        n = len(self.content)
        return {
            "index": 0, "content": "" if stream else "".join(self.content), "tokens": [], "id_slot": 0, "stop": True,
            "model": self.model, "tokens_predicted": n, "tokens_evaluated": 12,
            "generation_settings": {"temperature": body.get("temperature", 0.8), "n_predict": body.get("n_predict", -1),
                                    "stream": stream},
            "prompt": body.get("prompt") or body.get("input_prefix") or "", "has_new_line": False, "truncated": False,
            "stop_type": "limit" if self.finish_reason == "length" else "eos", "stopping_word": "",
            "tokens_cached": 12 + n, "timings": {**self._timings(), "predicted_n": n, "predicted_ms": 10.0 * n},
        }

    def native_frames(self, body: dict[str, Any]) -> list[bytes]:
        """The SSE events of a streamed ``/completion``/``/infill`` answer, as llama-server writes them."""
        out = [
            b"data: " + dumps({"index": 0, "content": piece, "tokens": [1000 + i], "stop": False, "id_slot": -1,
                               "tokens_predicted": i + 1, "tokens_evaluated": 12}) + b"\n\n"
            for i, piece in enumerate(self.content)
        ]
        out.append(b"data: " + dumps(self.native_final(body, True)) + b"\n\n")
        return out

    def _native_answer(self, request: Request, body: dict[str, Any], stream: bool) -> None:
        if request._disconnected:
            return
        if not stream:
            request.write(self._json(request, self.native_final(body, False)))
            request.finish()
            return
        self._stream(request, body, self.native_frames(body), self.native_progress_event)


@implementer(IPushProducer)
class _Streamer:
    """Writes frames with pacing and the scripted mid-stream fault; a push producer, so a reader that stops reading
    pauses it (as a real llama-server blocks in its socket send) instead of piling bytes up in its transport."""

    def __init__(self, fake: FakeLlama, request: Request, frames: list[bytes]) -> None:
        self.fake = fake
        self.request = request
        self.frames = frames
        self.sent = 0
        self.timer: IDelayedCall | None = None
        self.gone = False
        self.paused = False
        request.notifyFinish().addErrback(self._lost)

    def _lost(self, _: Any) -> None:
        self.gone = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()

    def start(self) -> None:
        if self.fake.remember:
            self.fake.streams.append(self)
        self.request.registerProducer(self, True)
        self._run()

    def _run(self) -> None:
        if self.fake.chunk_interval > 0:
            self._next()
        else:
            while not self.gone and not self.paused and not self.request.finished:
                if not self._step():
                    break

    def _next(self) -> None:
        self.timer = None
        if self.gone or self.paused:
            return
        if self._step():
            self.timer = self.fake.clock.callLater(self.fake.chunk_interval, self._next)

    # IPushProducer

    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            self.fake._stream_paused()

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            self.fake.resumes += 1
            if self.timer is None and not self.gone and not self.request.finished:
                self._run()

    def stopProducing(self) -> None:
        self._lost(None)

    def _end(self) -> None:
        if self.request.producer is not None:
            self.request.unregisterProducer()
        self.request.finish()

    def _step(self) -> bool:
        """Send one frame (or the fault); False when the response is over."""
        fault = self.fake.fault_for(self.request)
        if fault in ("drop_mid_stream", "data_error", "legacy_error", "garbage") and self.sent == self.fake.fault_after:
            if fault == "drop_mid_stream":
                assert self.request.channel is not None
                if self.request.producer is not None:
                    self.request.unregisterProducer()  # a transport with a producer waits for it before closing
                self.request.channel.transport.loseConnection()  # type: ignore[union-attr]
                return False
            if fault == "data_error":
                self.request.write(b'data: {"error":{"code":500,"message":"fake failure mid-stream",'
                                   b'"type":"server_error"}}\n\n')
            elif fault == "legacy_error":
                self.request.write(b'error: {"code":500,"message":"fake legacy failure","type":"server_error"}\n\n')
            else:
                self.request.write(b"data: \x00\x01 garbage {{{\n\n")
            self._end()
            return False
        if self.sent >= len(self.frames):
            self._end()
            return False
        self.request.write(self.frames[self.sent])
        self.sent += 1
        return True


class _Root(Resource):
    isLeaf = True

    def __init__(self, fake: FakeLlama) -> None:
        super().__init__()
        self.fake = fake

    def render(self, request: Request) -> bytes | int:
        return self.fake.handle(request)


def main(argv: list[str] | None = None) -> None:
    from twisted.internet import reactor
    from twisted.web.server import Site

    parser = argparse.ArgumentParser(description="a fake llama-server")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--chunk-interval", type=float, default=0.0)
    parser.add_argument("--pieces", type=int, default=4, help="content pieces per answer")
    parser.add_argument("--tools-prefill", type=float, default=0.0,
                        help="seconds of silence before answering a chat request that offers tools")
    parser.add_argument("--n-ctx", type=int, default=4096, help="the per-slot context window /props reports")
    parser.add_argument("--count-prompt", type=int, default=0, metavar="CHARS",
                        help="report each chat request's size (a token every CHARS characters) as its prompt tokens")
    parser.add_argument("--write-file", metavar="PATH",
                        help="script an agent's tool loop: write this file with the agent's own tool, then finish")
    parser.add_argument("--write-content", default="written by the scripted model\n", metavar="TEXT",
                        help="what --write-file writes")
    parser.add_argument("--final", default="Done: the file is written.", metavar="TEXT",
                        help="the final answer of --write-file's loop")
    parser.add_argument("--fault-rate", type=float, default=0.0, metavar="P",
                        help="give each chat request one of --faults with probability P (a soak); forget requests")
    parser.add_argument("--faults", default="drop_mid_stream,http_500", help="comma-separated faults for --fault-rate")
    parser.add_argument("--seed", type=int, default=0, help="the random faults' seed")
    parser.add_argument("--call-tools", action="store_true",
                        help="call the first tool a request offers (required parameters filled), then finish")
    args = parser.parse_args(argv)
    fake = FakeLlama(reactor)
    fake.content = [f"tok{i} " for i in range(args.pieces)]
    fake.chunk_interval = args.chunk_interval
    fake.tools_prefill = args.tools_prefill
    fake.n_ctx = args.n_ctx
    fake.count_prompt = args.count_prompt
    fake.log_requests = True
    if args.fault_rate > 0:
        choices = tuple(f for f in args.faults.split(",") if f)
        fake.random_faults, fake.remember = RandomFaults(args.fault_rate, choices, random.Random(args.seed)), False
        unknown = set(choices) - set(FAULTS)
        if unknown:
            parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    if args.write_file:
        fake.script = AgentScript(args.write_file, args.write_content, args.final)
    elif args.call_tools:
        fake.script = FirstToolScript(args.final)
    site = Site(fake.resource())
    site.noisy = False
    port: Any = reactor.listenTCP(args.port, site, interface=args.host)  # type: ignore[arg-type]
    print(f"fake llama-server on http://{args.host}:{port.getHost().port} ({time.strftime('%H:%M:%S')})", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()

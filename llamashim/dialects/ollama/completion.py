"""The Ollama dialect's raw and fill-in-the-middle generation (pure): ``/api/generate`` with a ``suffix`` goes to
llama-server's ``/infill``, with ``raw: true`` to its ``/completion``, and their answers come back as Ollama's
``/api/generate`` NDJSON.

Both are llama-server's own completion endpoints: no chat template. ``/infill`` takes the text before the cursor
(``input_prefix``, Ollama's ``prompt``) and after it (``input_suffix``, Ollama's ``suffix``) and builds the prompt from
the model's own FIM tokens (``FIM_PRE``/``FIM_SUF``/``FIM_MID``, and the repo-level ``FIM_REP``/``FIM_SEP`` ones when
the vocabulary has them); a model without them is refused with 501 ``Infill is not supported by this model: ...``,
which becomes Ollama's 400 ``"<model>" does not support insert``. ``/completion`` takes ``prompt`` verbatim, as Ollama's
``raw`` does. Sampling options use llama-server's native names (``n_predict``, ``n_keep``); ``format`` becomes
``json_schema`` (``"json"``: ``{}``, any JSON, as llama-server maps ``json_object``).

Both stream SSE ``data: {"content": "...", "stop": false, ...}`` events, the last one ``"stop": true`` with
``stop_type`` (``eos``, ``word``, ``limit``), ``tokens_evaluated``, ``tokens_predicted`` and ``timings``, and no
``[DONE]``. :class:`CompletionStream` turns that into Ollama lines (``response`` pieces, then the ``done`` line with
counts and nanosecond durations); a non-streamed answer is one object of the same shape as the last event.

Whether a model fills in the middle is asked of its upstream once (:mod:`llamashim.upstream.capabilities`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from llamashim import jsonutil
from llamashim.dialects.ollama.dialect import error_message
from llamashim.dialects.ollama.encoder import counts, now_iso
from llamashim.dialects.ollama.request import OPTION_MAP, map_options, ollama_format, required_model, wants_stream
from llamashim.errors import BadRequest, ShimError
from llamashim.jsonutil import int_or
from llamashim.stream.items import Chunk, Done, StreamError
from llamashim.stream.sse import SSEComment, SSEParser, items_from_event
from llamashim.stream.usage import Usage
from llamashim.upstream.body import upstream_error
from llamashim.upstream.capabilities import FIM_PROBE as FIM_PROBE  # re-exported: the FIM probe lives upstream
from llamashim.upstream.capabilities import INFILL
from llamashim.upstream.capabilities import probe_result as probe_result

COMPLETION = b"/completion"

# Ollama option → llama-server's native /completion field (its OpenAI-compatible names, e.g. max_tokens, are
# aliases there; the native ones are what its own documentation and clients use).
NATIVE_OPTION_MAP = {**OPTION_MAP, "num_predict": "n_predict", "num_keep": "n_keep"}

# Fields of an /api/generate body that a raw or fill-in-the-middle request does without (Ollama ignores them too:
# no template is applied, so there is no system prompt or template to fill, and ``context`` is deprecated).
UNUSED_FIELDS = ("system", "template", "context", "think")


def is_native(body: dict[str, Any]) -> bool:
    """Whether an ``/api/generate`` body goes to llama-server's own completion endpoints: a non-empty ``suffix``
    (fill-in-the-middle; Ollama too treats an empty one as none) or ``raw: true``."""
    suffix = body.get("suffix")
    return (isinstance(suffix, str) and suffix != "") or body.get("raw") is True


@dataclass
class NativeRequest:
    """One raw or fill-in-the-middle request for llama-server."""

    path: bytes
    body: dict[str, Any]
    model: str  # the model name the client sent (what the answer echoes)
    stream: bool
    ignored: list[str] = field(default_factory=list)  # options with no llama-server equivalent
    unused: list[str] = field(default_factory=list)  # top-level fields without meaning here (UNUSED_FIELDS)

    @property
    def infill(self) -> bool:
        return self.path == INFILL


def native_request(body: dict[str, Any]) -> NativeRequest:
    """An ``/api/generate`` body with a ``suffix`` or ``raw: true`` → the ``/infill`` or ``/completion`` request."""
    model = required_model(body)
    prompt = body.get("prompt")
    if prompt is None:
        prompt = ""
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string")
    if body.get("images"):
        raise BadRequest("images cannot be combined with raw or suffix (llama-server's /completion and /infill "
                         "take text only); send them without raw and suffix")
    stream = wants_stream(body)
    out: dict[str, Any] = {"model": model}
    suffix = body.get("suffix")
    if isinstance(suffix, str) and suffix:
        path = INFILL
        out["input_prefix"] = prompt
        out["input_suffix"] = suffix
    else:
        path = COMPLETION
        out["prompt"] = prompt
    out["stream"] = stream
    fmt = ollama_format(body)
    if fmt is not None:
        out["json_schema"] = {} if fmt == "json" else fmt
    ignored = map_options(body, out, NATIVE_OPTION_MAP)
    unused = [name for name in UNUSED_FIELDS if body.get(name) not in (None, "", [], False)]
    return NativeRequest(path, out, model, stream, ignored, unused)


def upstream_failure(status: int, data: bytes, model: str, infill: bool) -> ShimError:
    """llama-server's error answer as the client's error; a model without FIM tokens is Ollama's 400."""
    err = upstream_error(status, data)
    if infill and (status == 501 or "infill is not supported" in err.message.lower()):
        return ShimError(400, f'"{model}" does not support insert (fill-in-the-middle): {err.message.strip()}',
                         "invalid_request_error")
    return err


# -- answers ----------------------------------------------------------------------------------------------------


def completion_usage(value: dict[str, Any]) -> Usage:
    """Token counts and timings of a ``/completion`` answer (its last stream event, or the whole reply): its
    ``timings``, with the prompt and completion counts of ``tokens_evaluated``/``tokens_predicted`` when it has them."""
    usage = Usage.from_timings(value.get("timings")) or Usage(0, 0)
    prompt, completion = value.get("tokens_evaluated"), value.get("tokens_predicted")
    return replace(usage, prompt_tokens=int_or(prompt, usage.prompt_tokens),
                   completion_tokens=int_or(completion, usage.completion_tokens))


def native_done_reason(value: dict[str, Any]) -> str:
    """Ollama's ``done_reason``: ``length`` when ``n_predict`` ran out, else ``stop`` (end of text, a stop word)."""
    return "length" if value.get("stop_type") == "limit" else "stop"


def reply_to_ollama(reply: dict[str, Any], model: str, now: float) -> dict[str, Any]:
    """A non-streamed ``/completion`` or ``/infill`` answer → one Ollama ``/api/generate`` object."""
    content = reply.get("content")
    out: dict[str, Any] = {
        "model": model,
        "created_at": now_iso(now),
        "response": content if isinstance(content, str) else "",
        "done": True,
        "done_reason": native_done_reason(reply),
    }
    out.update(counts(completion_usage(reply)))
    return out


class CompletionStream:
    """llama-server's ``/completion``/``/infill`` SSE → Ollama ``/api/generate`` NDJSON, incrementally (the relay's
    transform): a line per event with text, the ``done`` line at the ``stop: true`` event, an ``{"error": ...}``
    line for an upstream error or a stream that ends before its last event."""

    def __init__(self, model: str, clock: Callable[[], float]) -> None:
        self.model = model
        self.clock = clock
        self.ended = False
        self.error: StreamError | None = None
        self.cut: str | None = None
        self.usage: Usage | None = None  # from the last event
        self._parser = SSEParser()

    def _line(self, value: dict[str, Any]) -> bytes:
        return jsonutil.dumps(value) + b"\n"

    def _head(self) -> dict[str, Any]:
        return {"model": self.model, "created_at": now_iso(self.clock())}

    def feed(self, data: bytes) -> bytes:
        if self.ended:
            return b""
        try:
            events = self._parser.feed(data)
        except ValueError as e:
            return self.fail(str(e))
        return self._events(events)

    def _events(self, events: list[Any]) -> bytes:
        out: list[bytes] = []
        for ev in events:
            if self.ended:
                break
            if isinstance(ev, SSEComment):
                continue
            item = items_from_event(ev)
            if isinstance(item, Chunk):
                out.append(self.event(item.data))
            elif isinstance(item, StreamError):
                out.append(self.fail(item.message, item.type, item.code))
            elif isinstance(item, Done):  # an OpenAI-style end marker: the stream ended without its last event
                out.append(self.fail("upstream ended the stream without its final event"))
        return b"".join(out)

    def keepalive(self) -> bytes:
        """A ``/api/generate`` line with no text and ``done: false``, adding nothing."""
        return b"" if self.ended else self._line({**self._head(), "response": "", "done": False})

    def event(self, value: dict[str, Any]) -> bytes:
        """One upstream event (or a whole non-streamed answer, which has the last event's shape)."""
        if self.ended:
            return b""
        out = b""
        content = value.get("content")
        if isinstance(content, str) and content:
            out = self._line({**self._head(), "response": content, "done": False})
        if value.get("stop") is True:
            self.ended = True
            usage = completion_usage(value)
            self.usage = usage
            done = {**self._head(), "response": "", "done": True, "done_reason": native_done_reason(value)}
            done.update(counts(usage))
            out += self._line(done)
        return out

    def finish(self) -> bytes:
        if self.ended:
            return b""
        out = self._events(self._parser.finish())
        if not self.ended:
            out += self.fail("upstream closed the stream before it was complete")
        return out

    def fail(self, message: str, type: str = "upstream_error", code: int | str | None = 502) -> bytes:
        if self.ended:
            return b""
        self.ended = True
        self.error = StreamError(message, type, code)
        return self._line({"error": error_message(self.error)})

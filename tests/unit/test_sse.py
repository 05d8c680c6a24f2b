"""The SSE parser, the item mapping and the OpenAI-dialect writer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llamashim.dialects.openai_chat.dialect import encode_openai_items
from llamashim.stream.items import Chunk, Done, Passthrough, StreamError, Thinking
from llamashim.stream.sse import (
    SSEComment,
    SSEEvent,
    SSEParser,
    items_from_event,
)

REAL = (
    b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant","content":null}}],'
    b'"created":1795532742,"id":"chatcmpl-x","model":"m","system_fingerprint":"b0-unknown",'
    b'"object":"chat.completion.chunk"}\n\n'
    b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":"Caf\xc3\xa9 \xe2\x98\x95"}}],'
    b'"created":1795532742,"id":"chatcmpl-x","model":"m","system_fingerprint":"b0-unknown",'
    b'"object":"chat.completion.chunk"}\n\n'
    b": keep-alive\n\n"
    b"event: thinking\ndata: {\"content\":\"hm\"}\n\n"
    b"data: [DONE]\n\n"
)


def parse_all(chunks: list[bytes]) -> list[SSEEvent | SSEComment]:
    p = SSEParser()
    out: list[SSEEvent | SSEComment] = []
    for c in chunks:
        out.extend(p.feed(c))
    out.extend(p.finish())
    return out


def test_whole_stream() -> None:
    """A real stream parses to events and a comment, keeping UTF-8 data, each event's raw bytes and event names."""
    evs = parse_all([REAL])
    assert [type(e).__name__ for e in evs] == ["SSEEvent", "SSEEvent", "SSEComment", "SSEEvent", "SSEEvent"]
    first = evs[1]
    assert isinstance(first, SSEEvent)
    assert "Café ☕" in first.data
    assert first.raw == REAL.split(b"\n\n")[1] + b"\n\n"
    assert evs[2] == SSEComment("keep-alive")
    named = evs[3]
    assert isinstance(named, SSEEvent) and named.event == "thinking" and named.data == '{"content":"hm"}'


@given(st.lists(st.integers(min_value=0, max_value=len(REAL)), max_size=12))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    """Reads split anywhere — inside a line, a field name, a multi-byte character — parse identically."""
    points = sorted(set(cuts))
    pieces = [REAL[a:b] for a, b in zip([0, *points], [*points, len(REAL)], strict=True)]
    assert parse_all(pieces) == parse_all([REAL])


@given(st.sampled_from([b"\n", b"\r\n", b"\r"]), st.lists(st.integers(min_value=0, max_value=60), max_size=8))
def test_line_endings_and_splits(eol: bytes, cuts: list[int]) -> None:
    """LF, CRLF or CR endings, split anywhere, give the same events, multi-line data joined, and comments."""
    text = b"event: e" + eol + b"data: a" + eol + b"data: b" + eol + b": c" + eol + eol + b"data: z" + eol + eol
    points = sorted({c for c in cuts if c <= len(text)})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    evs = parse_all(pieces)
    assert [(e.event, e.data) for e in evs if isinstance(e, SSEEvent)] == [("e", "a\nb"), (None, "z")]
    assert [e.text for e in evs if isinstance(e, SSEComment)] == ["c"]


def test_unterminated_last_event_is_dispatched_at_finish() -> None:
    """An event without its closing blank line is dispatched by finish(), not by feed()."""
    p = SSEParser()
    assert p.feed(b'data: {"a":1}') == []
    evs = p.finish()
    assert len(evs) == 1 and isinstance(evs[0], SSEEvent) and evs[0].data == '{"a":1}'


def test_field_without_space_and_unknown_fields() -> None:
    """A field without a space after the colon is read; id and retry are kept; unknown fields are ignored."""
    evs = parse_all([b"data:x\nfoo: bar\nid: 7\nretry: 10\n\n"])
    assert evs == [SSEEvent("x", None, "7", 10, None, b"data:x\nfoo: bar\nid: 7\nretry: 10\n\n")]


def test_items_from_events() -> None:
    """Events map to Done, Chunk (raw kept), StreamError (error, legacy, non-JSON), Passthrough, or nothing."""
    assert isinstance(items_from_event(SSEEvent("[DONE]")), Done)
    chunk = items_from_event(SSEEvent('{"choices":[]}', raw=b'data: {"choices":[]}\n\n'))
    assert isinstance(chunk, Chunk) and chunk.raw == b'data: {"choices":[]}\n\n'
    err = items_from_event(SSEEvent('{"error":{"code":500,"message":"boom","type":"server_error"}}'))
    assert err == StreamError("boom", "server_error", 500)
    legacy = items_from_event(SSEEvent(error='{"code":500,"message":"legacy boom"}'))
    assert isinstance(legacy, StreamError) and legacy.message == "legacy boom"
    assert isinstance(items_from_event(SSEEvent("not json")), StreamError)
    assert isinstance(items_from_event(SSEEvent("[1,2]")), StreamError)
    named = items_from_event(SSEEvent("x", event="ping", raw=b"event: ping\ndata: x\n\n"))
    assert named == Passthrough(b"event: ping\ndata: x\n\n", "ping", "x")
    assert items_from_event(SSEEvent("", event=None)) is None


def test_encoder() -> None:
    """The OpenAI writer re-emits raw chunks as is and encodes chunks, thinking events, errors, [DONE]."""
    raw = b'data: {"choices":[],"x":1}\n\n'
    out = encode_openai_items(
        [
            Chunk({"choices": []}, raw),
            Chunk({"choices": [], "é": "☕"}),
            Thinking("hmm"),
            StreamError("bad", "upstream_error", 502),
            Done(),
        ]
    )
    assert out == (
        raw
        + 'data: {"choices":[],"é":"☕"}\n\n'.encode()
        + b'event: thinking\ndata: {"content":"hmm","choices":[]}\n\n'
        + b'data: {"error":{"message":"bad","type":"upstream_error","code":502}}\n\n'
        + b"data: [DONE]\n\n"
    )

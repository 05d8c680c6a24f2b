"""Loopback capture server for recording what real coding agents send.

Records every request (method, path, headers, body) as one JSON object per line and
answers just enough of two dialects for an agent to finish a turn:

* OpenAI Responses (Codex, ``wire_api = "responses"``): ``POST /v1/responses`` streams
  a full event sequence for a one-message answer; ``GET /v1/models`` lists one model.
* Anthropic Messages (Claude Code): ``POST /v1/messages`` (streamed or not) and
  ``POST /v1/messages/count_tokens``.

Anything else gets a 404 JSON error. Credentials in headers are logged as ``REDACTED``.

    python tests/agents/capture_server.py --port 8787 --log /tmp/requests.jsonl

``--omit a,b`` leaves those SSE event types out of the streamed answers, to find the
smallest sequence an agent accepts. ``--text`` sets the answer text (default ``OK``).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SECRET_HEADERS = frozenset({"authorization", "x-api-key", "proxy-authorization", "cookie", "api-key"})

JSON = dict[str, Any]


def parse_body(raw: bytes, content_type: str) -> Any:
    """JSON bodies parsed; other bodies as text (or a length note if not UTF-8)."""
    if not raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"_binary_bytes": len(raw), "_content_type": content_type}
    try:
        return json.loads(text)
    except ValueError:
        return text


def responses_events(model: str, text: str) -> Iterator[JSON]:
    """OpenAI Responses stream for one assistant message holding ``text``."""
    resp_id, msg_id = f"resp_{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex}"
    created = int(time.time())
    base: JSON = {
        "id": resp_id,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "model": model,
        "output": [],
        "usage": None,
    }
    part_empty: JSON = {"type": "output_text", "text": "", "annotations": []}
    part_done: JSON = {"type": "output_text", "text": text, "annotations": []}
    item = {"id": msg_id, "type": "message", "role": "assistant"}
    item_open: JSON = {**item, "status": "in_progress", "content": []}
    item_done: JSON = {**item, "status": "completed", "content": [part_done]}
    loc: JSON = {"item_id": msg_id, "output_index": 0, "content_index": 0}
    usage: JSON = {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 1,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 11,
    }
    yield {"type": "response.created", "response": base}
    yield {"type": "response.in_progress", "response": base}
    yield {"type": "response.output_item.added", "output_index": 0, "item": item_open}
    yield {"type": "response.content_part.added", **loc, "part": part_empty}
    yield {"type": "response.output_text.delta", **loc, "delta": text, "logprobs": []}
    yield {"type": "response.output_text.done", **loc, "text": text, "logprobs": []}
    yield {"type": "response.content_part.done", **loc, "part": part_done}
    yield {"type": "response.output_item.done", "output_index": 0, "item": item_done}
    done = {**base, "status": "completed", "output": [item_done], "usage": usage}
    yield {"type": "response.completed", "response": done}


def anthropic_message(model: str, text: str) -> JSON:
    """Non-streamed Anthropic Messages answer."""
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    }


def anthropic_events(model: str, text: str) -> Iterator[JSON]:
    """Anthropic Messages stream for one text block holding ``text``."""
    start = {**anthropic_message(model, text), "content": [], "stop_reason": None}
    start["usage"] = {"input_tokens": 10, "output_tokens": 1}
    yield {"type": "message_start", "message": start}
    yield {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    yield {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
    yield {"type": "content_block_stop", "index": 0}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 1},
    }
    yield {"type": "message_stop"}


class CaptureServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, log_path: str, omit: frozenset[str], text: str) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.log_path, self.omit, self.text = log_path, omit, text
        self.lock = threading.Lock()
        self.seq = 0

    def record(self, entry: JSON) -> None:
        with self.lock:
            self.seq += 1
            entry = {"seq": self.seq, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **entry}
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps(entry, ensure_ascii=False) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CaptureServer

    def log_message(self, format: str, *args: Any) -> None:
        print(f"capture: {self.command} {self.path} -> {args[1] if len(args) > 1 else ''}", flush=True)

    def read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def handle_any(self) -> None:
        raw = self.read_body()
        headers = {k.lower(): ("REDACTED" if k.lower() in SECRET_HEADERS else v) for k, v in self.headers.items()}
        body = parse_body(raw, self.headers.get("content-type", ""))
        self.server.record(
            {"method": self.command, "path": self.path, "headers": headers, "body_bytes": len(raw), "body": body}
        )
        self.route(self.path.split("?")[0], body if isinstance(body, dict) else {})

    # CONNECT too: point HTTPS_PROXY here to see which other hosts an agent tries.
    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_CONNECT = handle_any

    def route(self, path: str, body: JSON) -> None:
        model, text = str(body.get("model", "unknown")), self.server.text
        if self.command == "POST" and path == "/v1/responses":
            self.send_sse(responses_events(model, text))
        elif self.command == "POST" and path == "/v1/messages":
            if body.get("stream"):
                self.send_sse(anthropic_events(model, text))
            else:
                self.send_json(200, anthropic_message(model, text))
        elif self.command == "POST" and path == "/v1/messages/count_tokens":
            self.send_json(200, {"input_tokens": max(1, len(json.dumps(body)) // 4)})
        elif self.command == "GET" and path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": "smollm2", "object": "model", "owned_by": "me"}]})
        else:
            self.send_json(404, {"type": "error", "error": {"type": "not_found_error", "message": f"no {path}"}})

    def send_json(self, status: int, obj: JSON) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_sse(self, events: Iterator[JSON]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        seq = 0
        for event in events:
            if event["type"] in self.server.omit:
                continue
            if event["type"].startswith("response."):
                event = {**event, "sequence_number": seq}
                seq += 1
            frame = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
            self.write_chunk(frame.encode())
        self.write_chunk(b"")

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--log", required=True, help="JSON-lines file to append requests to")
    parser.add_argument("--omit", default="", help="comma-separated SSE event types to leave out")
    parser.add_argument("--text", default="OK", help="answer text")
    args = parser.parse_args()
    omit = frozenset(filter(None, args.omit.split(",")))
    server = CaptureServer(args.port, args.log, omit, args.text)
    print(f"capture: listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

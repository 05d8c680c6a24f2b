"""``llamashim replay FILE``: play a recording's upstream side through the current llamashim and show how the
client's view differs from the recording.

The recording (``log.record``, :mod:`llamashim.ops.recorder`) holds the client's request, every upstream request
it made with the upstream's answer, and what the client got. Replay runs today's daemon in memory
(:mod:`llamashim.testing.memory`) in front of :class:`TapeUpstream`, which answers each upstream request the
recording made with the recorded answer — the same status, content type and body pieces — and everything else
(``/props``, ``/v1/models``, ``/health``) as the project's fake llama-server does. The client's request is sent again;
the answer is compared with the recorded one, with the values that differ on every run (ids, timestamps) masked. A
user's bug report becomes a test: the recording is the fixture, "no difference" the assertion.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.web.server import NOT_DONE_YET, Request

from llamashim.ops.recorder import from_text_or_b64
from llamashim.testing.fake_llama import MODEL, FakeLlama
from llamashim.testing.memory import MemoryClock, memory_config, memory_shim

_VOLATILE = re.compile(
    rb'"(id|created|created_at|call_id|item_id|response_id|system_fingerprint|tool_call_id|message_id)"'
    rb'\s*:\s*("[^"]*"|\d+)')
_DURATIONS = re.compile(rb'"(\w*_duration|\w*_ms|\w*_per_second)"\s*:\s*[\d.e+-]+')


def mask(body: bytes) -> list[str]:
    """``body``'s lines with the per-run values (ids, timestamps, durations) masked, for a diff."""
    out = _VOLATILE.sub(lambda m: b'"' + m.group(1) + b'":"*"', body)
    out = _DURATIONS.sub(lambda m: b'"' + m.group(1) + b'":*', out)
    return out.decode("utf-8", "replace").splitlines(keepends=True)


def _recorded_model(exchanges: list[dict[str, Any]]) -> str | None:
    """The upstream's id of the model, from the first recorded upstream request that names one."""
    for exchange in exchanges:
        try:
            model = json.loads(from_text_or_b64(exchange.get("body", ""))).get("model")
        except (ValueError, AttributeError):
            continue
        if isinstance(model, str) and model:
            return model
    return None


class TapeUpstream(FakeLlama):
    """The fake llama-server, except that the upstream requests of a recording get the recorded answers, in order."""

    def __init__(self, clock: Any, exchanges: list[dict[str, Any]]) -> None:
        super().__init__(clock, _recorded_model(exchanges) or MODEL)  # listed as the recorded upstream listed it
        self.tape = deque(exchanges)
        self.sent: list[bytes] = []  # the bodies of the requests the tape answered (what llamashim sent now)

    def handle(self, request: Request) -> bytes | int:
        path = request.uri.decode("latin-1")
        if self.tape and self.tape[0]["path"] == path and self.tape[0]["method"] == request.method.decode():
            recorded = self.tape.popleft()
            assert request.content is not None
            self.sent.append(request.content.read())
            request.setResponseCode(int(recorded.get("status") or 200))
            for name, value in (recorded.get("headers") or {}).items():
                request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
            for _at, piece in recorded.get("chunks") or ():
                request.write(from_text_or_b64(piece))
            request.finish()
            return NOT_DONE_YET
        return super().handle(request)


@dataclass
class Replayed:
    recorded: bytes  # what the client got then
    replayed: bytes  # what it gets now
    status: int
    upstream_then: list[bytes]  # the upstream request bodies then
    upstream_now: list[bytes]  # and now

    def client_diff(self) -> str:
        return "".join(difflib.unified_diff(mask(self.recorded), mask(self.replayed), "recorded", "replayed"))

    def upstream_diff(self) -> str:
        return "".join(difflib.unified_diff(
            [line for b in self.upstream_then for line in mask(_pretty(b))],
            [line for b in self.upstream_now for line in mask(_pretty(b))], "sent then", "sent now"))


def _pretty(body: bytes) -> bytes:
    try:
        return json.dumps(json.loads(body), indent=1, sort_keys=True, ensure_ascii=False).encode() + b"\n"
    except ValueError:
        return body


def replay(record: dict[str, Any], sections: dict[str, Any] | None = None) -> Replayed:
    """Replay ``record`` through llamashim with its defaults (``sections`` replacing configuration sections)."""
    clock = MemoryClock()
    upstream = TapeUpstream(clock, list(record.get("upstream") or ()))
    shim = memory_shim(memory_config(**(sections or {})), upstream.resource())
    try:
        request = record["request"]
        headers = {k: v for k, v in request.get("headers") or () if k.lower() not in ("host", "content-length")}
        exchange = shim.fetch(request["method"], request["path"], from_text_or_b64(request.get("body", "")), headers)
        return Replayed(from_text_or_b64(record["response"]["body"]), bytes(exchange.body), exchange.code,
                        [from_text_or_b64(ex.get("body", "")) for ex in record.get("upstream") or ()], upstream.sent)
    finally:
        shim.stop()


def replay_file(path: str) -> tuple[int, str]:
    """The exit status (0: the client's view is unchanged, 1: it differs) and the report for ``path``."""
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    result = replay(record)
    client, upstream = result.client_diff(), result.upstream_diff()
    lines = [f"{record['request']['method']} {record['request']['path']}: status {result.status}, "
             f"recorded {record['response']['status']}"]
    lines.append(upstream if upstream else "the upstream was asked the same as recorded")
    lines.append(client if client else "the client's view is the same as recorded")
    return (1 if client else 0), "\n".join(lines)

"""Recordings of whole exchanges (``log.record``: a directory, off by default), and reading them back for
``llamashim replay``.

One JSON file per client request: the client's request (method, path, headers, body), every upstream request it made
(method, path, body) with the upstream's answer (status, content type, the body pieces with their times), and what
the client got (status, headers, body). Never a key: ``Authorization``, ``X-Api-Key``, ``X-Goog-Api-Key``,
``Api-Key``, cookies and a ``key=`` query parameter are left out. The directory is bounded (``log.record_max_bytes``):
the oldest recordings go first. Written with the request's end, synchronously — recording is a debugging aid, not a
production setting.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from llamashim.upstream.recording import Tape, Tapes

VERSION = 1
SECRET_HEADERS = frozenset((b"authorization", b"proxy-authorization", b"x-api-key", b"x-goog-api-key", b"api-key",
                            b"cookie", b"set-cookie"))
_KEY_QUERY = re.compile(r"([?&])key=[^&]*&?")


def text_or_b64(data: bytes) -> Any:
    """``data`` as text when it is UTF-8, else ``{"base64": ...}``."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def from_text_or_b64(value: Any) -> bytes:
    if isinstance(value, dict):
        return base64.b64decode(value.get("base64", ""))
    return str(value).encode("utf-8")


def without_key(path: str) -> str:
    """``path`` without a ``key=`` query parameter (how Gemini clients send their key)."""
    return _KEY_QUERY.sub(lambda m: m.group(1), path).rstrip("?&")


def public_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[list[str]]:
    return [[k.decode("latin-1"), v.decode("latin-1")] for k, v in headers if k.lower() not in SECRET_HEADERS]


@dataclass
class ClientSide:
    """The client's half of an exchange, as the edge saw it."""

    method: str
    path: str
    headers: list[list[str]]
    body: bytes
    status: str
    response_headers: list[list[str]]
    duration: float


class Recorder:
    """Opens a tape per client request and writes each finished exchange to ``directory``."""

    log = Logger()

    def __init__(self, directory: str, max_bytes: int, clock: Any) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.clock = clock
        self.tapes = Tapes()
        self.directory.mkdir(parents=True, exist_ok=True)

    def save(self, request_id: bytes, client: ClientSide) -> Path | None:
        """Write the exchange of ``request_id`` (its tape ends here); ``None`` when it had no tape."""
        tape = self.tapes.end(request_id)
        if tape is None:
            return None
        record = self.record(tape, client)
        stamp = f"{self.clock.seconds():.6f}".replace(".", "-")
        path = self.directory / f"{stamp}-{request_id.decode('ascii', 'replace')[:40]}.json"
        path.write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")
        self._bound()
        return path

    def record(self, tape: Tape, client: ClientSide) -> dict[str, Any]:
        return {
            "version": VERSION,
            "request_id": tape.request_id.decode("ascii", "replace"),
            "request": {"method": client.method, "path": without_key(client.path), "headers": client.headers,
                        "body": text_or_b64(client.body)},
            "upstream": [{"method": ex.method, "path": ex.path, "body": text_or_b64(ex.body), "status": ex.status,
                          "headers": ex.headers,
                          "chunks": [[round(t, 6), text_or_b64(data)] for t, data in ex.chunks]}
                         for ex in tape.upstream],
            "response": {"status": client.status, "headers": client.response_headers,
                         "body": text_or_b64(b"".join(tape.client_out))},
            "duration": round(client.duration, 6),
        }

    def _bound(self) -> None:
        """Remove the oldest recordings while the directory holds more than ``max_bytes``."""
        files = sorted(self.directory.glob("*.json"), key=lambda p: p.name)
        total = sum(p.stat().st_size for p in files)
        while files and total > self.max_bytes:
            oldest = files.pop(0)
            total -= oldest.stat().st_size
            try:
                os.remove(oldest)
            except OSError as e:  # (another process removed it)
                self.log.debug("could not remove recording {path}: {e}", path=str(oldest), e=e)

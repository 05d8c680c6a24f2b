"""Prefill progress against the real llama-server: while a long prompt is processed, the status page shows the
request in prefill (from llama-server's own progress events), the client's stream carries none of them, and the
access line has the time to first token."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from tests.e2e.daemon import Daemon


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def test_the_status_page_shows_prefill_and_the_stream_is_clean(shim: Daemon) -> None:
    """A streamed chat with a ~1,500-token prompt (unique, so no cache hit) is seen in its prefill phase on
    /status.json; its stream has no prompt_progress; its access line has ttft=."""
    request_id = uuid.uuid4().hex
    words = " ".join(f"{request_id[:6]}{i}" for i in range(170))
    body = {"model": "any", "stream": True, "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": f"Count these: {words}"}]}
    req = urllib.request.Request(shim.url + "/v1/chat/completions", data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", "x-request-id": request_id})
    out: dict[str, bytes] = {}

    def send() -> None:
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                out["body"] = r.read()
        except urllib.error.HTTPError as e:
            out["error"] = e.read()

    sender = threading.Thread(target=send)
    sender.start()
    phases: list[dict[str, Any]] = []
    deadline = time.monotonic() + 300
    while sender.is_alive() and time.monotonic() < deadline:
        for active in _get(shim.url + "/status.json")["active"]:
            if active["id"] == request_id and active["phase"] is not None:
                phases.append(active["phase"])
        time.sleep(0.1)
    sender.join(timeout=5)
    assert "body" in out, out
    prefill = [p for p in phases if p["phase"] == "prefill"]
    assert prefill and prefill[0]["total"] > 1000 and 0 <= prefill[0]["percent"] <= 100, phases
    stream = out["body"]
    assert b"prompt_progress" not in stream and stream.rstrip().endswith(b"data: [DONE]")
    chunks = [json.loads(line[6:]) for line in stream.splitlines() if line.startswith(b"data: {")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    line = next(x for x in shim.log().splitlines() if f"id={request_id}" in x)
    assert re.search(r" ttft=\d+\.\dms ", line), line

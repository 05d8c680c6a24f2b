"""End-to-end: llamashim supervising a real llama-server (``--spawn-model``), then stopping it with no orphan."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

from llamashim.testing.provision import RealLlamaPaths
from tests.e2e.daemon import running_daemon


def test_spawned_llama_server_serves_and_is_stopped(real_llama_paths: RealLlamaPaths, tmp_path: Path) -> None:
    """A spawned llama-server is 503 until ready, then answers chat, and is gone once llamashim stops."""
    p = real_llama_paths
    spawn_args = f"-c 4096 -np 2 --jinja --chat-template-file {p.template}"
    # the daemon finds the binary through the cache's real-llama.json, as ./run does
    with running_daemon(None, "--spawn-model", p.model, "--spawn-args", spawn_args, tmp=tmp_path) as d:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(d.url + "/health", timeout=5) as r:
                    status = r.status
                    break
            except urllib.error.HTTPError as e:  # 503 with the reason until llama-server is ready
                assert e.code == 503 and "llama-server" in json.load(e)["reason"]
            time.sleep(0.2)  # polling readiness of an external process against a deadline
        assert status == 200
        client = openai.OpenAI(base_url=d.url + "/v1", api_key="x", timeout=60, max_retries=0)
        reply = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "Hi"}], max_tokens=5)
        assert reply.choices[0].message.content
        match = re.search(r"started llama-server \(pid (\d+)\)", d.log())
        assert match
        child = int(match.group(1))
        os.kill(child, 0)  # running
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"llama-server (pid {child}) outlived llamashim")

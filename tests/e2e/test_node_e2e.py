"""End-to-end: the official ``openai`` JavaScript package under Node, a streamed tool call through llamashim."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.daemon import Daemon, StartShim

HERE = Path(__file__).parent / "node"


def node_modules() -> Path:
    """``npm install`` of the pinned package into the cache (seconds after the first time)."""
    cache = Path(os.environ.get("LLAMASHIM_CACHE") or Path.home() / ".cache" / "llamashim") / "node"
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "package.json", cache / "package.json")
    if not (cache / "node_modules" / "openai" / "package.json").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=cache, check=True,
                       timeout=600)
    return cache / "node_modules"


@pytest.fixture(scope="module", params=["native", "synthesize"])
def shim(request: pytest.FixtureRequest, real_llama: Any, shim_daemon: StartShim) -> Iterator[Daemon]:
    with shim_daemon(real_llama.url, "--tool-streaming", request.param) as d:
        yield d


def test_openai_js_streams_a_tool_call(shim: Daemon) -> None:
    """The openai JS package assembles the real tool call both by hand and with its stream helper."""
    modules = node_modules()
    script = modules.parent / "tool_call.mjs"
    shutil.copy(HERE / "tool_call.mjs", script)
    result = subprocess.run(["node", str(script), shim.url + "/v1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["finish"] == "tool_calls"
    assert list(out["calls"]) == ["0"]
    call = out["calls"]["0"]
    assert call["name"] == "get_weather" and call["id"] and json.loads(call["arguments"]) == {"city": "Paris"}
    assert out["helperFinish"] == "tool_calls"
    assert json.loads(out["helper"][0]["function"]["arguments"]) == {"city": "Paris"}

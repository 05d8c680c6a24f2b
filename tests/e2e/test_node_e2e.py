"""End-to-end: the official ``openai`` JavaScript package under Node, a streamed tool call through llamashim."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.daemon import Daemon, StartShim

HERE = Path(__file__).parent / "node"


@pytest.fixture(scope="module", params=["native", "synthesize"])
def shim(request: pytest.FixtureRequest, real_llama: Any, shim_daemon: StartShim) -> Iterator[Daemon]:
    with shim_daemon(real_llama.url, "--tool-streaming", request.param) as d:
        yield d


def test_openai_js_streams_a_tool_call(shim: Daemon, node_sdks: Path) -> None:
    """The openai JS package assembles the real tool call both by hand and with its stream helper."""
    modules = node_sdks
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

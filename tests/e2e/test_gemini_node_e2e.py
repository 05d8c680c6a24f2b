"""End-to-end: the official ``@google/genai`` JavaScript package (what Gemini CLI is built on) under Node, against
llamashim in front of the real llama-server: generate, stream, JSON mode with a schema, a forced function call and its
functionResponse turn, countTokens, the model list and an error as the SDK's own ``ApiError``."""

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


def test_google_genai_js(shim: Daemon, node_sdks: Path) -> None:
    """@google/genai gets text, a stream ending in STOP, JSON mode's object, a real function call (id, name, args
    object) it can answer, a token count, the model list, and a refused request as its ApiError with status 400."""
    script = node_sdks.parent / "gemini.mjs"
    shutil.copy(HERE / "gemini.mjs", script)
    result = subprocess.run(["node", str(script), shim.url], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["text"] and out["finish"] in ("STOP", "MAX_TOKENS")
    assert out["usage"]["promptTokenCount"] > 0 and out["usage"]["totalTokenCount"] > out["usage"]["promptTokenCount"]
    assert out["streamed"] and out["chunks"] > 1 and out["lastFinish"] in ("STOP", "MAX_TOKENS")
    call = out["call"]
    assert call.get("name") == "get_weather" and call["id"] and isinstance(call["args"], dict), out["callParts"]
    assert out["callFinish"] == "STOP"
    assert out["answered"]
    assert isinstance(out["json"], dict) and isinstance(out["json"].get("colour"), str), out["json"]
    assert out["tokens"] > 5
    assert len(out["models"]) == 1 and out["models"][0].startswith("models/")
    assert out["error"]["name"] == "ApiError" and out["error"]["status"] == 400, out["error"]

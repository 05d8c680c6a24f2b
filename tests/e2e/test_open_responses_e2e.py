"""The public Open Responses compliance suite (the pinned copy in ``tests/e2e/openresponses``, run as its README
says) against the real daemon (``twistd -n llamashim``) in front of the fake llama-server, each its own process:
HTTP and WebSocket.

All 17 pass. For "Tool Calling" the fake plays a model that calls the tool it is offered (``--call-tools``: the first
offered tool, then a final text once the result is in the conversation); the other tests offer no tool.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

from llamashim.testing.fake_llama import MODEL
from tests.e2e.daemon import running_daemon, running_fake

SUITE = Path(__file__).parent / "openresponses"  # the pinned copy (Apache-2.0; its README says where from)
PASSING = {
    "basic-response", "assistant-phase", "response-output-phase-schema", "streaming-response", "system-prompt",
    "image-input", "multi-turn",
    # over a WebSocket
    "websocket-response", "websocket-sequential-responses", "websocket-continuation",
    "websocket-reconnect-store-false-recovery", "websocket-previous-response-not-found",
    "websocket-failed-continuation-evicts-cache", "websocket-compact-new-chain",
    # /responses/compact
    "compact-response", "compact-missing-model",
    # a function tool offered, a function_call item out
    "tool-calling",
}


def suite_copy(tmp: Path) -> Path:
    """The suite copied out of its read-only folder, its pinned packages installed (``npm ci``)."""
    copy = tmp / "openresponses"
    shutil.copytree(SUITE, copy)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=copy, check=True,
                   capture_output=True, timeout=600)
    return copy


def test_the_open_responses_suite_passes_against_llamashim(tmp_path: Path) -> None:
    """The suite's own JSON summary: 17 of 17 passed (every HTTP, WebSocket, compaction and tool-calling test)."""
    suite = suite_copy(tmp_path)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}  # the Responses store, under tmp
    with running_fake("--call-tools", tmp=tmp_path) as fake, running_daemon(fake.url, tmp=tmp_path, env=env) as shim:
        run = subprocess.run(
            ["./node_modules/.bin/tsx", "--import", "./node-ws-shim.mjs", "bin/compliance-test.ts",
             "--base-url", f"{shim.url}/v1", "--api-key", "any", "--model", MODEL, "--json"],
            cwd=suite, capture_output=True, text=True, timeout=300)
    report = json.loads(run.stdout)
    outcome = {r["id"]: r["status"] for r in report["results"]}
    errors = {r["id"]: r.get("errors") for r in report["results"] if r["status"] != "passed"}
    assert {i for i, s in outcome.items() if s == "passed"} == PASSING, errors
    assert report["summary"] == {"passed": 17, "failed": 0, "skipped": 0, "total": 17}, errors

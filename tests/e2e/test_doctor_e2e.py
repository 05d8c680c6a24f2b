"""``llamashim doctor`` against the real llama-server: once as ./run starts it (``-c 8192 -np 2 --jinja
--chat-template-file T``) and once without ``--jinja`` and the tool template (SmolLM2's own template)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llamashim.testing.provision import RealLlamaPaths
from tests.e2e.daemon import free_port, stop_process, wait_healthy

LLAMASHIM = str(Path(sys.executable).with_name("llamashim"))


def llama_server(paths: RealLlamaPaths, log: Path, *flags: str) -> Iterator[str]:
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([paths.binary, "-m", paths.model, "--host", "127.0.0.1", "--port", str(port), *flags],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, time.monotonic() + 60)
        yield url
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def as_run_starts_it(real_llama_paths: RealLlamaPaths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from llama_server(real_llama_paths, tmp_path_factory.mktemp("doctor") / "jinja.log",
                            "-c", "8192", "-np", "2", "--jinja", "--chat-template-file", real_llama_paths.template)


@pytest.fixture(scope="module")
def without_jinja(real_llama_paths: RealLlamaPaths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from llama_server(real_llama_paths, tmp_path_factory.mktemp("doctor") / "plain.log", "-c", "8192", "-np", "2")


def doctor(url: str, *args: str) -> tuple[int, Any]:
    result = subprocess.run([LLAMASHIM, "doctor", url, "--json", *args], capture_output=True, text=True, timeout=600)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def checks(report: Any) -> dict[str, Any]:
    return {c["name"]: c for c in report["checks"]}


def clients(report: Any) -> dict[str, Any]:
    return {c["name"]: c for c in report["clients"]}


def test_the_server_run_starts(as_run_starts_it: str) -> None:
    """./run's llama-server: the template has tools, the tiny tool call comes back (streamed too), 2 slots of
    4,096 tokens — too few for Codex CLI, so `--for codex` exits 1 naming -c/-np; embeddings are off."""
    status, report = doctor(as_run_starts_it, "--for", "codex")
    c = checks(report)
    assert status == 1
    assert c["health"]["status"] == "ok" and c["template"]["status"] == "ok"
    assert c["tool call"]["status"] == "ok" and "get_weather" in c["tool call"]["summary"]
    assert "Paris" in c["tool call"]["summary"]
    assert c["streamed tools"]["status"] == "ok"
    assert c["embeddings"]["fix"].startswith("--embeddings")
    assert report["facts"]["n_ctx_per_slot"] == 4096 and report["facts"]["total_slots"] == 2
    assert report["facts"]["n_ctx_train"] == 8192 and report["facts"]["build_info"] == "b0-unknown"
    codex = clients(report)["codex"]
    assert codex["ok"] is False and codex["fixes"] == ["-c 16384 -np 2, or -c 8192 -np 1 (-c is shared among the "
                                                       "-np slots)"]
    assert "--rope-scaling yarn" in clients(report)["claude"]["fixes"][0]


def test_the_server_without_jinja(without_jinja: str) -> None:
    """Without --jinja and the tool template: SmolLM2's template has no tools, the probe gets text, and every agent
    is told --jinja --chat-template-file."""
    status, report = doctor(without_jinja, "--for", "copilot")
    c = checks(report)
    assert status == 1
    assert c["template"]["status"] == "fail" and "--chat-template-file" in c["template"]["fix"]
    assert c["tool call"]["status"] == "fail"
    for client in report["clients"]:
        assert not client["ok"] and any("--jinja --chat-template-file" in fix for fix in client["fixes"])

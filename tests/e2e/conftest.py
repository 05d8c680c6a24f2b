"""The end-to-end tier: a real llama-server (SmolLM2-135M, Qwen2.5 tool template) on a free loopback port."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llamashim.testing.provision import RealLlamaPaths, provision
from tests.e2e.daemon import free_port, stop_process


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)


@dataclass
class RealLlama:
    url: str
    port: int
    log_path: Path
    model: str
    paths: RealLlamaPaths


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited with {proc.returncode} during start-up")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200 and json.load(r).get("status") == "ok":
                    return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.1)  # polling an external process for readiness, with a deadline
    raise TimeoutError("llama-server did not become healthy within 60 s")


@pytest.fixture(scope="session")
def real_llama_paths() -> RealLlamaPaths:
    return provision()


@pytest.fixture(scope="session")
def real_llama(real_llama_paths: RealLlamaPaths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealLlama]:
    p = real_llama_paths
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "llama-server.log"
    cmd = [
        p.binary, "-m", p.model, "--host", "127.0.0.1", "--port", str(port), "-c", "16384", "-np", "4",
        "--jinja", "--chat-template-file", p.template, "--embeddings", "--pooling", "mean",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, time.monotonic() + 60)
        yield RealLlama(url, port, log_path, p.model, p)
    finally:
        stop_process(proc)

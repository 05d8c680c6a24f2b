"""The end-to-end tier: a real llama-server (SmolLM2-135M, Qwen2.5 tool template) on a free loopback port."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from llamashim.testing.provision import RealLlamaPaths, provision
from tests.e2e.daemon import Daemon, StartShim, free_port, running_daemon, stop_process, wait_healthy


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
        wait_healthy(url, proc, time.monotonic() + 60)
        yield RealLlama(url, port, log_path, p.model, p)
    finally:
        stop_process(proc)


# -- added for the Responses, Anthropic and coding-agent tiers ------------------------------------------------------

CACHE = Path(os.environ.get("LLAMASHIM_CACHE") or Path.home() / ".cache" / "llamashim")
E2E = Path(__file__).parent


@contextmanager
def _llama_server(paths: RealLlamaPaths, log_path: Path, *args: str) -> Iterator[RealLlama]:
    port = free_port()
    cmd = [paths.binary, "-m", paths.model, "--host", "127.0.0.1", "--port", str(port), "--jinja",
           "--chat-template-file", paths.template, *args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, time.monotonic() + 120)
        yield RealLlama(url, port, log_path, paths.model, paths)
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def llama_server_factory(
    real_llama_paths: RealLlamaPaths, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., AbstractContextManager[RealLlama]]:
    """``with llama_server_factory(*extra_args) as llama:`` — another real llama-server, stopped on leaving."""

    def start(*args: str) -> AbstractContextManager[RealLlama]:
        log_path = tmp_path_factory.mktemp("llama-server") / "llama-server.log"
        return _llama_server(real_llama_paths, log_path, *args)

    return start


@pytest.fixture(scope="session")
def shim_config(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``shim_config({section: {key: value}})`` writes a llamashim YAML config in a fresh tmp dir, with the
    Responses store (``responses.store_path``) in that dir too; the daemon's log can go there as well."""

    def write(sections: dict[str, Any] | None = None) -> Path:
        tmp = tmp_path_factory.mktemp("shim")
        merged: dict[str, Any] = {"responses": {"store_path": str(tmp / "responses.sqlite3")}}
        for name, values in (sections or {}).items():
            merged[name] = {**merged.get(name, {}), **values}
        path = tmp / "llamashim.yaml"
        path.write_text(yaml.safe_dump(merged))
        return path

    return write


@pytest.fixture(scope="session")
def shim_daemon(shim_config: Callable[..., Path]) -> StartShim:
    """``with shim_daemon(upstream_url, *flags, sections=None, env=None) as d:`` — llamashim (``twistd``) in front of
    ``upstream_url`` with :func:`shim_config`'s configuration (its log in the same directory), stopped on leaving."""

    def start(upstream: str, *args: str, sections: dict[str, Any] | None = None,
              env: dict[str, str] | None = None) -> AbstractContextManager[Daemon]:
        config = shim_config(sections)
        return running_daemon(upstream, "--config", str(config), *args, env=env, tmp=config.parent)

    return start


@pytest.fixture(scope="module")
def shim(real_llama: RealLlama, shim_daemon: StartShim) -> Iterator[Daemon]:
    """llamashim with its defaults in front of the session's llama-server, one per test module."""
    with shim_daemon(real_llama.url) as d:
        yield d


def _npm_install(package_json: Path, target: Path, needs: tuple[str, ...]) -> Path:
    """``npm install`` of a pinned package.json into the cache (seconds once npm's cache is warm)."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(package_json, target / "package.json")
    wanted = json.loads(package_json.read_text())["dependencies"]
    installed = {}
    for name in needs:
        meta = target / "node_modules" / name / "package.json"
        installed[name] = json.loads(meta.read_text()).get("version") if meta.exists() else None
    if any(installed[name] != wanted[name] for name in needs):
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=target, check=True,
                       timeout=600)
    return target / "node_modules"


@pytest.fixture(scope="session")
def node_sdks() -> Path:
    """The pinned ``openai``, ``@anthropic-ai/sdk`` and ``@google/genai`` JavaScript packages
    (tests/e2e/node/package.json)."""
    return _npm_install(E2E / "node" / "package.json", CACHE / "node", ("openai", "@anthropic-ai/sdk", "@google/genai"))


# the agents that ship their program as a per-platform optional dependency (npm skips those silently on failure)
_AGENT_PLATFORM_PACKAGES = ("opencode-{os}-{arch}", "@github/copilot-{os}-{arch}", "@cline/cli-{os}-{arch}")


@pytest.fixture(scope="session")
def agent_bins() -> Path:
    """The pinned coding agents (tests/e2e/agents/package.json) with their platform binaries; returns their
    ``node_modules/.bin``."""
    package_json = E2E / "agents" / "package.json"
    needs = tuple(json.loads(package_json.read_text())["dependencies"])
    modules = _npm_install(package_json, CACHE / "agents", needs)
    arch = {"x86_64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), platform.machine())
    platform_packages = [name.format(os=sys.platform, arch=arch) for name in _AGENT_PLATFORM_PACKAGES]
    if not all((modules / name / "package.json").exists() for name in platform_packages):
        subprocess.run(["npm", "install", "--include=optional", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=modules.parent, check=True, timeout=600)
    missing = [name for name in platform_packages if not (modules / name / "package.json").exists()]
    assert not missing, f"npm did not install the agents' platform packages {missing}"
    return modules / ".bin"


@pytest.fixture(scope="session")
def gemini_bin() -> Path:
    """The pinned Gemini CLI (tests/e2e/gemini_cli/package.json)."""
    modules = _npm_install(E2E / "gemini_cli" / "package.json", CACHE / "gemini-cli", ("@google/gemini-cli",))
    return modules / ".bin" / "gemini"

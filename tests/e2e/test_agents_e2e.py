"""End-to-end: real coding agents (Codex CLI, Claude Code, Gemini CLI) complete a turn through llamashim and a real
llama-server.

Their first requests are large (Codex: ~8,900 SmolLM2 tokens; Gemini CLI: ~48 kB of JSON with 16 tools; Claude
Code: ~21,000 Anthropic tokens), beyond the
8,192-token context SmolLM2 was trained with, so each runs against its own one-slot llama-server stretched with YaRN
rope scaling (``shared/REAL-LLAMA-SERVER.md``). ``big_llama`` is one module-scoped fixture parametrised indirectly,
so pytest stops the 16k server before it starts the 32k one: only one such server runs at a time.

Neither agent lets us set the sampling (Codex sends no temperature, Claude Code sends ``temperature: 1``), and the
135M model rambles on for hundreds of tokens at 0.3-3 tokens/s at this context: Codex then never ends its turn, and
Claude Code, on ``max_tokens``, asks three times to "resume" and exits 1 ("response exceeded the 64 output token
maximum"); a bias on the end token is no cure (+7 stops one prompt, not the same prompt with another tmp path; +9
ends before the first token). So the servers run greedy (``--top-k 1``; a client's ``top_k`` would still win) with
server-side default stop strings (``-r . -r :``), which end the answer at its first clause whatever it says. Codex
also gets ``-n 128`` as a bound (it sends no ``max_output_tokens``); Claude Code is bounded by
``CLAUDE_CODE_MAX_OUTPUT_TOKENS``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.daemon import Daemon, StartShim

YARN = ("--rope-scaling", "yarn", "--yarn-orig-ctx", "8192", "-np", "1")
# Greedy whatever the client's temperature, and llama-server's default stop strings (used when a request brings
# none) at the first "." or ":": the answer is one short clause, whatever the prompt makes the model say.
SHORT = ("--top-k", "1", "-r", ".", "-r", ":")
SERVERS: dict[str, tuple[str, ...]] = {
    "16k": (*YARN, *SHORT, "--rope-scale", "2", "-c", "16384", "-n", "128"),
    "32k": (*YARN, *SHORT, "--rope-scale", "4", "-c", "32768"),
}
# Bounded with a wide margin for an idle 2-core machine (Codex: ~45-60 s of prompt processing; Claude Code: several
# minutes, its 21k-token prompt slowing as the context fills); a loaded machine is far slower (at a load of 4, Claude
# Code processed 12k tokens in 520 s).
# LLAMASHIM_E2E_SLOW=FACTOR stretches both on a loaded one (at a load average of 8, Codex took 520 s).
SLOW = float(os.environ.get("LLAMASHIM_E2E_SLOW") or 1)
CODEX_TIMEOUT = int(600 * SLOW)
CLAUDE_TIMEOUT = int(1500 * SLOW)


@pytest.fixture(scope="module")
def big_llama(request: pytest.FixtureRequest, llama_server_factory: Callable[..., AbstractContextManager[Any]]
              ) -> Iterator[Any]:
    with llama_server_factory(*SERVERS[request.param]) as llama:
        yield llama


def _access(d: Daemon, method_path: str) -> list[str]:
    """The statuses of llamashim's access-log lines for ``method_path`` (e.g. ``POST /v1/responses``)."""
    return re.findall(rf"\] {re.escape(method_path)} (\S+) ", d.log())


def _upstream_bodies(d: Daemon) -> list[dict[str, Any]]:
    """The chat bodies llamashim sent upstream, from its ``--verbose`` log (``... request: {json}``)."""
    return [json.loads(line.partition("] request: ")[2]) for line in d.log().splitlines() if "] request: " in line]


def _scratch(tmp: Path) -> tuple[Path, Path]:
    home, work = tmp / "home", tmp / "work"
    home.mkdir()
    work.mkdir()
    return home, work


def _env(home: Path, **extra: str) -> dict[str, str]:
    """A clean environment (``env -i`` style): nothing of ours leaks into the agent."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TERM": "dumb", **extra}


@pytest.mark.parametrize("big_llama", ["16k"], indirect=True)
def test_codex_exec_completes_a_turn(
    big_llama: Any, agent_bins: Path, shim_daemon: StartShim, tmp_path: Path
) -> None:
    """``codex exec`` (wire_api responses) completes a turn: exit 0, an answer, ``POST /v1/responses 200``."""
    home, work = _scratch(tmp_path)
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir()
    with shim_daemon(big_llama.url, "--verbose") as d:
        (codex_home / "config.toml").write_text(
            'model = "smollm2"\n'
            'model_provider = "llamashim"\n\n'
            "[model_providers.llamashim]\n"
            'name = "llamashim"\n'
            f'base_url = "{d.url}/v1"\n'
            'env_key = "OPENAI_API_KEY"\n'
            'wire_api = "responses"\n'
            "request_max_retries = 0\n"
            "stream_max_retries = 0\n"
            f"stream_idle_timeout_ms = {CODEX_TIMEOUT * 1000}\n"
        )
        result = subprocess.run(
            [str(agent_bins / "codex"), "exec", "--skip-git-repo-check", "Say OK"],
            cwd=work, env=_env(home, CODEX_HOME=str(codex_home), OPENAI_API_KEY="sk-test"),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CODEX_TIMEOUT,
        )
        statuses = _access(d, "POST /v1/responses")
        bodies = _upstream_bodies(d)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip(), result.stderr[-4000:]
    assert statuses and set(statuses) == {"200"}, statuses
    assert bodies and bodies[0]["messages"][-1] == {"role": "user", "content": "Say OK"}


@pytest.mark.parametrize("big_llama", ["32k"], indirect=True)
def test_claude_code_completes_a_turn(
    big_llama: Any, agent_bins: Path, shim_daemon: StartShim, tmp_path: Path
) -> None:
    """``claude -p`` completes one turn: exit 0, an answer on stdout, ``POST /v1/messages 200``."""
    home, work = _scratch(tmp_path)
    with shim_daemon(big_llama.url, "--verbose") as d:
        env = _env(
            home,
            ANTHROPIC_BASE_URL=d.url,
            ANTHROPIC_AUTH_TOKEN="x",
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            DISABLE_TELEMETRY="1",
            MAX_THINKING_TOKENS="0",
            CLAUDE_CODE_MAX_OUTPUT_TOKENS="64",
            API_TIMEOUT_MS=str(CLAUDE_TIMEOUT * 1000),
            # its stream watchdog gives up on a stream with no message events (llamashim's pings do not count)
            # after 300 s by default and retries: minutes of prompt processing must not look like a dead stream
            CLAUDE_STREAM_IDLE_TIMEOUT_MS=str(min(CLAUDE_TIMEOUT, 1800) * 1000),
            CLAUDE_BYTE_STREAM_IDLE_TIMEOUT_MS=str(min(CLAUDE_TIMEOUT, 1800) * 1000),
        )
        result = subprocess.run(
            [str(agent_bins / "claude"), "-p", "Say OK", "--model", "claude-sonnet-4-5"],
            cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CLAUDE_TIMEOUT,
        )
        statuses = _access(d, "POST /v1/messages")
        bodies = _upstream_bodies(d)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    assert result.stdout.strip(), result.stderr[-4000:]
    assert statuses and set(statuses) == {"200"}, statuses
    assert bodies
    system = bodies[0]["messages"][0]
    assert system["role"] == "system" and "Claude Agent SDK" in system["content"]
    assert "x-anthropic-billing-header" not in system["content"]  # anthropic.strip_billing_header (the default)


@pytest.mark.parametrize("big_llama", ["16k"], indirect=True)
def test_gemini_cli_completes_a_turn(
    big_llama: Any, gemini_bin: Path, shim_daemon: StartShim, tmp_path: Path
) -> None:
    """``gemini -p`` (the Gemini API, streamed) completes a turn against the real model: exit 0, an answer, every
    ``streamGenerateContent`` 200 (its headers at once and keep-alive frames through the minutes of prompt processing:
    Gemini CLI gives up on headers after 60 s and on a silent body after 300 s)."""
    home, work = _scratch(tmp_path)
    (home / ".gemini").mkdir()
    (home / ".gemini" / "settings.json").write_text(json.dumps({
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
        "privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False}}))
    with shim_daemon(big_llama.url, "--verbose") as d:
        result = subprocess.run(
            [str(gemini_bin), "-p", "Say OK", "-m", "gemini-2.5-pro", "--skip-trust"],
            cwd=work, env=_env(home, GOOGLE_GEMINI_BASE_URL=d.url, GEMINI_API_KEY="x", NO_COLOR="1"),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CODEX_TIMEOUT,
        )
        statuses = [s for path, s in re.findall(r"\] POST (\S+:streamGenerateContent) (\S+) ", d.log())]
        bodies = _upstream_bodies(d)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    assert result.stdout.strip(), result.stderr[-4000:]
    assert statuses and set(statuses) == {"200"}, statuses
    assert bodies and "Say OK" in json.dumps(bodies[0]["messages"][-1])

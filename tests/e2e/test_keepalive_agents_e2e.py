"""End-to-end: the real agents keep waiting through a prefill longer than their stream watchdogs, on llamashim's
keep-alives alone, and finish the turn with one request upstream and no retry.

The upstream is the project's fake llama-server as its own process, answering an agent's tool-offering request only
after ``--tools-prefill`` seconds of silence (llama-server sends its headers with the first token, after the prompt
is processed). What each client's watchdog accepts is in the README ("Keep-alives"): Codex resets
``stream_idle_timeout_ms`` on every SSE event with data (``response.in_progress``), Claude Code's 300 s stream
watchdog is held by ``ping`` bytes after ``message_start`` (for about ten minutes).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.e2e.daemon import Daemon, StartShim, running_fake

SLOW = float(os.environ.get("LLAMASHIM_E2E_SLOW") or 1)
CODEX_IDLE = 20  # seconds: Codex's stream_idle_timeout_ms, set far below the prefill
CODEX_PREFILL = 90.0
BIG_WINDOW = ("--n-ctx", "1000000")  # the fake counts a token per character: an agent's prompt needs this window
CLAUDE_PREFILL = 360.0  # beyond Claude Code's 300 s stream watchdog (its minimum whatever the environment says)


def _access(d: Daemon, method_path: str) -> list[str]:
    """The statuses of llamashim's access-log lines for ``method_path``."""
    return re.findall(rf"\] {re.escape(method_path)} (\S+) ", d.log())


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TERM": "dumb", **extra}


def test_codex_outlasts_a_prefill_four_times_its_idle_timeout(
    agent_bins: Path, shim_daemon: StartShim, tmp_path: Path
) -> None:
    """``codex exec`` with ``stream_idle_timeout_ms`` 20 s and its default retries, behind a 90 s prefill: exit 0
    with the answer, one ``POST /v1/responses 200``, and one tool-offering request upstream (no retry)."""
    home, work, codex_home = tmp_path / "home", tmp_path / "work", tmp_path / "codex-home"
    for folder in (home, work, codex_home):
        folder.mkdir()
    with running_fake("--tools-prefill", str(CODEX_PREFILL), *BIG_WINDOW, tmp=tmp_path) as fake, \
            shim_daemon(fake.url) as d:
        (codex_home / "config.toml").write_text(
            'model = "local"\nmodel_provider = "llamashim"\n\n[model_providers.llamashim]\nname = "llamashim"\n'
            f'base_url = "{d.url}/v1"\nenv_key = "OPENAI_API_KEY"\nwire_api = "responses"\n'
            f"stream_idle_timeout_ms = {CODEX_IDLE * 1000}\n"
        )
        result = subprocess.run(
            [str(agent_bins / "codex"), "exec", "--skip-git-repo-check", "Say OK"],
            cwd=work, env=_env(home, CODEX_HOME=str(codex_home), OPENAI_API_KEY="sk-test"),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=int(CODEX_PREFILL * 3 * SLOW),
        )
        statuses = _access(d, "POST /v1/responses")
        upstream = [tools for tools in fake.requests() if tools]
    assert result.returncode == 0, result.stderr[-4000:]
    assert "tok0 tok1 tok2 tok3" in result.stdout, (result.stdout[-2000:], result.stderr[-4000:])
    assert statuses == ["200"], statuses
    assert len(upstream) == 1, upstream


def test_claude_code_outlasts_a_prefill_longer_than_its_watchdog(
    agent_bins: Path, shim_daemon: StartShim, tmp_path: Path
) -> None:
    """``claude -p`` with its default watchdogs behind a 360 s prefill (its watchdog cannot go below 300 s): exit 0
    with the answer, every ``POST /v1/messages`` 200, and one tool-offering request upstream (no retry)."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    with running_fake("--tools-prefill", str(CLAUDE_PREFILL), *BIG_WINDOW, tmp=tmp_path) as fake, \
            shim_daemon(fake.url) as d:
        env = _env(home, ANTHROPIC_BASE_URL=d.url, ANTHROPIC_AUTH_TOKEN="x",
                   CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_TELEMETRY="1", MAX_THINKING_TOKENS="0")
        result = subprocess.run(
            [str(agent_bins / "claude"), "-p", "Say OK", "--model", "claude-sonnet-4-5"],
            cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=int(CLAUDE_PREFILL * 2.5 * SLOW),
        )
        statuses = _access(d, "POST /v1/messages")
        upstream = [tools for tools in fake.requests() if tools]
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    assert "tok0 tok1 tok2 tok3" in result.stdout, (result.stdout[-2000:], result.stderr[-4000:])
    assert statuses and set(statuses) == {"200"}, statuses
    assert len(upstream) == 1, upstream

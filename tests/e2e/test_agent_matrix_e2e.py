"""The agent matrix: each real coding agent, headless, completes a real tool loop through llamashim in seconds.

The upstream is the project's fake llama-server as its own process, scripted (``--write-file PATH --write-content
TEXT``, :mod:`llamashim.testing.agent_script`): to the agent's first request it answers a call of whichever
file-writing or shell tool the agent offers, writing TEXT to PATH; once the conversation holds the tool result, a
final text. The agent's own tool writes the file. Each test asserts the file holds exactly TEXT, the agent printed the
final text and exited 0 — and one test per transport points the agent straight at the upstream, where it fails for
the reason llamashim exists (the upstream does not speak the agent's API). The agents that speak OpenAI chat
completions, which the upstream serves itself, instead prove llamashim is in their path: its access log holds a line
for every chat request the upstream received.

No agent reaches the network: each one's telemetry, update checks and sign-in are turned off in its config or env.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.daemon import Daemon, FakeProcess, StartShim, running_fake

SLOW = float(os.environ.get("LLAMASHIM_E2E_SLOW") or 1)
CONTENT = "llamashim agent matrix: 7f3a\nsecond line\n"
FINAL = "MATRIX-DONE: the file is written."
TIMEOUT = 120


@dataclass
class Loop:
    """One agent run's surroundings: a home, a work folder holding the target file, the fake and llamashim."""

    home: Path
    work: Path
    target: Path
    fake: FakeProcess
    shim: Daemon

    def env(self, **extra: str) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home), "TERM": "dumb",
                "NO_COLOR": "1", **extra}

    def run(self, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=self.work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=int(TIMEOUT * SLOW))

    def assert_completed(self, result: subprocess.CompletedProcess[str]) -> None:
        """Exit 0, the exact file, the final text printed."""
        report = (result.returncode, result.stdout[-3000:], result.stderr[-3000:], self.fake.log()[-3000:])
        assert result.returncode == 0, report
        assert self.target.exists() and self.target.read_text() == CONTENT, report
        assert FINAL in result.stdout, report

    def assert_through_shim(self, path: str = "/v1/chat/completions", dialect: str = "openai") -> None:
        """Every chat request the upstream received came through llamashim: one access line each, in ``dialect``."""
        upstream = len(self.fake.requests())
        served = re.findall(rf"\] POST {re.escape(path)} 200 .* dialect={dialect} ", self.shim.log())
        assert upstream >= 2 and len(served) == upstream, (upstream, served, self.shim.log()[-3000:])

    def assert_bypass_failed(self, result: subprocess.CompletedProcess[str]) -> None:
        """Pointed at the upstream itself: no final text or a failure exit, and no file."""
        assert result.returncode != 0 or FINAL not in result.stdout
        assert not self.target.exists()


@contextmanager
def tool_loop(shim_daemon: StartShim, tmp: Path) -> Iterator[Loop]:
    home, work = tmp / "home", tmp / "work"
    home.mkdir()
    work.mkdir()
    target = work / "matrix.txt"
    # (the fake counts a token per character: an agent's prompt needs a window far beyond a real one)
    with running_fake("--write-file", str(target), "--write-content", CONTENT, "--final", FINAL, "--n-ctx", "1000000",
                      tmp=tmp) as fake, shim_daemon(fake.url) as shim:
        yield Loop(home, work, target, fake, shim)


PROMPT = f"Create the file matrix.txt in the current folder with exactly this content: {CONTENT!r}"


# -- Claude Code (Anthropic Messages) ---------------------------------------------------------------------------------


def _claude(agent_bins: Path, loop: Loop, base_url: str) -> subprocess.CompletedProcess[str]:
    env = loop.env(ANTHROPIC_BASE_URL=base_url, ANTHROPIC_AUTH_TOKEN="x", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
                   DISABLE_TELEMETRY="1", MAX_THINKING_TOKENS="0")
    return loop.run([str(agent_bins / "claude"), "-p", PROMPT, "--model", "claude-sonnet-4-5",
                     "--permission-mode", "acceptEdits", "--allowedTools", "Write,Bash"], env)


def test_claude_code_completes_the_tool_loop(agent_bins: Path, shim_daemon: StartShim, tmp_path: Path) -> None:
    """``claude -p`` (Anthropic Messages, streamed): Write called through llamashim, the file exact, the final text."""
    with tool_loop(shim_daemon, tmp_path) as loop:
        loop.assert_completed(_claude(agent_bins, loop, loop.shim.url))


def test_claude_code_fails_against_the_upstream_itself(agent_bins: Path, shim_daemon: StartShim,
                                                        tmp_path: Path) -> None:
    """The same run pointed straight at the upstream fails: it does not speak the Messages API (no file)."""
    with tool_loop(shim_daemon, tmp_path) as loop:
        result = _claude(agent_bins, loop, loop.fake.url)
        assert result.returncode != 0 or FINAL not in result.stdout
        assert not loop.target.exists()


# -- Codex CLI (Responses over HTTP) ----------------------------------------------------------------------------------


def _codex(agent_bins: Path, loop: Loop, base_url: str, websocket: bool = False) -> subprocess.CompletedProcess[str]:
    codex_home = loop.home / ".codex"
    codex_home.mkdir(exist_ok=True)
    (codex_home / "config.toml").write_text(
        'model = "local"\nmodel_provider = "llamashim"\n\n[model_providers.llamashim]\nname = "llamashim"\n'
        f'base_url = "{base_url}/v1"\nenv_key = "OPENAI_API_KEY"\nwire_api = "responses"\n'
        + ("supports_websockets = true\n" if websocket else "")
    )
    env = loop.env(CODEX_HOME=str(codex_home), OPENAI_API_KEY="sk-test")
    return loop.run([str(agent_bins / "codex"), "exec", "--skip-git-repo-check",
                     "--dangerously-bypass-approvals-and-sandbox", PROMPT], env)


def test_codex_completes_the_tool_loop(agent_bins: Path, shim_daemon: StartShim, tmp_path: Path) -> None:
    """``codex exec`` (Responses over HTTP, streamed): its shell tool called through llamashim, the file exact, the
    final text."""
    with tool_loop(shim_daemon, tmp_path) as loop:
        loop.assert_completed(_codex(agent_bins, loop, loop.shim.url))


def test_codex_over_a_websocket_completes_the_tool_loop(agent_bins: Path, shim_daemon: StartShim,
                                                        tmp_path: Path) -> None:
    """``codex exec`` with ``supports_websockets = true`` (Responses over WebSocket): the turns go over one upgraded
    connection (access line ``GET /v1/responses 101``, no ``POST /v1/responses``), the file exact, the final text."""
    with tool_loop(shim_daemon, tmp_path) as loop:
        loop.assert_completed(_codex(agent_bins, loop, loop.shim.url, websocket=True))
        log = loop.shim.log()
        assert "GET /v1/responses 101 " in log and "POST /v1/responses " not in log, log[-3000:]


def test_codex_fails_against_the_upstream_itself(agent_bins: Path, shim_daemon: StartShim, tmp_path: Path) -> None:
    """The same run pointed straight at the upstream fails: it does not serve the Responses API (no file)."""
    with tool_loop(shim_daemon, tmp_path) as loop:
        result = _codex(agent_bins, loop, loop.fake.url)
        assert result.returncode != 0 or FINAL not in result.stdout
        assert not loop.target.exists()


# -- Gemini CLI (the Gemini API, streamGenerateContent over SSE) -------------------------------------------------------


def _gemini(gemini_bin: Path, loop: Loop, base_url: str) -> subprocess.CompletedProcess[str]:
    settings = loop.home / ".gemini"
    settings.mkdir(exist_ok=True)
    (settings / "settings.json").write_text(json.dumps({  # an API key (any: llamashim has none here), no telemetry
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
        "privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False}}))
    env = loop.env(GOOGLE_GEMINI_BASE_URL=base_url, GEMINI_API_KEY="x")
    return loop.run([str(gemini_bin), "-p", PROMPT, "--yolo", "--skip-trust", "-m", "gemini-2.5-pro"], env)


def test_gemini_cli_completes_the_tool_loop(gemini_bin: Path, shim_daemon: StartShim, tmp_path: Path) -> None:
    """``gemini -p`` (the Gemini API, streamed): write_file called through llamashim, the file exact, the final text."""
    with tool_loop(shim_daemon, tmp_path) as loop:
        loop.assert_completed(_gemini(gemini_bin, loop, loop.shim.url))
        assert "script: write_file" in loop.fake.log()


def test_gemini_cli_fails_against_the_upstream_itself(gemini_bin: Path, shim_daemon: StartShim,
                                                       tmp_path: Path) -> None:
    """The same run pointed straight at the upstream fails: llama-server does not serve the Gemini API (no file)."""
    with tool_loop(shim_daemon, tmp_path) as loop:
        result = _gemini(gemini_bin, loop, loop.fake.url)
        assert result.returncode != 0 or FINAL not in result.stdout
        assert not loop.target.exists()


# -- opencode (OpenAI chat completions through its openai-compatible provider) --------------------------------------


def _opencode(agent_bins: Path, loop: Loop, base_url: str) -> subprocess.CompletedProcess[str]:
    config = loop.home / "opencode.json"
    config.write_text(json.dumps({
        "$schema": "https://opencode.ai/config.json", "model": "llamashim/local", "autoupdate": False,
        "share": "disabled",
        "provider": {"llamashim": {"npm": "@ai-sdk/openai-compatible", "name": "llamashim",
                                   "options": {"baseURL": f"{base_url}/v1", "apiKey": "sk-test"},
                                   "models": {"local": {"name": "local", "tool_call": True}}}},
    }))
    env = loop.env(OPENCODE_CONFIG=str(config), OPENCODE_DISABLE_MODELS_FETCH="1", OPENCODE_DISABLE_AUTOUPDATE="1",
                   OPENCODE_DISABLE_LSP_DOWNLOAD="1", OPENCODE_DISABLE_DEFAULT_PLUGINS="1")
    return loop.run([str(agent_bins / "opencode"), "run", "--pure", "--auto", PROMPT], env)


def test_opencode_completes_the_tool_loop(agent_bins: Path, shim_daemon: StartShim, tmp_path: Path) -> None:
    """``opencode run`` (chat completions, streamed): its write tool called, the file exact, the final text — and
    llamashim's access log holds every chat request the upstream saw (the upstream serves chat completions itself,
    so a bypass would not fail)."""
    with tool_loop(shim_daemon, tmp_path) as loop:
        loop.assert_completed(_opencode(agent_bins, loop, loop.shim.url))
        loop.assert_through_shim()


# -- Qwen Code (OpenAI chat completions from the OPENAI_* environment) -----------------------------------------------


def _qwen(agent_bins: Path, loop: Loop, base_url: str) -> subprocess.CompletedProcess[str]:
    settings = loop.home / ".qwen" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False},
                                    "general": {"enableAutoUpdate": False}}))
    env = loop.env(OPENAI_BASE_URL=f"{base_url}/v1", OPENAI_API_KEY="sk-test", OPENAI_MODEL="local",
                   QWEN_CODE_SUPPRESS_YOLO_WARNING="1")
    return loop.run([str(agent_bins / "qwen"), "--auth-type", "openai", "--yolo", "-p", PROMPT], env)


def test_qwen_code_completes_the_tool_loop(agent_bins: Path, shim_daemon: StartShim, tmp_path: Path) -> None:
    """``qwen -p --yolo`` (chat completions, streamed): write_file called, the file exact, the final text — and
    llamashim's access log holds every chat request the upstream saw (the upstream serves chat completions itself)."""
    with tool_loop(shim_daemon, tmp_path) as loop:
        loop.assert_completed(_qwen(agent_bins, loop, loop.shim.url))
        loop.assert_through_shim()


# -- Copilot CLI, bring your own model (chat completions, or Responses over HTTP), offline: no GitHub sign-in -------


def _copilot(agent_bins: Path, loop: Loop, base_url: str, wire_api: str, **extra: str
             ) -> subprocess.CompletedProcess[str]:
    env = loop.env(COPILOT_OFFLINE="true", COPILOT_AUTO_UPDATE="false", COPILOT_PROVIDER_BASE_URL=f"{base_url}/v1",
                   COPILOT_PROVIDER_API_KEY="sk-test", COPILOT_PROVIDER_WIRE_API=wire_api, COPILOT_MODEL="local",
                   **extra)
    return loop.run([str(agent_bins / "copilot"), "-p", PROMPT, "--allow-all-tools", "--disable-client-telemetry",
                     "--silent"], env)


def test_copilot_byok_completes_the_tool_loop(agent_bins: Path, shim_daemon: StartShim, tmp_path: Path) -> None:
    """``copilot -p`` with COPILOT_PROVIDER_BASE_URL (chat completions, streamed): create called, the file exact, the
    final text — and llamashim's access log holds every chat request the upstream saw (the upstream serves chat
    completions itself)."""
    with tool_loop(shim_daemon, tmp_path) as loop:
        loop.assert_completed(_copilot(agent_bins, loop, loop.shim.url, "completions"))
        loop.assert_through_shim()


def test_copilot_byok_responses_completes_the_tool_loop(agent_bins: Path, shim_daemon: StartShim,
                                                       tmp_path: Path) -> None:
    """``copilot -p`` with COPILOT_PROVIDER_WIRE_API=responses (Responses over HTTP, streamed): the file exact, the
    final text, every upstream chat request a Responses request at llamashim."""
    with tool_loop(shim_daemon, tmp_path) as loop:
        loop.assert_completed(_copilot(agent_bins, loop, loop.shim.url, "responses"))
        loop.assert_through_shim("/v1/responses", "responses")


def test_copilot_byok_over_a_websocket_completes_the_tool_loop(agent_bins: Path, shim_daemon: StartShim,
                                                               tmp_path: Path) -> None:
    """``copilot -p`` with COPILOT_PROVIDER_TRANSPORT=websockets (Responses over WebSocket): the turns go over an
    upgraded connection (``GET /v1/responses 101``, no ``POST /v1/responses``), the file exact, the final text."""
    with tool_loop(shim_daemon, tmp_path) as loop:
        loop.assert_completed(_copilot(agent_bins, loop, loop.shim.url, "responses",
                                       COPILOT_PROVIDER_TRANSPORT="websockets"))
        log = loop.shim.log()
        assert "GET /v1/responses 101 " in log and "POST /v1/responses " not in log, log[-3000:]


def test_copilot_byok_responses_fails_against_the_upstream_itself(agent_bins: Path, shim_daemon: StartShim,
                                                                  tmp_path: Path) -> None:
    """The Responses run pointed straight at the upstream fails: it does not serve the Responses API (no file)."""
    with tool_loop(shim_daemon, tmp_path) as loop:
        loop.assert_bypass_failed(_copilot(agent_bins, loop, loop.fake.url, "responses"))


# -- Continue's cn (OpenAI chat completions from a config.yaml) ------------------------------------------------------


def _cn(agent_bins: Path, loop: Loop, base_url: str) -> subprocess.CompletedProcess[str]:
    config = loop.home / "continue.yaml"
    config.write_text(
        "name: llamashim\nversion: 1.0.0\nschema: v1\nmodels:\n  - name: local\n    provider: openai\n"
        f"    model: local\n    apiBase: {base_url}/v1\n    apiKey: sk-test\n    roles: [chat, edit, apply]\n"
        "    capabilities: [tool_use]\n"
    )
    env = loop.env(CONTINUE_CLI_ENABLE_TELEMETRY="0", CONTINUE_METRICS_ENABLED="0")
    return loop.run([str(agent_bins / "cn"), "--config", str(config), "--auto", "-p", PROMPT], env)


def test_continue_cn_completes_the_tool_loop(agent_bins: Path, shim_daemon: StartShim, tmp_path: Path) -> None:
    """``cn -p --auto`` (chat completions, streamed): its Bash tool called, the file exact, the final text — and
    llamashim's access log holds every chat request the upstream saw (the upstream serves chat completions itself)."""
    with tool_loop(shim_daemon, tmp_path) as loop:
        loop.assert_completed(_cn(agent_bins, loop, loop.shim.url))
        loop.assert_through_shim()


# -- pi (OpenAI chat completions from ~/.pi/agent/models.json) --------------------------------------------------------


def _pi(agent_bins: Path, loop: Loop, base_url: str) -> subprocess.CompletedProcess[str]:
    models = loop.home / ".pi" / "agent" / "models.json"
    models.parent.mkdir(parents=True)
    models.write_text(json.dumps({"providers": {"llamashim": {
        "baseUrl": f"{base_url}/v1", "api": "openai-completions", "apiKey": "sk-test", "models": [{"id": "local"}]}}}))
    return loop.run([str(agent_bins / "pi"), "--offline", "--provider", "llamashim", "--model", "local",
                     "--no-session", "-p", PROMPT], loop.env(PI_OFFLINE="1"))


def test_pi_completes_the_tool_loop(agent_bins: Path, shim_daemon: StartShim, tmp_path: Path) -> None:
    """``pi -p`` (chat completions, streamed): its write tool called, the file exact, the final text — and llamashim's
    access log holds every chat request the upstream saw (the upstream serves chat completions itself)."""
    with tool_loop(shim_daemon, tmp_path) as loop:
        loop.assert_completed(_pi(agent_bins, loop, loop.shim.url))
        loop.assert_through_shim()


# -- Cline CLI (OpenAI chat completions through its openai-compatible provider) --------------------------------------


def _cline(agent_bins: Path, loop: Loop, base_url: str) -> subprocess.CompletedProcess[str]:
    settings = loop.home / ".cline" / "data" / "settings"
    settings.mkdir(parents=True)
    (settings / "global-settings.json").write_text(json.dumps({"telemetryOptOut": True, "autoUpdateEnabled": False}))
    # the local backend: without it, cline starts a detached hub daemon that outlives the run
    env = loop.env(CLINE_NO_AUTO_UPDATE="1", CLINE_SESSION_BACKEND_MODE="local")
    auth = loop.run([str(agent_bins / "cline"), "auth", "-p", "openai", "-k", "sk-test", "-m", "local",
                     "-b", f"{base_url}/v1"], env)
    assert auth.returncode == 0, (auth.stdout, auth.stderr)
    return loop.run([str(agent_bins / "cline"), "--auto-approve", "true", PROMPT], env)


def test_cline_completes_the_tool_loop(agent_bins: Path, shim_daemon: StartShim, tmp_path: Path) -> None:
    """``cline "…"`` (act mode, auto-approve; chat completions, streamed): its editor tool creates the file, exact, the
    final text — and llamashim's access log holds every chat request the upstream saw (the upstream serves chat
    completions itself)."""
    with tool_loop(shim_daemon, tmp_path) as loop:
        loop.assert_completed(_cline(agent_bins, loop, loop.shim.url))
        loop.assert_through_shim()

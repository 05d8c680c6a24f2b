"""End-to-end: Claude Code against a small local window compacts before it overflows, and goes on.

Claude Code decides to compact from its last answer's usage against the window it assumes (200k for a Claude
model), before each request (/work/notes/compaction.md); 2.1.328 does so ahead of time for a Claude model only with
an auto-compact window set (``CLAUDE_CODE_AUTO_COMPACT_WINDOW``, at least 100k: it cannot say 50k). The proof is a
three-turn session (``claude -p``, then ``claude -p --continue`` twice) in front of the project's fake llama-server,
which reports each request's size as its prompt tokens (``--count-prompt 4``: a token every 4 characters, about what
Claude Code estimates) and a per-slot window (``--n-ctx``) that the first two turns (long pasted texts) fill to 88%.
llamashim reports that usage scaled to 200k (``anthropic.context_scaling``, on by default), so the third turn begins
with Claude Code's compaction request (its summary prompt; it summarises the turns before the last), which still fits,
then answers. Without the scaling Claude Code sees a quarter of its 200k used and sends the third turn as it is.
(The fake's answer has no ``<summary>`` block: Claude Code asks once more, then goes on without the summary.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from llamashim import jsonutil
from tests.e2e.daemon import Daemon, StartShim, running_fake

SLOW = float(os.environ.get("LLAMASHIM_E2E_SLOW") or 1)
TIMEOUT = int(300 * SLOW)
SUMMARY = "Your task is to create a detailed summary of"  # Claude Code's compaction prompt (cli.js dws/uws/cws)
CHARS = 4  # characters per token the fake counts
FILL = 0.88  # the first turn's share of the window: above Claude Code's threshold (83.5%), below a full window
ANSWER = "tok0 tok1 tok2 tok3"
PASTED = "Remember this text. " + "The quick brown fox jumps over the lazy dog near the river bank. " * 700


def _bodies(d: Daemon) -> list[dict[str, Any]]:
    """The chat bodies llamashim sent upstream, from its ``--verbose`` log (``... request: {json}``)."""
    return [json.loads(line.partition("] request: ")[2]) for line in d.log().splitlines() if "] request: " in line]


def _size(body: dict[str, Any]) -> int:
    """The characters of a body as llamashim sends it (the fake's count, but for the progress field)."""
    return len(jsonutil.dumps(body).decode())


def _last_user_text(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    content = users[-1].get("content") if users else ""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def _claude(bins: Path, home: Path, work: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TERM": "dumb",
           "ANTHROPIC_BASE_URL": url, "ANTHROPIC_AUTH_TOKEN": "x", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           "DISABLE_TELEMETRY": "1", "MAX_THINKING_TOKENS": "0", "CLAUDE_CODE_AUTO_COMPACT_WINDOW": "200000"}
    return subprocess.run([str(bins / "claude"), "-p", *args, "--model", "claude-sonnet-4-5"], cwd=work, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT)


def _scratch(tmp: Path, name: str) -> tuple[Path, Path]:
    home, work = tmp / name / "home", tmp / name / "work"
    home.mkdir(parents=True)
    work.mkdir(parents=True)
    return home, work


def _first_turn_size(agent_bins: Path, shim_daemon: StartShim, tmp_path: Path) -> int:
    """The tokens of Claude Code's second main request (the one offering tools) after two pasted texts, measured
    in a throw-away session: the window the real session runs against is chosen from it."""
    home, work = _scratch(tmp_path, "measure")
    with running_fake("--count-prompt", str(CHARS), "--n-ctx", "10000000", tmp=tmp_path) as fake, \
            shim_daemon(fake.url, "--verbose") as d:
        for args in ((PASTED,), ("--continue", PASTED)):
            result = _claude(agent_bins, home, work, d.url, *args)
            assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
        sizes = [_size(b) for b in _bodies(d) if b.get("tools")]
    return max(sizes) // CHARS


def _two_turns(agent_bins: Path, shim_daemon: StartShim, tmp_path: Path, n_ctx: int, scaling: bool
               ) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]], list[str]]:
    home, work = _scratch(tmp_path, f"session-{scaling}")
    sections = {"anthropic": {"context_scaling": scaling}}
    with running_fake("--count-prompt", str(CHARS), "--n-ctx", str(n_ctx), tmp=tmp_path) as fake, \
            shim_daemon(fake.url, "--verbose", sections=sections) as d:
        for args in ((PASTED,), ("--continue", PASTED)):
            turn = _claude(agent_bins, home, work, d.url, *args)
            assert turn.returncode == 0 and ANSWER in turn.stdout, (turn.stdout[-2000:], turn.stderr[-4000:])
        before = len(_bodies(d))
        second = _claude(agent_bins, home, work, d.url, "--continue", "Say OK again")
        bodies = _bodies(d)[before:]
        statuses = re.findall(r"\] POST /v1/messages (\S+) ", d.log())
    return second, bodies, statuses


def test_claude_code_compacts_before_a_small_window_overflows(
    agent_bins: Path, shim_daemon: StartShim, tmp_path: Path
) -> None:
    """The third turn of a session that filled 88% of the local window starts with Claude Code's compaction
    request (its summary prompt), which fits the window, then answers the new prompt: exit 0, every
    ``POST /v1/messages`` 200, nothing sent upstream larger than the window."""
    n_ctx = int(_first_turn_size(agent_bins, shim_daemon, tmp_path) / FILL)
    second, bodies, statuses = _two_turns(agent_bins, shim_daemon, tmp_path, n_ctx, scaling=True)
    assert second.returncode == 0 and ANSWER in second.stdout, (second.stdout[-2000:], second.stderr[-4000:])
    texts = [_last_user_text(b) for b in bodies]
    compactions = [i for i, text in enumerate(texts) if SUMMARY in text]
    assert compactions, [t[:200] for t in texts]
    assert any("Say OK again" in text for text in texts[compactions[0] + 1:]), [t[:200] for t in texts]
    assert all(_size(b) // CHARS < n_ctx for b in bodies), ([_size(b) // CHARS for b in bodies], n_ctx)
    assert statuses and set(statuses) == {"200"}, statuses

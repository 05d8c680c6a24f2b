"""Record → replay on a real exchange: llamashim with ``log.record`` in front of the real llama-server writes the
exchange of an ``anthropic`` SDK stream and an ``openai`` SDK reply, and ``llamashim replay FILE`` (the installed
command) plays each back through llamashim with no difference in what the client gets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import anthropic
import openai

from tests.e2e.daemon import StartShim


def test_real_exchanges_replay_without_difference(real_llama: Any, shim_daemon: StartShim, tmp_path: Path) -> None:
    """Two real exchanges (a streamed Anthropic message, a non-streamed OpenAI chat) are recorded, hold no key,
    and replay with exit status 0 and "the same as recorded"."""
    folder = tmp_path / "recordings"
    with shim_daemon(real_llama.url, sections={"log": {"record": str(folder)}}) as d:
        client = anthropic.Anthropic(base_url=d.url, api_key="sk-recorded-key", timeout=120, max_retries=0)
        with client.messages.stream(model="any", max_tokens=8, messages=[{"role": "user", "content": "Hi"}]) as s:
            assert s.get_final_message().content
        chat = openai.OpenAI(base_url=d.url + "/v1", api_key="sk-recorded-key", timeout=120, max_retries=0)
        assert chat.chat.completions.create(model="any", max_tokens=8,
                                            messages=[{"role": "user", "content": "Hi"}]).choices
    files = sorted(folder.glob("*.json"))
    assert len(files) == 2
    for path in files:
        assert "sk-recorded-key" not in path.read_text()
        run = subprocess.run([str(Path(sys.executable).with_name("llamashim")), "replay", str(path)],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "the client's view is the same as recorded" in run.stdout

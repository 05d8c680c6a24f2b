"""Record and replay (``log.record``, ``llamashim replay FILE``): each exchange is written without keys, and a
recording played through llamashim again shows no difference — or the difference a change makes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llamashim.cli import main
from llamashim.replay import replay
from tests.integration.support import ShimFixture

KEY = "sk-secret-key-123456"


def record_one(shims: ShimFixture, tmp_path: Path, stream: bool) -> Any:
    """One chat through the openai SDK with log.record on; the recording it wrote."""
    folder = tmp_path / f"rec-{stream}"
    env = shims.start(settings={"log": {"record": str(folder)}, "auth": {"api_keys": [KEY]}})
    env.fake.reasoning = ["Let me think."]
    client = env.openai(KEY)
    ask = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
    if stream:
        with client.chat.completions.stream(**ask) as s:  # type: ignore[arg-type]
            s.get_final_completion()
    else:
        client.chat.completions.create(**ask)  # type: ignore[call-overload]
    [path] = folder.glob("*.json")
    assert KEY not in path.read_text()  # never a key
    return json.loads(path.read_text())


def test_a_recording_holds_both_sides_and_no_key(shims: ShimFixture, tmp_path: Path) -> None:
    """A streamed exchange's recording has the client's request, the upstream request with the answer's pieces,
    and the client's stream; no Authorization header anywhere."""
    record = record_one(shims, tmp_path, stream=True)
    assert record["request"]["method"] == "POST" and record["request"]["path"] == "/v1/chat/completions"
    assert all(k.lower() != "authorization" for k, _ in record["request"]["headers"])
    [upstream] = record["upstream"]
    assert upstream["path"] == "/v1/chat/completions" and upstream["status"] == 200
    assert json.loads(upstream["body"])["stream"] is True and len(upstream["chunks"]) > 3
    assert "Hello" in record["response"]["body"] and record["response"]["body"].endswith("data: [DONE]\n\n")


def test_replay_of_an_unchanged_daemon_shows_no_difference(shims: ShimFixture, tmp_path: Path) -> None:
    """Streamed and not, the replayed answer equals the recorded one (ids and times masked), and llamashim asked
    the upstream the same; ``llamashim replay FILE`` exits 0."""
    for stream in (True, False):
        record = record_one(shims, tmp_path, stream)
        result = replay(record)  # (no key: the recording has none, and the replayed daemon asks for none)
        assert result.status == 200 and result.client_diff() == "" and result.upstream_diff() == ""
    [path] = (tmp_path / "rec-True").glob("*.json")
    assert main(["replay", str(path)]) == 0


def test_replay_shows_what_a_change_does_to_the_client(shims: ShimFixture, tmp_path: Path) -> None:
    """Replayed with thinking.mode off, the recorded answer's reasoning is gone from what the client gets: the
    diff names it."""
    record = record_one(shims, tmp_path, stream=False)
    result = replay(record, {"thinking": {"mode": "off"}})
    assert result.status == 200
    removed = [line for line in result.client_diff().splitlines() if line.startswith("-") and "Let me think." in line]
    assert removed, result.client_diff()

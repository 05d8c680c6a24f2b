"""The routing target of issue 24 at its stated size, in CI: two llamashim instances with the same two upstreams,
20 conversations x 5 turns, each conversation's turns alternating between the instances (``bench.fleet``'s
stickiness run; the upstreams are the project's fake llama-server, so it takes seconds)."""

from __future__ import annotations

from pathlib import Path

from bench.fleet import stickiness


def test_every_conversation_keeps_one_upstream_through_two_instances(tmp_path: Path) -> None:
    """100 turns alternating between two instances that share nothing: each of the 20 conversations is served by
    one upstream throughout, every turn's upstream is known from the access lines, and both upstreams serve."""
    run = stickiness(tmp_path, conversations=20, turns=5)
    assert len(run.turns) == 100
    assert {t.instance for t in run.turns} == {0, 1}
    homes = run.homes()
    assert len(homes) == 20 and all(len(upstreams) == 1 for upstreams in homes.values()), homes
    assert run.upstreams_used() == ["f0", "f1"], homes

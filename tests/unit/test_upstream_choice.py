"""Choosing an upstream (pure): least busy, idle slots, affinity, spill-over, down/loading, conversation keys."""

from __future__ import annotations

from llamashim.upstream.choice import AffinityMap, Load, choose, conversation_key


def pick(*loads: Load, affine: str | None = None) -> str | None:
    choice = choose(loads, affine)
    return choice.name if choice is not None else None


def test_least_busy_by_in_flight() -> None:
    """The upstream with the fewest requests in flight wins, whatever the order."""
    assert pick(Load("a", in_flight=3), Load("b", in_flight=1), Load("c", in_flight=2)) == "b"
    choice = choose([Load("a", in_flight=1), Load("b", in_flight=0)])
    assert choice is not None and "least busy" in choice.reason


def test_idle_slots_break_ties_then_configuration_order() -> None:
    """Equal in-flight counts: more idle slots wins; equal again (or unknown): the first configured."""
    assert pick(Load("a", in_flight=1, idle_slots=1), Load("b", in_flight=1, idle_slots=3)) == "b"
    assert pick(Load("a", in_flight=1, idle_slots=2), Load("b", in_flight=1, idle_slots=2)) == "a"
    assert pick(Load("a"), Load("b")) == "a"
    assert pick(Load("a", in_flight=0, idle_slots=0), Load("b", in_flight=1, idle_slots=4)) == "a"  # in flight first


def test_affinity_is_kept_while_not_full() -> None:
    """The conversation's upstream is chosen even when busier than another, as long as it has room."""
    loads = (Load("a", in_flight=0), Load("b", in_flight=3, max_concurrent=4))
    choice = choose(loads, "b")
    assert choice is not None and choice.name == "b" and "affinity" in choice.reason
    assert pick(Load("a"), Load("b", in_flight=5), affine="b") == "b"  # no limit known: never full


def test_spill_over_when_the_affine_upstream_is_full() -> None:
    """A full affine upstream (max_concurrent, else total_slots) spills the request to the least busy other."""
    choice = choose([Load("a", in_flight=2, max_concurrent=2), Load("b", in_flight=1)], "a")
    assert choice is not None and choice.name == "b" and "a is full" in choice.reason
    assert pick(Load("a", in_flight=4, total_slots=4), Load("b", in_flight=2, total_slots=4), affine="a") == "b"
    # max_concurrent wins over total_slots when both are known
    assert pick(Load("a", in_flight=2, max_concurrent=8, total_slots=2), Load("b"), affine="a") == "a"


def test_full_upstreams_come_last_for_least_busy() -> None:
    """An upstream at its limit is chosen only when every other is full too."""
    assert pick(Load("a", in_flight=1, max_concurrent=1), Load("b", in_flight=5)) == "b"
    assert pick(Load("a", in_flight=2, max_concurrent=2), Load("b", in_flight=3, max_concurrent=3)) == "a"
    assert Load("a", in_flight=2, total_slots=2).full and not Load("a", in_flight=9).full


def test_down_and_loading_upstreams_are_skipped() -> None:
    """Down, loading and not-ready upstreams are not chosen while another is usable, affine or not."""
    assert pick(Load("a", up=False), Load("b", in_flight=9)) == "b"
    assert pick(Load("a", loading=True), Load("b", in_flight=9)) == "b"
    assert pick(Load("a", ready=False), Load("b", in_flight=9)) == "b"
    assert pick(Load("a", up=False), Load("b", in_flight=9), affine="a") == "b"
    choice = choose([Load("a", up=False), Load("b")])
    assert choice is not None and choice.reason == "the only upstream up for the model"


def test_all_down_falls_back_to_a_ready_one() -> None:
    """Every upstream down or loading: the first ready one is tried anyway (it may be back)."""
    choice = choose([Load("a", ready=False), Load("b", up=False), Load("c", loading=True)])
    assert choice is not None and choice.name == "b" and "trying it anyway" in choice.reason


def test_none_ready_is_no_choice() -> None:
    """No candidate ready at all (supervised servers still starting), or none at all: ``None``."""
    assert choose([Load("a", ready=False), Load("b", ready=False, up=False)]) is None
    assert choose([]) is None


def conversation(*turns: str, system: str | None = "be brief") -> list[dict[str, str]]:
    """Messages alternating user/assistant from ``turns``, after an optional system prompt."""
    out = [{"role": "system", "content": system}] if system is not None else []
    for i, text in enumerate(turns):
        out.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return out


def test_conversation_key_is_stable_across_turns() -> None:
    """The turns of one conversation share a key: the model, system prompt and first user message."""
    first = conversation_key("m", conversation("hi"))
    assert first is not None
    assert conversation_key("m", conversation("hi", "hello!", "and then?")) == first
    assert conversation_key("m", conversation("hi", "hello!", "and then?", "more", "again")) == first


def test_conversation_key_differs_for_different_conversations() -> None:
    """Another first user turn, system prompt or model is another conversation; no user turn is no key."""
    key = conversation_key("m", conversation("hi"))
    assert conversation_key("m", conversation("bye")) != key
    assert conversation_key("m", conversation("hi", system="be verbose")) != key
    assert conversation_key("m", conversation("hi", system=None)) != key
    assert conversation_key("other", conversation("hi")) != key
    assert conversation_key("m", [{"role": "system", "content": "s"}]) is None
    assert conversation_key("m", None) is None and conversation_key("m", "hi") is None


def test_conversation_key_with_structured_content() -> None:
    """Content given as parts is keyed like text: stable across turns, different for different parts."""
    parts = [{"type": "text", "text": "look"}]
    key = conversation_key("m", [{"role": "user", "content": parts}])
    assert key == conversation_key("m", [{"role": "user", "content": parts}, {"role": "assistant", "content": "ok"}])
    assert key != conversation_key("m", [{"role": "user", "content": [{"type": "text", "text": "see"}]}])


def test_affinity_map_is_an_lru() -> None:
    """The newest ``limit`` conversations are kept; reading one makes it newest."""
    m = AffinityMap(limit=2)
    m.put("k1", "a")
    m.put("k2", "b")
    assert m.get("k1") == "a"  # k1 is now the newest
    m.put("k3", "a")  # evicts k2, the oldest
    assert m.get("k2") is None and m.get("k1") == "a" and m.get("k3") == "a"
    m.put("k1", "b")  # re-pointed
    assert m.get("k1") == "b"
    m.put(None, "a")
    assert m.get(None) is None


def test_affinity_map_forget_drops_one_upstream() -> None:
    """Forgetting an upstream (it went down) drops its conversations only."""
    m = AffinityMap()
    m.put("k1", "a")
    m.put("k2", "b")
    m.put("k3", "a")
    m.forget("a")
    assert (m.get("k1"), m.get("k2"), m.get("k3")) == (None, "b", None)

"""Choosing an upstream (pure): least busy, idle slots, rendezvous affinity, spill-over, down/loading, conversation
keys."""

from __future__ import annotations

from collections import Counter

from llamashim.upstream.choice import Load, choose, conversation_key, upstream_tag, weight


def pick(*loads: Load, key: str | None = None) -> str | None:
    choice = choose(loads, key)
    return choice.name if choice is not None else None


def order(key: str, *names: str) -> list[str]:
    """The conversation's rendezvous order over ``names``."""
    return sorted(names, key=lambda n: weight(key, n), reverse=True)


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


def test_a_conversation_goes_to_the_first_in_its_order_while_it_has_room() -> None:
    """The first upstream in the conversation's rendezvous order is chosen even when busier than another, as long as
    it has room; the reason says affinity."""
    home, other = order("k1", "a", "b")
    loads = (Load(other, in_flight=0), Load(home, in_flight=3, max_concurrent=4))
    choice = choose(loads, "k1")
    assert choice is not None and choice.name == home and "affinity" in choice.reason
    assert pick(Load(other), Load(home, in_flight=5), key="k1") == home  # no limit known: never full


def test_the_order_depends_on_the_key_and_names_only() -> None:
    """Same key and names, any configuration order or load: the same choice; different keys spread over all."""
    names = ("u0", "u1", "u2", "u3")
    for k in ("k1", "k2", "k3"):
        assert pick(*(Load(n) for n in names), key=k) == pick(*(Load(n) for n in reversed(names)), key=k)
    homes = Counter(pick(*(Load(n) for n in names), key=f"conv{i}") for i in range(400))
    assert set(homes) == set(names) and min(homes.values()) > 60, homes


def test_an_upstream_joining_or_leaving_moves_only_its_share() -> None:
    """Adding a fifth upstream moves only the conversations it now heads; removing one moves only its own."""
    four, five = ("u0", "u1", "u2", "u3"), ("u0", "u1", "u2", "u3", "u4")
    keys = [f"conv{i}" for i in range(500)]
    before = {k: order(k, *four)[0] for k in keys}
    after = {k: order(k, *five)[0] for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved and all(after[k] == "u4" for k in moved) and len(moved) < 0.3 * len(keys)
    three = {k: order(k, "u0", "u1", "u2")[0] for k in keys}
    assert all(three[k] == before[k] for k in keys if before[k] != "u3")


def test_spill_over_to_the_next_in_the_conversations_order_when_full_or_down() -> None:
    """A full (max_concurrent, else total_slots) or down first upstream: the next in the conversation's order, not the
    least busy; every upstream full: the least busy."""
    first, second, third = order("k1", "a", "b", "c")
    choice = choose([Load(first, in_flight=2, max_concurrent=2), Load(second, in_flight=5), Load(third)], "k1")
    assert choice is not None and choice.name == second and f"{first} full or down" in choice.reason
    assert pick(Load(first, in_flight=4, total_slots=4), Load(second), Load(third), key="k1") == second
    assert pick(Load(first, up=False), Load(second, loading=True), Load(third, in_flight=3), key="k1") == third
    # max_concurrent wins over total_slots when both are known
    assert pick(Load(first, in_flight=2, max_concurrent=8, total_slots=2), Load(second), key="k1") == first
    full = [Load(n, in_flight=i + 1, max_concurrent=i + 1) for i, n in enumerate((first, second, third))]
    assert pick(*full, key="k1") == first  # all full: least busy


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
    assert pick(Load("a", up=False), Load("b", in_flight=9), key="k1") == "b"
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


def test_the_previous_responses_upstream_is_preferred_over_the_conversations_order() -> None:
    """A named previous upstream that serves the model, is up and has room wins over the conversation's first
    upstream and over a less busy one; the reason says so."""
    home, away = order("k1", "a", "b")
    choice = choose([Load(home), Load(away, in_flight=1, max_concurrent=2)], "k1", preferred=away)
    assert choice is not None and choice.name == away and "previous response" in choice.reason
    choice = choose([Load("a"), Load("b", in_flight=5)], None, preferred="b")
    assert choice is not None and choice.name == "b"


def test_the_previous_responses_upstream_is_ignored_when_down_full_or_not_a_candidate() -> None:
    """Down, loading, full, or not serving the model: the usual choice (the conversation's order, else the least
    busy), and the reason says why the previous upstream was not taken."""
    home, away = order("k1", "a", "b")
    down, full = "is down or loading", "is full"
    cases = [(down, Load(away, up=False)), (down, Load(away, loading=True)),
             (full, Load(away, in_flight=2, max_concurrent=2)), (full, Load(away, in_flight=4, total_slots=4))]
    for why, previous in cases:
        choice = choose([Load(home), previous], "k1", preferred=away)
        assert choice is not None and choice.name == home, why
        assert choice.reason == f"conversation affinity (its prompt cache); the previous response's upstream {away} " \
                                f"{why}"
    choice = choose([Load("a", in_flight=2), Load("b")], None, preferred="c")
    assert choice is not None and choice.name == "b" and choice.reason.endswith("upstream c does not serve the model")


def test_upstream_tags_are_short_stable_and_differ_by_name() -> None:
    """An upstream's tag: 8 hex digits of its name alone, the same every time, another for another name."""
    tag = upstream_tag("gpu-box-1")
    assert len(tag) == 8 and int(tag, 16) >= 0 and tag == upstream_tag("gpu-box-1")
    assert len({upstream_tag(f"u{i}") for i in range(100)}) == 100


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

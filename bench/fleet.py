"""The fleet's prompt-cache hit rate against one llama-server's, on the same multi-turn conversations.

    python -m bench.fleet                         # 16 conversations x 5 turns, then the 20 x 5 stickiness run
    python -m bench.fleet --conversations 8 --turns 4 --no-stickiness --json out.json

Real llama-servers with the tiny model ``llamashim provision`` caches (SmolLM2-135M), started by the e2e tier's own
helper. Three runs, all sequential and with the same interleaving (turn 1 of every conversation, then turn 2 of every
conversation, ...; temperature 0, ``--max-tokens`` per answer, each turn appending the model's answer and a new
user message to a shared system prompt of ~250 tokens and a distinct first user message of ~300, a question and an
access-log excerpt of its own):

* **fleet** — four llama-servers (``-np 1`` each: one slot) behind *two* llamashim instances with the same
  ``upstreams:``; turn ``t`` of conversation ``c`` goes to instance ``(c + t) % 2``, so every conversation alternates
  between the instances and only rendezvous routing (nothing shared) can keep it on one upstream;
* **single** — one llama-server with ``-np 4`` (the same four slots in total, the same context per slot, the same
  host-memory prompt cache setting) behind one llamashim: the cache of a box that sees every turn;
* **stickiness** — two instances in front of two upstreams, ``--stick-conversations`` x ``--stick-turns`` sent
  alternately as above: every conversation's turns on one upstream, and both upstreams used. The upstreams are the
  project's fake llama-server (where a turn goes does not depend on the upstream; real ones would add minutes).

The hit rate is ``cached / (cached + processed)`` from the instances' ``/metrics``
(``llamashim_prompt_tokens_total{upstream,model,source}``, llama-server's ``timings.cache_n`` and ``prompt_n``),
cross-checked against the answers' ``usage.prompt_tokens_details.cached_tokens``; which upstream served each turn
comes from the access lines (``upstream=`` and the request id).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.run import ROOT
from llamashim.testing.provision import RealLlamaPaths, provision
from tests.e2e.conftest import _llama_server
from tests.e2e.daemon import Daemon, running_daemon, running_fake

MODEL = "tiny"
SLOT_CTX = 2048  # tokens per slot: the longest conversation here stays under 1,000
SYSTEM = (
    "You are a careful assistant for a small software team. Answer in plain English, briefly, without markdown. "
    "The team writes Python services that run behind a reverse proxy on a few Linux machines. They value clear "
    "names, small functions, tests that pin one behaviour each, and commit messages that say why. When asked about "
    "a tool, say what it is for, one way to use it, and one mistake people make with it. When asked about a concept, "
    "give a one-sentence definition and a concrete example from web services. When you are not sure, say so rather "
    "than guess. Do not repeat the question. Do not apologise. Prefer the standard library and well-kept packages "
    "over hand-written plumbing. Keep every answer under eighty words unless the user asks for more. Remember what "
    "was said earlier in the conversation and build on it instead of starting over. If the user changes the "
    "subject, follow them. If a request is ambiguous, pick the most likely meaning and say which one you picked. "
    "Numbers: give units. Dates: use ISO 8601. Code: short snippets only, and only when they help. "
)
TOPICS = ("connection pooling", "rate limiting", "consistent hashing", "write-ahead logging", "backpressure",
          "idempotency keys", "health checks", "graceful shutdown", "structured logging", "circuit breakers",
          "exponential back-off", "prompt caching", "load balancing", "TLS termination", "database migrations",
          "feature flags", "blue-green deployment", "request tracing", "memory leaks", "file descriptor limits",
          "Unicode normalisation", "time zones", "retries", "timeouts")
SERVICES = ("web", "db", "cache", "queue", "auth")
# llama-server (this build) saves a slot's prompt to its host-memory prompt cache (--cache-ram, 8 GiB by default)
# and looks for a better one there only when the new request would keep less than half of the slot's prompt: the
# distinct part of a conversation must outweigh the shared system prompt, or one server alone could only ever reuse
# the system prompt when conversations take turns (and so could the fleet: nothing would be measured)
EXCERPT_LINES = 12
FOLLOW_UPS = ("Give me a concrete example.", "What is the most common mistake with it?",
              "How would I test that?", "Summarise what we said in one sentence.", "What should I read next?")


def first_message(c: int, excerpt: bool = True) -> str:
    """Conversation ``c``'s first user message: distinct from every other's, and with ``excerpt`` longer than the
    shared system prompt (an access-log excerpt of its own: see :data:`EXCERPT_LINES`)."""
    topic = TOPICS[c % len(TOPICS)]
    question = f"Conversation {c}. I keep hearing about {topic}: why does it matter when there are several machines?"
    if not excerpt:
        return question
    rng = random.Random(c)
    lines = [f"{rng.choice(SERVICES)}-{rng.randrange(1, 9)} {rng.choice(('GET', 'POST', 'PUT'))} "
             f"/api/{rng.choice(('users', 'orders', 'items', 'carts'))}/{rng.randrange(1000, 9999)} "
             f"{rng.choice((200, 200, 200, 404, 500, 503))} {rng.randrange(3, 900)} ms" for _ in range(EXCERPT_LINES)]
    return question + " Here is an excerpt of our access log:\n" + "\n".join(lines) + "\nWhat stands out?"


@dataclass
class Turn:
    conversation: int
    turn: int
    instance: int
    request_id: str
    prompt_tokens: int = 0
    cached_tokens: int = 0
    upstream: str = ""
    answer: str = ""
    seconds: float = 0.0


@dataclass
class Run:
    name: str
    turns: list[Turn] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # upstream -> {cached, processed}
    seconds: float = 0.0

    def rate_from_metrics(self) -> float:
        cached = sum(m.get("cached", 0) for m in self.metrics.values())
        total = cached + sum(m.get("processed", 0) for m in self.metrics.values())
        return cached / total if total else float("nan")

    def rate_from_answers(self, first_turn: int = 0) -> float:
        turns = [t for t in self.turns if t.turn >= first_turn]
        total = sum(t.prompt_tokens for t in turns)
        return sum(min(t.cached_tokens, t.prompt_tokens) for t in turns) / total if total else float("nan")

    def homes(self) -> dict[int, set[str]]:
        out: dict[int, set[str]] = {}
        for t in self.turns:
            out.setdefault(t.conversation, set()).add(t.upstream)
        return out

    def stickiness(self) -> float:
        """The share of conversations whose turns were all served by one upstream."""
        homes = self.homes()
        return sum(len(u) == 1 for u in homes.values()) / len(homes) if homes else float("nan")

    def upstreams_used(self) -> list[str]:
        return sorted({t.upstream for t in self.turns})


def prompt_metrics(instances: list[Daemon]) -> dict[str, dict[str, float]]:
    """``llamashim_prompt_tokens_total`` summed over the instances, by upstream and source."""
    out: dict[str, dict[str, float]] = {}
    for d in instances:
        text = httpx.get(d.url + "/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "llamashim_prompt_tokens_total":
                    by_source = out.setdefault(s.labels["upstream"], {})
                    by_source[s.labels["source"]] = by_source.get(s.labels["source"], 0) + s.value
    return out


def served_by(instances: list[Daemon]) -> dict[str, str]:
    """request id -> upstream, from the instances' access lines."""
    pattern = re.compile(r"upstream=(\S+) upstream_ttfb=\S+ tokens=\S+ id=(\S+)")
    return {m.group(2): m.group(1) for d in instances for m in pattern.finditer(d.log())}


def replay(name: str, instances: list[Daemon], conversations: int, turns: int, max_tokens: int,
           excerpt: bool = True) -> Run:
    """Every conversation's turns, interleaved (turn t of each conversation before turn t + 1 of any), turn t of
    conversation c through instance (c + t) % len(instances)."""
    run = Run(name)
    history = {c: [{"role": "system", "content": SYSTEM}, {"role": "user", "content": first_message(c, excerpt)}]
               for c in range(conversations)}
    started = time.monotonic()
    with httpx.Client(timeout=300) as client:
        for t in range(turns):
            for c in range(conversations):
                turn = Turn(c, t, (c + t) % len(instances), f"{name}-{c}-{t}-{time.monotonic_ns()}")
                sent = time.monotonic()
                response = client.post(instances[turn.instance].url + "/v1/chat/completions", headers={
                    "X-Request-Id": turn.request_id}, json={"model": MODEL, "messages": history[c],
                                                            "max_tokens": max_tokens, "temperature": 0})
                response.raise_for_status()
                turn.seconds = time.monotonic() - sent
                body = response.json()
                usage = body.get("usage") or {}
                turn.prompt_tokens = usage.get("prompt_tokens", 0)
                turn.cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
                turn.answer = body["choices"][0]["message"].get("content") or ""
                history[c] += [{"role": "assistant", "content": turn.answer},
                               {"role": "user", "content": FOLLOW_UPS[t % len(FOLLOW_UPS)]}]
                run.turns.append(turn)
    run.seconds = time.monotonic() - started
    upstream_of = served_by(instances)
    for turn in run.turns:
        turn.upstream = upstream_of.get(turn.request_id, "?")
    run.metrics = prompt_metrics(instances)
    return run


@contextmanager
def shims(tmp: Path, name: str, upstreams: dict[str, str], count: int) -> Iterator[list[Daemon]]:
    """``count`` llamashim instances with the same ``upstreams:`` (name -> URL; each instance its own Responses store
    and log)."""
    config = tmp / f"{name}.yaml"
    config.write_text(yaml.safe_dump({"upstreams": [{"name": n, "url": url} for n, url in upstreams.items()]}))
    with ExitStack() as stack:
        instances = []
        for i in range(count):
            home = tmp / f"{name}-{i}"
            home.mkdir()
            instances.append(stack.enter_context(running_daemon(
                None, "--config", str(config), env={"STATE_DIRECTORY": str(home)}, tmp=home)))
        for d in instances:
            if len(upstreams) > 1:  # (with one upstream there is no choice to make, and no slots are read)
                wait_upstreams_known(d, len(upstreams))
        yield instances


def wait_upstreams_known(d: Daemon, count: int, deadline: float = 60) -> None:
    """Until the instance has read every upstream's slots (``llamashim_upstream_idle_slots`` for each): before that
    its choice has less to go on than in steady state."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        text = httpx.get(d.url + "/metrics", timeout=10).text
        if sum(line.startswith("llamashim_upstream_idle_slots{") for line in text.splitlines()) >= count:
            return
        time.sleep(0.2)  # polling a process's readiness, with a deadline
    raise TimeoutError(f"llamashim at {d.url} did not learn its {count} upstreams' slots in time")


def measure(args: argparse.Namespace, paths: RealLlamaPaths, tmp: Path) -> dict[str, Run]:
    np_fleet, np_single = args.np, 4 * args.np
    runs: dict[str, Run] = {}
    with ExitStack() as stack:
        fleet = {f"u{i}": stack.enter_context(_llama_server(
            paths, tmp / f"u{i}.log", "-c", str(SLOT_CTX * np_fleet), "-np", str(np_fleet), "--alias", MODEL))
            for i in range(4)}
        single = {"single": stack.enter_context(_llama_server(
            paths, tmp / "single.log", "-c", str(SLOT_CTX * np_single), "-np", str(np_single), "--alias", MODEL))}
        with shims(tmp, "fleet", {n: u.url for n, u in fleet.items()}, 2) as instances:
            runs["fleet"] = replay("fleet", instances, args.conversations, args.turns, args.max_tokens)
            print(line(runs["fleet"]), flush=True)
        with shims(tmp, "single", {n: u.url for n, u in single.items()}, 1) as instances:
            runs["single"] = replay("single", instances, args.conversations, args.turns, args.max_tokens)
            print(line(runs["single"]), flush=True)
    if args.stickiness:
        runs["stickiness"] = stickiness(tmp, args.stick_conversations, args.stick_turns)
        print(line(runs["stickiness"]), flush=True)
    return runs


def stickiness(tmp: Path, conversations: int, turns: int) -> Run:
    """The routing target alone: two instances in front of two of the project's fake llama-servers (instant
    answers; which upstream a turn lands on does not depend on what the upstream is), turns alternating between the
    instances."""
    with ExitStack() as stack:
        fakes = {f"f{i}": stack.enter_context(running_fake(tmp=tmp)).url for i in range(2)}
        with shims(tmp, "stick", fakes, 2) as instances:
            return replay("stickiness", instances, conversations, turns, 4, excerpt=False)


def line(run: Run) -> str:
    spread: dict[str, int] = {}
    for upstreams in run.homes().values():
        for u in upstreams:
            spread[u] = spread.get(u, 0) + 1
    rates = "" if run.name == "stickiness" else (  # (the fakes' token counts mean nothing)
        f"hit rate {run.rate_from_metrics():.1%} (/metrics), {run.rate_from_answers():.1%} (answers), "
        f"turns 2+ {run.rate_from_answers(1):.1%}; ")
    return (f"{run.name}: {len(run.turns)} turns in {run.seconds:.0f} s; {rates}conversations on one upstream "
            f"{run.stickiness():.0%}; conversations per upstream: "
            + ", ".join(f"{u} {n}" for u, n in sorted(spread.items())))


def report(runs: dict[str, Run]) -> str:
    fleet, single = runs["fleet"], runs["single"]
    ratio = fleet.rate_from_metrics() / single.rate_from_metrics()
    out = ["", *(line(r) for r in runs.values())]
    out.append("per upstream (fleet, /metrics): " + "; ".join(
        f"{u} {m.get('cached', 0):.0f} cached / {m.get('cached', 0) + m.get('processed', 0):.0f}"
        for u, m in sorted(fleet.metrics.items())))
    same = sum(a.answer == b.answer for a, b in zip(fleet.turns, single.turns, strict=True))
    out.append(f"answers identical in both runs: {same} of {len(fleet.turns)}")
    out.append(f"fleet / single hit rate: {ratio:.3f} (target >= 0.90)")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=16)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--np", type=int, default=1, help="slots per fleet llama-server (the single one has 4x)")
    parser.add_argument("--stick-conversations", type=int, default=20)
    parser.add_argument("--stick-turns", type=int, default=5)
    parser.add_argument("--no-stickiness", dest="stickiness", action="store_false")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    paths = provision()
    out_dir = ROOT / "bench" / "results" / f"fleet-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True)
    runs = measure(args, paths, out_dir)
    print(report(runs))
    if args.json:
        args.json.write_text(json.dumps({n: {**asdict(r), "rate": r.rate_from_metrics()} for n, r in runs.items()},
                                        indent=1, default=sorted))
    fleet, single = runs["fleet"], runs["single"]
    ok = fleet.rate_from_metrics() >= 0.9 * single.rate_from_metrics() and fleet.stickiness() == 1.0
    if "stickiness" in runs:
        ok = ok and runs["stickiness"].stickiness() == 1.0 and len(runs["stickiness"].upstreams_used()) == 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""``llamashim doctor``'s judgement: facts from real llama-server answers, each gap with its flag, client verdicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llamashim.ops.doctor import tool_request
from llamashim.ops.doctor_report import (
    FAIL,
    INFO,
    OK,
    WARN,
    Answer,
    Probes,
    Report,
    client_named,
    context_fix,
    diagnose,
    exit_status,
    facts_of,
    streamed_tool_calls,
    tool_calls_in_reply,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"
URL = "http://127.0.0.1:8080"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def js(value: Any, status: int = 200) -> Answer:
    return Answer(status, json.dumps(value).encode(), "application/json", 0.01)


def error(status: int, message: str) -> Answer:
    return js({"error": {"code": status, "message": message, "type": "server_error"}}, status)


def props(tools: bool = True, n_ctx: int = 4096, slots: int = 2, vision: bool = False) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(fixture("real_props.json"))
    value["default_generation_settings"]["n_ctx"] = n_ctx
    value["total_slots"] = slots
    value["modalities"]["vision"] = vision
    for cap in ("supports_tools", "supports_tool_calls", "supports_parallel_tool_calls"):
        value["chat_template_caps"][cap] = tools
    return value


def probes(**kw: Any) -> Probes:
    """A healthy, open llama-server with the real answers of ./run's (-c 8192 -np 2 --jinja ...), changed by ``kw``."""
    slots = kw.pop("n_ctx", 4096)
    base: dict[str, Any] = {
        "health": js({"status": "ok"}),
        "anonymous": js(json.loads(fixture("real_models.json"))),
        "props": js(props(n_ctx=slots)),
        "slots": js([{"id": i, "n_ctx": slots, "is_processing": False} for i in range(2)]),
        "models": js(json.loads(fixture("real_models.json"))),
        "tool": Answer(200, fixture("real_tool_reply.json"), "application/json", 11.0),
        "tool_stream": Answer(200, fixture("real_tool_stream.sse"), "text/event-stream", 7.0),
        "embeddings": error(501, "This server does not support embeddings. Start it with `--embeddings`"),
    }
    base.update(kw)
    return Probes(URL, **base)


def check(report: Report, name: str) -> Any:
    return next(c for c in report.checks if c.name == name)


def test_facts_from_real_answers() -> None:
    """Slots, per-slot context, trained context, template capabilities and the model come from /props, /slots and
    /v1/models as a real llama-server words them."""
    f = facts_of(Probes(URL, js({"status": "ok"}), props=js(json.loads(fixture("real_props.json"))),
                        slots=Answer(200, fixture("real_slots.json")), models=Answer(200, fixture("real_models.json"))))
    assert f["total_slots"] == 4 and f["n_ctx_per_slot"] == 1024 and f["n_ctx_train"] == 8192
    assert f["supports_tools"] is True and f["supports_system_role"] is True and f["vision"] is False
    assert f["build_info"] == "b0-unknown" and str(f["model"]).endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_tool_calls_are_read_from_real_replies() -> None:
    """A real non-streamed tool-call reply and a real streamed one are both recognised as get_weather calls."""
    assert tool_calls_in_reply(Answer(200, fixture("real_tool_reply.json"))) == [("get_weather", '{"city": "Paris"}')]
    assert streamed_tool_calls(Answer(200, fixture("real_tool_stream.sse"))) == (True, "get_weather")
    assert streamed_tool_calls(Answer(200, fixture("real_chat_stream.sse"))) == (False, "")


def test_the_run_server_works_for_tools_but_is_short_of_context() -> None:
    """./run's llama-server: tools work and stream, but 4,096 tokens a slot is too little for every agent, and
    each client's gap names the -c/-np (or YaRN) flags that close it."""
    report = diagnose(probes())
    assert check(report, "tool call").status == OK and "Paris" in check(report, "tool call").summary
    assert check(report, "streamed tools").status == OK
    verdicts = {v.client.name: v for v in report.verdicts}
    assert not any(v.ok for v in verdicts.values())
    assert verdicts["codex"].fixes == ("-c 16384 -np 2, or -c 8192 -np 1 (-c is shared among the -np slots)",)
    assert "--rope-scaling yarn --rope-scale 2 --yarn-orig-ctx 8192" in verdicts["copilot"].fixes[0]
    assert "--rope-scale 4" in verdicts["claude"].fixes[0]
    assert exit_status(report, []) == 0 and exit_status(report, ["codex"]) == 1


def test_enough_context_per_slot_makes_codex_work() -> None:
    """With 8,192 tokens a slot Codex CLI works (6,500 needed) and `--for codex` exits 0; Claude Code still not."""
    report = diagnose(probes(n_ctx=8192))
    assert report.verdict("codex") is not None and report.verdict("codex").ok  # type: ignore[union-attr]
    assert exit_status(report, ["codex"]) == 0
    assert exit_status(report, ["codex", "claude-code"]) == 1


def test_a_template_without_tools_names_the_template_flags() -> None:
    """A chat template without tools (SmolLM2's own): the template check fails, the tool probe got text, and every
    agent's fix is --jinja --chat-template-file."""
    reply = js({"choices": [{"finish_reason": "stop", "index": 0, "message": {"role": "assistant", "content": ""}}]})
    report = diagnose(probes(props=js(props(tools=False)), tool=reply, tool_stream=None))
    assert check(report, "template").status == FAIL and "--chat-template-file" in (check(report, "template").fix)
    assert check(report, "tool call").status == FAIL
    for verdict in report.verdicts:
        assert not verdict.ok and any("--jinja --chat-template-file" in f for f in verdict.fixes)
        assert "needs tool calls" in verdict.problems[0]


def test_an_error_about_jinja_names_the_jinja_flag() -> None:
    """An old build without --jinja refuses the tools with an error naming it: the fix is --jinja."""
    report = diagnose(probes(props=js({k: v for k, v in props().items() if k != "chat_template_caps"}),
                             tool=error(500, "tools param requires --jinja flag"), tool_stream=None))
    assert check(report, "template").status == WARN
    assert check(report, "tool call").status == FAIL and check(report, "tool call").fix == "--jinja"
    assert all(not v.ok for v in report.verdicts)


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (error(500, "Cannot use tools with stream"), "refuses streamed tool calls"),
        (Answer(200, fixture("real_tool_reply.json"), "application/json; charset=utf-8", 1.0), "one JSON body"),
    ],
)
def test_old_builds_that_cannot_stream_tools_are_a_warning(answer: Answer, words: str) -> None:
    """A build that refuses streamed tools or answers a stream with JSON: a warning that llamashim synthesizes the
    stream — the clients still work."""
    report = diagnose(probes(tool_stream=answer, n_ctx=32768))
    c = check(report, "streamed tools")
    assert c.status == WARN and words in c.summary and "synthesizes" in c.summary
    assert all(v.ok for v in report.verdicts)


@pytest.mark.parametrize(
    ("answer", "status", "fix"),
    [
        (error(501, "This server does not support embeddings. Start it with `--embeddings`"), INFO,
         "--embeddings --pooling mean"),
        (error(400, "Pooling type 'none' is not OAI compatible. Please use a different pooling type"), WARN,
         "--pooling mean"),
        (js({"data": [{"embedding": [0.1, 0.2, 0.3], "index": 0}]}), OK, None),
    ],
)
def test_embeddings(answer: Answer, status: str, fix: str | None) -> None:
    """Embeddings off names --embeddings, the wrong pooling names --pooling, working ones give their size."""
    c = check(diagnose(probes(embeddings=answer)), "embeddings")
    assert c.status == status and (fix is None or c.fix.startswith(fix))


def test_a_server_that_wants_a_key() -> None:
    """401 without a key and none given: the report stops there, naming --api-key, and exits 1."""
    report = diagnose(Probes(URL, js({"status": "ok"}), anonymous=error(401, "Invalid API Key")))
    assert check(report, "API key").status == FAIL and "--api-key" in check(report, "API key").fix
    assert exit_status(report, []) == 1


def test_an_open_server_off_loopback_is_a_warning() -> None:
    """No key needed: fine on loopback (info), a warning on another address, both naming --api-key."""
    assert check(diagnose(probes()), "API key").status == INFO
    remote = probes()
    remote.url = "http://10.0.0.5:8080"
    c = check(diagnose(remote), "API key")
    assert c.status == WARN and "--api-key" in c.fix


def test_an_unreachable_server() -> None:
    """No answer at all: one failing health line saying why, exit status 1."""
    report = diagnose(Probes(URL, Answer(None, error="upstream is unreachable: connection refused")))
    assert not report.reachable and [c.name for c in report.checks] == ["health"]
    assert "connection refused" in report.checks[0].summary and exit_status(report, []) == 1


def test_vision_needs_a_projector() -> None:
    """Without vision the fix is --mmproj; with it the check is ok."""
    assert "--mmproj" in check(diagnose(probes()), "vision").fix
    assert check(diagnose(probes(props=js(props(vision=True)))), "vision").status == OK


@pytest.mark.parametrize(
    ("need", "slots", "trained", "fix"),
    [
        (6500, 2, 8192, "-c 16384 -np 2, or -c 8192 -np 1 (-c is shared among the -np slots)"),
        (6500, 1, None, "-c 8192 -np 1"),
        (10000, 4, 32768, "-c 65536 -np 4, or -c 16384 -np 1 (-c is shared among the -np slots)"),
        (21000, 2, 8192, "-c 32768 -np 1 --rope-scaling yarn --rope-scale 4 --yarn-orig-ctx 8192"),
    ],
)
def test_context_fix(need: int, slots: int, trained: int | None, fix: str) -> None:
    """The context fix keeps the slot count when the model's training context allows, else one YaRN-stretched slot."""
    assert context_fix(need, slots, trained).startswith(fix)


def test_report_renders_as_text_and_json() -> None:
    """The text names each check and fix; the JSON carries checks, facts and verdicts with their fixes."""
    report = diagnose(probes())
    text = report.text()
    assert text.startswith(f"llamashim doctor: {URL}\n") and "→ --embeddings --pooling mean" in text
    assert "NO    codex" in text
    value = json.loads(json.dumps(report.as_json()))
    assert value["facts"]["n_ctx_per_slot"] == 4096
    codex = next(c for c in value["clients"] if c["name"] == "codex")
    assert codex["ok"] is False and codex["needs_tokens_per_slot"] == 6500 and codex["fixes"]


def test_client_names() -> None:
    """Clients are named copilot, codex and claude (claude-code too); anything else is unknown."""
    assert client_named("Claude-Code") is client_named("claude") and client_named("codex") is not None
    assert client_named("cursor") is None


def test_tool_probe_request() -> None:
    """The probe is the deterministic recipe: temperature 0, tool required, two earlier get_weather turns, Paris
    last, and the banned token when one is known."""
    body = tool_request("m", True, 7639)
    assert body["temperature"] == 0 and body["tool_choice"] == "required" and body["stream"] is True
    assert body["logit_bias"] == [[7639, False]] and body["messages"][-1]["content"] == "Weather in Paris?"
    assert sum(1 for m in body["messages"] if m["role"] == "tool") == 2
    assert "logit_bias" not in tool_request(None, False, None)

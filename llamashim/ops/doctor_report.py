"""``llamashim doctor``'s judgement (pure): what the answers of a llama-server say about it, and which clients will
work with it — each gap with the llama-server flag that closes it.

:mod:`llamashim.ops.doctor` asks the questions (the probes) and hands the answers here as :class:`Probes`;
:func:`diagnose` turns them into a :class:`Report`, which renders as text for people and JSON for machines.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from llamashim import jsonutil
from llamashim.jsonutil import obj

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"


@dataclass(frozen=True)
class Client:
    name: str
    label: str
    context: int  # tokens one request needs in one slot (its system prompt and tools, measured)
    tools: bool = True


CLIENTS: dict[str, Client] = {
    "copilot": Client("copilot", "VS Code Copilot (BYOK)", 10_000),
    "codex": Client("codex", "Codex CLI", 6_500),
    "claude": Client("claude", "Claude Code", 21_000),
}
CLIENT_ALIASES = {"claude-code": "claude", "claude_code": "claude", "codex-cli": "codex", "vscode": "copilot"}

TOOLS_TEMPLATE = "a template with tools, e.g. llama.cpp's models/templates/Qwen-Qwen2.5-7B-Instruct.jinja"


def client_named(name: str) -> Client | None:
    key = name.strip().lower()
    return CLIENTS.get(CLIENT_ALIASES.get(key, key))


# -- the answers -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One HTTP answer of the server (``status`` ``None``: no answer, ``error`` says why)."""

    status: int | None
    body: bytes = b""
    content_type: str = ""
    seconds: float = 0.0
    error: str | None = None

    def json(self) -> Any:
        try:
            return jsonutil.loads(self.body, 0) if self.body else None
        except jsonutil.JSONError:
            return None

    def message(self) -> str:
        """The error message of the answer, as the server worded it (or why there was no answer)."""
        if self.status is None:
            return self.error or "no answer"
        value = self.json()
        if isinstance(value, dict):
            err = value.get("error")
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                return str(err["message"])
            if isinstance(err, str):
                return err
        text = self.body.decode("utf-8", "replace").strip()
        return text[:200] or f"HTTP {self.status}"


@dataclass
class Probes:
    url: str
    health: Answer
    props: Answer | None = None
    slots: Answer | None = None
    models: Answer | None = None
    tool: Answer | None = None  # the non-streamed tool-call probe
    tool_stream: Answer | None = None  # the same, streamed
    embeddings: Answer | None = None
    anonymous: Answer | None = None  # GET /v1/models without a key
    api_key_given: bool = False


# -- the verdict -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail | info
    summary: str
    fix: str | None = None


@dataclass(frozen=True)
class Verdict:
    client: Client
    ok: bool
    problems: tuple[str, ...] = ()
    fixes: tuple[str, ...] = ()


@dataclass
class Report:
    url: str
    reachable: bool
    facts: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)

    def verdict(self, name: str) -> Verdict | None:
        client = client_named(name)
        return next((v for v in self.verdicts if client is not None and v.client.name == client.name), None)

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "reachable": self.reachable,
            "facts": self.facts,
            "checks": [{"name": c.name, "status": c.status, "summary": c.summary, "fix": c.fix} for c in self.checks],
            "clients": [
                {"name": v.client.name, "label": v.client.label, "ok": v.ok, "needs_tokens_per_slot": v.client.context,
                 "problems": list(v.problems), "fixes": list(v.fixes)}
                for v in self.verdicts
            ],
        }

    def text(self) -> str:
        mark = {OK: "ok  ", WARN: "warn", FAIL: "FAIL", INFO: "--  "}
        lines = [f"llamashim doctor: {self.url}"]
        width = max((len(c.name) for c in self.checks), default=8) + 2
        for c in self.checks:
            lines.append(f"  {mark[c.status]}  {c.name.ljust(width)}{c.summary}")
            if c.fix:
                lines.append(f"        {' ' * width}→ {c.fix}")
        if self.verdicts:
            lines.append("")
            lines.append("clients")
            for v in self.verdicts:
                head = f"  {'ok  ' if v.ok else 'NO  '}  {v.client.name.ljust(width)}{v.client.label}"
                lines.append(head + (": works" if v.ok else ": " + "; ".join(v.problems)))
                for fix in v.fixes:
                    lines.append(f"        {' ' * width}→ {fix}")
        return "\n".join(lines) + "\n"


def _tokens(n: int) -> str:
    return f"{n:,}"


def _ok_json(answer: Answer | None) -> Any:
    return answer.json() if answer is not None and answer.status == 200 else None


def facts_of(p: Probes) -> dict[str, Any]:
    """The plain facts the answers state (``None`` where the server did not say)."""
    props = obj(_ok_json(p.props))
    models = obj(_ok_json(p.models))
    slots = _ok_json(p.slots)
    data = [m for m in models.get("data") or [] if isinstance(m, dict)] if isinstance(models.get("data"), list) else []
    first = data[0] if data else {}
    meta = obj(first.get("meta"))
    caps = props.get("chat_template_caps")
    per_slot = None
    if isinstance(slots, list) and slots and isinstance(slots[0], dict) and isinstance(slots[0].get("n_ctx"), int):
        per_slot = slots[0]["n_ctx"]
    elif isinstance(obj(props.get("default_generation_settings")).get("n_ctx"), int):
        per_slot = props["default_generation_settings"]["n_ctx"]
    total_slots = props.get("total_slots") if isinstance(props.get("total_slots"), int) else (
        len(slots) if isinstance(slots, list) else None)
    vision = obj(props.get("modalities")).get("vision")
    if vision is None and isinstance(obj(first.get("architecture")).get("input_modalities"), list):
        vision = "image" in first["architecture"]["input_modalities"]
    return {
        "build_info": props.get("build_info"),
        "model": first.get("id"),
        "models": [m.get("id") for m in data],
        "n_ctx_train": meta.get("n_ctx_train") if isinstance(meta.get("n_ctx_train"), int) else None,
        "n_ctx_per_slot": per_slot,
        "total_slots": total_slots,
        "supports_tools": obj(caps).get("supports_tools") if isinstance(caps, dict) else None,
        "supports_parallel_tool_calls": obj(caps).get("supports_parallel_tool_calls") if isinstance(caps, dict)
        else None,
        "supports_system_role": obj(caps).get("supports_system_role") if isinstance(caps, dict) else None,
        "vision": vision,
    }


def tool_calls_in_reply(answer: Answer) -> list[tuple[str, str]]:
    """(name, arguments) of each tool call in a non-streamed chat answer."""
    out = []
    for choice in obj(answer.json()).get("choices") or []:
        for call in obj(obj(choice).get("message")).get("tool_calls") or []:
            fn = obj(obj(call).get("function"))
            args = fn.get("arguments")
            out.append((str(fn.get("name")), args if isinstance(args, str) else json.dumps(args)))
    return out


def stream_events(answer: Answer) -> list[Any]:
    """The JSON values of a server-sent event stream's ``data:`` lines (``[DONE]`` and junk left out)."""
    out = []
    for line in answer.body.decode("utf-8", "replace").splitlines():
        if line.startswith("data:"):
            text = line[5:].strip()
            if text and text != "[DONE]":
                try:
                    out.append(json.loads(text))
                except ValueError:
                    pass
    return out


def streamed_tool_calls(answer: Answer) -> tuple[bool, str]:
    """Whether a streamed answer carried ``delta.tool_calls`` (and the first call's name)."""
    for event in stream_events(answer):
        for choice in obj(event).get("choices") or []:
            calls = obj(obj(choice).get("delta")).get("tool_calls")
            if isinstance(calls, list) and calls:
                return True, str(obj(obj(calls[0]).get("function")).get("name"))
    return False, ""


def next_power_of_two(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def context_fix(need: int, slots: int | None, trained: int | None) -> str:
    """The llama-server flags that give each slot at least ``need`` tokens."""
    per_slot = next_power_of_two(need)
    n = max(1, slots or 1)
    if trained and per_slot > trained:
        scale = math.ceil(per_slot / trained)
        return (f"-c {per_slot} -np 1 --rope-scaling yarn --rope-scale {scale} --yarn-orig-ctx {trained} "
                f"(the model was trained on {_tokens(trained)} tokens and llama-server caps each slot there; "
                "YaRN stretches it)")
    if n == 1:
        return f"-c {per_slot} -np 1"
    return f"-c {per_slot * n} -np {n}, or -c {per_slot} -np 1 (-c is shared among the -np slots)"


def _loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def diagnose(p: Probes) -> Report:
    report = Report(p.url, reachable=p.health.status is not None)
    checks = report.checks
    if p.health.status is None:
        checks.append(Check("health", FAIL, f"no answer: {p.health.message()}",
                            "start llama-server, or give its URL: llamashim doctor http://HOST:PORT"))
        return report
    if p.health.status == 503:
        checks.append(Check("health", WARN, f"loading ({p.health.message()}); answers below may be incomplete"))
    elif p.health.status != 200:
        checks.append(Check("health", FAIL, f"HTTP {p.health.status}: {p.health.message()}"))
    else:
        checks.append(Check("health", OK, f"ok ({p.health.seconds * 1000:.0f} ms)"))

    if p.anonymous is not None and p.anonymous.status == 401 and not p.api_key_given:
        checks.append(Check("API key", FAIL, "this llama-server wants an API key (it answered 401)",
                            "llamashim doctor --api-key KEY (the key llama-server was started with --api-key)"))
        return report
    if p.models is not None and p.models.status == 401:
        checks.append(Check("API key", FAIL, "the API key given was refused (401)",
                            "give the key llama-server was started with (--api-key)"))
        return report

    f = facts_of(p)
    report.facts = f
    model = str(f["model"]).rsplit("/", 1)[-1] if f["model"] else "no model listed"
    trained = f" (trained context {_tokens(f['n_ctx_train'])})" if f["n_ctx_train"] else ""
    build = f"build {f['build_info']}" if f["build_info"] else "build unknown (no /props)"
    checks.append(Check("server", OK if f["model"] else WARN, f"{build}, model {model}{trained}"))

    per_slot, slots = f["n_ctx_per_slot"], f["total_slots"]
    if per_slot:
        count = f"{slots} slot{'' if slots == 1 else 's'}" if slots else "? slots"
        checks.append(Check("slots", OK, f"{count} × {_tokens(per_slot)} tokens of context each"))
    else:
        checks.append(Check("slots", WARN, "context per slot unknown (neither /slots nor /props said)"))

    tools_ok = _tools_checks(p, f, checks)
    _embeddings_check(p, checks)
    if f["vision"]:
        checks.append(Check("vision", OK, "image input (a vision projector is loaded)"))
    else:
        checks.append(Check("vision", INFO, "no image input", "--mmproj FILE (the model's vision projector) "
                                                              "for clients that send images"))
    _api_key_check(p, checks)

    for client in CLIENTS.values():
        problems, fixes = [], []
        if client.tools and tools_ok is False:
            problems.append("needs tool calls, which this server does not make")
            fixes.append(_tools_fix(checks))
        if per_slot is not None and per_slot < client.context:
            problems.append(f"needs ~{_tokens(client.context)} tokens per slot, has {_tokens(per_slot)}")
            fixes.append(context_fix(client.context, slots, f["n_ctx_train"]))
        report.verdicts.append(Verdict(client, not problems, tuple(problems), tuple(x for x in fixes if x)))
    return report


def _tools_fix(checks: list[Check]) -> str:
    tool = next((c for c in checks if c.name in ("template", "tool call") and c.fix), None)
    return tool.fix if tool is not None and tool.fix else f"--jinja --chat-template-file FILE ({TOOLS_TEMPLATE})"


def _tools_checks(p: Probes, f: dict[str, Any], checks: list[Check]) -> bool | None:
    """The template's capabilities and the two tool-call probes; whether tool calls work (``None``: unknown)."""
    supports = f["supports_tools"]
    if supports is None:
        checks.append(Check("template", WARN, "the server does not say what its chat template supports "
                                              "(/props has no chat_template_caps)",
                            "--jinja (templates are applied by llama-server only with it on older builds)"))
    else:
        yes = {True: "yes", False: "no", None: "?"}
        summary = (f"tools {yes[supports]}, parallel tool calls {yes[f['supports_parallel_tool_calls']]}, "
                   f"system role {yes[f['supports_system_role']]}")
        fix = None if supports else f"--jinja --chat-template-file FILE ({TOOLS_TEMPLATE})"
        checks.append(Check("template", OK if supports else FAIL, summary, fix))

    works: bool | None = supports
    tool = p.tool
    if tool is None:
        checks.append(Check("tool call", INFO, "not tried (--quick)"))
    elif tool.status == 200 and tool_calls_in_reply(tool):
        name, args = tool_calls_in_reply(tool)[0]
        checks.append(Check("tool call", OK, f"{name}({args}) in {tool.seconds:.1f} s"))
        works = True
    elif tool.status == 200:
        if supports:
            checks.append(Check("tool call", WARN, "the model answered in text instead of calling the tool (small "
                                                   "models often do; the template supports tools)"))
        else:
            checks.append(Check("tool call", FAIL, "no tool call: the chat template ignores the tools",
                                f"--jinja --chat-template-file FILE ({TOOLS_TEMPLATE})"))
            works = False
    else:
        message = tool.message()
        fix = "--jinja" if "jinja" in message.lower() else None
        status = "no answer" if tool.status is None else f"HTTP {tool.status}"
        checks.append(Check("tool call", FAIL, f"{status}: {message}", fix))
        works = False

    stream = p.tool_stream
    if stream is None or works is False:
        return works
    native, _ = streamed_tool_calls(stream) if stream.status == 200 else (False, "")
    synthesized = "llamashim synthesizes the stream for this server (tools.streaming: auto)"
    if native:
        checks.append(Check("streamed tools", OK, f"tool calls stream natively ({stream.seconds:.1f} s)"))
    elif stream.status == 200 and "json" in stream.content_type:
        checks.append(Check("streamed tools", WARN, "answers a streamed request with one JSON body (an old build); "
                                                    + synthesized, "a newer llama-server streams tool calls"))
    elif stream.status is not None and stream.status >= 400:
        checks.append(Check("streamed tools", WARN, f"refuses streamed tool calls (HTTP {stream.status}: "
                                                    f"{stream.message()}); " + synthesized,
                            "a newer llama-server streams tool calls"))
    else:
        checks.append(Check("streamed tools", WARN, "the streamed answer carried no tool call"))
    return works


def _embeddings_check(p: Probes, checks: list[Check]) -> None:
    e = p.embeddings
    if e is None:
        return
    vectors = [d for d in obj(e.json()).get("data") or [] if isinstance(d, dict)] if e.status == 200 else []
    if vectors and isinstance(vectors[0].get("embedding"), list):
        checks.append(Check("embeddings", OK, f"on ({len(vectors[0]['embedding'])} dimensions)"))
    elif e.status == 400 and "pooling" in e.message().lower():
        checks.append(Check("embeddings", WARN, f"on, but unusable for OpenAI clients: {e.message()}",
                            "--pooling mean (or cls / last, as the model wants)"))
    elif e.status in (404, 501) or "--embeddings" in e.message():
        checks.append(Check("embeddings", INFO, "off (/v1/embeddings and Ollama's /api/embed will fail)",
                            "--embeddings --pooling mean"))
    else:
        status = "no answer" if e.status is None else f"HTTP {e.status}"
        checks.append(Check("embeddings", WARN, f"{status}: {e.message()}"))


def _api_key_check(p: Probes, checks: list[Check]) -> None:
    a = p.anonymous
    if a is None:
        return
    if a.status == 401:
        checks.append(Check("API key", OK, "required (a request without one gets 401)"))
    elif a.status == 200:
        where = "on loopback, only local users" if _loopback(p.url) else "anyone who can reach it"
        checks.append(Check("API key", INFO if _loopback(p.url) else WARN, f"none required: {where} can use it",
                            "--api-key KEY on llama-server, and the same key as upstream.api_key in llamashim"))


def exit_status(report: Report, wanted: list[str]) -> int:
    """0 when every client in ``wanted`` will work (and the server answered), else 1."""
    if not report.reachable or any(c.status == FAIL and c.name in ("health", "API key") for c in report.checks):
        return 1
    for name in wanted:
        verdict = report.verdict(name)
        if verdict is None or not verdict.ok:
            return 1
    return 0

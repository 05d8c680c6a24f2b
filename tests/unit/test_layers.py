"""The package's layer order, read off its imports: every import points downward, and there are no circles.

Top to bottom (DESIGN.md, "Growing the contract again", with ``ops`` placed between the edge and the flow):

    composition  tap, service, cli, preflight, testing/, dialects/registry
    dialects     one package each (openai_chat, ollama, responses, anthropic, ...)
    web          the edge: site, gate, routing and the dialect contract, root, turn, relay, status, own
    ops          metrics, recent requests, doctor
    chat         call, turn, flow, repair, tokens, deps
    upstream     client, body, set, choice, models, supervisor, limiter
    stream       pure stages: sse, tools, reasoning, deltas, pipeline, items, transform
    base         config, errors, jsonutil, compat, modes

A module may import its own layer and any layer below it; dialect packages may not import one another except through
what a lower layer offers (the OpenAI chat call that Ollama's ``chat_dialect: openai`` reuses is the one exception,
named below).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import llamashim

PACKAGE = Path(llamashim.__file__).parent

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("composition", ("llamashim.tap", "llamashim.service", "llamashim.cli", "llamashim.preflight",
                     "llamashim.testing", "llamashim.dialects.registry", "llamashim.__main__",
                     "llamashim.replay", "llamashim.workers", "llamashim.listeners")),
    ("dialects", ("llamashim.dialects",)),
    ("web", ("llamashim.web",)),
    ("ops", ("llamashim.ops",)),
    ("chat", ("llamashim.chat",)),
    ("upstream", ("llamashim.upstream",)),
    ("stream", ("llamashim.stream",)),
    ("base", ("llamashim.config", "llamashim.errors", "llamashim.jsonutil", "llamashim.compat", "llamashim.modes",
              "llamashim")),
]

# Imports across dialect packages that are allowed, and why.
CROSS_DIALECT = {
    # ollama.chat_dialect: openai makes /api/chat a plain alias of OpenAI chat completions (the seed's behaviour).
    ("llamashim.dialects.ollama.routes", "llamashim.dialects.openai_chat.routes"),
}


def layer_of(module: str) -> int:
    """The index of ``module``'s layer (the longest matching prefix wins)."""
    best, length = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = index, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """The llamashim modules ``path`` imports (``from a import b`` counts as ``a.b`` when that is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "llamashim":
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if _is_module(sub) else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "llamashim")
    return found


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel / "__init__.py").exists()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def dialect_package(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "dialects" and parts[2] != "registry" else None


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """Every import that points to a higher layer, or across dialect packages without a stated reason."""
    bad = []
    for module, targets in sorted(edges.items()):
        for target in sorted(targets):
            if layer_of(target) < layer_of(module):
                bad.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
                           f"({LAYERS[layer_of(target)][0]})")
            mine, theirs = dialect_package(module), dialect_package(target)
            if mine and theirs and mine != theirs and (module, target) not in CROSS_DIALECT:
                bad.append(f"{module} imports another dialect's {target}")
    return bad


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between modules (each reported once, by depth-first search)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in edges.get(module, ()):
            if target == module or target not in edges:
                continue
            if state.get(target) == 1:
                found.append([*stack[stack.index(target):], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    return found


def test_no_layer_imports_upward() -> None:
    """No module imports a module of a higher layer (or another dialect's package)."""
    assert upward_imports(graph()) == []


def test_no_import_circles() -> None:
    """No two modules import each other, directly or round a longer circle."""
    assert circles(graph()) == []


@pytest.mark.parametrize(
    ("module", "target"),
    [
        ("llamashim.stream.tools", "llamashim.chat.repair"),  # a pure stage reaching up to the flow
        ("llamashim.web.site", "llamashim.dialects.openai_chat.dialect"),  # the edge hard-wiring a dialect
        ("llamashim.config", "llamashim.stream.reasoning"),  # the bottom layer importing a stage
        ("llamashim.dialects.anthropic.routes", "llamashim.dialects.responses.store"),  # one dialect using another
    ],
)
def test_an_upward_import_is_caught(module: str, target: str) -> None:
    """Adding an upward import (or a cross-dialect one) to the real graph makes the check fail, naming it."""
    edges = graph()
    edges[module] = {*edges[module], target}
    assert any(module in line and target in line for line in upward_imports(edges))


def test_a_circle_is_caught() -> None:
    """Adding an import that closes a circle makes the check fail."""
    edges = graph()
    edges["llamashim.upstream.body"] = {*edges["llamashim.upstream.body"], "llamashim.upstream.client"}
    edges["llamashim.upstream.client"] = {*edges["llamashim.upstream.client"], "llamashim.upstream.body"}
    assert circles(edges)

"""The package's import rules, read from its source: no module imports another module's private (``_x``)
names, and no import cycles between modules (imports inside functions count: a lazy import is still a
dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

from pathfm.config import REPO_ROOT

PACKAGE = REPO_ROOT / "pathfm"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> list[tuple[str, str, int]]:
    """``(module imported, name imported or "", line)`` for every pathfm import in ``path``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([target] if target else []))
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append((sub, "", node.lineno) if sub in modules else (target, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(alias.name, "", node.lineno) for alias in node.names]
    return [(m, n, line) for m, n, line in out if m == "pathfm" or m.startswith("pathfm.")]


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    private = []
    for module, path in files.items():
        for target, name, line in imports_of(path, set(files)):
            if name.startswith("_") and not name.startswith("__") and target != module:
                private.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {target}.{name}")
            if target in files and target != module:
                graph[module].add(target)
    return graph, private


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_another_modules_private_names():
    _, private = import_graph()
    assert private == []


def test_no_import_cycles_between_modules():
    graph, _ = import_graph()
    assert cycles(graph) == []


# ------------------------------------------------------------------------------------------ layers
# The command layer (pathfm/cli.py and each part's cli.py: `pathfm train`, `pathfm eval`, ...) composes the
# parts; below it, training and evaluation never import each other: both stand on the backbone layer
# (the ViT, its files and foreign formats), and evaluation hands training its probe as a callback.
LAYER_RULES = {  # part -> parts it must not reach, directly or through other modules
    "backbone": {"ssl", "eval", "sweeps", "ablations", "analysis", "export", "eva"},
    "ssl": {"eval", "sweeps", "ablations", "analysis", "export", "eva"},
    "eval": {"ssl", "sweeps", "ablations", "analysis"},
}
MAX_LINES = 450


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def is_command_layer(module: str) -> bool:
    return module.rsplit(".", 1)[-1] == "cli"


def reached(graph: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """Every module ``start`` reaches through library (non-command) modules, with one import path to each."""
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop()
        for w in sorted(graph[v]):
            if w not in paths and not is_command_layer(w):
                paths[w] = paths[v] + [w]
                todo.append(w)
    return paths


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module in sorted(graph):
        banned = LAYER_RULES.get(part_of(module), set())
        if not banned or is_command_layer(module):
            continue
        for target, path in reached(graph, module).items():
            if part_of(target) in banned:
                out.append(" -> ".join(path))
    return out


def test_the_layer_check_finds_a_reach_through_another_module():
    graph = {"pathfm.ssl.a": {"pathfm.data.b"}, "pathfm.data.b": {"pathfm.eval.c"}, "pathfm.eval.c": set(),
             "pathfm.ssl.cli": {"pathfm.eval.c"}}
    assert layer_violations(graph) == ["pathfm.ssl.a -> pathfm.data.b -> pathfm.eval.c"]


def test_training_and_evaluation_do_not_import_each_other():
    graph, _ = import_graph()
    assert layer_violations(graph) == []


def test_no_module_is_over_the_size_limit():
    sizes = {p.relative_to(REPO_ROOT).as_posix(): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}

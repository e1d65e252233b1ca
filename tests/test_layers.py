"""The package's house rules: no import circles, and every import points down the layers (the README's
Development section lists them). Faces (serve/, integrations/) are adapters over live/ and the runtime: they
never import each other, and nothing but cli/ imports cli/. Imports under TYPE_CHECKING count too."""

from __future__ import annotations

import ast
from collections import defaultdict

from .conftest import REPO

PACKAGE = REPO / "lipsync_cli"

# lower numbers sit lower; a module imports only its own package and packages of a lower layer
LAYERS = {
    "errors": 0,
    "lipsync_cli": 1, "specs": 1, "trust": 1, "stages": 1, "processes": 1, "interrupts": 1, "resources": 1,
    "audio": 2, "encoding": 2,
    "features": 3, "compositing": 3,
    "frames": 4,
    "models": 5,
    "characters": 6,
    "runtime": 7,
    "render": 8,
    "batch": 9, "live": 9, "diagnostics": 9, "optimize": 9,  # optimize: variants made with render/ and checked
    "cluster": 10,  # job lists on Ray: over batch/
    "serve": 11, "integrations": 11,
    "loadtest": 12, "bench": 12,
    "cli": 13, "__main__": 14,
}
# imports across one layer that are meant: the load generator and the bench speak the live server's protocol
ACROSS = {("loadtest", "serve"), ("bench", "serve"), ("bench", "loadtest")}


def module_name(path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if is_package else name.split(".")[:-1]
                    here = here[: len(here) - node.level + 1]
                    base = ".".join(here + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return {m: graph[m] for m in modules}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_is_read():
    graph = import_graph()
    assert "lipsync_cli.live.session" in graph["lipsync_cli.serve.transport"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_every_import_points_down_the_layers():
    wrong = []
    for module, targets in import_graph().items():
        here = package_of(module)
        assert here in LAYERS, f"{here}: a new package needs its place in LAYERS"
        for target in targets:
            there = package_of(target)
            if there == here or (here, there) in ACROSS:
                continue
            if LAYERS[there] >= LAYERS[here]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_the_lower_layers_stay_below():
    """Rules the layer numbers stand for, said plainly so that renumbering cannot lose them."""
    graph = import_graph()
    for module, targets in graph.items():
        here = package_of(module)
        pkgs = {package_of(t) for t in targets}
        if here not in ("cli", "__main__"):
            assert "cli" not in pkgs, module
        if here == "integrations":
            assert not pkgs & {"serve", "cli", "loadtest", "bench"}, module
            own = module.split(".")[2] if module.count(".") >= 2 else None
            others = {t.split(".")[2] for t in targets if package_of(t) == "integrations" and t.count(".") >= 2}
            assert others <= {own, "__init__"} | ({None} if own is None else set()), module
        if here == "serve":
            assert "integrations" not in pkgs, module
        if here == "compositing":
            assert "frames" not in pkgs, module

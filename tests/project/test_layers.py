"""The package's layers, read from its source: each layer imports only the layers its
``__init__`` docstring allows, no module is part of an import circle (every import counts,
also inside functions and under TYPE_CHECKING), and the reference backend imports no fast path.

Layers, bottom up: ``core`` (with the Triton kernels of ``kernels/``, installed as
``cfcam_fast.kernels``), ``cams``, then ``evaluation``, ``integrations`` and ``data`` (each
on ``core`` and ``cams`` only), ``benchmark`` (also ``data``), ``cli`` (everything below).
``viz`` imports nothing of the package, so any layer may use it; the public faces at the
top (``cfcam_fast``, ``cfcam_fast.metrics``, ``cfcam_fast.cluster``, ``cfcam_fast.plan``)
are imported by nothing inside the package but the command line's version string.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What each layer may import besides itself and ``viz`` (as each subpackage's docstring says).
ALLOWED = {
    "core": set(),
    "cams": {"core"},
    "evaluation": {"core", "cams"},
    "integrations": {"core", "cams"},
    "data": {"core", "cams"},
    "benchmark": {"core", "cams", "data"},
    "cli": {"core", "cams", "evaluation", "data", "benchmark"},
    "viz": set(),
}
# The fast paths, which the reference backend (the oracle) must never import, even indirectly.
FAST_PATHS = ("cfcam_fast.core.backends.torch_backend", "cfcam_fast.core.backends.triton_backend",
              "cfcam_fast.core.cluster", "cfcam_fast.core.native", "cfcam_fast.core.selection",
              "cfcam_fast.core.workspace", "cfcam_fast.core.graphs", "cfcam_fast.core.triton_kernels",
              "cfcam_fast.core.exportable", "cfcam_fast.kernels")
FACES = {"cfcam_fast", "cfcam_fast.metrics", "cfcam_fast.cluster", "cfcam_fast.plan", "cfcam_fast.__main__"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "cfcam_fast").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    for path in sorted((ROOT / "kernels").glob("*.py")):
        name = "cfcam_fast.kernels" + ("" if path.stem == "__init__" else f".{path.stem}")
        found[name] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports (``from a import b`` counts ``a.b`` when that
    is a module, else ``a``)."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                       for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _layer(name: str) -> str | None:
    parts = name.split(".")
    if len(parts) > 1 and parts[1] == "kernels":
        return "core"  # the Triton kernels are part of the core layer
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def test_every_module_is_in_a_layer_or_a_public_face():
    assert not [name for name in _graph() if _layer(name) is None and name not in FACES]


def test_each_layer_imports_only_what_it_may():
    wrong = []
    for source, targets in _graph().items():
        for target in targets:
            if target in FACES and not (source.startswith("cfcam_fast.cli") and target == "cfcam_fast"):
                if source not in FACES:
                    wrong.append(f"{source} -> {target} (a public face)")
                continue
            high, low = _layer(source), _layer(target)
            if high is None or low is None or low in (high, "viz"):
                continue
            if low not in ALLOWED[high]:
                wrong.append(f"{source} ({high}) -> {target} ({low})")
    assert not wrong, "imports a layer may not make:\n" + "\n".join(sorted(wrong))


def test_the_allowed_imports_go_down_only():
    """``ALLOWED`` itself has no circle: the layers form a ladder."""
    done: set[str] = set()
    while len(done) < len(ALLOWED):
        ready = [layer for layer, below in ALLOWED.items() if layer not in done and below <= done]
        assert ready, f"the allowed imports of {sorted(set(ALLOWED) - done)} form a circle"
        done |= set(ready)


def test_the_reference_backend_imports_no_fast_path():
    graph = _graph()
    reached, todo = set(), ["cfcam_fast.core.backends.reference"]
    while todo:
        for nxt in graph[todo.pop()] - reached:
            reached.add(nxt)
            todo.append(nxt)
    fast = sorted(m for m in reached if m.startswith(FAST_PATHS))
    assert not fast, f"the reference backend reaches fast paths: {fast}"


def test_viz_imports_nothing_of_the_package():
    assert _graph()["cfcam_fast.viz"] == set()


def test_no_import_circles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"

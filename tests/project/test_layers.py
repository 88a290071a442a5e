"""The package's layers, read from its source: imports go down only, and no module is part of
an import circle (every import counts, also inside functions and under TYPE_CHECKING).

Layers, bottom up: ``core`` (with the Triton kernels of ``kernels/``, installed as
``cfcam_fast.kernels``), ``cams``, then ``evaluation`` and ``integrations``, ``data``,
``benchmark``, ``cli``. ``viz`` imports nothing of the package; the public faces at the
top (``cfcam_fast``, ``cfcam_fast.metrics``, ``cfcam_fast.cluster``, ``cfcam_fast.plan``)
are imported by nothing inside the package but the command line's version string.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RANKS = {"core": 0, "cams": 1, "evaluation": 2, "integrations": 2, "data": 3, "benchmark": 4,
         "cli": 5, "viz": 0}
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
    return parts[1] if len(parts) > 1 and parts[1] in RANKS else None


def test_imports_go_down_only():
    upward = []
    for source, targets in _graph().items():
        for target in targets:
            if target in FACES and not (source.startswith("cfcam_fast.cli") and target == "cfcam_fast"):
                if source not in FACES:
                    upward.append(f"{source} -> {target} (a public face)")
                continue
            low, high = _layer(target), _layer(source)
            if low is not None and high is not None and RANKS[low] > RANKS[high]:
                upward.append(f"{source} ({high}) -> {target} ({low})")
            if low is not None and high is not None and RANKS[low] == RANKS[high] and low != high:
                upward.append(f"{source} ({high}) -> {target} ({low}): side by side")
    assert not upward, "imports that point up or sideways:\n" + "\n".join(sorted(upward))


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

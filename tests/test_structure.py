"""The house's structure, checked from the source: the import graph (every import statement, wherever it
sits: module top, TYPE_CHECKING blocks, function bodies), module sizes, and settings without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "distill")
MAX_LINES = 420
# The API layer reaches the engine and the live-session owner through their packages' faces, never a
# store's or the model's internals.
INTERNALS = ("service.live.", "service.model.", "service.job_store_redis")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `name` imports (the deepest known module each statement names)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (a package's __init__ re-exporting its
    own submodules is not a cycle: it is the package's face)."""
    def real(source: str, target: str) -> bool:
        return not source.startswith(target + ".") and not target.startswith(source + ".")

    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges[node]:
            if not real(node, target):
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_no_import_circle() -> None:
    assert cycles(graph()) == []


def test_service_never_imports_distill() -> None:
    assert [(m, t) for m, targets in graph().items() if m.startswith("service") for t in targets if t.startswith("distill")] == []


def test_the_api_reaches_no_store_or_model_internals() -> None:
    reached = [(m, t) for m, targets in graph().items() if m.startswith("service.api")
               for t in targets if t.startswith(INTERNALS)]
    assert reached == []


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES} == {}


def test_settings_load_without_torch() -> None:
    code = "import sys, service.settings; assert 'torch' not in sys.modules, 'settings imported torch'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


def test_the_checks_can_fail() -> None:
    """The cycle finder finds a planted circle, and the import reader follows relative imports."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    known = modules()
    assert "service.engine_types" in imports("service.engine", known["service.engine"], known)

"""The import picture of the tree: imports only go ``space`` <- ``evaluators`` <- ``results`` <-
``search``, no module imports itself back through others (no circle), only ``search`` imports
Ray (in one module), and no top-level ``space``/``search``/... name is imported anywhere."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("space", "evaluators", "results", "search")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return "pikenas." + ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    """Every module ``path`` imports (absolute names, function-level imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((base, node.lineno))
            # ``from pkg import submodule`` imports the submodule too
            out += [(f"{base}.{a.name}", node.lineno) for a in node.names
                    if f"{base}.{a.name}" in MODULES]
    return out


def _layer(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) >= 2 and parts[0] == "pikenas" and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return None


def test_every_package_module_is_found() -> None:
    assert len(MODULES) > 80
    assert "pikenas.space.program.ir" in MODULES


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_go_downward(module: str) -> None:
    own = _layer(module)
    for name, line in _imports(MODULES[module], module):
        assert name.split(".")[0] not in LAYERS, f"{module}:{line} imports top-level {name!r}"
        target = _layer(name)
        if target is not None:
            assert target <= own, f"{module}:{line} imports upward: {name}"
        if name.split(".")[0] == "ray":
            assert module == "pikenas.search._ray", f"{module}:{line} imports Ray"


def test_no_import_circle() -> None:
    """Tarjan's strongly connected components over the module graph: every one is a single
    module (a package's ``__init__`` re-exporting its own private modules is not a circle)."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        edges = set()
        for name, _ in _imports(path, module):
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                edges.add(name)
        graph[module] = edges
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


def test_tests_and_benchmarks_use_the_pikenas_names() -> None:
    for folder in ("tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for name, line in _imports(path, "tests.x"):
                assert name.split(".")[0] not in LAYERS, f"{path}:{line} imports {name!r}"


@pytest.mark.slow
def test_a_wheel_installs_one_package_named_pikenas(tmp_path: Path) -> None:
    """``pip install .`` puts only ``pikenas`` into site-packages: outside the checkout
    ``import pikenas`` works, its subpackages come from the install, and no top-level
    ``space``, ``evaluators``, ``results`` or ``search`` is importable."""
    import subprocess
    import sys

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    installed = sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info"))
    assert installed in (["pikenas"], ["bin", "pikenas"]), installed
    code = (
        "import importlib.util, pikenas, pikenas.space.program.ir as ir, pikenas.search.cli;"
        "print(pikenas.__version__);"
        "print(ir.__file__);"
        "print([n for n in ('space', 'evaluators', 'results', 'search')"
        " if importlib.util.find_spec(n)])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    version, ir_file, top_level = result.stdout.splitlines()
    assert version and ir_file.startswith(str(target)), ir_file
    assert top_level == "[]"
    assert (target / "pikenas" / "search" / "default_search.yaml").is_file()

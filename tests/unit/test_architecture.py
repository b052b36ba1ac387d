"""The package's shape, as the design describes it: the model at the bottom imports nothing else of dockwright,
nothing imports the frontends but the library's entry points, and module-level imports have no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "dockwright"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """dockwright modules imported by `path` (a `from X import y` counts as X, or X.y when that is a module)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in found if name in modules and name != _module_name(path)}


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    return {_module_name(p): _imports(p, top_level_only=top_level_only) for p in PACKAGE.rglob("*.py")}


def test_the_model_imports_nothing_else_of_dockwright() -> None:
    for name, imported in _graph(top_level_only=False).items():
        if name.startswith("dockwright.model"):
            assert all(i.startswith("dockwright.model") for i in imported), (name, imported)


def test_only_the_library_and_the_command_line_import_the_frontends() -> None:
    for name, imported in _graph(top_level_only=False).items():
        if any(i.startswith("dockwright.frontends") for i in imported):
            assert name.startswith(("dockwright.frontends", "dockwright.api", "dockwright.cli")), name


def test_module_level_imports_have_no_cycles() -> None:
    graph = _graph(top_level_only=True)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt.startswith(f"{node}.") or node.startswith(f"{nxt}."):
                continue  # a package and its own submodules
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_no_module_is_past_about_500_lines() -> None:
    long = {str(p.relative_to(SRC)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 550}
    assert not long, long


def test_test_files_have_unique_names() -> None:
    """pytest imports test files by their base name (no packages under tests/): two of one name cannot both run."""
    names = [p.name for p in (SRC.parent / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_no_module_shadows_a_function_of_the_library() -> None:
    """`import dockwright.X` sets the attribute X on the package: a module named like a function of the API
    (a package `build/`, say) would replace dockwright.build() once anything imported it."""
    import dockwright

    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    assert not names & set(dockwright.__all__)

"""The layout rules of docs/architecture.md, checked by reading the source: no import cycles
(function-level imports included), no private names imported or used across modules, files
under 400 lines. Each checker is first shown to catch a planted breach."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400


def modules(package: Path) -> dict[str, Path]:
    """Every module of `package` by its dotted name (a package by its own name)."""
    found = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, str, str]]:
    """(module, imported name, local name) for every import in the file, at any depth; the
    imported name is '' for a whole module, the local name '' where none names the module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, "", a.asname or "") for a in node.names if a.name in known]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in known:
                    found.append((full, "", alias.asname or alias.name))
                elif base in known:
                    found.append((base, alias.name, ""))
    return found


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    return {
        name: {m for m, _, _ in _imports(name, path, known)} - {name}
        for name, path in known.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk meets (empty when the graph is acyclic)."""
    state: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def private_uses(known: dict[str, Path]) -> list[str]:
    """'module: other._name' for every private name of another module imported or read."""
    bad = set()
    for name, path in known.items():
        imports = _imports(name, path, known)
        bad |= {f"{name}: {m}.{attr}" for m, attr, _ in imports if attr.startswith("_")}
        local = {as_: m for m, attr, as_ in imports if as_ and not attr and m != name}
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in local
                and node.attr.startswith("_")
            ):
                bad.add(f"{name}: {local[node.value.id]}.{node.attr}")
    return sorted(b for b in bad if not b.rsplit(".", 1)[1].startswith("__"))


@pytest.fixture
def planted(tmp_path: Path) -> dict[str, Path]:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n_hidden = 1\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import c\n    return c._secret\n")
    (pkg / "c.py").write_text("from pkg.a import _hidden\n_secret = 2\n")
    return modules(pkg)


def test_the_checkers_catch_planted_breaches(planted: dict[str, Path]) -> None:
    assert set(planted) == {"pkg", "pkg.a", "pkg.b", "pkg.c"}
    assert cycles(import_graph(planted)) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    assert private_uses(planted) == ["pkg.b: pkg.c._secret", "pkg.c: pkg.a._hidden"]


def test_dlintro_has_no_import_cycles() -> None:
    known = modules(ROOT / "dlintro")
    assert len(known) > 50 and "dlintro.tune" in import_graph(known)["dlintro.tunecache"]
    assert cycles(import_graph(known)) == []


def test_no_private_names_cross_modules() -> None:
    assert private_uses(modules(ROOT / "dlintro")) == []


def test_files_stay_under_the_line_limit() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in [*(ROOT / "dlintro").rglob("*.py"), *(ROOT / "scripts").glob("*.py")]
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these along docs/architecture.md's table: {long}"

"""Neither package has an import cycle, counting every import a module can run.

Every module of ``cqs_design`` and ``cqs_attention`` is parsed with :mod:`ast` (never imported),
and each ``import`` / ``from ... import`` statement anywhere in it -- at module level, inside a
function or class, under ``if TYPE_CHECKING:`` or in a ``try`` -- becomes an edge to the module
it names, relative imports resolved against the importing module's package. ``from pkg import
name`` points at ``pkg.name`` when that is a module of the repository, else at ``pkg``; an import
of ``a.b.c`` is an edge to ``a.b.c`` only, not to the packages ``a`` and ``a.b`` whose
``__init__`` Python runs first (else every package that re-exports its modules would be a
cycle).  An edge to a module outside the two packages is dropped.  A cycle in this graph
(module granularity) fails the test, named module by module; ``cqs_design`` must not import
``cqs_attention`` at all.  Because imports inside functions count too, none of them can be
dodging a cycle: with the graph acyclic, each could move to the top of its module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cqs_design", "cqs_attention")


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of both packages (a package is its __init__)."""
    found: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(name: str, path: Path, level: int, module: str | None) -> str:
    """The absolute module a relative ``from`` import names (``level`` dots)."""
    if level == 0:
        return module or ""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{module}" if module else package


def import_graph(modules: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """Module -> the modules of the two packages it imports (anywhere in its body)."""
    modules = _modules() if modules is None else modules
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path, node.level, node.module)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                # `import a.b.c` names a.b.c; keep the longest prefix that is one of ours
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of ``graph``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "cqs_design"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("def f():\n    from cqs_design.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import a\n")
    mods = {"cqs_design": pkg / "__init__.py", "cqs_design.a": pkg / "a.py",
            "cqs_design.sub": pkg / "sub" / "__init__.py",
            "cqs_design.sub.b": pkg / "sub" / "b.py"}
    graph = import_graph(mods)
    assert graph == {"cqs_design": {"cqs_design.a"}, "cqs_design.a": {"cqs_design.sub.b"},
                     "cqs_design.sub": set(), "cqs_design.sub.b": {"cqs_design.a"}}
    assert find_cycle(graph) == ["cqs_design.a", "cqs_design.sub.b", "cqs_design.a"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package: str) -> None:
    graph = import_graph()
    inside = {m: {t for t in e if t.split(".")[0] == package}
              for m, e in graph.items() if m.split(".")[0] == package}
    cycle = find_cycle(inside)
    assert cycle is None, f"import cycle in {package}: {' -> '.join(cycle)}"


def test_cqs_design_never_imports_cqs_attention() -> None:
    bad = sorted(f"{m} -> {t}" for m, e in import_graph().items() if m.startswith("cqs_design")
                 for t in e if t.startswith("cqs_attention"))
    assert not bad, f"cqs_design must not import cqs_attention: {bad}"

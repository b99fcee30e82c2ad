"""No import cycles between the modules of ``llc_service``.

The import graph is read from the source with :mod:`ast` (nothing is imported), over every ``import`` statement of a
module: at module level and inside functions, classes, ``try`` and ``if`` blocks alike (a function-level import
is a cycle that merely waits for its first call), except the body of ``if TYPE_CHECKING:``, which never runs.

Rules (module names are dotted; ``pkg/__init__.py`` is the module ``pkg``):

- ``import a.b.c`` and ``from a.b import c`` where ``a/b/c`` is a module of the tree: an edge to ``a.b.c``.
  ``from a.b import name`` where ``name`` is not a submodule (a function, a class, a re-exported name, ``*``):
  an edge to ``a.b``. Relative imports (``from . import x``, ``from ..y import z``) are resolved against the
  importing module's package first.
- Importing ``a.b.c`` also executes ``a/__init__.py`` and ``a/b/__init__.py``. Those implied edges to the target's
  parent packages are added **only for packages the importer is not itself inside**: a module inside ``a.b`` runs
  ``a/b/__init__.py`` before its own code anyway, so an edge from it to its own ancestor would make every
  package that re-exports one of its submodules (``estimate/__init__.py`` importing ``chains``) a cycle, the
  usual false positive. An explicit ``from a.b import name`` of a re-exported name from inside ``a.b`` is still an
  edge to ``a.b``: that does depend on the package's ``__init__`` having run to completion.
- A module importing itself is no cycle. Imports of modules outside the tree are ignored; so are dynamic ones
  (``importlib.import_module(...)``).

A cycle is reported as each strongly connected component of two or more modules, with one concrete loop in it.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "llc_service"


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package rooted at ``package_dir``."""
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom node of ``tree``, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the tree (``a.b.func`` -> ``a.b``), or None."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]):
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield _known(alias.name, modules)
        return
    base = node.module or ""
    if node.level:  # relative: resolved against the importing module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = package[: len(package) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    for alias in node.names:
        sub = f"{base}.{alias.name}" if base else alias.name
        yield sub if alias.name != "*" and sub in modules else _known(base, modules)


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same tree it imports (see the module docstring for the rules)."""
    modules = module_names(package_dir)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        own_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
        if not is_package:
            own_packages.discard(module)
        for node in _import_nodes(ast.parse(path.read_text(), str(path))):
            for target in _targets(module, is_package, node, modules):
                if target is None:
                    continue
                parts = target.split(".")
                implied = {".".join(parts[:i]) for i in range(1, len(parts))} - own_packages
                graph[module].update(t for t in {target, *implied} if t in modules and t != module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One loop (``[a, b, ..., a]``) per strongly connected component of two or more modules, sorted."""
    return sorted(_loop(graph, c) for c in components(graph))


def components(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of two or more modules: each module of one is on a loop with the others."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph is small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def _loop(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest loop through the component's first module (breadth-first, inside the component)."""
    start = min(component)
    parent = {start: None}
    queue = [start]
    for v in queue:
        for w in sorted(graph[v] & component):
            if w == start:
                path = [v]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError(f"no loop through {start} in {component}")  # a strongly connected component has one


def test_llc_service_has_no_import_cycles():
    graph = import_graph(PACKAGE_DIR)
    found = [(" -> ".join(_loop(graph, c)), sorted(c)) for c in components(graph)]
    assert not found, "import cycles between llc_service modules:\n" + "\n".join(
        f"  {loop}   (all on loops with each other: {', '.join(c)})" for loop, c in sorted(found))


def test_graph_sees_the_packages_real_imports():
    """The checker reads this tree: a few imports known to exist (module level, function level, a submodule named
    in ``from pkg import sub``) are edges, so an empty or blind graph cannot pass the test above."""
    graph = import_graph(PACKAGE_DIR)
    assert "llc_service.estimate.loop" in graph["llc_service.estimate.chains"]  # module level
    # from llc_service.estimate import batches: the submodule, not the package
    assert "llc_service.estimate.batches" in graph["llc_service.estimate.chains"]
    assert "llc_service.estimate" in graph["llc_service"]  # inside __getattr__, from llc_service import estimate
    assert "llc_service.config" in graph["llc_service"]
    assert "llc_service.estimate.chains" not in graph["llc_service.estimate.batched"]


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "fake"


def test_checker_finds_a_planted_cycle(tmp_path):
    """A fake package with one cycle through a function-level, a relative and a ``from pkg import submodule``
    import, and the imports the rules say are no cycle (a package re-exporting its submodule, a sibling import
    inside the package, a TYPE_CHECKING import, a module outside the tree)."""
    pkg = _write(tmp_path, {
        "fake/__init__.py": "from fake.core import run\n",
        "fake/core/__init__.py": "from fake.core.engine import run\n",
        "fake/core/engine.py": """\
            import json
            from typing import TYPE_CHECKING
            from fake.core import helpers
            if TYPE_CHECKING:
                from fake.plugins.extra import Extra
            def run():
                from fake.plugins import extra
                return extra
            """,
        "fake/core/helpers.py": "import os.path\n",
        "fake/plugins/__init__.py": "",
        "fake/plugins/extra.py": "from ..core import engine\nclass Extra: pass\n",
        "fake/plugins/other.py": "from . import extra\nfrom fake import plugins\n",
    })
    graph = import_graph(pkg)
    assert graph == {
        "fake": {"fake.core"},
        "fake.core": {"fake.core.engine"},
        "fake.core.engine": {"fake.core.helpers", "fake.plugins.extra", "fake.plugins"},
        "fake.core.helpers": set(),
        "fake.plugins": set(),
        "fake.plugins.extra": {"fake.core.engine", "fake.core"},
        "fake.plugins.other": {"fake.plugins.extra", "fake.plugins"},
    }
    # fake.core runs engine; engine (in run()) imports extra; extra imports engine and, from outside fake.core, runs
    # fake/core/__init__.py
    assert cycles(graph) == [["fake.core", "fake.core.engine", "fake.plugins.extra", "fake.core"]]

    (pkg / "plugins" / "extra.py").write_text("class Extra: pass\n")  # the cycle broken: none left
    assert cycles(import_graph(pkg)) == []

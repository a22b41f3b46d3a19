"""The import graph of medrecon and napari_plugin: layered and free of cycles.

The graph is built with :mod:`ast` from the source files, so every import
counts, also those inside functions or under ``if TYPE_CHECKING:``: a
function-local import is still a dependency, only a later one. The layers are
those of the README's "where things live" map; a lower layer never imports a
higher one, and no two modules import each other, directly or round a loop.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("medrecon", "napari_plugin")

#: Layer of each module, keyed by module prefix (the longest prefix wins). A
#: module may import its own layer and lower ones only. A package's
#: ``__init__`` is keyed as ``<package>.__init__``.
LAYERS: dict[str, int] = {
    # layer 0: the core, imports nothing above it. The package's __init__ is here
    # because it runs before any of its modules: what it imports, all import.
    "medrecon.__init__": 0,
    "medrecon.errors": 0,
    "medrecon.progress": 0,
    "medrecon.volume": 0,
    "medrecon.triangles": 0,
    "medrecon.atomic": 0,
    "medrecon.labels": 0,
    "medrecon.anatomy": 0,
    "medrecon.imagekind": 0,
    "medrecon.report": 0,
    "medrecon.text": 0,
    # layer 1: file formats, surfaces, meshes, metrics
    "medrecon.io": 1,
    "medrecon.surface": 1,
    "medrecon.mesh": 1,
    "medrecon.evaluate": 1,
    # layer 2: label sources, the network library, phantoms, shape completion, editing
    "medrecon.sources": 2,
    "medrecon.models": 2,
    "medrecon.phantom": 2,
    "medrecon.completion": 2,
    "medrecon.edit": 2,
    # layer 3: the pipeline and training
    "medrecon.pipeline": 3,
    "medrecon.train": 3,
    # layer 4: many studies at once
    "medrecon.batch": 4,
    # layer 5: the command line, also as python -m medrecon
    "medrecon.cli": 5,
    "medrecon.__main__": 5,
    # layer 6: the napari plugin
    "napari_plugin": 6,
}

#: Packages that neither import nor are imported by the other packages of their
#: own layer: file formats (io/) and geometry (surface/, mesh/, evaluate.py)
#: share only what lives in layer 0 (the mesh type, atomic output).
SEPARATE: tuple[str, ...] = ("medrecon.io",)

#: GUI packages medrecon must never import (napari_plugin/ is the only GUI code).
GUI = re.compile(r"^(napari|qtpy|PyQt\d*|PySide\d*|magicgui|superqt)$")


@dataclass
class Graph:
    """Modules of some packages and the imports between them."""

    #: module -> its file, relative to the root the graph was built from
    files: dict[str, Path] = field(default_factory=dict)
    #: (importer, imported module) -> [(file, line), ...]
    edges: dict[tuple[str, str], list[tuple[Path, int]]] = field(default_factory=dict)
    #: (importer, top-level external package) -> [(file, line), ...]
    external: dict[tuple[str, str], list[tuple[Path, int]]] = field(default_factory=dict)

    def where(self, src: str, dst: str) -> str:
        """``file:line`` of every import of ``dst`` in ``src``."""
        return ", ".join(f"{file}:{line}" for file, line in self.edges[(src, dst)])


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(node: ast.AST, module: str, is_package: bool) -> list[tuple[str, int]]:
    """Dotted names an import statement (or a literal import_module call) asks for."""
    if isinstance(node, ast.Import):
        return [(alias.name, node.lineno) for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        return [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
            return [(node.args[0].value, node.lineno)]
    return []


def build_graph(root: Path, packages: tuple[str, ...]) -> Graph:
    """Parse every module under ``root/<package>`` and collect its imports.

    An import resolves to the most specific module of ``packages`` it names
    (``import a.b.c`` -> ``a.b.c``; ``from a import b`` -> ``a.b`` when ``b`` is a
    submodule, else ``a``); relative imports are resolved first. Imports of
    other packages are kept by their top-level name.
    """
    graph = Graph()
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            graph.files[_module_name(root, path)] = path.relative_to(root)
    for module, shown in graph.files.items():
        tree = ast.parse((root / shown).read_text(encoding="utf-8"), filename=str(shown))
        is_package = shown.name == "__init__.py"
        for node in ast.walk(tree):
            for name, line in _imported(node, module, is_package):
                top = name.split(".")[0]
                if top not in packages:
                    graph.external.setdefault((module, top), []).append((shown, line))
                    continue
                # "from a import b" names a.b: the submodule if there is one, else a
                target = name
                while target not in graph.files and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in graph.files and target != module:
                    graph.edges.setdefault((module, target), []).append((shown, line))
    return graph


def find_cycles(graph: Graph) -> list[list[str]]:
    """One import cycle per strongly connected component with more than one module."""
    succ: dict[str, list[str]] = {m: [] for m in graph.files}
    for src, dst in sorted(graph.edges):
        succ[src].append(dst)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph is a few hundred modules deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
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

    for v in sorted(succ):
        if v not in index:
            visit(v)
    cycles = []
    for component in components:
        # shortest way back to the start, by breadth-first search inside the component
        start = min(component)
        came_from = {start: ""}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w in succ[v]:
                if w == start:
                    path = [v]
                    while came_from[path[-1]]:
                        path.append(came_from[path[-1]])
                    cycles.append([*reversed(path), start])
                    queue = []
                    break
                if w in component and w not in came_from:
                    came_from[w] = v
                    queue.append(w)
    return cycles


def layer_of(module: str, layers: dict[str, int], roots: tuple[str, ...]) -> int | None:
    """The layer of the longest prefix of ``module`` in ``layers``; None if none fits."""
    name = f"{module}.__init__" if module in roots else module
    keys = [k for k in layers if name == k or name.startswith(k + ".")]
    return layers[max(keys, key=len)] if keys else None


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_violations(
    graph: Graph,
    layers: dict[str, int],
    roots: tuple[str, ...],
    *,
    separate: tuple[str, ...] = (),
    allowed: frozenset[tuple[str, str]] = frozenset(),
) -> list[str]:
    """Modules outside the map, and every import from a lower layer to a higher one.

    An import between a package of ``separate`` and another package of the same
    layer counts as going up too.
    """
    found = [f"{graph.files[m]}:1: module {m} has no layer: add it to LAYERS" for m in sorted(graph.files)
             if layer_of(m, layers, roots) is None]
    for (src, dst), _ in sorted(graph.edges.items()):
        low, high = layer_of(src, layers, roots), layer_of(dst, layers, roots)
        if low is None or high is None or (src, dst) in allowed:
            continue
        apart = high == low and any(_inside(src, p) != _inside(dst, p) for p in separate)
        if high > low or apart:
            found.append(f"{graph.where(src, dst)}: {src} (layer {low}) imports {dst} (layer {high}"
                         f"{', kept apart' if apart else ''}): move what it needs down")
    return found


def gui_imports(graph: Graph, package: str) -> list[str]:
    """Every import of a GUI package from inside ``package``."""
    return [f"{file}:{line}: {src} imports {top}: GUI code lives in napari_plugin/ only"
            for (src, top), hits in sorted(graph.external.items())
            if (src == package or src.startswith(package + ".")) and GUI.match(top)
            for file, line in hits]


def _describe(graph: Graph, cycle: list[str]) -> str:
    steps = [f"  {a} -> {b} ({graph.where(a, b)})" for a, b in zip(cycle, cycle[1:], strict=False)]
    return "import cycle:\n" + "\n".join(steps)


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph(REPO, PACKAGES)


def test_no_import_cycles(graph: Graph) -> None:
    cycles = find_cycles(graph)
    assert not cycles, "\n".join(_describe(graph, c) for c in cycles)


def test_no_upward_imports(graph: Graph) -> None:
    found = layer_violations(graph, LAYERS, PACKAGES, separate=SEPARATE)
    assert not found, "\n".join(found)


def test_medrecon_never_imports_gui(graph: Graph) -> None:
    found = gui_imports(graph, "medrecon")
    assert not found, "\n".join(found)


def test_graph_sees_every_import(graph: Graph) -> None:
    # ground truth read without ast: every line that starts an import of our own
    # packages (at any indentation, so inside functions too) must be an edge
    assert len(graph.files) == sum(1 for p in PACKAGES for _ in (REPO / p).rglob("*.py"))
    statement = re.compile(r"\s*(from\s+(medrecon|napari_plugin|\.)[\w.]*\s+import\b|import\s+(medrecon|napari_plugin)\b)")
    lines = {(path, n) for path in graph.files.values()
             for n, text in enumerate((REPO / path).read_text(encoding="utf-8").splitlines(), 1)
             if statement.match(text)}
    assert len(lines) > 300
    assert {hit for hits in graph.edges.values() for hit in hits} == lines


# --- the checker checked, on a fake package with known faults -------------------------

_FAKE = {
    "fake/__init__.py": "from fake.core import thing\n",
    "fake/core.py": "import os\nthing = 1\n",
    # a cycle of two, closed by an import inside a function
    "fake/low/__init__.py": "",
    "fake/low/a.py": "from fake.low import b\n",
    "fake/low/b.py": "def f():\n    from . import a\n    return a\n",
    # an upward import written as `import a.b`, one as a relative import, one by import_module
    "fake/low/c.py": "import fake.high.run\n",
    "fake/low/d.py": "def g():\n    from ..high import run\n    return run\n",
    "fake/low/e.py": "import importlib\nmod = importlib.import_module('fake.high.run')\n",
    # a three-module cycle across packages
    "fake/high/__init__.py": "",
    "fake/high/run.py": "from fake.core import thing\nfrom fake.high.x import y\n",
    "fake/high/x.py": "y = 1\ndef h():\n    from fake.high import z\n",
    "fake/high/z.py": "import fake.high.run as r\n",
    # a GUI import inside a function, and a module the map does not place
    "fake/gui.py": "def show():\n    import qtpy.QtWidgets\n    from napari import Viewer\n",
    "fake/stray.py": "",
}
_FAKE_LAYERS = {"fake.__init__": 2, "fake.core": 0, "fake.low": 0, "fake.high": 1, "fake.gui": 1}


def imported_names(root: Path, package: str) -> list[tuple[str, str, str]]:
    """Every ``from <package>... import name`` in ``root/package``, as (where, module, name)."""
    found = []
    for path in sorted((root / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.split(".")[0] in ("medrecon", "napari_plugin"):
                where = f"{path.relative_to(root)}:{node.lineno}"
                found += [(where, node.module, a.name) for a in node.names if a.name != "*"]
    return found


def _provides(module: str, name: str) -> bool:
    """Tell whether ``from module import name`` works (an attribute or a submodule)."""
    if hasattr(importlib.import_module(module), name):
        return True
    try:
        return importlib.util.find_spec(f"{module}.{name}") is not None
    except ModuleNotFoundError:  # module is not a package
        return False


def test_every_imported_name_exists() -> None:
    # imports inside functions run only when that path runs: a name that moved
    # to another module must fail here, not in a user's hands
    missing = []
    for where, module, name in imported_names(REPO, "medrecon") + imported_names(REPO, "napari_plugin"):
        if not _provides(module, name):
            missing.append(f"{where}: {module} has no {name}")
    assert not missing, "\n".join(missing)


def test_provides_tells_missing_names() -> None:
    assert _provides("medrecon.io", "formats") and _provides("medrecon.volume", "Volume")
    assert not _provides("medrecon.io.dicom_header", "read_dataset")  # moved to dicom_file
    assert not _provides("medrecon.volume", "no_such_name")


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Path, Graph]:
    for name, text in _FAKE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path, build_graph(tmp_path, ("fake",))


def test_checker_resolves_imports(fake: tuple[Path, Graph]) -> None:
    _, g = fake
    assert set(g.files) == {"fake", "fake.core", "fake.low", "fake.low.a", "fake.low.b", "fake.low.c",
                            "fake.low.d", "fake.low.e", "fake.high", "fake.high.run", "fake.high.x",
                            "fake.high.z", "fake.gui", "fake.stray"}
    assert set(g.edges) == {
        ("fake", "fake.core"),
        ("fake.low.a", "fake.low.b"), ("fake.low.b", "fake.low.a"),
        ("fake.low.c", "fake.high.run"), ("fake.low.d", "fake.high.run"), ("fake.low.e", "fake.high.run"),
        ("fake.high.run", "fake.core"), ("fake.high.run", "fake.high.x"),
        ("fake.high.x", "fake.high.z"), ("fake.high.z", "fake.high.run"),
    }
    assert g.edges[("fake.low.b", "fake.low.a")] == [(Path("fake/low/b.py"), 2)]


def test_checker_finds_cycles(fake: tuple[Path, Graph]) -> None:
    _, g = fake
    cycles = find_cycles(g)
    assert sorted(cycles) == [["fake.high.run", "fake.high.x", "fake.high.z", "fake.high.run"],
                              ["fake.low.a", "fake.low.b", "fake.low.a"]]
    text = _describe(g, ["fake.low.a", "fake.low.b", "fake.low.a"])
    assert "fake/low/a.py:1" in text and "fake/low/b.py:2" in text


def test_checker_finds_upward_imports(fake: tuple[Path, Graph]) -> None:
    _, g = fake
    found = layer_violations(g, _FAKE_LAYERS, ("fake",))
    assert len(found) == 4
    assert found[0].endswith("module fake.stray has no layer: add it to LAYERS")
    assert [f.split(": ")[0] for f in found[1:]] == ["fake/low/c.py:1", "fake/low/d.py:2", "fake/low/e.py:2"]
    assert all("(layer 0) imports fake.high.run (layer 1)" in f for f in found[1:])
    allowed = frozenset({("fake.low.c", "fake.high.run")})
    assert len(layer_violations(g, _FAKE_LAYERS, ("fake",), allowed=allowed)) == 3
    # within one layer, a package kept apart from the others
    apart = layer_violations(g, _FAKE_LAYERS, ("fake",), separate=("fake.gui",), allowed=allowed)
    assert len(apart) == 3
    apart = layer_violations(g, _FAKE_LAYERS, ("fake",), separate=("fake.high.x",), allowed=allowed)
    assert len(apart) == 5
    assert set(apart) > {
        "fake/high/run.py:2: fake.high.run (layer 1) imports fake.high.x (layer 1, kept apart): move what it needs down",
        "fake/high/x.py:3: fake.high.x (layer 1) imports fake.high.z (layer 1, kept apart): move what it needs down",
    }


def test_checker_finds_gui_imports(fake: tuple[Path, Graph]) -> None:
    _, g = fake
    assert gui_imports(g, "fake") == [
        "fake/gui.py:3: fake.gui imports napari: GUI code lives in napari_plugin/ only",
        "fake/gui.py:2: fake.gui imports qtpy: GUI code lives in napari_plugin/ only",
    ]

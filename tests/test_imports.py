"""No import circle in ``src/natsync`` (issue #21, "the knots").

The walk reads every module's source with :mod:`ast` (nothing is imported): module-level and
function-level imports count, imports under ``if TYPE_CHECKING:`` do not (they never run). A C
extension is a module when a ``.pyi`` stands beside it. ``from pkg import name`` is an edge to
``pkg.name`` when that is a module, else to ``pkg`` (its ``__init__``); importing a submodule
does not count as importing its parent package, since Python finishes the parent first.

A circle is a strongly connected component of that graph with more than one module. Known
circles, each owned by an open issue, are listed in ``KNOWN_CIRCLES``: the test fails on any
other circle, and also when a known one is gone (so the list is pruned when it is untied).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

#: Circles that exist on purpose for now, each with the issue that unties it: module set → why.
#: Empty today. ``natsync.config`` ↔ ``natsync.eas.*`` (config.py checks policy overrides with
#: eas.policy; eas.context and eas.dispatch name ServerConfig) and ``natsync.ddns.settings`` ↔
#: ``natsync.ddns.sources`` close only through ``if TYPE_CHECKING:`` imports, which never run, so
#: they are no import circle (issue #21 knot 3 still wants config.py not to import eas).
#: An entry looks like ``frozenset({"natsync.a", "natsync.b"}): "#NN: why, who unties it"``.
KNOWN_CIRCLES: dict[frozenset[str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    """Every module of the package: ``.py`` sources and ``.pyi`` stubs of C extensions."""
    found: dict[str, Path] = {}
    for path in sorted((SRC / "natsync").rglob("*.py")):
        found[_module_name(path)] = path
    for stub in sorted((SRC / "natsync").rglob("*.pyi")):
        found.setdefault(_module_name(stub), stub)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that runs: all but those under ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _package_of(module: str, path: Path) -> str:
    return module if path.name.startswith("__init__.") else module.rpartition(".")[0]


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, path: Path, known: set[str]
) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in known:
                yield alias.name
        return
    base = node.module or ""
    if node.level:
        package = _package_of(module, path)
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in known:
            yield sub
        elif base in known:
            yield base


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """Module → the modules it imports (computed once per run; callers must not change it)."""
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree):
            graph[name].update(t for t in _targets(node, name, path, known) if t != name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[frozenset[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def _show(component: frozenset[str]) -> str:
    return " ↔ ".join(sorted(component))


def test_src_has_no_new_import_circle() -> None:
    found = circles(import_graph())
    new = [c for c in found if c not in KNOWN_CIRCLES]
    assert not new, "import circles in src/ (untie them; see tests/test_imports.py):\n" + "\n".join(
        _show(c) for c in new
    )


def test_known_circles_are_still_circles() -> None:
    """An allowlisted circle that is gone must leave the list, so it cannot come back unseen."""
    found = circles(import_graph())
    gone = [_show(c) for c in KNOWN_CIRCLES if c not in found]
    assert not gone, f"untied, remove from KNOWN_CIRCLES: {gone}"


def test_walk_sees_function_level_imports_and_skips_type_checking() -> None:
    """The walker itself: a lazy import is an edge, a TYPE_CHECKING one is not."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from natsync.b import x\n"
        "def f():\n    from natsync import c\n"
    )
    known = {"natsync.a", "natsync.b", "natsync.c", "natsync"}
    path = Path("natsync/a.py")
    got = {t for node in _imports(tree) for t in _targets(node, "natsync.a", path, known)}
    assert got == {"natsync.c"}
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
    assert circles({"a": {"b"}, "b": set()}) == []


# -- which package may import which -----------------------------------------------------------
#
# The layers of docs/architecture.md ("What each package owns and may import"), as data: a
# package (``natsync.X``, or a top-level module such as ``config``; ``natsync`` is the package's
# own ``__init__``) may import the packages listed for it, and nothing else of natsync. The
# lists are what the code imports today; a new arrow is a decision: add it here and to the
# architecture page, and it must not close a circle between packages.

#: Package → the packages it may import.
ALLOWED: dict[str, frozenset[str]] = {
    name: frozenset(imports)
    for name, imports in {
        "errors": (),
        "natsync": (),
        "fdlimit": (),
        "auth": (),
        "base": ("errors",),
        "wbxml": ("errors",),
        "store": ("errors",),
        "logs": ("errors",),
        "service": ("errors",),
        "portmap": ("errors",),
        "mime": ("errors", "store"),
        "classes": ("errors", "mime", "store", "wbxml"),
        "mail": ("base", "classes", "errors", "fdlimit", "mime", "store"),
        "eas": ("base", "classes", "errors", "mail", "mime", "natsync", "store", "wbxml"),
        "config": ("base", "errors", "store"),
        "cert": ("config", "errors"),
        "device": ("cert",),
        "edge": ("base", "cert", "config", "eas", "errors"),
        "relay": ("config", "edge", "errors"),
        "client": ("eas", "errors", "wbxml"),
        "ddns": ("config", "errors", "natsync", "portmap"),
        "server": ("auth", "base", "cert", "config", "eas", "edge", "errors", "fdlimit", "logs",
                   "store", "wbxml"),
        "sources": ("classes", "config", "eas", "errors", "mail", "mime", "store", "wbxml"),
        "lab": ("cert", "client", "errors", "natsync"),
        "doctor": ("cert", "client", "config", "ddns", "edge", "errors", "portmap", "relay",
                   "store"),
        "admin": ("errors", "server", "store"),
        "console": ("admin", "auth", "base", "config", "device", "doctor", "errors", "portmap",
                    "server", "store"),
        "deployment": ("cert", "config", "console", "ddns", "edge", "errors", "relay", "sources"),
        "run": ("base", "cert", "config", "console", "ddns", "deployment", "doctor", "edge",
                "errors", "fdlimit", "logs", "mail", "portmap", "relay", "server", "sources",
                "store"),
        "cli": ("admin", "auth", "cert", "classes", "config", "console", "ddns", "deployment",
                "device", "doctor", "eas", "edge", "errors", "fdlimit", "lab", "logs", "mail",
                "mime", "natsync", "portmap", "relay", "run", "server", "service", "sources",
                "store", "wbxml"),
    }.items()
}  # fmt: skip

#: Imports against the layers that stay for now: (package, module it imports) → why, and who
#: unties it. Each is checked to still exist, so the list shrinks as they go. Empty today: the
#: last three (config → eas.policy, console → run.status, mail → server.listen) moved their
#: shared leaf below both, into natsync.base.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _package_edges() -> dict[tuple[str, str], set[str]]:
    """(importing package, imported package) → the imported modules, between packages only."""
    edges: dict[tuple[str, str], set[str]] = {}
    for module, imported in import_graph().items():
        for target in imported:
            pair = (_package(module), _package(target))
            if pair[0] != pair[1]:
                edges.setdefault(pair, set()).add(target)
    return edges


def test_every_package_has_its_place_in_the_layers() -> None:
    packages = {_package(module) for module in import_graph()}
    assert packages == set(ALLOWED), (
        f"place new packages in ALLOWED: {sorted(packages - set(ALLOWED))}; "
        f"remove gone ones: {sorted(set(ALLOWED) - packages)}"
    )


def test_packages_import_only_what_they_may() -> None:
    wrong = [
        f"{package} → {target}"
        for (package, imported), targets in sorted(_package_edges().items())
        if imported not in ALLOWED[package]
        for target in sorted(targets)
        if (package, target) not in EXCEPTIONS
    ]
    assert not wrong, "imports against the layers (docs/architecture.md):\n" + "\n".join(wrong)


def test_the_layers_have_no_circle() -> None:
    graph = {name: set(imports) for name, imports in ALLOWED.items()}
    assert circles(graph) == []


def test_exceptions_to_the_layers_still_exist() -> None:
    edges = _package_edges()
    seen = {(package, target) for (package, _), targets in edges.items() for target in targets}
    gone = [pair for pair in EXCEPTIONS if pair not in seen]
    assert not gone, f"no longer imported, remove from EXCEPTIONS: {gone}"

"""No import cycles among the project's modules (``alearn/``, ``experiments/``): a static check.

Every ``import`` / ``from ... import`` in every file counts, at module level and inside
functions alike (a function-level import that points back up is the same tangle, only
hidden until the call). Imports of other projects are ignored; ``importlib`` calls with a
computed name are not followed.

What an import is an edge to (the "real" dependency):

- ``import a.b.c``: ``a.b.c``. When ``a.b.c`` is a package, the attributes the file reads
  through it (``a.b.c.create(...)``) are resolved like ``from a.b.c import create`` below;
  a package the importer lives in (``import alearn`` inside ``alearn/``) is already loaded,
  so only those resolved attributes count.
- ``from p import name``: ``p.name`` when that is a module. Otherwise, when ``p`` is a
  package, the module its ``__init__`` re-exports ``name`` from (followed through every
  re-export; ``p`` itself when ``__init__`` defines ``name``); when ``p`` is a plain
  module, ``p``.
- A package ``__init__``'s module-level imports of its own submodules are re-exports: the
  facade, not a dependency, so they are dropped (the edges go to the defining modules
  instead, as above). Its function-level imports (``alearn.al.train_and_evaluate``'s lazy
  import) are real code and count.

Cycles are the strongly connected components of that graph. An edge inside one is allowed
only if it is listed in :data:`ALLOWED` (cycles that others are removing, issue 25); the
list can only shrink: an entry that no longer lies on a cycle fails
:func:`test_allowed_list_is_current` until it is deleted.
"""

from __future__ import annotations

import ast
import collections
import functools
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("alearn", "experiments")

# Import edges "importer -> imported" tolerated on a cycle: none left (issue 25 removed the
# last). Keep it empty: a new edge on a cycle fails test_no_new_import_cycles.
ALLOWED: frozenset[str] = frozenset()

Edge = tuple[str, str]


class _Module:
    def __init__(self, name: str, path: pathlib.Path, is_pkg: bool, where: str):
        self.name, self.path, self.is_pkg, self.where = name, path, is_pkg, where
        self.tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        self.imports, self.attributes = [], []  # one walk over the whole file
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self.imports.append(node)
            elif isinstance(node, ast.Attribute):
                self.attributes.append(node)
        self.bindings: dict[str, tuple[str, str | None]] = {}  # module-level import bindings
        for node in self.tree.body:
            for stmt in _flat(node):
                if isinstance(stmt, ast.ImportFrom):
                    base = _absolute(self, stmt)
                    for a in stmt.names:
                        self.bindings[a.asname or a.name] = (base, a.name)
                elif isinstance(stmt, ast.Import):
                    for a in stmt.names:
                        if a.asname:
                            self.bindings[a.asname] = (a.name, None)

    @property
    def package(self) -> str:
        return self.name if self.is_pkg else self.name.rpartition(".")[0]


def _flat(node: ast.stmt):
    """``node`` and the statements of module-level ``if``/``try`` blocks inside it."""
    yield node
    if isinstance(node, (ast.If, ast.Try)):
        for field in ("body", "orelse", "finalbody", "handlers"):
            for child in getattr(node, field, []):
                for stmt in (child.body if isinstance(child, ast.ExceptHandler) else [child]):
                    yield from _flat(stmt)


def _absolute(mod: _Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.package.split(".")
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def load_modules(root: pathlib.Path = ROOT, packages=PACKAGES) -> dict[str, _Module]:
    mods = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root)
            parts = rel.with_suffix("").parts
            is_pkg = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_pkg else parts)
            mods[name] = _Module(name, path, is_pkg, str(rel))
    return mods


def _resolve(mods: dict[str, _Module], module: str, name: str, seen=None) -> str:
    """The module that ``from module import name`` really depends on."""
    sub = f"{module}.{name}"
    target = mods[module]
    bound = target.bindings.get(name) if target.is_pkg else None
    if bound is None:
        return sub if sub in mods else module
    src, orig = bound
    seen = seen or set()
    if (module, name) in seen:
        return module
    seen.add((module, name))
    if orig is None:  # import src as name
        return src if src in mods else module
    if f"{src}.{orig}" in mods:
        return f"{src}.{orig}"
    if src in mods:
        return _resolve(mods, src, orig, seen)
    return module  # re-exported from another project: the __init__'s own binding


def _attribute_chains(mod: _Module, root: str):
    """Every ``root.a.b...`` read in ``mod``, as ``["a", "b", ...]`` (longest chains)."""
    inner, chains = set(), []
    for node in mod.attributes:  # ast.walk order: an outer attribute before its inner ones
        if id(node) in inner:
            continue
        parts, cur = [], node
        while isinstance(cur, ast.Attribute):
            inner.add(id(cur.value))
            parts.append(cur.attr)
            cur = cur.value
        if isinstance(cur, ast.Name) and cur.id == root:
            chains.append(parts[::-1])
    return chains


def _walk_chain(mods, module: str, chain: list[str]) -> str:
    for attr in chain:
        if f"{module}.{attr}" in mods:
            module = f"{module}.{attr}"
            continue
        return _resolve(mods, module, attr) if mods[module].is_pkg else module
    return module


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _top_level_nodes(tree: ast.Module) -> set[int]:
    return {id(s) for node in tree.body for s in _flat(node)}


def import_edges(mods: dict[str, _Module]) -> dict[Edge, list[str]]:
    """Edge ``(importer, imported)`` -> the ``path:line`` of every import making it."""
    edges: dict[Edge, list[str]] = collections.defaultdict(list)
    for mod in mods.values():
        top = _top_level_nodes(mod.tree)
        own = _ancestors(mod.name) | ({mod.name} if mod.is_pkg else set())

        def add(target: str, node: ast.stmt, mod=mod, top=top):
            if target == mod.name or target not in mods:
                return
            if mod.is_pkg and target.startswith(mod.name + ".") and id(node) in top:
                return  # a package __init__ re-exporting its own submodule
            where = f"{mod.where}:{node.lineno}"
            if where not in edges[(mod.name, target)]:
                edges[(mod.name, target)].append(where)

        for node in mod.imports:
            if isinstance(node, ast.ImportFrom):
                base = _absolute(mod, node)
                for a in node.names:
                    if base not in mods:  # a directory without __init__ (experiments.configs)
                        if f"{base}.{a.name}" in mods:
                            add(f"{base}.{a.name}", node)
                    elif a.name == "*":
                        add(base, node)
                    elif mods[base].is_pkg:
                        add(_resolve(mods, base, a.name), node)
                    else:
                        add(base, node)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    name = a.name
                    while name and name not in mods:
                        name = name.rpartition(".")[0]
                    if not name:
                        continue
                    if not mods[name].is_pkg:
                        add(name, node)
                        continue
                    # A package: the attributes read through the bound name.
                    root = a.asname or a.name.split(".")[0]
                    start = name if a.asname else root
                    targets = ({_walk_chain(mods, start, c)
                                for c in _attribute_chains(mod, root)}
                               if start in mods else set())
                    if name not in own:
                        targets.add(name)
                    for t in targets:
                        add(t, node)
    return edges


def _sccs(nodes, succ) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(succ.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(succ.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def _shortest_cycle(edge: Edge, succ, comp: set[str]) -> list[str]:
    """A shortest cycle through ``edge`` (breadth-first from its head back to its tail)."""
    a, b = edge
    prev, queue = {b: None}, collections.deque([b])
    while queue:
        v = queue.popleft()
        if v == a:
            break
        for w in sorted(succ.get(v, ())):
            if w in comp and w not in prev:
                prev[w] = v
                queue.append(w)
    path, v = [], a
    while v is not None:
        path.append(v)
        v = prev[v]
    return [a] + path[::-1][:-1] + [a] if len(path) > 1 else [a, b, a]


@functools.cache
def cyclic_edges(root: pathlib.Path = ROOT, packages=PACKAGES
                 ) -> tuple[dict[Edge, list[str]], dict, list[list[str]]]:
    """(every edge on a cycle -> where it is imported, successor map, the components)."""
    mods = load_modules(root, packages)
    edges = import_edges(mods)
    succ = collections.defaultdict(set)
    for a, b in edges:
        succ[a].add(b)
    comps = _sccs(mods, succ)
    member = {m: i for i, c in enumerate(comps) for m in c}
    on_cycle = {e: w for e, w in edges.items()
                if e[0] in member and member.get(e[1]) == member[e[0]]}
    return on_cycle, succ, comps


def _short(name: str) -> str:
    return name.removeprefix("alearn.").replace(".", "/")


def test_no_new_import_cycles():
    on_cycle, succ, comps = cyclic_edges()
    new = sorted(e for e in on_cycle if f"{e[0]} -> {e[1]}" not in ALLOWED)
    lines = []
    for e in new:
        comp = next(set(c) for c in comps if e[0] in c)
        cycle = " -> ".join(_short(m) for m in _shortest_cycle(e, succ, comp))
        lines.append(f"{e[0]} -> {e[1]} ({', '.join(on_cycle[e])}): cycle {cycle}")
    if new:
        pytest.fail("import cycles (move the shared piece into a lower module so the "
                    "dependency goes one way):\n  " + "\n  ".join(lines), pytrace=False)


def test_allowed_list_is_current():
    on_cycle, _, _ = cyclic_edges()
    stale = sorted(ALLOWED - {f"{a} -> {b}" for a, b in on_cycle})
    if stale:
        pytest.fail("these ALLOWED edges no longer lie on an import cycle; delete them from "
                    "tests/test_import_cycles.py:\n  " + "\n  ".join(stale), pytrace=False)


_TOY = {  # what the rules above call a cycle, on a toy package
    "pkg/__init__.py": "from pkg.a import A\nfrom pkg.b import B\n"
                       "def lazy():\n    from pkg.d import x\n",
    "pkg/a.py": "A = 1\ndef f():\n    from pkg import B\n",  # function level, via __init__
    "pkg/b.py": "from pkg.a import A\nB = 2\n",
    "pkg/c.py": "from pkg import A, B\nimport pkg\ny = pkg.a.A\n",  # re-exports only
    "pkg/d.py": "import pkg\nx = 1\ndef g():\n    return pkg.lazy()\n",  # __init__'s own code
    "pkg/e.py": "import pkg.sub as s\nz = s.g\n",
    "pkg/sub/__init__.py": "from pkg.sub.m import g\n",
    "pkg/sub/m.py": "def g():\n    from .. import e\n",
    "pkg/ns/n.py": "from pkg.a import A\n",  # no __init__: a namespace directory
    "pkg/ns/o.py": "from pkg.ns import n\nimport pkg.ns.n as n2\n",
}


def test_the_check_counts_function_level_imports_and_sees_through_reexports(tmp_path):
    for rel, text in _TOY.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    on_cycle, _, comps = cyclic_edges.__wrapped__(tmp_path, ("pkg",))
    assert sorted(comps) == [["pkg", "pkg.d"], ["pkg.a", "pkg.b"], ["pkg.e", "pkg.sub.m"]]
    assert on_cycle[("pkg.a", "pkg.b")] == ["pkg/a.py:3"]
    assert ("pkg.sub", "pkg.sub.m") not in on_cycle  # a re-export, not a dependency
    edges = import_edges(load_modules(tmp_path, ("pkg",)))
    assert edges[("pkg.ns.o", "pkg.ns.n")] == ["pkg/ns/o.py:1", "pkg/ns/o.py:2"]


if __name__ == "__main__":
    found, _, components = cyclic_edges()
    for c in components:
        print("component:", ", ".join(_short(m) for m in c))
    for a, b in sorted(found):
        print(f'    "{a} -> {b}",  # {", ".join(found[(a, b)])}')

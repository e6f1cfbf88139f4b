"""The package's layout rules: no import circle among snapshotd's modules,
and the kernel layer (snapshotd/kernel/) imports nothing above it.

Imports are read with ast, not by importing: every import statement counts,
those inside functions too (a lazy import is still a circle, only a later
one).  Relative imports are resolved; `from . import x` is an edge to the
submodule x when x is one, else to the package's __init__.
Run as a script to print the graph's circles."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "snapshotd"
# what the kernel layer may import from snapshotd
KERNEL_MAY_IMPORT = ("snapshotd.kernel", "snapshotd._engine")
# compiled modules (engine/build_engine.py), named even before they are built
COMPILED = ("snapshotd._engine",)


def modules(root: Path = PKG) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (compiled ones,
    like _engine, too: they are imported, but import nothing we can read)."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    for name in COMPILED:
        out[name] = root.parent.joinpath(*name.split("."))  # no .py: not read
    return out


def _resolve(mod: str, is_pkg: bool, level: int, name: str | None) -> str:
    """The absolute name of a relative import `from <level dots><name>` in mod."""
    base = mod.split(".")
    if not is_pkg:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the snapshotd modules it imports (anywhere in its body)."""
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        if path.suffix != ".py":
            graph[mod] = set()
            continue
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node.level, node.module) if node.level else (node.module or "")
                targets = []
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub in mods else base)
            else:
                continue
            for t in targets:
                # `import a.b.c` names the module a.b.c; keep the longest known prefix
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    deps.add(t)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan),
    each as a sorted list: every import circle lies within one of them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def kernel_violations(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(kernel module, what it imports from above the kernel layer)."""
    return sorted((m, d) for m, deps in graph.items() if m.startswith("snapshotd.kernel")
                  for d in deps if not d.startswith(KERNEL_MAY_IMPORT))


def test_no_import_cycles():
    assert cycles(imports(modules())) == []


def test_kernel_imports_nothing_above_it():
    assert kernel_violations(imports(modules())) == []


def test_the_graph_sees_lazy_and_relative_imports():
    g = imports(modules())
    assert "snapshotd.kernel.syscalls" in g["snapshotd.kernel.engine"]
    assert "snapshotd.check" in g["snapshotd.cli"]  # cli imports check inside a function


def test_a_lazy_circle_is_found(tmp_path):
    pkg = tmp_path / "snapshotd"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("def f():\n    from .. import a\n")
    (pkg / "sub" / "b.py").write_text("from . import f\n")
    assert cycles(imports(modules(pkg))) == [["snapshotd.a", "snapshotd.sub", "snapshotd.sub.b"]]


if __name__ == "__main__":
    g = imports(modules())
    found = cycles(g)
    for c in found:
        print("cycle:", " <-> ".join(c))
    for m, d in kernel_violations(g):
        print(f"kernel layer: {m} imports {d}")
    print(f"{len(g)} modules, {sum(map(len, g.values()))} imports, {len(found)} cycle(s)")

"""The import graph of ``model/`` and ``workbench/``, read with ``ast``: lower layers never import upper ones.

Layers, bottom to top (a module may import its own layer or lower ones, never higher)::

    0  model.segments model.packing model.schema model.fileio model.device model.version   layout, files, settings
    1  model.ops.*                                                           packed conv and scan
    2  model.config model.norm model.mamba model.moe model.vmmoe model.trace the model
    3  model.losses model.leakage                                            targets, metrics, the audit
    4  model.concepts.*                                                      the concept store
    5  model.train.*                                                         config, data, loop, evaluation, runs
    6  model.infer                                                           using a trained model
    7  model.cli model.commands.* model.__main__ workbench.*                 the command and the app
       model (the package facade, ``model/__init__.py``) sits on top: nothing inside imports it

Every ``import`` counts, at module level or inside a function: a function-level import is still a
dependency, only a hidden one. Also refused: a cycle between modules (even inside one layer), and any
import of ``benchmarks`` (scripts, never a dependency of the product).

Run as a script to print the graph and the lines per module::

    python tests/test_layers.py
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "workbench")

LAYERS: list[tuple[int, tuple[str, ...]]] = [
    (0, ("model.segments", "model.packing", "model.schema", "model.fileio", "model.device", "model.version",
         "model.synthetic")),
    (1, ("model.ops",)),
    (2, ("model.config", "model.norm", "model.mamba", "model.moe", "model.vmmoe", "model.trace")),
    (3, ("model.losses", "model.leakage")),
    (4, ("model.concepts",)),
    (5, ("model.train",)),
    (6, ("model.infer",)),
    (7, ("model.cli", "model.commands", "model.__main__", "workbench")),
    (8, ("model",)),
]


def layer_of(module: str) -> int:
    """The layer of a module: the longest prefix listed in LAYERS."""
    best, best_len = None, -1
    for rank, prefixes in LAYERS:
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = rank, len(p)
    if best is None:
        raise KeyError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")
    return best


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module in PACKAGES (a package is its ``__init__.py``)."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The project module ``name`` refers to (itself, or the package holding it), or None if external."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported project module, line, at module level) for every import statement in a file."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    top_level = {id(n) for n in tree.body}
    # imports inside `if TYPE_CHECKING:` / try blocks at the top still run at import time
    for n in tree.body:
        if isinstance(n, (ast.If, ast.Try)):
            top_level |= {id(c) for c in ast.walk(n)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x
                base = module if is_pkg else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            # `from pkg import sub` names the submodule when there is one
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "benchmarks":
                out.append((name, node.lineno, id(node) in top_level))
                continue
            target = _resolve(name, known)
            if target is not None and target != module:
                out.append((target, node.lineno, id(node) in top_level))
    return out


def graph() -> dict[str, list[tuple[str, int, bool]]]:
    known = modules()
    return {m: imports_of(m, p, known) for m, p in known.items()}


def import_edges(g: dict[str, list[tuple[str, int, bool]]]) -> dict[str, set[str]]:
    """What importing each module runs: its imports, and the ``__init__`` of every package above them.

    ``from model.train.config import X`` runs ``model/train/__init__.py`` first, so a module importing
    ``model.train.config`` depends on everything that package's ``__init__`` imports. The roots
    (``model``, ``workbench``) are left out: their ``__init__`` imports nothing at import time. So is
    the implicit step from a module to a package above *itself* (that package is already importing).
    """
    edges: dict[str, set[str]] = {}
    for m, deps in g.items():
        out = set()
        for t, _, _ in deps:
            if t.split(".")[0] == "benchmarks":
                continue
            out.add(t)
            parts = t.split(".")
            out |= {p for p in (".".join(parts[:i]) for i in range(2, len(parts))) if not m.startswith(p + ".")}
        edges[m] = out - {m}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (c := visit(t)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_module_imports_an_upper_layer_or_benchmarks():
    bad = []
    for m, deps in graph().items():
        for target, line, _ in deps:
            if target.split(".")[0] == "benchmarks":
                bad.append(f"{m}:{line} imports {target} (benchmarks are scripts, not a dependency)")
            elif layer_of(target) > layer_of(m):
                bad.append(f"{m} (layer {layer_of(m)}):{line} imports {target} (layer {layer_of(target)})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_edges(graph()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# The edges of the project own these: their imports sit at the top of the file, so the dependencies read
# from there. An import that stays inside a function says why in a comment on the line before it.
MODULE_LEVEL_ONLY = ("model.config", "model.train", "model.infer", "model.cli", "model.commands", "model.__main__")


def test_project_imports_sit_at_module_level_in_the_edges():
    hidden = [f"{m}:{line} imports {t} inside a function" for m, deps in graph().items()
              if any(m == p or m.startswith(p + ".") for p in MODULE_LEVEL_ONLY)
              for t, line, top in deps if not top]
    assert not hidden, "\n".join(hidden)


def report() -> str:
    """The graph (module, layer, lines, what it imports; * marks an import inside a function)."""
    known = modules()
    g = graph()
    lines = []
    for m in sorted(known, key=lambda m: (layer_of(m), m)):
        n = len(known[m].read_text().splitlines())
        deps = sorted({(t, top) for t, _, top in g[m]})
        shown = ", ".join(t + ("" if top else "*") for t, top in deps)
        lines.append(f"L{layer_of(m)} {m:34} {n:5}  -> {shown}")
    cycle = find_cycle(import_edges(g))
    lines.append(f"cycle: {' -> '.join(cycle) if cycle else 'none'}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
    sys.exit(0)

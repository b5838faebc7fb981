"""The package's shape (issue 26): its rooms and their order, no import cycle among its modules, counting imports made inside functions,
and no function longer than a screen."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "procrustes"
MAX_FUNCTION_LINES = 70


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its file (top level or inside functions)."""
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        mod = _module(path)
        pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        deps = graph.setdefault(mod, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.startswith("procrustes"):
                    names = [f"{target}.{a.name}" for a in node.names]
                    deps.update(n for n in names if (PKG.parent / Path(*n.split("."))).with_suffix(".py").exists()
                                or (PKG.parent / Path(*n.split(".")) / "__init__.py").exists())
                    deps.add(target)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("procrustes"))
        deps.discard(mod)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle found by a depth-first search (one per back edge), package __init__ files left out:
    importing a subpackage runs its __init__, which re-exports, without being part of the design."""
    inits = {m for m in graph if (PKG.parent / Path(*m.split(".")) / "__init__.py").exists()}
    g = {m: {d for d in ds if d in graph and d not in inits} for m, ds in graph.items() if m not in inits}
    found, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    return found


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[str]:
    out = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    out.append(f"{_module(path)}.{node.name}: {n} lines")
    return sorted(out)


def test_the_checker_sees_a_cycle_and_a_function_level_import():
    assert cycles({"procrustes.a": {"procrustes.b"}, "procrustes.b": {"procrustes.a"}})
    assert not cycles({"procrustes.a": {"procrustes.b"}, "procrustes.b": set()})
    src = "def f():\n    from .train import run\n"
    assert any(isinstance(n, ast.ImportFrom) and n.module == "train" for n in ast.walk(ast.parse(src)))


def test_no_import_cycle_counting_imports_inside_functions():
    assert cycles(import_graph()) == []


def test_no_function_longer_than_a_screen():
    assert long_functions() == []


# the rooms, in order: a module may import its own room and the rooms before it, never one after it
ROOMS = ("method", "training", "results", "tooling")
EXTRA = {"examples": len(ROOMS)}  # worked examples use the package as a user would: any room


def _rank(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 3:  # procrustes itself, procrustes.__main__, a room's __init__
        return None
    return ROOMS.index(parts[1]) if parts[1] in ROOMS else EXTRA.get(parts[1], -1)


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for mod, deps in graph.items():
        r = _rank(mod)
        if r is None:
            continue
        if r < 0:
            out.append(f"{mod}: not in a room ({', '.join(ROOMS)} or {', '.join(EXTRA)})")
        out.extend(f"{mod} imports {d}" for d in sorted(deps) if (_rank(d) or 0) > r and _rank(d) != len(ROOMS))
        out.extend(f"{mod} imports the example {d}" for d in sorted(deps) if _rank(d) == len(ROOMS) and r != len(ROOMS))
    return sorted(out)


def test_the_layering_check_sees_an_upward_import():
    assert layering_violations({"procrustes.method.models": {"procrustes.training.config"}})
    assert layering_violations({"procrustes.training.train": {"procrustes.examples.your_model"}})
    assert layering_violations({"procrustes.stray": set(), "procrustes.misc.stray": set()}) == [
        "procrustes.misc.stray: not in a room (method, training, results, tooling or examples)"]
    assert not layering_violations({"procrustes.results.claims": {"procrustes.training.store", "procrustes.method.counts"}})


def test_every_module_sits_in_a_room_and_imports_only_rooms_before_it():
    graph = import_graph()
    assert {m.split(".")[1] for m in graph if m.count(".") >= 2} == set(ROOMS) | set(EXTRA)
    assert sorted(p.name for p in PKG.glob("*.py")) == ["__init__.py", "__main__.py"]
    assert layering_violations(graph) == []

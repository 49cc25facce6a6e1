"""No import cycles between idrserve's modules, counting what a module imports when it loads
(imports inside functions and under `TYPE_CHECKING` are not cycles Python can trip on, but a
function-level import used to dodge one still shows as such in review)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "idrserve"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def load_time_imports(path: Path, modules: set[str]) -> set[str]:
    """idrserve modules imported at module level (not in functions, not for type checking)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("idrserve"))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1]
                        + ([base] if base else [])
                    )
                if not base.startswith("idrserve"):
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    # a submodule needs only the package object; a name needs its __init__ run
                    found.add(sub if sub in modules else base)
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    children = getattr(node, field, [])
                    visit([c for c in children if isinstance(c, ast.stmt)])
                    for handler in children:
                        if isinstance(handler, ast.ExceptHandler):
                            visit(handler.body)

    visit(tree.body)
    # importing a.b.c runs a/__init__ and a/b/__init__ first, unless the importer is inside
    # that package (then its __init__ is already running: the usual package layout)
    own = module_name(path).split(".")
    mine = {".".join(own[:i]) for i in range(1, len(own) + 1)}
    for name in list(found):
        parts = name.split(".")
        found.update(
            ".".join(parts[:i]) for i in range(2, len(parts)) if ".".join(parts[:i]) not in mine
        )
    return {m for m in found if m in modules and m != module_name(path)}


def test_no_import_cycles() -> None:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    graph = {name: load_time_imports(path, modules) for name, path in paths.items()}
    assert not find_cycles(graph), find_cycles(graph)


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return cycles


def test_the_walk_sees_a_cycle(tmp_path: Path) -> None:
    """The checker itself: two modules importing each other are found."""
    a = tmp_path / "a.py"
    a.write_text("from idrserve.http import keys\nimport idrserve.app\n")
    modules = {"idrserve.app", "idrserve.http.keys", "idrserve.http"}
    global PACKAGE
    saved = PACKAGE
    try:
        PACKAGE = tmp_path / "idrserve"
        (PACKAGE / "http").mkdir(parents=True)
        path = PACKAGE / "http" / "ops.py"
        path.write_text(
            "from __future__ import annotations\nfrom typing import TYPE_CHECKING\n"
            "from idrserve import app\nif TYPE_CHECKING:\n    from idrserve.http import keys\n"
            "def f():\n    import idrserve.http.keys\n"
        )
        assert load_time_imports(path, modules) == {"idrserve.app"}
    finally:
        PACKAGE = saved

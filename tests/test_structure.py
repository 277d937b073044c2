"""The package's shape: no import cycle between tfbert's modules, and no module over 400 lines.

Imports are read with ``ast`` (nothing is imported), at module level and inside functions alike: an import
deferred into a function still ties the two modules together, it only hides the cycle until run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tfbert"
MAX_LINES = 400


def module_name(path: Path) -> str:
    """``tfbert/graph_tokenizers/common.py`` -> ``tfbert.graph_tokenizers.common`` (a package: its __init__)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """The tfbert modules the file ``path`` imports, anywhere in it."""
    return imports_in(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py", modules)


def imports_in(source: str, this: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """The tfbert modules the source of module ``this`` imports, at module level and inside functions.

    ``from tfbert.x import y`` names the module ``tfbert.x.y`` when that is one (a submodule), else ``tfbert.x``;
    relative imports are resolved against the importing module's package.
    """
    package = this if is_package else this.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - (node.level - 1)] + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules and name != this)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported_modules(path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as [a, b, ..., a], or [] when the graph has none (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = "done"
        return []

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return []


def test_the_cycle_finder_finds_cycles_and_only_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []  # a diamond is no cycle


def test_the_import_graph_reads_function_level_and_relative_imports():
    modules = dict.fromkeys(["tfbert", "tfbert.export", "tfbert.graph_tokenizers", "tfbert.graph_tokenizers.common"])
    source = ("import os\nfrom . import common\n\n\ndef later():\n    from tfbert import export\n"
              "    import tfbert.graph_tokenizers\n")
    assert imports_in(source, "tfbert.graph_tokenizers.probe", False, modules) == {
        "tfbert.graph_tokenizers.common", "tfbert.export", "tfbert.graph_tokenizers"}


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "tfbert.export" in graph and graph["tfbert.export"]  # the graph really holds the package's imports
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_no_module_over_400_lines():
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in package_modules().items()}
    too_long = {name: n for name, n in lengths.items() if n > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines (split them by concept): {too_long}"

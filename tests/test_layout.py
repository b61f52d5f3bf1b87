"""Layout of `tora_model` (issue 12): the tiny Tora's tooling lives in `tora_model/tiny/`, and no modules import
each other in a cycle.

Imports are read from the source with `ast` (module level, inside functions and under `TYPE_CHECKING` alike: a cycle
hidden in a function or an annotation import is still a cycle), so the test imports nothing and runs in milliseconds.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tora_model"
TINY_TOOLING = ("synthetic", "path_families", "train", "evaluate", "demo_trained", "demo_models")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path, modules: set[str]) -> set[str]:
    """The package's modules a file imports; `from . import x` counts as importing the submodule x."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & modules
            found.update(submodules if len(submodules) == len(node.names) else {target, *submodules})
    return (found & modules) - {name}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports, for every .py file under root."""
    paths = list(root.rglob("*.py"))
    modules = {module_name(path, root) for path in paths}
    return {module_name(path, root): imported_modules(path, root, modules) for path in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, …, a], or None (depth-first search, sorted for a stable answer)."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for target in sorted(graph[module]):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_the_tiny_tooling_lives_in_the_tiny_subpackage():
    for name in TINY_TOOLING:
        assert not (PACKAGE / f"{name}.py").exists(), f"tora_model/{name}.py belongs in tora_model/tiny/"
        assert (PACKAGE / "tiny" / f"{name}.py").is_file(), name


def test_only_the_command_line_reaches_into_tiny():
    """The library a ComfyUI user runs does not depend on the demo model's tooling (cli forwards to it)."""
    graph = import_graph()
    users = {
        module
        for module, targets in graph.items()
        if not module.startswith("tora_model.tiny") and any(t.startswith("tora_model.tiny") for t in targets)
    }
    assert users == {"tora_model.cli"}


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_sees_function_level_and_type_checking_imports(tmp_path):
    package = tmp_path / "tora_model"
    package.mkdir()
    sources = {
        "__init__": "",
        "a": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from .b import B\n",
        "b": "def f():\n    from . import a\n",
        "c": "from .a import A\n",
    }
    for name, source in sources.items():
        (package / f"{name}.py").write_text(source)
    assert find_cycle(import_graph(package)) == ["tora_model.a", "tora_model.b", "tora_model.a"]

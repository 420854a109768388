"""The package's internal imports point one way: no module reaches back into one that imports it.

Imports inside functions count too, since a lazy import only hides a cycle, it does not break it.
"""

import ast
from pathlib import Path

import catsdogs_batch

PACKAGE = Path(catsdogs_batch.__file__).parent
NAME = "catsdogs_batch"


def internal_imports(path: Path) -> set[str]:
    """Package modules that `path` imports anywhere in its body, by module name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.level == 0 and node.module and node.module.split(".")[0] == NAME:
                parts = node.module.split(".")
                found.update([parts[1]] if len(parts) > 1 else [alias.name for alias in node.names])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == NAME and len(parts) > 1:
                    found.add(parts[1])
    return found


def import_graph() -> dict[str, set[str]]:
    """Each module of the package mapped to the package modules it imports (`__init__` left out)."""
    modules = {path.stem: path for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    return {name: internal_imports(path) & modules.keys() - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first repeated at the end), or None when the graph has none."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_reports_the_modules_of_a_cycle():
    graph = {"evaluate": {"train"}, "train": {"review"}, "review": {"evaluate"}, "cli": {"train"}}
    assert find_cycle(graph) == ["train", "review", "evaluate", "train"]
    assert find_cycle({"cli": {"train"}, "train": {"dataset"}, "dataset": set()}) is None


def test_imports_inside_functions_are_counted(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from .a import x\ndef f():\n    from .b import y\n    import catsdogs_batch.c\n")
    assert internal_imports(module) == {"a", "b", "c"}


def test_package_imports_have_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)

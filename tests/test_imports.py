"""The package's internal imports point one way: no module reaches back into one that imports it.

Imports inside functions count too, since a lazy import only hides a cycle, it does not break it.
"""

import ast
from pathlib import Path

import catsdogs_batch

PACKAGE = Path(catsdogs_batch.__file__).parent
NAME = "catsdogs_batch"


def module_name(path: Path) -> str:
    """A module's dotted name inside the package: inference/engine.py -> inference.engine, a
    subpackage's __init__.py its folder's (inference), the package's own NAME."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join(parts) or NAME


def internal_imports(path: Path, name: str = "m") -> set[str]:
    """Package modules (dotted, inside the package) that `path`, the module `name`, imports
    anywhere in its body, relative imports resolved; a name imported from a package may be a
    module of it (kept when it is one, see `import_graph`)."""
    package = [] if name == NAME else name.split(".") if path.stem == "__init__" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
            elif node.module and node.module.split(".")[0] == NAME:
                base = []
                node = ast.ImportFrom(module=".".join(node.module.split(".")[1:]) or None, names=node.names, level=0)
            else:
                continue
            module = [*base, *(node.module.split(".") if node.module else [])]
            folder = PACKAGE.joinpath(*module)
            if node.module or not all((folder / f"{a.name}.py").exists() or (folder / a.name).is_dir() for a in node.names):
                found.add(".".join(module) or NAME)  # `from .. import __version__`: the package itself
            found.update(".".join([*module, alias.name]) for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == NAME:
                    found.add(".".join(parts[1:]) or NAME)
    return found


def import_graph() -> dict[str, set[str]]:
    """Each module of the package (its subpackages walked, their `__init__` files included: the
    package's own is NAME) mapped to the package modules it imports."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: internal_imports(path, name) & modules.keys() - {name} for name, path in modules.items()}


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
    assert {"a", "b", "c"} <= internal_imports(module)


def test_relative_imports_of_a_subpackage_are_resolved(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from .engine import x\nfrom ..data.images import y\nfrom ..files import z\nfrom .. import options\n")
    found = internal_imports(module, "inference.predictor")
    assert {"inference.engine", "data.images", "files", "options"} <= found and NAME not in found
    module.write_text("from .. import __version__\n")  # a name of the package's own __init__
    assert NAME in internal_imports(module, "inference.predictor")


def test_the_package_is_grouped_by_job():
    """Every module but the command line and what all of them share lives in a subpackage."""
    top = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    assert top <= {"api", "options", "errors", "files", "side_files", "quiet", "cpu", "metrics"}, top
    assert "inference.engine" in import_graph()


def test_package_imports_have_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# The modules of the commands the CLI runs (what `catsdogs <command>` calls and nothing else
# should): none imports another's. inference/export.py is not one of them: its export_model is
# also how `catsdogs train` writes the run's fast model, a job of the inference room.
COMMANDS = {
    "kaggle.download", "kaggle.submit", "training.train", "inference.submission",
    "labelling.label", "labelling.review", "labelling.audit", "labelling.evaluate",
}


def test_no_command_module_imports_another_commands_module():
    graph = import_graph()
    assert COMMANDS <= graph.keys()
    reaching = {command: sorted(graph[command] & COMMANDS) for command in sorted(COMMANDS) if graph[command] & COMMANDS}
    assert not reaching, reaching

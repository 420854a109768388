"""The label threshold is written once (options.THRESHOLD): a 0.5 that decides cat or dog
anywhere else would not follow it. Other halves (dropout, factor=0.5, rounding, --clip, a plot's
text position) are not comparisons of a probability and are not flagged."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import catsdogs_batch
from catsdogs_batch.options import THRESHOLD, Labelling

PACKAGE = Path(catsdogs_batch.__file__).parent
PROBABILITY = re.compile(r"\bp(_dog)?\b")  # p, p_dog, p_dog[rows]: the package's names for it


def _half(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value == 0.5


def threshold_literals(source: str) -> list[int]:
    """Lines where 0.5 is the threshold: a probability compared with it, a `threshold` parameter
    or field defaulting to it, or `.get("threshold", 0.5)`."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for a, b in zip(operands, operands[1:]):
                if (_half(a) and PROBABILITY.search(ast.unparse(b))) or (_half(b) and PROBABILITY.search(ast.unparse(a))):
                    lines.append(node.lineno)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
            lines += [d.lineno for a, d in pairs if a.arg == "threshold" and _half(d)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.target.id == "threshold" and node.value is not None and _half(node.value):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and len(node.args) == 2:
            key, default = node.args
            if isinstance(key, ast.Constant) and key.value == "threshold" and _half(default):
                lines.append(node.lineno)
    return sorted(lines)


def test_the_scan_finds_each_way_of_writing_the_threshold():
    source = (
        "label = 'dog' if p >= 0.5 else 'cat'\n"
        "accuracy = ((p_dog[rows] >= 0.5) == given).mean()\n"
        "cat = 0.5 > p_dog\n"
        "def queue(table, threshold: float = 0.5): ...\n"
        "class Labelling:\n    threshold: float = 0.5\n"
        "threshold = job.get('threshold', 0.5)\n"
    )
    assert threshold_literals(source) == [1, 2, 3, 4, 6, 7]


def test_the_scan_leaves_other_halves_alone():
    source = (
        "def model(dropout: float = 0.5): ...\n"
        "plateau = ReduceLROnPlateau(factor=0.5)\n"
        "pixels = np.clip(arr * 255.0 + 0.5, 0, 255)\n"
        "if not 0 <= options.clip < 0.5: pass\n"
        "flip = uniform((n,)) < 0.5\n"
        "ax.text(0.5, 0.5, 'needs images of both classes')\n"
        "UNREADABLE_P_DOG = 0.5\n"
    )
    assert threshold_literals(source) == []


def test_the_package_writes_the_threshold_once():
    found = {
        path.name: lines
        for path in sorted(PACKAGE.glob("*.py"))
        if (lines := threshold_literals(path.read_text(encoding="utf-8")))
    }
    assert found == {}, f"0.5 as the label threshold (use options.THRESHOLD): {found}"
    assert THRESHOLD == 0.5 and Labelling().threshold == THRESHOLD

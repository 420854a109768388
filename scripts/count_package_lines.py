"""The package's lines at each commit given, all of them (as `wc -l` counts) and by kind: code,
docstrings (a statement that is only a string), comment-only lines and blank lines; then per room.

    .venv/bin/python scripts/count_package_lines.py 3dadc15 HEAD
"""

from __future__ import annotations

import io
import subprocess
import sys
import tokenize
from collections import Counter
from pathlib import PurePosixPath

KINDS = ("lines", "code", "docstrings", "comments", "blank")
SKIPPED = {tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}


def count(source: str) -> Counter:
    """How many lines of `source` are of each kind (a line with code and a comment is code)."""
    code, docstrings, comments = set(), set(), set()
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    statement_start = True
    for token, following in zip(tokens, tokens[1:] + tokens[-1:]):
        rows = set(range(token.start[0], token.end[0] + 1))
        if token.type == tokenize.COMMENT:
            comments |= rows
        elif token.type == tokenize.STRING and statement_start and following.type == tokenize.NEWLINE:
            docstrings |= rows
        elif token.type not in SKIPPED:
            code |= rows
        if token.type not in (tokenize.NL, tokenize.COMMENT):
            statement_start = token.type in (tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE)
    lines = source.splitlines()
    return Counter(
        lines=len(lines), code=len(code), docstrings=len(docstrings - code),
        comments=len(comments - code - docstrings), blank=sum(not line.strip() for line in lines),
    )  # fmt: skip


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def main(commits: list[str]) -> None:
    for commit in commits:
        total, rooms = Counter(), Counter()
        for path in git("ls-tree", "-r", "--name-only", commit, "catsdogs_batch").split():
            if path.endswith(".py"):
                found = count(git("show", f"{commit}:{path}"))
                total += found
                parts = PurePosixPath(path).parts
                rooms[parts[1] if len(parts) > 2 else "top"] += found["lines"]
        print(f"{commit}: " + ", ".join(f"{total[kind]:,} {kind}" for kind in KINDS))
        print("  by room: " + ", ".join(f"{room} {n:,}" for room, n in sorted(rooms.items())))


if __name__ == "__main__":
    main(sys.argv[1:] or ["HEAD"])

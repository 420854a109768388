#!/usr/bin/env python
"""Corrections benchmark (not a test): the memory `label --corrections` needs for a large
corrections file, read as label reads it (a stream into corrections.CorrectionsIndex) against
a dict of its rows (what review's editable Corrections holds, and what label held before).

Writes a corrections file of --rows rows (`albumNNNN/IMG_NNNNNNN.jpg`, cat, dog and skip in
turn) unless it exists, then, each in a fresh process: its peak RSS after the imports alone, after
reading the file as a dict, and after reading it as label does and relabelling --lookups paths
(half of them corrected) in shards of 1,000 rows, as label does while it merges the table.
Target: label's reading of 3 million rows under 300 MiB above the imports.

    .venv/bin/python scripts/benchmark_corrections.py --rows 3000000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catsdogs_batch.cpu import cpu_description  # noqa: E402

SHARD = 1000
CHILD = """
import sys, time
from pathlib import Path
import numpy as np, pandas as pd
from catsdogs_batch.labelling.label import relabeller
from catsdogs_batch.data.corrections import Corrections, read_corrections
from catsdogs_batch.inference.tables import DTYPES
path, how, lookups = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
started = time.perf_counter()
if how == "dict":
    labels = Corrections(path, data=path.read_bytes()).labels
elif how == "label":
    labels = read_corrections(path, path.parent).labels
    relabel = relabeller(labels)
    for start in range(0, lookups, {shard}):
        paths = [f"album{{n % 1000:04d}}/IMG_{{n:07d}}.jpg" for n in range(2 * start, 2 * start + 2 * {shard}, 2)]
        frame = pd.DataFrame({{"path": pd.array(paths, dtype="string[python]"), "id": None, "p_dog": 0.7, "label": "dog",
                              "confidence": 0.7, "width": 48, "height": 48, "status": "ok", "error": ""}}).astype(DTYPES)
        relabel(frame)
print(len(labels) if how != "imports" else 0, round(time.perf_counter() - started, 1))
"""


def write_corrections(path: Path, rows: int) -> None:
    labels = ("cat", "dog", "skip")
    with open(path, "w", newline="") as f:
        f.write("path,label\n")
        for n in range(rows):
            f.write(f"album{n % 1000:04d}/IMG_{n:07d}.jpg,{labels[n % 3]}\n")


def measure(path: Path, how: str, lookups: int) -> tuple[float, str]:
    """(peak RSS in MiB, the child's output) of one fresh process reading `path` `how`."""
    code = CHILD.format(shard=SHARD)
    process = subprocess.Popen([sys.executable, "-c", code, str(path), how, str(lookups)], stdout=subprocess.PIPE,
                               cwd=Path(__file__).resolve().parents[1], text=True)  # fmt: skip
    output = process.stdout.read().strip()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"reading {path} as {how} failed")
    return usage.ru_maxrss / 1024, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--lookups", type=int, default=1_000_000, help="paths relabelled after reading")
    parser.add_argument("--file", type=Path, help="the corrections file (default: a temporary one)")
    args = parser.parse_args()
    print(cpu_description())
    with tempfile.TemporaryDirectory() as tmp:
        path = args.file or Path(tmp) / "corrections.csv"
        if not path.exists():
            write_corrections(path, args.rows)
        print(f"{path}: {path.stat().st_size / 2**20:.0f} MiB")
        imports, _ = measure(path, "imports", 0)
        print(f"imports alone: peak RSS {imports:.0f} MiB")
        for how, what in (("dict", "a dict of path -> label"), ("label", f"label's index, then {args.lookups:,} paths relabelled")):
            started = time.perf_counter()
            peak, output = measure(path, how, args.lookups)
            rows, seconds = output.split()
            print(f"{what}: {int(rows):,} paths, peak RSS {peak:.0f} MiB ({peak - imports:.0f} above the imports), "
                  f"{seconds} s in the process, {time.perf_counter() - started:.1f} s in all")  # fmt: skip


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Audit benchmark (not a test): does `catsdogs audit` find deliberately flipped labels?

Copies a labelled Kaggle train/ folder (the sample's 5,000 images) into a temporary folder,
renames ten images picked at random (seeded) to the other class's name (cat.N.jpg <->
dog.N.jpg, under a number the other class does not use), runs `catsdogs audit` on the copy with
its defaults (ImageNet embeddings of EfficientNet-Lite0, whose weights come installed, + a
logistic regression per fold) plus the options after `--`, and counts
the flipped images among the table's first 50 rows. Target: at least 8 of the 10. The source
folder is only read.

    .venv/bin/python scripts/benchmark_audit.py /tmp/sample/train [--flips 10 --top 50 --seed 0] [-- AUDIT OPTIONS]
    .venv/bin/python scripts/benchmark_audit.py /tmp/sample/train -- --arch residual   # k-fold training from scratch
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catsdogs_batch.cpu import cpu_description  # noqa: E402


def flip_names(folder: Path, flips: int, seed: int) -> list[str]:
    """Rename `flips` random cat.N/dog.N images of `folder` to the other class (a fresh number,
    so no name is taken); return their new names."""
    import numpy as np

    names = sorted(p.name for p in folder.iterdir() if p.name.split(".")[0] in ("cat", "dog"))
    chosen = np.random.default_rng(seed).choice(len(names), flips, replace=False)
    flipped = []
    for k, index in enumerate(sorted(chosen)):
        kind, _, suffix = names[index].split(".", 2)
        new = f"{'dog' if kind == 'cat' else 'cat'}.{1_000_000 + k}.{suffix}"
        (folder / names[index]).rename(folder / new)
        flipped.append(new)
    return flipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a labelled folder named like Kaggle's train/ (only read)")
    parser.add_argument("--flips", type=int, default=10)
    parser.add_argument("--top", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="which images are flipped")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, audit_options = parser.parse_args(argv[:cut]), argv[cut + 1 :]  # after --: catsdogs audit's
    print(cpu_description())
    print("command:", " ".join([sys.executable, *sys.argv]))
    with tempfile.TemporaryDirectory(prefix="catsdogs-audit-bench-") as tmp:
        data = Path(tmp) / "train"
        shutil.copytree(args.data, data)
        flipped = flip_names(data, args.flips, args.seed)
        table = Path(tmp) / "audit.csv"
        command = [sys.executable, "-m", "catsdogs_batch.cli", "audit", str(data), "--out", str(table), *audit_options]
        print("audit:", " ".join(command[1:]))
        started = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - started

        from catsdogs_batch.inference.tables import read_table

        ranked = list(read_table(table, true_label=True)["path"])
        found = [name for name in flipped if name in ranked[: args.top]]
        print(f"flipped: {', '.join(flipped)}")
        print(f"ranks of the flipped images: {sorted(ranked.index(name) + 1 for name in flipped)}")
        print(f"result: {len(found)} of {args.flips} flipped labels in the top {args.top} ({len(ranked)} rows); "
              f"audit took {seconds:.0f} s")  # fmt: skip
    return 0 if len(found) >= 0.8 * args.flips else 1


if __name__ == "__main__":
    sys.exit(main())

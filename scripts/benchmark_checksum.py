#!/usr/bin/env python
"""What `--checksum` costs (not a test): the SHA-256 of every photo, taken as the folder is walked.

In one process, in CPU seconds of one thread (a shared machine's wall clock measures its
neighbours), each measure once per round, in turn (the best is kept): (a) the walk that cuts the
folder into shards, which every run and every resume does, as it is by default (names, sizes and
modification times), (b) the same walk with checksums, and, for scale, (c) decoding the same
photos at the default model's size (260 px), the least a run spends on a photo it predicts. After
the first round the photos come from the page cache: on a cold disk a resume with checksums also
reads the whole folder once more (its size is printed).

    .venv/bin/python scripts/benchmark_checksum.py /tmp/sample/test [--rounds 7]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from catsdogs_batch.cpu import cpu_description  # noqa: E402
from catsdogs_batch.data.images import ImageError, iter_image_files, load_image  # noqa: E402
from catsdogs_batch.inference.shards import iter_shards  # noqa: E402
from catsdogs_batch.options import ARCHITECTURES, DEFAULT_ARCH, EngineOptions  # noqa: E402
from benchmarking import alternate  # noqa: E402


def cpu_seconds(work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


def walk(folder: Path, checksum: bool) -> int:
    return sum(len(shard.paths) for shard in iter_shards(folder, EngineOptions().shard_size, checksum=checksum))


def decode(paths: list[Path], size: int) -> None:
    for path in paths:
        try:
            load_image(path, size)
        except ImageError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a folder of photos, e.g. the sample's test/")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    print(cpu_description())
    paths = list(iter_image_files(args.folder))
    megabytes = sum(p.stat().st_size for p in paths) / 1e6
    size = ARCHITECTURES[DEFAULT_ARCH].image_size
    print(f"{len(paths)} photos, {megabytes:.1f} MB, under {args.folder}")
    walk(args.folder, checksum=True)  # warm the page cache: every measure reads the same cached bytes
    results = alternate({
        "walk": lambda: cpu_seconds(lambda: walk(args.folder, checksum=False)),
        "walk with checksums": lambda: cpu_seconds(lambda: walk(args.folder, checksum=True)),
        f"decoding at {size} px": lambda: cpu_seconds(lambda: decode(paths, size)),
    }, args.rounds)  # fmt: skip
    best = {name: min(values) for name, values in results.items()}
    for name, values in results.items():
        rounds = ", ".join(f"{v * 1e6 / len(paths):.1f}" for v in values)
        print(f"{name:>22}: {best[name] * 1e6 / len(paths):6.1f} us a photo (rounds: {rounds})")
    extra = best["walk with checksums"] - best["walk"]
    print(
        f"checksums add {extra * 1e6 / len(paths):.1f} us a photo ({megabytes / extra:.0f} MB/s hashed), "
        f"{extra / best['walk']:.1f}x the walk, {extra / best[f'decoding at {size} px']:.1%} of decoding alone"
    )


if __name__ == "__main__":
    main()

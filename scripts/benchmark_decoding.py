#!/usr/bin/env python
"""Decoding benchmark (not a test): what OpenCV's pixels under Pillow's JPEG header buy.

In one process, on one thread, images per CPU second of load_image (a) as it is: colour JPEGs
decoded by OpenCV, their header read by Pillow, (b) with every image decoded by Pillow, and,
with --old REV, (c) load_image as it was at the git revision REV (bb47e38: the last with the
hand-written JPEG header parser). Each round runs each once, in turn (the best is kept).
Before timing, it checks that (a) gives the same pixels, size and errors as (b) and (c), and
says how many of the images are byte-identical.

    .venv/bin/python scripts/benchmark_decoding.py /tmp/sample/test --size 260 --old bb47e38
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from catsdogs_batch.data import images  # noqa: E402
from catsdogs_batch.cpu import cpu_description  # noqa: E402
from benchmarking import alternate, fmt  # noqa: E402

Loader = Callable[[Path, int], object]


def pillow_only(path: Path, size: int) -> images.DecodedImage:
    """load_image with its OpenCV path turned off: every image is Pillow's."""
    with mock.patch.object(images, "_decode_plain_jpeg", lambda file, size: None):
        return images.load_image(path, size)


def old_load_image(revision: str) -> Loader:
    """load_image of the images module as it was at `revision` (catsdogs_batch/data/images.py,
    or catsdogs_batch/images.py before the package had rooms), loaded beside today's."""
    for package, path in (("catsdogs_batch.data", "catsdogs_batch/data/images.py"), ("catsdogs_batch", "catsdogs_batch/images.py")):
        shown = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=ROOT, capture_output=True, text=True)
        if shown.returncode == 0:
            break
    else:
        raise SystemExit(f"no images module at {revision}")
    name = f"{package}._images_at_" + revision.replace("~", "_").replace("^", "_")
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    module.__package__ = package
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(shown.stdout, f"{revision}:{path}", "exec"), module.__dict__)
    return module.load_image


def outcome(load: Loader, path: Path, size: int) -> tuple:
    """(pixels as bytes, width, height), or the error's text: what two decoders must agree on."""
    try:
        image = load(path, size)
    except Exception as e:  # ImageError of either module
        return (f"{type(e).__name__}: {e}",)
    return image.pixels.tobytes(), image.width, image.height


def timed(load: Loader, paths: list[Path], size: int) -> Callable[[], float]:
    """Images per CPU second of `load`: CPU time, since on a shared machine the wall clock also
    measures the neighbours (decoding here is one thread: OpenCV's own are off)."""

    def measure() -> float:
        start = time.process_time()
        for path in paths:
            outcome(load, path, size)
        return len(paths) / (time.process_time() - start)

    return measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--size", type=int, default=260)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--old", metavar="REV", help="also load_image as it was at this git revision")
    args = parser.parse_args()
    print(cpu_description())
    images.one_thread_each()
    paths = list(images.iter_image_files(args.folder))
    loaders: dict[str, Loader] = {"a (OpenCV, Pillow's header)": images.load_image, "b (Pillow)": pillow_only}
    if args.old:
        loaders[f"c (at {args.old})"] = old_load_image(args.old)
    print(f"{len(paths)} images in {args.folder} at {args.size}px, one thread, best of {args.rounds} rounds")

    reference = [outcome(images.load_image, p, args.size) for p in paths]  # also warms the page cache
    for name, load in list(loaders.items())[1:]:
        same = sum(outcome(load, p, args.size) == r for p, r in zip(paths, reference))
        print(f"{name}: {same} of {len(paths)} byte-identical to (a) (pixels, size, errors)")

    results = alternate({name: timed(load, paths, args.size) for name, load in loaders.items()}, args.rounds)
    best = {name: max(values) for name, values in results.items()}
    fast = best[next(iter(best))]
    for name, values in results.items():
        print(f"{name}: {best[name]:.1f} img per CPU s (rounds: {fmt(values)}); (a)/this {fast / best[name]:.2f}x")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Inference benchmark (not a test): the engine against what users write by hand.

In one process, same model, same folder, images per second of:
  (a) the naive loop: keras.utils.load_img + model.predict on a batch of one (on a subset),
  (b) keras.utils.image_dataset_from_directory + model.predict,
  (c) the model alone on decoded tensors already in memory (the ceiling),
  (d) this engine end to end, decoding and writing the results table, its start-up (to the
      first batch's rows: walking, the first decoding, the model's first call) subtracted as
      the targets say (printed with it too);
then where the engine's time goes: (e) decoding alone on the same threads, and (f) the engine
with a model that costs nothing (walking, decoding, rows, shards, table).
Targets: d/c >= 0.95 and d/b >= 1.15; d/a is the speed-up over the per-image script.
Under ONEDNN_MAX_CPU_ISA=AVX2, TensorFlow (and OpenVINO) run as on an AVX2-only CPU.
With --runtimes, then Keras against its ONNX Runtime and OpenVINO exports, fp32 and int8
(scripts/benchmark_runtimes.py: agreement, model-only and end-to-end speed, thread splits).
With --memory, also the engine's peak memory (RSS) on 1,000 and on 100,000 files (links to
the folder's images), each in a fresh process: it must stay flat (within 10%) and < 1.5 GB.

    .venv/bin/python scripts/benchmark_inference.py data/<competition>/test --model models/<run>
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catsdogs_batch.cpu import cpu_description  # noqa: E402


def rate(n: int, seconds: float) -> float:
    return n / seconds


def naive_loop(model, paths: list[Path], size: int) -> float:
    import keras
    import numpy as np

    start = time.perf_counter()
    for path in paths:
        image = keras.utils.img_to_array(keras.utils.load_img(path, target_size=(size, size)))
        model.predict(np.expand_dims(image, 0), verbose=0)
    return rate(len(paths), time.perf_counter() - start)


def keras_dataset(model, folder: Path, size: int, batch_size: int, n: int) -> float:
    import keras

    start = time.perf_counter()
    dataset = keras.utils.image_dataset_from_directory(
        folder, labels=None, image_size=(size, size), batch_size=batch_size, shuffle=False, verbose=False
    )
    model.predict(dataset, verbose=0)
    return rate(n, time.perf_counter() - start)


def model_only(predictor, pixels, batch_size: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(pixels), batch_size):
        predictor.predict(pixels[i : i + batch_size])
    return rate(len(pixels), time.perf_counter() - start)


def engine(predictor, folder: Path, batch_size: int, workers: int, n: int) -> tuple[float, float]:
    """Images per second of predict_folder after its start-up (the first batch: walking, the
    first decoding, the model's first call), and including it."""
    from catsdogs_batch.inference.engine import predict_folder
    from catsdogs_batch.options import EngineOptions, PredictOptions

    with tempfile.TemporaryDirectory() as tmp:
        options = PredictOptions(
            predictor.checkpoints[0].model_path, folder, Path(tmp) / "results.csv",
            engine=EngineOptions(batch_size=batch_size, workers=workers, progress=False),
        )  # fmt: skip
        summary = predict_folder(options, predictor)
        assert summary.processed == n
        return summary.images_per_second_after_startup, summary.images_per_second


def decoding(paths: list[Path], size: int, workers: int) -> float:
    from catsdogs_batch.data.images import decode_many

    start = time.perf_counter()
    for _ in decode_many(paths, size, workers):
        pass
    return rate(len(paths), time.perf_counter() - start)


def without_model(predictor):
    """`predictor` with a model that costs nothing (p_dog 0.5 for every image): the engine's
    own work, measured through the same code."""
    import copy

    import numpy as np

    stub = copy.copy(predictor)
    stub.predict = lambda pixels: np.full(len(pixels), 0.5)
    return stub


def speed(folder: Path, model_path: Path, batch_size: int, workers: int, rounds: int, naive_count: int) -> None:
    import numpy as np

    from catsdogs_batch.inference.predictor import Predictor
    from catsdogs_batch.data.images import iter_image_files, load_image
    from catsdogs_batch.models.networks import load_keras_model

    predictor = Predictor(model_path)
    size = predictor.image_size
    paths = list(iter_image_files(folder))
    n = len(paths)
    if any(p.parent != folder for p in paths):
        sys.exit("the folder must hold its images directly (image_dataset_from_directory's labels=None)")
    pixels = np.stack([load_image(p, size).pixels for p in paths])
    model = load_keras_model(predictor.checkpoints[0])
    print(f"{n} images, model {model_path} at {size}px, batch {batch_size}, {workers} decoding threads")

    # warm-up: tracing and first allocations for every path
    naive_loop(model, paths[:5], size), keras_dataset(model, folder, size, batch_size, n)
    model_only(predictor, pixels, batch_size), engine(predictor, folder, batch_size, workers, n)
    results: dict[str, list[float]] = {"a": [], "b": [], "c": [], "d": [], "e": [], "f": []}
    whole = []  # (d) with its start-up
    for _ in range(rounds):  # interleaved, so machine drift hits all alike
        results["a"].append(naive_loop(model, paths[:naive_count], size))
        results["b"].append(keras_dataset(model, folder, size, batch_size, n))
        results["c"].append(model_only(predictor, pixels, batch_size))
        after_startup, with_startup = engine(predictor, folder, batch_size, workers, n)
        results["d"].append(after_startup)
        whole.append(with_startup)
        results["e"].append(decoding(paths, size, workers))
        results["f"].append(engine(without_model(predictor), folder, batch_size, workers, n)[0])
    best = {k: max(v) for k, v in results.items()}
    names = {
        "a": f"(a) naive load_img + predict per image ({naive_count} images)",
        "b": "(b) image_dataset_from_directory + model.predict",
        "c": "(c) model alone on tensors in memory",
        "d": "(d) catsdogs engine end to end, start-up subtracted",
        "e": f"(e) where the rest goes: decoding alone ({workers} threads)",
        "f": "(f) the engine with a model that costs nothing",
    }
    for key, name in names.items():
        print(f"{name:58s} {best[key]:8.1f} img/s   (all: {', '.join(f'{v:.1f}' for v in results[key])})")
    print(f"    (d) with its start-up: {max(whole):.1f} img/s (all: {', '.join(f'{v:.1f}' for v in whole)})")
    print(f"d/c = {best['d'] / best['c']:.3f}  (target >= 0.95: {'met' if best['d'] / best['c'] >= 0.95 else 'MISSED'})")
    print(f"d/b = {best['d'] / best['b']:.3f}  (target >= 1.15: {'met' if best['d'] / best['b'] >= 1.15 else 'MISSED'})")
    print(f"d/a = {best['d'] / best['a']:.1f}x faster than the per-image script")
    serial = 1 / (1 / best["c"] + 1 / best["f"])
    print(f"the engine's own work (f) and the model (c) one after the other: {serial:.1f} img/s = {serial / best['c']:.3f} of c "
          f"(on cores the model keeps busy, d can only gain on this by overlapping them)")  # fmt: skip


def memory(folder: Path, model_path: Path, counts: list[int]) -> None:
    from catsdogs_batch.data.images import iter_image_files

    sources = list(iter_image_files(folder))
    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        for count in counts:
            linked = Path(tmp) / f"links-{count}"
            for i in range(count):  # 1,000 per subfolder, like a real photo tree
                target = linked / f"{i // 1000:05d}" / f"{i}.jpg"
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(sources[i % len(sources)].resolve(), target)
            command = [sys.executable, __file__, "--child-memory", str(linked), "--model", str(model_path)]
            start = time.perf_counter()
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            peaks[count] = json.loads(output.strip().splitlines()[-1])["peak_rss_mb"]
            seconds = time.perf_counter() - start
            print(f"{count:>7} files: peak RSS {peaks[count]:.0f} MB ({seconds:.0f} s, {count / seconds:.0f} img/s incl. start-up)")
    low, high = min(peaks.values()), max(peaks.values())
    flat = high <= 1.10 * low
    print(f"growth {high / low - 1:+.1%} (target within 10%: {'met' if flat else 'MISSED'}); "
          f"max {high:.0f} MB (target < 1536 MB: {'met' if high < 1536 else 'MISSED'})")  # fmt: skip


def child_memory(folder: Path, model_path: Path) -> None:
    from catsdogs_batch.inference.engine import predict_folder
    from catsdogs_batch.options import EngineOptions, PredictOptions

    with tempfile.TemporaryDirectory() as tmp:
        predict_folder(PredictOptions(model_path, folder, Path(tmp) / "r.csv", engine=EngineOptions(progress=False)))
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so it would start at the size of
    # this benchmark's parent process (TensorFlow loaded) and hide the engine's own growth.
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"peak_rss_mb": peak_kb / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a folder of images, e.g. the sample's test/")
    parser.add_argument("--model", type=Path, required=True, help="a run folder")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--naive-count", type=int, default=200, help="images for the slow loop (a)")
    parser.add_argument("--memory", action="store_true", help="also peak memory on 1,000 and 100,000 files")
    parser.add_argument("--runtimes", action="store_true", help="also compare the ONNX Runtime / OpenVINO exports")
    parser.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        return child_memory(args.folder, args.model)
    print(cpu_description())
    speed(args.folder, args.model, args.batch_size, args.workers, args.rounds, args.naive_count)
    if args.runtimes:
        from benchmark_runtimes import compare  # beside this script

        compare(args.model, args.folder, args.rounds, args.batch_size)
    if args.memory:
        memory(args.folder, args.model, [1_000, 100_000])


if __name__ == "__main__":
    main()

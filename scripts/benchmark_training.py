#!/usr/bin/env python
"""Training benchmark (not a test): input-pipeline cost and accuracy on the sample.

1. Throughput: images/s of training epochs through the real pipeline (shuffle, one affine
   augmentation per image, cast, prefetch) against the bare train step on float tensors already
   in memory; same model, size and batch, one process. Target: ratio >= 0.85.
2. With --accuracy: `catsdogs train` with the defaults (at most 30 epochs) on the sample's 5,000
   images, 1,000 held out. Target: val accuracy >= 0.85 and log loss <= 0.35.

    .venv/bin/python scripts/benchmark_training.py DATA/train [--accuracy --out models/bench]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catsdogs_batch.benchmarking import cpu_description  # noqa: E402


def throughput(data: Path, image_size: int, batch_size: int, rounds: int) -> None:
    import tensorflow as tf

    from catsdogs_batch.model import compile_model, make_model
    from catsdogs_batch.options import TrainOptions
    from catsdogs_batch.train import decode_images, find_labelled_images, make_datasets

    options = TrainOptions(data=data, image_size=image_size, batch_size=batch_size)
    items = find_labelled_images(data)
    images, labels, _ = decode_images(data, items, image_size, options.workers, "benchmark")
    steps = len(images) // batch_size
    n = steps * batch_size
    pipeline, _ = make_datasets(options, (images, labels), (images[:batch_size], labels[:batch_size]))
    bare_x = tf.constant(images[:n].astype("float32"))
    bare_y = tf.constant(labels[:n])
    bare = tf.data.Dataset.from_tensor_slices((bare_x, bare_y)).batch(batch_size).cache()

    model = make_model(image_size, options.dense_units, options.dropout, options.l2, options.bn_momentum)
    compile_model(model, options.learning_rate)

    def epoch(dataset) -> float:
        start = time.perf_counter()
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
        return n / (time.perf_counter() - start)

    epoch(bare), epoch(pipeline)  # warm-up: tracing, allocation
    results = {"bare": [], "pipeline": []}
    for _ in range(rounds):  # alternate, so drift of the machine hits both alike
        results["bare"].append(epoch(bare))
        results["pipeline"].append(epoch(pipeline))
    best = {k: max(v) for k, v in results.items()}
    print(f"images per epoch: {n}, image size {image_size}, batch {batch_size}, rounds {rounds}")
    print(f"bare train step on in-memory tensors: {best['bare']:.1f} img/s  (all: {fmt(results['bare'])})")
    print(f"training pipeline with augmentation:  {best['pipeline']:.1f} img/s  (all: {fmt(results['pipeline'])})")
    ratio = best["pipeline"] / best["bare"]
    print(f"ratio pipeline / bare: {ratio:.3f}  (target >= 0.85: {'met' if ratio >= 0.85 else 'MISSED'})")


def fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def accuracy(data: Path, out: Path, epochs: int) -> None:
    from catsdogs_batch.options import TrainOptions
    from catsdogs_batch.train import train

    options = dataclasses.replace(TrainOptions(), data=data, out=out, epochs=epochs, val_split=0.2)
    start = time.perf_counter()
    train(options)
    wall = time.perf_counter() - start
    run = json.loads((out / "run.json").read_text())
    best = run["best"]
    print(f"wall time {wall / 60:.1f} min for {run['epochs_run']} epochs; best epoch {best['epoch']}")
    print(f"val accuracy {best['val_accuracy']:.4f} (target >= 0.85), val log loss {best['val_log_loss']:.4f} (target <= 0.35)")
    print(f"curves: {out / 'curves.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="labelled training images (the sample's train/)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--accuracy", action="store_true", help="also train with the defaults")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("models/benchmark"))
    args = parser.parse_args()
    print(cpu_description())
    throughput(args.data, args.image_size, args.batch_size, args.rounds)
    if args.accuracy:
        accuracy(args.data, args.out, args.epochs)


if __name__ == "__main__":
    main()

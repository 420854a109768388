#!/usr/bin/env python
"""Training benchmark (not a test): speed and quality of the architectures on the sample.

1. Throughput (always): images/s of training epochs of each --arch (default: seed and residual)
   through the real pipeline (shuffle, one affine augmentation per image, prefetch), and of the
   bare train step on tensors already in memory, alternating in one process. Targets: pipeline /
   bare >= 0.85; seconds per epoch of the residual model within 1.5x of the seed's. Prints the
   time per epoch of the full Kaggle training set (20,000 images after the split) at that speed.
2. --accuracy: `catsdogs train` with the defaults (at most --epochs 30) of --arch into --out, one
   run per --seeds value (same validation split), then, on the validation split: accuracy,
   log loss and calibration error before and after calibration, and the ensemble of the runs.
   Targets (residual): accuracy >= 0.88, log loss <= 0.30 calibrated, calibration error <= 0.03,
   the ensemble's log loss below each member's. Finished run folders are evaluated, not retrained;
   unfinished ones are resumed.

    .venv/bin/python scripts/benchmark_training.py DATA/train                       # 1
    .venv/bin/python scripts/benchmark_training.py DATA/train --accuracy --seeds 0 1 --out models/bench
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catsdogs_batch.cpu import cpu_description  # noqa: E402
from benchmarking import alternate, fmt  # noqa: E402

FULL_SET_TRAINING_IMAGES = 20_000  # Kaggle's 25,000 labelled images, 20% held out


def throughput(data: Path, archs: list[str], batch_size: int, rounds: int, limit: int) -> None:
    import tensorflow as tf

    from catsdogs_batch.models.networks import backbone_of, build_model, compile_model
    from catsdogs_batch.options import ARCHITECTURES, TrainOptions
    from catsdogs_batch.data.dataset import decode_images, find_labelled_images
    from catsdogs_batch.training.recipe import make_datasets, resolve_options

    items = find_labelled_images(data)
    items = items[:: max(1, len(items) // limit)][:limit]  # a stride: cats and dogs alike
    runs = {}
    for arch in archs:
        weights = "none" if ARCHITECTURES[arch].backbone else "imagenet"  # timing needs no ImageNet
        options = resolve_options(TrainOptions(data=data, arch=arch, batch_size=batch_size, weights=weights))
        size = options.image_size
        if not any(r["size"] == size for r in runs.values()):
            images, labels, _ = decode_images(data, items, size, options.workers, f"benchmark {size}px")
        else:
            images, labels = next((r["images"], r["labels"]) for r in runs.values() if r["size"] == size)
        steps = len(images) // batch_size
        n = steps * batch_size
        pipeline, _ = make_datasets(options, (images, labels), (images[:batch_size], labels[:batch_size]))
        bare = tf.data.Dataset.from_tensor_slices((images[:n].astype("float32"), labels[:n])).batch(batch_size).cache()
        model = build_model(options)
        if backbone_of(model) is not None:
            backbone_of(model).trainable = True  # the cost of fine-tuning all of it
        compile_model(model, options.learning_rate)
        runs[arch] = {"size": size, "images": images, "labels": labels, "model": model, "steps": steps,
                      "n": n, "data": {"bare": bare, "pipeline": pipeline}}  # fmt: skip

    def epoch(run: dict, kind: str) -> float:
        start = time.perf_counter()
        run["model"].fit(run["data"][kind], epochs=1, steps_per_epoch=run["steps"], verbose=0)
        return run["n"] / (time.perf_counter() - start)

    measures = {(arch, kind): partial(epoch, run, kind) for arch, run in runs.items() for kind in ("bare", "pipeline")}
    for measure in measures.values():  # warm-up: tracing, allocation
        measure()
    for (arch, kind), results in alternate(measures, rounds).items():
        runs[arch][kind] = results
    print(f"batch {batch_size}, rounds {rounds}, {len(items)} images per epoch (the best round counts)")
    for arch, run in runs.items():
        bare, pipeline = max(run["bare"]), max(run["pipeline"])
        print(
            f"{arch} ({run['size']}px, {run['model'].count_params():,} parameters): pipeline {pipeline:.1f} img/s "
            f"(all: {fmt(run['pipeline'])}), bare {bare:.1f} (all: {fmt(run['bare'])}); ratio {pipeline / bare:.3f} "
            f"(target >= 0.85: {'met' if pipeline / bare >= 0.85 else 'MISSED'}); "
            f"full set: {FULL_SET_TRAINING_IMAGES / pipeline / 60:.1f} min per epoch of training"
        )
    if "seed" in runs and "residual" in runs:
        ratio = max(runs["seed"]["pipeline"]) / max(runs["residual"]["pipeline"])
        print(f"seconds per epoch, residual / seed: {ratio:.2f} (target <= 1.5: {'met' if ratio <= 1.5 else 'MISSED'})")


def accuracy(data: Path, out: Path, arch: str, epochs: int, seeds: list[int]) -> None:
    import numpy as np

    from catsdogs_batch.training.calibration import logit, sigmoid
    from catsdogs_batch.metrics import accuracy as accuracy_of
    from catsdogs_batch.metrics import expected_calibration_error, log_loss
    from catsdogs_batch.options import TrainOptions
    from catsdogs_batch.inference.predictor import Predictor
    from catsdogs_batch.data.dataset import decode_images, read_split
    from catsdogs_batch.training.train import train

    folders = []
    for seed in seeds:
        folder = out / f"{arch}-seed{seed}"
        run_file = folder / "run.json"
        if not run_file.exists() or json.loads(run_file.read_text())["status"] != "finished":
            options = dataclasses.replace(
                TrainOptions(), data=data, out=folder, arch=arch, epochs=epochs, seed=seed, resume=run_file.exists()
            )
            start = time.perf_counter()
            train(options)
            print(f"trained {folder} in {(time.perf_counter() - start) / 60:.1f} min")
        folders.append(folder)

    _, val = read_split(folders[0] / "split.csv")
    run = json.loads((folders[0] / "run.json").read_text())
    pixels, labels, _ = decode_images(data, val, run["image_size"], os.cpu_count() or 1, "validation")
    true = labels[:, 0].astype(int)
    print(f"validation split: {len(true)} images (split seed {run['split']['seed']}, the same for every run)")

    def line(name: str, p: np.ndarray) -> float:
        loss = log_loss(true, p)
        print(f"  {name}: accuracy {accuracy_of(true, p):.4f}, log loss {loss:.4f}, "
              f"calibration error {expected_calibration_error(true, p):.4f}")  # fmt: skip
        return loss

    losses = []
    for folder in folders:
        run = json.loads((folder / "run.json").read_text())
        p = Predictor(folder).predict(pixels)
        temperature = run.get("calibration", {}).get("temperature")
        print(f"{folder}: {run['epochs_run']} epochs, best {run['best']['epoch']}, "
              f"{run['train_seconds'] / max(run['epochs_run'], 1):.0f} s per epoch, temperature {temperature}")  # fmt: skip
        if temperature:
            line("uncalibrated", sigmoid(temperature * logit(p)))
        losses.append(line("calibrated  ", p))
        line("calibrated, with --tta", Predictor(folder, tta=True).predict(pixels))
    if len(folders) > 1:
        ensemble = line(f"ensemble of {len(folders)} (mean p_dog)", Predictor(folders).predict(pixels))
        print(f"  ensemble below every member: {'met' if ensemble < min(losses) else 'MISSED'}")
        line(f"ensemble of {len(folders)}, with --tta", Predictor(folders, tta=True).predict(pixels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="labelled training images (the sample's train/)")
    parser.add_argument("--archs", nargs="+", default=["seed", "residual"], help="architectures to time")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=2000, help="images per timed epoch")
    parser.add_argument("--no-throughput", action="store_true", help="skip part 1")
    parser.add_argument("--accuracy", action="store_true", help="train (or evaluate) runs with the defaults")
    parser.add_argument("--arch", default="residual", help="with --accuracy: the architecture trained")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="with --accuracy: one run per seed")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("models/benchmark"))
    args = parser.parse_args()
    print(cpu_description())
    if not args.no_throughput:
        throughput(args.data, args.archs, args.batch_size, args.rounds, args.images)
    if args.accuracy:
        accuracy(args.data, args.out, args.arch, args.epochs, args.seeds)


if __name__ == "__main__":
    main()

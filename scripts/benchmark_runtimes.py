#!/usr/bin/env python
"""Runtime benchmark (not a test): Keras against its ONNX Runtime and OpenVINO exports, fp32 and
int8, in one process on this CPU.

1. Agreement: label agreement and log loss of each export against the Keras model on the run's
   validation images (the check `catsdogs export` records; exports are made if missing).
2. Model only: images per second on decoded images already in memory, batch 64.
3. End to end: `predict_folder` on a folder of JPEGs (decoding, batching, table), images/s.
4. Threads: end to end for each split of the cores between the model and the decoders.

Rounds alternate between runtimes so that drift of a shared machine hits all alike; the best
round counts. Targets: best int8 end to end >= 3.5x Keras, fp32 exports >= 2x, agreement >= 99.5%.

    .venv/bin/catsdogs train --data DATA/train --out /tmp/bench_model --epochs 3
    .venv/bin/python scripts/benchmark_runtimes.py /tmp/bench_model DATA/test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catsdogs_batch.cpu import cpu_description  # noqa: E402
from benchmarking import fmt  # noqa: E402

EXPORTS = [("onnx", False), ("openvino", False), ("onnx", True), ("openvino", True)]


def name(format: str, int8: bool) -> str:
    return format + ("-int8" if int8 else "")


def make_exports(model: Path) -> dict[str, Path]:
    """The four exports of `model` (made, forced through the check, if missing), by name."""
    from catsdogs_batch.inference.export import default_out, export_model
    from catsdogs_batch.models.checkpoint import find_checkpoint
    from catsdogs_batch.options import ExportOptions

    checkpoint = find_checkpoint(model)
    folders = {"keras": checkpoint.folder}
    for format, int8 in EXPORTS:
        out = default_out(checkpoint, format, int8)
        if not (out / "run.json").exists():
            export_model(ExportOptions(model, format, int8, force=True))
        folders[name(format, int8)] = out
    return folders


def agreement(folders: dict[str, Path]) -> None:
    print("\nagreement with Keras (the export's own check, on the run's validation images):")
    columns = [("agree", 8), ("max |dp|", 9), ("acc keras", 10), ("acc export", 10)]
    columns += [("logloss keras", 14), ("logloss export", 15)]
    print(f"  {'model':<15}" + "".join(f" {title:>{width}}" for title, width in columns))
    for label, folder in folders.items():
        if label == "keras":
            continue
        check = json.loads((folder / "run.json").read_text())["export"]["check"]
        print(
            f"  {label:<15} {check['label_agreement']:>8.2%} {check['max_difference']:>9.4f} "
            f"{check['keras_accuracy']:>10.4f} {check['export_accuracy']:>10.4f} "
            f"{check['keras_log_loss']:>14.4f} {check['export_log_loss']:>15.4f}"
            + ("" if check["passed"] else "  (FAILS the check)")
        )


def model_only(folders: dict[str, Path], images, rounds: int, batch: int) -> dict[str, float]:
    from catsdogs_batch.inference.predictor import Predictor

    predictors = {label: Predictor(folder) for label, folder in folders.items()}
    for p in predictors.values():
        p.predict(images[:batch])  # warm-up: tracing, compilation
    n = len(images) // batch * batch
    results: dict[str, list[float]] = {label: [] for label in predictors}
    for _ in range(rounds):
        for label, p in predictors.items():
            start = time.perf_counter()
            for k in range(0, n, batch):
                p.predict(images[k : k + batch])
            results[label].append(n / (time.perf_counter() - start))
    best = {label: max(v) for label, v in results.items()}
    print(f"\nmodel only ({n} decoded images in memory, batch {batch}, best of {rounds}):")
    for label, v in results.items():
        ratio = best[label] / best["keras"]
        print(f"  {label:<15} {best[label]:>8.1f} img/s  {ratio:>5.2f}x keras  (all: {fmt(v)})")
    return best


def end_to_end(
    folders: dict[str, Path], folder: Path, rounds: int, batch: int, splits: dict[str, tuple[int | None, int]]
) -> dict[str, float]:
    """predict_folder for each model (and each threads split of `splits`), best of `rounds`."""
    from catsdogs_batch.inference.engine import predict_folder
    from catsdogs_batch.inference.predictor import Predictor
    from catsdogs_batch.options import EngineOptions, PredictOptions

    count = sum(1 for _ in folder.iterdir())
    runs = {}
    for label, model in folders.items():
        for split, (threads, workers) in splits.items():
            if threads is not None and label == "keras":
                continue  # TensorFlow's threads are fixed once it has run
            runs[f"{label} {split}".strip()] = (model, threads, workers)
    predictors = {}
    results: dict[str, list[float]] = {key: [] for key in runs}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for key, (model, threads, workers) in runs.items():
                if (model, threads) not in predictors:
                    predictors[model, threads] = Predictor(model, runtime="auto", threads=threads)
                engine = EngineOptions(batch_size=batch, workers=workers, progress=False)
                options = PredictOptions(model, folder, Path(tmp) / "r.csv", overwrite=True, engine=engine)
                (Path(tmp) / "r.csv").unlink(missing_ok=True)
                summary = predict_folder(options, predictors[model, threads])
                results[key].append(summary.images_per_second)
    best = {key: max(v) for key, v in results.items()}
    keras = best[next(k for k in best if k.startswith("keras"))]
    print(f"\nend to end (predict_folder on {count} files of {folder}, batch {batch}, best of {rounds}):")
    for key, v in results.items():
        print(f"  {key:<32} {best[key]:>8.1f} img/s  {best[key] / keras:>5.2f}x keras  (all: {fmt(v)})")
    return best


def decode_sample(folder: Path, size: int, count: int):
    import numpy as np

    from catsdogs_batch.data.images import decode_many, iter_image_files

    paths = [p for _, p in zip(range(count), iter_image_files(folder))]
    return np.stack([d.pixels for _, d in decode_many(paths, size, os.cpu_count() or 1)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a run folder trained on the sample (catsdogs train)")
    parser.add_argument("images", type=Path, help="a folder of JPEGs for the end-to-end runs (the sample's test/)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model-images", type=int, default=512, help="decoded images for the model-only runs")
    parser.add_argument("--no-threads", action="store_true", help="skip the threads-split runs")
    args = parser.parse_args()
    print(cpu_description())
    compare(args.model, args.images, args.rounds, args.batch_size, args.model_images, not args.no_threads)


def compare(model: Path, image_folder: Path, rounds: int, batch_size: int, model_images: int = 512, threads: bool = True) -> None:
    """Agreement, model-only and end-to-end speed of Keras and every export of `model`."""
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    from catsdogs_batch.models.checkpoint import find_checkpoint

    folders = make_exports(model)
    agreement(folders)
    images = decode_sample(image_folder, find_checkpoint(model).image_size, model_images)
    model_only(folders, images, rounds, batch_size)
    cores = os.cpu_count() or 1
    default = {"": (None, cores)}
    best = end_to_end(folders, image_folder, rounds, batch_size, default)
    keras = best["keras"]
    int8 = max(best["onnx-int8"], best["openvino-int8"])
    fp32 = min(best["onnx"], best["openvino"])
    met = {True: "met", False: "MISSED"}
    print(
        f"\ntargets, end to end: best int8 {int8 / keras:.2f}x keras (>= 3.5: {met[int8 >= 3.5 * keras]}); "
        f"slower fp32 export {fp32 / keras:.2f}x (>= 2: {met[fp32 >= 2 * keras]})"
    )
    if threads and cores > 1:
        splits = {
            f"model {t} / decoders {w}": (t, w)
            for t in sorted({1, cores // 2, cores})
            for w in sorted({1, cores // 2, cores})
        }
        fastest = {k: v for k, v in folders.items() if k in ("keras", "onnx", "openvino-int8")}
        end_to_end(fastest, image_folder, rounds, batch_size, splits | {"": (None, cores)})
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Ray engine benchmark (not a test): images per second of `--engine ray` against the local
engine on the same folder and model, in one process, with start-up reported separately.

Local: the model is loaded first (its start-up), then the engine end to end. Ray: the engine
starts a local Ray with one actor per core; its start-up (Ray, actors loading the model, up to
the first rows) is timed apart from the images per second after it. Both tables are compared.

    .venv/bin/python scripts/benchmark_ray.py data/<competition>/test --model models/<run>
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catsdogs_batch.cpu import cpu_description  # noqa: E402


def main() -> None:
    from catsdogs_batch.inference.engine import predict_folder
    from catsdogs_batch.inference.predictor import Predictor
    from catsdogs_batch.options import EngineOptions, PredictOptions
    from catsdogs_batch.inference.tables import read_table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="images, e.g. the sample's test/")
    parser.add_argument("--model", type=Path, required=True, help="a run folder (models/<run>)")
    parser.add_argument("--batch-size", type=int, default=EngineOptions().batch_size)
    parser.add_argument("--shard-size", type=int, default=EngineOptions().shard_size)
    args = parser.parse_args()
    print(cpu_description())

    with tempfile.TemporaryDirectory() as tmp:
        engine = EngineOptions(batch_size=args.batch_size, shard_size=args.shard_size, progress=False)
        start = time.perf_counter()
        predictor = Predictor(args.model)
        local_startup = time.perf_counter() - start
        options = PredictOptions(args.model, args.folder, Path(tmp) / "local.csv", engine=engine)
        local = predict_folder(options, predictor)
        print(f"local engine: {local.processed} images, {local.images_per_second:.1f} img/s "
              f"(start-up, loading the model: {local_startup:.1f} s)")  # fmt: skip

        engine.engine = "ray"
        ray = predict_folder(PredictOptions(args.model, args.folder, Path(tmp) / "ray.csv", engine=engine))
        print(f"Ray engine:   {ray.processed} images, {ray.images_per_second_after_startup:.1f} img/s after start-up "
              f"(start-up: {ray.startup_seconds:.1f} s for Ray, {os.cpu_count()} actors loading the model and "
              f"the first {ray.startup_rows} rows; {ray.images_per_second:.1f} img/s including it)")  # fmt: skip
        print(f"ratio Ray / local after start-up: {ray.images_per_second_after_startup / local.images_per_second:.2f}")

        a, b = read_table(Path(tmp) / "local.csv"), read_table(Path(tmp) / "ray.csv")
        same = a["path"].equals(b["path"]) and a["status"].equals(b["status"])
        difference = (a["p_dog"] - b["p_dog"]).abs().max()
        print(f"tables: same paths and status: {same}; largest p_dog difference: {difference:.2e}")


if __name__ == "__main__":
    main()

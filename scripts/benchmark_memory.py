#!/usr/bin/env python
"""Start-up benchmark (not a test): what a predicting command costs with an export against the
Keras checkpoint, where the export should need neither TensorFlow nor its memory.

1. `catsdogs predict` in a fresh process on a small folder (start-up dominates): peak RSS and
   wall time, for the checkpoint and for its OpenVINO int8 export (made, forced through its
   check, if missing). The median of `--rounds` runs, alternating.
2. `--engine ray`: the peak RSS of the Ray actors (up to one per CPU), read by each actor that
   predicted a batch; the largest counts.

Targets: the export's peak RSS <= 35% of the checkpoint's, its wall time <= 50%, and an actor's
peak RSS with the export <= 35% of one with the checkpoint.

    .venv/bin/catsdogs train --data DATA/train --out /tmp/bench_model --epochs 2
    .venv/bin/python scripts/benchmark_memory.py /tmp/bench_model DATA/test --images 40
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catsdogs_batch.cpu import cpu_description  # noqa: E402

# This process stays small (no TensorFlow, no Ray) until the commands are measured: a child's
# peak RSS starts at its parent's size when it is forked.


def int8_export(model: Path) -> Path:
    """The OpenVINO int8 export of `model`, made in another process (forced through its check) if missing."""
    out = model / "export" / "openvino-int8"  # export's default, named here: importing it loads TensorFlow
    if not (out / "run.json").exists():
        subprocess.run([sys.executable, "-m", "catsdogs_batch.cli", "export", str(model), "--format", "openvino",
                        "--int8", "--force", "--out", str(out)], check=True, cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    return out


def run_command(model: Path, folder: Path, work: Path) -> tuple[float, float]:
    """One `catsdogs predict` in a new process: (peak RSS in MiB, wall seconds)."""
    out = work / "results.csv"
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "catsdogs_batch.cli", "predict", str(model), str(folder), "--out", str(out),
               "--no-progress"]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[1])
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return usage.ru_maxrss / 1024, seconds


def actor_peaks(model: Path, folder: Path, work: Path) -> list[float]:
    """Peak RSS (MiB) of every actor of one `--engine ray` run."""
    import ray
    from ray import cloudpickle

    from catsdogs_batch.inference import ray_engine
    from catsdogs_batch.inference.engine import predict_folder
    from catsdogs_batch.options import EngineOptions, PredictOptions

    peaks = work / f"peaks-{model.name}"
    shutil.rmtree(peaks, ignore_errors=True)
    peaks.mkdir()

    class MeasuredActor(ray_engine.PredictorActor):
        """A Ray actor that writes its own peak RSS (MiB) to a file named by its process id."""

        def __call__(self, batch):
            table = super().__call__(batch)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            (peaks / f"{os.getpid()}.txt").write_text(f"{peak}\n")
            return table

    ray_engine.PredictorActor = MeasuredActor
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import scripts/
    options = PredictOptions(model, folder, work / "ray.csv", overwrite=True,
                             engine=EngineOptions(engine="ray", batch_size=8, progress=False))  # fmt: skip
    with ray_engine.ray_cluster(None):
        predict_folder(options)
        assert ray.is_initialized()
    return [float(p.read_text()) for p in peaks.iterdir()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a run folder (models/<run>)")
    parser.add_argument("folder", type=Path, help="images; the first --images are used")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray actors")
    args = parser.parse_args()
    print(cpu_description())
    export = int8_export(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = work / "images"
        images.mkdir()
        for path in sorted(args.folder.iterdir())[: args.images]:
            shutil.copy(path, images)
        models = {"keras checkpoint": args.model, "openvino int8 export": export}
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, model in models.items():
                runs[name].append(run_command(model, images, work))
        print(f"\n`catsdogs predict` on {args.images} images in a fresh process (median of {args.rounds}):")
        medians = {}
        for name, results in runs.items():
            rss, seconds = (statistics.median(r[k] for r in results) for k in (0, 1))
            medians[name] = rss, seconds
            print(f"  {name:<22} peak RSS {rss:7.0f} MiB   wall {seconds:6.2f} s")
        (keras_rss, keras_s), (export_rss, export_s) = medians.values()
        print(f"  export / checkpoint: peak RSS {export_rss / keras_rss:.2f} (target <= 0.35), "
              f"wall {export_s / keras_s:.2f} (target <= 0.50)")  # fmt: skip
        if args.no_ray:
            return
        print("\n`--engine ray`, peak RSS of each actor:")
        actors = {name: actor_peaks(model, images, work) for name, model in models.items()}
        for name, peaks in actors.items():
            print(f"  {name:<22} {len(peaks)} actors, peak RSS {max(peaks):7.0f} MiB")
        ratio = max(actors["openvino int8 export"]) / max(actors["keras checkpoint"])
        print(f"  export / checkpoint per actor: {ratio:.2f} (target <= 0.35)")


if __name__ == "__main__":
    main()

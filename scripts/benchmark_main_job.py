#!/usr/bin/env python
"""The main job, stage by stage (a benchmark, not a test): what `scripts/quickstart.sh` runs
(import the competition, `catsdogs train` with its defaults, `catsdogs submission --tta`), on
any competition archive or folder, with each stage's seconds and images per second, measured
against the ceiling of decoding and resizing alone on this machine's cores.

Stages of `train` are told apart by the lines it logs: embedding (the int8 backbone quantized,
then the training photos and their mirrors and the validation photos embedded), the head's fit,
and the run's fast model (its export, checked against model.keras). Then the estimate of the
whole quickstart on a competition of --estimate-train / --estimate-test photos (MLE-bench's
Redux: 22,500 and 2,500), from the measured rates: each stage's seconds per photo times the
photos it would see, plus its fixed seconds, plus --setup-seconds for the venv (not measured
here: it needs the package index; ~50 s from a fresh clone in the issue's figures).

    .venv/bin/python scripts/benchmark_main_job.py ../shared/data/dogs-vs-cats-redux-kernels-edition-mini.zip
    .venv/bin/python scripts/benchmark_main_job.py data/dogs-vs-cats-redux-kernels-edition --keep /tmp/job
    # the estimate's shape: measure on a quarter of the sample, then compare with the whole
    .venv/bin/python scripts/benchmark_main_job.py SAMPLE.zip --subset 0.25 --estimate-train 5000 --estimate-test 1000
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from catsdogs_batch.cpu import cpu_description  # noqa: E402

COMPETITION = "dogs-vs-cats-redux-kernels-edition"
# What train logs at each boundary between its stages (train.py)
MARKS = {
    "embedding the images with": "quantized", "fitting the head": "embedded", "head fitted": "head fitted",
    "the run's fast model": "fast model",
}


class Marks(logging.Handler):
    """When each of MARKS was first logged."""

    def __init__(self):
        super().__init__()
        self.at: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for start, name in MARKS.items():
            if message.startswith(start):
                self.at.setdefault(name, time.perf_counter())


def subset_folder(source: Path, out: Path, share: float) -> None:
    """Every 1/share-th file of each part (train, test), hard-linked (or copied); no
    sample_submission.csv (its ids would not match)."""
    step = round(1 / share)
    for part in ("train", "test"):
        (out / part).mkdir(parents=True)
        for k, path in enumerate(sorted((source / part).iterdir())):
            if k % step == 0:
                try:
                    os.link(path, out / part / path.name)
                except OSError:
                    shutil.copyfile(path, out / part / path.name)


def decode_ceiling(folder: Path, size: int) -> float:
    """Images per second of decoding and resizing alone, on every core (images.decode_many)."""
    from catsdogs_batch.data.images import decode_many

    paths = sorted(folder.iterdir())[:2000]
    started = time.perf_counter()
    for _ in decode_many(paths, size, os.cpu_count() or 1):
        pass
    return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a competition archive (as Kaggle serves it) or folder")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temporary folder)")
    parser.add_argument("--subset", type=float, default=1.0, help="share of each part to run on (default: all)")
    parser.add_argument("--estimate-train", type=int, default=22_500, help="labelled photos of the estimated run")
    parser.add_argument("--estimate-test", type=int, default=2_500, help="test photos of the estimated run")
    parser.add_argument("--setup-seconds", type=float, default=50.0, help="the venv's set-up, added to the estimate")
    args = parser.parse_args()

    from catsdogs_batch.kaggle.download import download
    from catsdogs_batch.options import DownloadOptions, SubmissionOptions, TrainOptions
    from catsdogs_batch.inference.submission import make_submission
    from catsdogs_batch.training.train import train

    print(cpu_description())
    work = args.keep or Path(tempfile.mkdtemp(prefix="catsdogs-main-job-"))
    marks = Marks()
    logging.getLogger("catsdogs_batch").addHandler(marks)
    logging.getLogger("catsdogs_batch").setLevel(logging.INFO)
    seconds: dict[str, float] = {}
    try:
        started = time.perf_counter()
        data = download(DownloadOptions(data_dir=work / "data", archive=args.source.resolve()))
        seconds["import"] = time.perf_counter() - started
        if args.subset < 1:
            subset_folder(data, work / "subset", args.subset)
            data = work / "subset"
        photos = {part: sum(1 for _ in (data / part).iterdir()) for part in ("train", "test")}
        ceiling = decode_ceiling(data / "train", 260)

        started = time.perf_counter()
        run = train(TrainOptions(data=data / "train", out=work / "run"))
        ended = time.perf_counter()
        at = marks.at
        seconds["build, quantize"] = at["quantized"] - started
        seconds["embed"] = at["embedded"] - at["quantized"]
        seconds["fit head"] = at["head fitted"] - at["embedded"]
        seconds["fast model"] = at.get("fast model", ended) - at["head fitted"]
        seconds["train, rest"] = ended - at.get("fast model", ended)

        started = time.perf_counter()
        make_submission(SubmissionOptions(model=run, test_dir=data / "test", out=work / "submission", engine=_tta()))
        seconds["submission"] = time.perf_counter() - started
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    val_share = 0.2  # TrainOptions.val_split
    train_photos, val_photos = photos["train"] * (1 - val_share), photos["train"] * val_share
    # passes through the backbone: each training photo and its mirror, each validation photo;
    # each test photo and its mirror (TTA)
    passes = {"embed": 2 * train_photos + val_photos, "submission": 2 * photos["test"]}
    print(f"\n{photos['train']} labelled and {photos['test']} test photos; decoding and resizing alone: "
          f"{ceiling:.0f} images/s on {os.cpu_count()} cores")  # fmt: skip
    for stage, value in seconds.items():
        line = f"  {stage:15s} {value:7.1f} s"
        if stage in passes:
            rate = passes[stage] / value
            line += f"   {rate:6.1f} images/s through the model ({passes[stage]:.0f}), {ceiling / rate:.1f}x below the decode ceiling"
        print(line)
    total = sum(seconds.values())
    print(f"  {'total':15s} {total:7.1f} s (set-up not included)")

    # The estimate: the per-photo stages scale with the photos, the rest stays (the export's check
    # is capped at train.FAST_MODEL_CHECK_IMAGES validation photos; the head's fit grows with its
    # rows, taken here as linear)
    scale_train, scale_test = args.estimate_train / photos["train"], args.estimate_test / photos["test"]
    estimate = {
        "set-up": args.setup_seconds,
        "import": seconds["import"] * (scale_train * photos["train"] + scale_test * photos["test"]) / sum(photos.values()),
        "embed": seconds["embed"] * scale_train,
        "build, quantize": seconds["build, quantize"],
        "fit head": seconds["fit head"] * scale_train,
        "fast model": seconds["fast model"],
        "train, rest": seconds["train, rest"],
        "submission": seconds["submission"] * scale_test,
    }
    print(f"\nestimate for {args.estimate_train} labelled and {args.estimate_test} test photos "
          "(measured rates scaled; set-up as given):")  # fmt: skip
    for stage, value in estimate.items():
        print(f"  {stage:15s} {value:7.1f} s")
    print(f"  {'total':15s} {sum(estimate.values()):7.1f} s (target: 300 s)")


def _tta():
    from catsdogs_batch.options import EngineOptions

    return EngineOptions(tta=True, progress=False)


if __name__ == "__main__":
    main()

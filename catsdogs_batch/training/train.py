"""`catsdogs train`: a folder of labelled images -> `models/<run-name>/` with the best model,
run.json, split.csv, history.csv and curves.png, and the run's fast model (its checked int8
OpenVINO export, export/openvino-int8/, which every command then runs). Interrupted runs
continue with `resume`.

A model from scratch (`--arch residual` or `seed`) trains in one phase; a pretrained backbone in
two: the new head with the backbone frozen, then the top of the backbone at a lower rate. The
default, a fitted head, embeds the images once with the frozen backbone in int8 (quantize.py)
and fits a logistic regression on them (linear_head.py). Once training ends, a temperature
fitted on the validation split calibrates p_dog (calibration.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from ..data.corrections import read_corrections
from ..data.dataset import (
    SPLIT_FILE,
    LabelledImage,
    corrected_split,
    decode_images,
    embed_images,
    read_split,
    write_split,
)
from ..errors import UserError
from ..files import atomic_write_json, exclusive_lock, made_folder, shown
from ..models.checkpoint import MODEL_FILE, RUN_FILE
from ..models.networks import OUTPUT_LAYER, backbone_of, build_model, compile_model, unfreeze_top
from ..options import ARCHITECTURES, ExportOptions, TrainOptions, check_options
from ..side_files import read_record, folder_lock_file
from .calibration import calibrate
from .callbacks import (
    HEAD_WEIGHTS,
    PHASE_FILE,
    BestCheckpoint,
    CallbackState,
    HeadDone,
    HistoryLogger,
    RunProgress,
    save_atomically,
)
from .recipe import make_datasets, resolve_options
from .run_record import BACKUP_DIR, HISTORY_FILE, finished_record, new_record, options_from_record

log = logging.getLogger(__name__)


def default_run_name(options: TrainOptions) -> str:
    return f"{options.arch}-{options.image_size}px-seed{options.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(options: TrainOptions) -> Path:
    """Train the model of `options.arch`, calibrate it, and return the run folder. Ctrl-C keeps
    the best checkpoint and writes everything else; `options.resume` continues such a run from
    its last finished epoch (or its calibration). One run at a time writes a run folder."""
    if options.resume:  # its other options come from its run.json
        check_options(options)
        if options.out is None:
            raise UserError("--resume needs --out: the run folder to continue")
    else:
        options = resolve_options(options)
    if options.out is None:
        options = dataclasses.replace(options, out=Path("models") / default_run_name(options))
    with made_folder(options.out.parent), exclusive_lock(folder_lock_file(options.out), str(options.out)):  # refused: no folder left
        return _train_locked(options)


def _train_locked(options: TrainOptions) -> Path:
    if options.resume:
        options, run, train_items, val_items = _resumed(options)
    else:
        train_items, val_items, corrections = _new_split(options)
        run = {"corrections": corrections} if corrections else {}
    # Built first: pretrained weights that cannot be had stop the run before it writes anything.
    keras.utils.set_random_seed(options.seed)
    model = build_model(options)
    if options.weights not in ("imagenet", "none") and not all(np.isfinite(w).all() for w in model.get_weights()):
        raise UserError(f"--weights {shown(options.weights)}: its weights are not all finite numbers (NaN or infinity)")
    with contextlib.nullcontext() if options.resume else _new_run_folder(options.out, train_items, val_items):
        run, validation = _fitted(options, model, run, train_items, val_items)
    out, run_path = options.out, options.out / RUN_FILE
    if options.calibrate and (out / MODEL_FILE).exists():
        run["calibration"] = _calibrated(options, run, validation or _validation_images(options, val_items))
    if options.fast_model and (out / MODEL_FILE).exists():
        atomic_write_json(run_path, run)  # what the export copies
        try:
            run["fast_model"] = write_fast_model(out)
        except KeyboardInterrupt:
            log.warning("interrupted while exporting: finish it with --resume --out %s", out)
            raise
    atomic_write_json(run_path, run | {"status": "finished"})
    shutil.rmtree(out / BACKUP_DIR, ignore_errors=True)
    best = run.get("best") or {}
    log.info(
        "%s: val accuracy %.4f, val log loss %.4f -> %s",
        f"best epoch {best['epoch']}" if "epoch" in best else "fitted head", best.get("val_accuracy", float("nan")),
        best.get("val_log_loss", float("nan")), out / MODEL_FILE,
    )  # fmt: skip
    return out


def _resumed(options: TrainOptions) -> tuple[TrainOptions, dict, list[LabelledImage], list[LabelledImage]]:
    """The options, run record and split of the interrupted run in `options.out`."""
    out, run_path = options.out, options.out / RUN_FILE
    if not run_path.exists():
        raise UserError(f"nothing to resume in {out}: no {RUN_FILE}")
    run = read_record(run_path)
    try:
        resumed = options_from_record(run["config"], options)
    except (KeyError, TypeError, ValueError):  # not JSON, not an object, a config that is not one
        raise UserError(
            f"{run_path} is damaged (not the record of a training run): nothing to resume in {out}; "
            "train into a new --out"
        ) from None
    if run.get("status") == "finished":
        raise UserError(f"the run in {out} already finished; train into a new --out")
    if options.corrections is not None:  # allowed only as a check: the run keeps its own
        given = read_corrections(options.corrections, resumed.data)
        if given.sha256 != (run.get("corrections") or {}).get("sha256"):
            raise UserError(
                f"the run in {out} was started with other corrections: --resume continues it with those "
                "(recorded in run.json); train into a new --out to use these"
            )
    log.info("resuming %s", out)
    return resumed, run, *read_split(out / SPLIT_FILE)  # split.csv holds the corrected labels


def _new_split(options: TrainOptions) -> tuple[list[LabelledImage], list[LabelledImage], dict | None]:
    """The split of a new run into `options.out`: an empty folder, or one a run left before it
    wrote run.json (killed while it embedded or saved the head), whose leftovers go."""
    out = options.out
    if (out / RUN_FILE).exists() or (out / MODEL_FILE).exists():
        raise UserError(f"{out} already holds a run: use --resume to continue it, or another --out")
    left = _left_by_a_run(out)
    if out.is_symlink() or (out.exists() and (not out.is_dir() or left is None)):
        raise UserError(f"--out {out} is not an empty folder: a run gets a new one (its files would be replaced)")
    for name in left or ():
        if name == BACKUP_DIR:
            shutil.rmtree(out / name)
        elif name != SPLIT_FILE:
            (out / name).unlink()
    if not options.data.is_dir():
        raise UserError(f"no training folder at {options.data} (run `catsdogs download` first?)")
    return corrected_split(options)


@contextlib.contextmanager
def _new_run_folder(out: Path, train_items: list[LabelledImage], val_items: list[LabelledImage]) -> Iterator[None]:
    """`out` with the new run's split.csv; a run refused before it wrote run.json (unreadable
    images, one readable class) leaves nothing it made."""
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    write_split(out / SPLIT_FILE, train_items, val_items)
    try:
        yield
    except UserError:
        if not (out / RUN_FILE).exists():
            (out / SPLIT_FILE).unlink(missing_ok=True)
            shutil.rmtree(out / BACKUP_DIR, ignore_errors=True)
            if made and not any(out.iterdir()):
                out.rmdir()
        raise


def _left_by_a_run(out: Path) -> set[str] | None:
    """What a run killed before it wrote run.json left in `out` (split.csv, then its backup folder
    and the temporary files of a model being saved), or None when `out` holds anything else.
    Only a folder with split.csv, which a run writes first, holds a run's leftovers."""
    if not out.is_dir() or out.is_symlink():
        return set()
    names = {p.name for p in out.iterdir()}
    saving = {n for n in names if n.startswith(f".{MODEL_FILE}.") and ".tmp" in n and (out / n).is_file()}
    ours = {SPLIT_FILE} | saving | ({BACKUP_DIR} if (out / BACKUP_DIR).is_dir() else set())
    if not names or (SPLIT_FILE in names and names <= ours):
        return names
    return None


@dataclass(frozen=True)
class Validation:
    """What calibration needs of the validation split: its labels, and its images or their
    features (the inputs of the p_dog layer, when a fitted head has them already)."""

    labels: np.ndarray
    images: np.ndarray | None = None
    features: np.ndarray | None = None


def _fitted_head(options: TrainOptions) -> bool:
    """Whether the run fits its head on frozen features (the default pretrained --arch)."""
    return ARCHITECTURES[options.arch].fitted_head and options.weights != "none"


def _fitted(
    options: TrainOptions, model: keras.Model, run: dict, train_items: list[LabelledImage],
    val_items: list[LabelledImage],
) -> tuple[dict, Validation | None]:
    """The model trained by its method, resumed where the run stopped, and the run's record: a
    fitted head (`_fit_head`), then `--epochs` of fine-tuning that keep only what beats it; else
    `_fit_epochs` through `_phases`."""
    if run.get("status") == "trained":  # resumed: only its calibration was left
        return run, None
    validation = None
    if _fitted_head(options) and "head" not in run:
        run, validation = _fit_head(options, model, train_items, val_items, run.get("corrections"))
        if options.epochs == 0:
            return run, validation
    return _fit_epochs(options, model, run, train_items, val_items)


def _fit_epochs(
    options: TrainOptions, model: keras.Model, run: dict, train_items: list[LabelledImage],
    val_items: list[LabelledImage],
) -> tuple[dict, Validation]:
    """Keras epochs on the decoded images, through the model's phases: "trained" in run.json, or
    KeyboardInterrupt with the best checkpoint kept."""
    started = time.time()
    val_data = decode_images(options.data, val_items, options.image_size, options.workers, "validation")
    train_data = decode_images(options.data, train_items, options.image_size, options.workers, "train")
    skipped = train_data[2] + val_data[2]
    if len(train_data[0]) == 0 or len(val_data[0]) == 0:
        raise UserError(f"no readable images left in {options.data} after skipping {len(skipped)}")
    _check_both_classes(options, train_data[1], val_data[1])
    log.info(
        "training on %d images, validating on %d (%d unreadable skipped)",
        len(train_data[0]), len(val_data[0]), len(skipped),
    )  # fmt: skip
    head = run.get("head")  # a fitted head: fine-tuning keeps only what beats it
    record = new_record(options, train_data, val_data, skipped, status="running")
    record["train_seconds"] = run.get("train_seconds", 0)
    record |= {key: run[key] for key in ("head", "best") if head and key in run}
    if run.get("corrections"):
        record["corrections"] = run["corrections"]
    atomic_write_json(options.out / RUN_FILE, record)
    best = head.get("val_log_loss") if head else None  # the checkpoint is replaced only by an epoch below it
    train_ds, val_ds = make_datasets(options, train_data[:2], val_data[:2])
    progress, status = RunProgress(options.epochs), "trained"
    try:
        for phase in _phases(options, model):
            model.fit(
                train_ds,
                validation_data=val_ds,
                initial_epoch=phase.first_epoch,
                epochs=phase.end_epoch,
                shuffle=False,  # the dataset shuffles itself
                callbacks=_callbacks(options, phase, best) + [progress],
                verbose=1 if sys.stderr.isatty() else 2,
            )
    except KeyboardInterrupt:
        status = "interrupted"
    record = finished_record(record, options.out, status, time.time() - started)
    atomic_write_json(options.out / RUN_FILE, record)  # "trained": a resume only calibrates
    if status == "interrupted":
        log.warning("interrupted: the best checkpoint is kept; continue with --resume --out %s", options.out)
        raise KeyboardInterrupt
    return record, Validation(val_data[1], images=val_data[0])


def _validation_images(options: TrainOptions, val_items: list[LabelledImage]) -> Validation:
    images, labels, _ = decode_images(options.data, val_items, options.image_size, options.workers, "validation")
    return Validation(labels, images=images)


def _calibrated(options: TrainOptions, run: dict, validation: Validation) -> dict:
    """The best model's calibration on the validation split; a fitted head that no epoch beat keeps
    temperature 1 (its cross-validated C calibrates it already, see calibrate's `fit`)."""
    fit = not (_fitted_head(options) and "epoch" not in run.get("best", {}))
    try:
        return calibrate(
            options.out, validation.labels, images=validation.images, features=validation.features,
            batch_size=options.batch_size, fit=fit,
        )  # fmt: skip
    except KeyboardInterrupt:
        log.warning("interrupted while calibrating: finish it with --resume --out %s", options.out)
        raise


def _fit_head(
    options: TrainOptions, model: keras.Model, train_items: list[LabelledImage], val_items: list[LabelledImage],
    corrections: dict | None,
) -> tuple[dict, Validation]:
    """A frozen backbone's head, fitted (linear_head.py) on the features of each training image
    and of its mirror, each computed once, and saved as the run's model; its run record, and the
    validation images' features and labels (what calibration needs)."""
    from .linear_head import fit_head
    from ..metrics import accuracy, log_loss, roc_auc
    from ..inference.quantize import embedder

    started = time.time()
    size, workers = options.image_size, options.workers
    features = keras.Model(model.inputs, model.get_layer(OUTPUT_LAYER).input)
    embed, embedded_by = embedder(features, size, options.data, [item.path for item in train_items], workers)
    log.info("embedding the images with %s", embedded_by)
    train_f, train_m, train_skipped = embed_images(
        options.data, train_items, embed, size, workers, f"embed train ({embedded_by})", True
    )
    val_f, _, val_skipped = embed_images(
        options.data, val_items, embed, size, workers, f"embed validation ({embedded_by})", False
    )
    skipped = train_skipped + val_skipped
    train_y, val_y = (_readable_labels(items, rows) for items, rows in ((train_items, train_skipped), (val_items, val_skipped)))
    _check_both_classes(options, train_y, val_y)
    log.info(
        "fitting the head on %d training images and their mirrors, validating on %d (%d unreadable skipped)",
        len(train_y), len(val_y), len(skipped),
    )
    head = fit_head(
        np.concatenate([train_f, train_m]), np.concatenate([train_y, train_y]), options.seed,
        groups=np.tile(np.arange(len(train_y)), 2),
    )  # fmt: skip
    model.get_layer(OUTPUT_LAYER).set_weights([head.kernel, head.bias])
    options.out.joinpath(BACKUP_DIR).mkdir(exist_ok=True)
    save_atomically(model.save, options.out / MODEL_FILE, ".keras")
    p_val = head.p_dog(val_f)
    validation = {"accuracy": accuracy(val_y, p_val), "log_loss": log_loss(val_y, p_val), "auc": roc_auc(val_y, p_val)}
    run = new_record(options, (train_f, train_y[:, None]), (val_f, val_y[:, None]), skipped, status="trained")
    run["head"] = head.record() | {"val_log_loss": validation["log_loss"], "embedded_by": embedded_by}
    run["best"] = {f"val_{name}": None if value is None else round(value, 6) for name, value in validation.items()}
    run["train_seconds"] = round(time.time() - started, 1)
    if corrections:
        run["corrections"] = corrections
    atomic_write_json(options.out / RUN_FILE, run)
    log.info(
        "head fitted (C=%g) in %.0f s: val accuracy %.4f, val log loss %.4f",
        head.C, time.time() - started, validation["accuracy"], validation["log_loss"],
    )
    return run, Validation(val_y[:, None].astype(np.float32), features=val_f)


def _check_both_classes(options: TrainOptions, train_labels: np.ndarray, val_labels: np.ndarray) -> None:
    """Refuse a split whose readable images are of one class: every --arch would learn nothing."""
    for what, labels in (("training", train_labels), ("validation", val_labels)):
        if len(np.unique(labels)) < 2:
            raise UserError(f"the readable {what} images of {options.data} are not both cats and dogs "
                            f"({len(labels)} images)")


def _readable_labels(items: list[LabelledImage], skipped: list[dict[str, str]]) -> np.ndarray:
    unreadable = {row["path"] for row in skipped}
    return np.array([item.label for item in items if item.path not in unreadable], dtype=np.int64)


@dataclass(frozen=True)
class Phase:
    """Epochs [first_epoch, end_epoch) of one `fit`, with what is trained in them."""

    name: str  # "train" (a model from scratch), "head" or "fine-tune" (a pretrained backbone)
    first_epoch: int
    end_epoch: int


def _phases(options: TrainOptions, model: keras.Model) -> Iterator[Phase]:
    """Compile `model` for each phase in turn and yield it; a resumed run skips finished phases.
    From scratch: one phase. Pretrained: the head with the backbone frozen (a fitted head is trained
    already), then the top `fine_tune_layers` of the backbone at `fine_tune_rate` times the learning rate."""
    backbone = backbone_of(model)
    if not _fitted_head(options) and (backbone is None or options.weights == "none"):  # nothing learnt to keep frozen
        if backbone is not None:
            backbone.trainable = True
        compile_model(model, options.learning_rate)
        yield Phase("train", 0, options.epochs)
        return
    head_epochs = 0 if _fitted_head(options) else min(options.head_epochs, options.epochs)
    backup = options.out / BACKUP_DIR
    state = json.loads((backup / PHASE_FILE).read_text()) if (backup / PHASE_FILE).exists() else {}
    if state.get("phase") != "fine-tune" and head_epochs:
        compile_model(model, options.learning_rate)
        yield Phase("head", 0, head_epochs)  # its HeadDone saves the best head and PHASE_FILE
    if head_epochs:
        model.load_weights(backup / HEAD_WEIGHTS)
    if head_epochs < options.epochs:
        unfrozen = unfreeze_top(model, options.fine_tune_layers)
        log.info("fine-tuning the top %d layers of the backbone (BatchNormalization stays frozen)", unfrozen)
        compile_model(model, options.learning_rate * options.fine_tune_rate)
        yield Phase("fine-tune", head_epochs, options.epochs)


def _callbacks(options: TrainOptions, phase: Phase, best: float | None = None) -> list:
    out = options.out
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=options.patience, restore_best_weights=True
    )
    checkpoint = BestCheckpoint(out / MODEL_FILE, np.inf if best is None else best)
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", factor=0.5, patience=options.lr_patience, min_lr=1e-6
    )
    return [
        # Keras removes a BackupAndRestore folder when its fit ends: a pretrained run keeps one
        # per phase inside BACKUP_DIR, and the head's HeadDone, before it, runs first.
        *([HeadDone(out / BACKUP_DIR, out / MODEL_FILE)] if phase.name == "head" else []),
        keras.callbacks.BackupAndRestore(
            out / BACKUP_DIR / ("" if phase.name == "train" else phase.name), double_checkpoint=True
        ),
        early_stopping,
        checkpoint,
        plateau,
        HistoryLogger(out / HISTORY_FILE, append=options.resume or phase.first_epoch > 0),
        # After the others, so that it restores their state after their on_train_begin resets it.
        CallbackState(out / BACKUP_DIR / "callbacks.json", phase.name, early_stopping, checkpoint, plateau),
        *([keras.callbacks.TensorBoard(out / "tensorboard")] if options.tensorboard else []),
    ]


FAST_MODEL_CHECK_IMAGES = 500  # held-out images the run's export is checked on (a seeded sample of them)


def write_fast_model(run: Path) -> dict:
    """The run's OpenVINO export, int8 (or fp32 where int8 fails its check against model.keras, on
    at most FAST_MODEL_CHECK_IMAGES validation images), which every command given the run folder
    runs; returns what run.json records of it."""
    from ..inference.export import export_model
    from ..inference.quantize import CALIBRATION_SEED, EMBEDDING_CALIBRATION

    refusals = []
    for int8 in (True, False):
        options = ExportOptions(
            run, "openvino", int8, calibration_images=EMBEDDING_CALIBRATION, check_images=FAST_MODEL_CHECK_IMAGES,
            overwrite=True, seed=CALIBRATION_SEED,
        )  # fmt: skip
        name = "openvino int8" if int8 else "openvino"
        try:
            out, agreement = export_model(options)
        except UserError as e:
            log.warning("the run's %s model: %s", name, e)
            refusals.append(f"{name}: {e}")
            continue
        log.info("the run's fast model (%s): %s", name, agreement.describe())
        return {"model": (out / "model.xml").relative_to(run).as_posix(), "runtime": name, "check": agreement.describe()}
    log.warning("no export of %s passed its check: commands given the run folder run its model.keras (Keras)", run)
    return {"model": MODEL_FILE, "runtime": "keras", "refused": refusals}



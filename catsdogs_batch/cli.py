"""The `catsdogs` command: one subcommand per user job. It only parses options and calls the
library; expected problems become a one-line message and a non-zero exit, never a traceback.

Exit statuses: 0 done, 1 an error (one line on stderr), 2 bad usage (argparse), 3 `label
--sort-into` left readable images unsorted (listed), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import UserError
from .files import shown
from .options import (
    ARCHITECTURES,
    AuditOptions,
    COMPETITIONS,
    DEFAULT_BAND,
    ENGINES,
    MIN_IMAGE_SIZE,
    Augmentation,
    EngineOptions,
    EvaluateOptions,
    ExportOptions,
    FoldTraining,
    LabelOptions,
    Labelling,
    PredictOptions,
    ReviewOptions,
    SUBMISSIONS_LISTED,
    SubmissionOptions,
    SubmitOptions,
    TrainOptions,
)

DEFAULT_COMPETITION = COMPETITIONS[0]
EXIT_ERROR, EXIT_NOT_ALL_SORTED, EXIT_INTERRUPTED = 1, 3, 130


def number(kind: type, low: float | None = None, high: float | None = None, *, open_high: bool = False) -> Callable:
    """An argparse type: `kind` within [low, high] (or [low, high) with `open_high`), so that a
    bad value stops the command before any work, with argparse's one-line usage error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
        if value != value or (low is not None and value < low) or (
            high is not None and (value >= high if open_high else value > high)
        ):
            bounds = f"[{low}, {high}{')' if open_high else ']'}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {bounds}")
        return value

    return parse


POSITIVE = number(int, 1)
FRACTION = number(float, 0, 1, open_high=True)
NON_NEGATIVE = number(float, 0)


class Parser(argparse.ArgumentParser):
    """argparse, with what it prints escaped: a usage error quotes the user's words."""

    def _print_message(self, message: str, file=None) -> None:
        if message:
            lines = "\n".join(shown(line) for line in message.splitlines())
            super()._print_message(lines + ("\n" if message.endswith("\n") else ""), file)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" where there is a default worth showing and the help does not say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def _add_competition(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--competition",
        choices=COMPETITIONS,
        default=DEFAULT_COMPETITION,
        help=f"Kaggle competition (default: {DEFAULT_COMPETITION})",
    )


# --- download ------------------------------------------------------------------------------


def parse_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download",
        help="download and unpack the competition data",
        description="Download the competition archive with the kaggle client (or import one you "
        "already have, or the competition folder of a Kaggle notebook) and unpack train/ and test/ "
        "into DATA_DIR/<competition>/.",
    )
    _add_competition(p)
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="default: data")
    p.add_argument(
        "--archive",
        type=Path,
        metavar="ZIP_OR_FOLDER",
        help="import this already-downloaded archive instead, or the competition folder (as Kaggle "
        "mounts it under /kaggle/input/<competition>/: train.zip and test.zip, or train/ and test/); "
        "it is only read. Without Kaggle credentials, /kaggle/input/<competition>/ (or below "
        "$CATSDOGS_KAGGLE_INPUT) is used where it exists",
    )
    p.add_argument("--force", action="store_true", help="download and unpack again")
    p.set_defaults(func=run_download)


def run_download(args: argparse.Namespace) -> None:
    from .download import DownloadOptions, download

    download(
        DownloadOptions(
            competition=args.competition,
            data_dir=args.data_dir,
            archive=args.archive,
            force=args.force,
        )
    )


# --- train ---------------------------------------------------------------------------------


def parse_train(sub: argparse._SubParsersAction) -> None:
    d = TrainOptions()
    a = d.augmentation
    p = sub.add_parser(
        "train",
        help="train a model on labelled images",
        description="Train a model on a folder of labelled images (Kaggle names cat.N.jpg/dog.N.jpg "
        "or class folders cat/ and dog/), calibrate its probabilities on the validation split, and "
        "save the best checkpoint, run.json and split.csv (and, for epochs trained, history.csv and "
        "curves.png) into the run folder. EfficientNet-Lite's head is a logistic regression fitted on "
        "its ImageNet features of each image and its mirror, in minutes on a CPU; --epochs N then "
        "fine-tunes the top of the backbone. "
        "Architectures: " + "; ".join(f"{name}: {a.about}" for name, a in ARCHITECTURES.items()) + ".",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--data", type=Path, default=d.data, help="folder of labelled images")
    p.add_argument("--out", type=Path, help="run folder (default: models/<arch>-<size>px-<time>)")
    p.add_argument("--arch", choices=tuple(ARCHITECTURES), default=d.arch, help="the model to train")
    p.add_argument(
        "--weights", default=d.weights, metavar="imagenet|none|FILE",
        help="pretrained --arch: ImageNet weights (EfficientNet-Lite: from its installed package; "
        "the others: downloaded once into ~/.keras/models/), none (random), or a weights file of "
        "that backbone (EfficientNet-Lite: its PyTorch checkpoint; the others: a Keras weights file)",
    )  # fmt: skip
    p.add_argument(
        "--image-size", type=number(int, MIN_IMAGE_SIZE),
        help="model input, pixels (default: the architecture's: 128 from scratch, the native size pretrained)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=POSITIVE, default=d.batch_size, help="images per training step")
    p.add_argument(
        "--epochs", type=number(int, 0),
        help="at most this many epochs (default: 50; EfficientNet-Lite: 0, the fitted head alone, "
        "N fine-tunes it)",
    )  # fmt: skip
    p.add_argument(
        "--head-epochs", type=number(int, 0), default=d.head_epochs,
        help="pretrained --arch: epochs of the new head alone, before fine-tuning",
    )  # fmt: skip
    p.add_argument(
        "--fine-tune-layers", type=number(int, 0), metavar="N",
        help="pretrained --arch: top backbone layers trained after the head (default: a fifth of "
        "them; BatchNormalization stays frozen)",
    )  # fmt: skip
    p.add_argument(
        "--fine-tune-rate", type=number(float, 1e-6, 1), default=d.fine_tune_rate,
        help="pretrained --arch: fine-tuning learning rate, as a fraction of --learning-rate",
    )  # fmt: skip
    p.add_argument("--val-split", type=number(float, 0, 1, open_high=True), default=d.val_split, help="fraction held out")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the weights, shuffling and augmentation")
    p.add_argument(
        "--split-seed", type=int, default=d.split_seed,
        help="seed of the validation split: keep it to compare or ensemble runs",
    )  # fmt: skip
    p.add_argument(
        "--learning-rate", type=number(float, 1e-12),
        help="Adam's initial rate (default: 1e-3; 3e-4 for seed)",
    )  # fmt: skip
    p.add_argument("--l2", type=NON_NEGATIVE, default=d.l2, help="L2 weight on conv and dense kernels")
    p.add_argument("--dense-units", type=POSITIVE, default=d.dense_units, help="seed: units of the hidden Dense layer")
    p.add_argument(
        "--no-calibration", action="store_true",
        help="keep the raw probabilities (no temperature fitted on the validation split)",
    )  # fmt: skip
    p.add_argument("--dropout", type=FRACTION, default=d.dropout, help="dropout rate before the output")
    p.add_argument("--bn-momentum", type=FRACTION, default=d.bn_momentum, help="BatchNormalization momentum")
    p.add_argument("--patience", type=POSITIVE, default=d.patience, help="early-stopping patience")
    p.add_argument("--lr-patience", type=POSITIVE, default=d.lr_patience, help="epochs before halving the rate")
    p.add_argument("--rotation", type=number(float, 0, 180), default=a.rotation, help="augmentation: degrees +-")
    p.add_argument("--shift", type=FRACTION, default=a.shift, help="augmentation: fraction +-")
    p.add_argument("--shear", type=number(float, 0, 80), default=a.shear, help="augmentation: degrees +-")
    p.add_argument("--zoom", type=FRACTION, default=a.zoom, help="augmentation: fraction +-")
    p.add_argument("--no-flip", action="store_true", help="augmentation: no horizontal flips")
    p.add_argument(
        "--corrections", type=Path, metavar="CSV",
        help="a review's corrections.csv (path,label, paths relative to --data): its labels win over "
        "the names' and folders', images labelled skip are left out (recorded in run.json)",
    )  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs")
    p.add_argument("--workers", type=POSITIVE, default=d.workers, help="decoding threads")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> None:
    from .train import train

    if args.resume and args.out is None:
        raise UserError("--resume needs --out: the run folder to continue")
    train(
        TrainOptions(
            data=args.data,
            out=args.out,
            arch=args.arch,
            weights=args.weights,
            image_size=args.image_size,
            batch_size=args.batch_size,
            epochs=args.epochs,
            head_epochs=args.head_epochs,
            fine_tune_layers=args.fine_tune_layers,
            fine_tune_rate=args.fine_tune_rate,
            val_split=args.val_split,
            seed=args.seed,
            split_seed=args.split_seed,
            learning_rate=args.learning_rate,
            l2=args.l2,
            dense_units=args.dense_units,
            dropout=args.dropout,
            bn_momentum=args.bn_momentum,
            patience=args.patience,
            lr_patience=args.lr_patience,
            augmentation=Augmentation(args.rotation, args.shift, args.shear, args.zoom, not args.no_flip),
            calibrate=not args.no_calibration,
            corrections=args.corrections,
            resume=args.resume,
            tensorboard=args.tensorboard,
            workers=args.workers,
        )
    )


# --- predict, submission ------------------------------------------------------------------


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    d = EngineOptions()
    parser.add_argument("--tta", action="store_true", help="average with the mirrored image")
    parser.add_argument("--batch-size", type=POSITIVE, default=d.batch_size, help=f"default: {d.batch_size}")
    parser.add_argument("--workers", type=POSITIVE, default=d.workers, help=f"decoding threads (default: {d.workers})")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output")
    parser.add_argument(
        "--shard-size", type=POSITIVE, default=d.shard_size,
        help=f"files per resumable unit of work (default: {d.shard_size})",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--runtime", choices=("auto", "keras", "onnx", "openvino"), default=d.runtime,
        help="what runs the model (default: auto, from the model file: model.keras -> keras, "
        "model.onnx -> onnx, model.xml -> openvino; openvino also runs model.onnx)",
    )  # fmt: skip
    parser.add_argument(
        "--runtime-threads", type=POSITIVE, metavar="N",
        help="threads of the model, sharing the cores with the decoding --workers (default: every core)",
    )  # fmt: skip
    parser.add_argument(
        "--engine", choices=tuple(ENGINES), default=d.engine,
        help=f"local: this process; ray: a Ray Data actor pool, one model per CPU (default: {d.engine})",
    )  # fmt: skip
    parser.add_argument(
        "--ray-address", metavar="ADDRESS",
        help="with --engine ray: 'auto' or ray://HOST:PORT joins that cluster "
        "(default: $RAY_ADDRESS, else start Ray on this machine)",
    )  # fmt: skip


def _engine_options(args: argparse.Namespace) -> EngineOptions:
    if args.ray_address and args.engine != "ray":
        raise UserError("--ray-address needs --engine ray")
    return EngineOptions(
        batch_size=args.batch_size,
        workers=args.workers,
        tta=args.tta,
        shard_size=args.shard_size,
        progress=not args.no_progress,
        runtime=args.runtime,
        runtime_threads=args.runtime_threads,
        engine=args.engine,
        ray_address=args.ray_address,
    )


MODELS_HELP = (
    "a run folder (models/<run>) or its model file; several make an ensemble (their calibrated "
    "p_dog averaged; each sees the image at its own size)"
)


def _models(models: list[Path]) -> Path | tuple[Path, ...]:
    return models[0] if len(models) == 1 else tuple(models)


def parse_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="write the results table for a folder of images",
        description="Predict cat or dog for every image under FOLDER (recursively) and write "
        "one row per file: path, id, p_dog, label, confidence, width, height, status, error. "
        "An interrupted run continues where it stopped when rerun.",
    )
    p.add_argument("model", type=Path, nargs="+", help=MODELS_HELP)
    p.add_argument("folder", type=Path, help="folder of images")
    p.add_argument("--out", type=Path, required=True, help="results table, .csv or .parquet")
    _add_engine_options(p)
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> None:
    from .engine import predict_folder

    summary = predict_folder(
        PredictOptions(_models(args.model), args.folder, args.out, args.overwrite, _engine_options(args))
    )
    say(summary.describe())


def parse_submission(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submission",
        help="predict the test images and write submission.csv",
        description="Predict every test image and write submission.csv (checked against the "
        "competition's sample submission) and results.csv into the output folder.",
    )
    p.add_argument(
        "--model", type=Path, action="append",
        help="run folder (default: the newest finished run in models/); repeat it for an ensemble",
    )  # fmt: skip
    p.add_argument("--test-dir", type=Path, help="default: data/<competition>/test")
    _add_competition(p)
    p.add_argument(
        "--clip", type=number(float, 0, 0.5, open_high=True), default=SubmissionOptions.clip,
        help=f"redux: clip p_dog to [clip, 1-clip] (default: {SubmissionOptions.clip})",
    )  # fmt: skip
    p.add_argument("--sample-submission", type=Path, help="default: found beside the test folder")
    p.add_argument("--out", type=Path, help="output folder (default: submissions/<run-name>)")
    _add_engine_options(p)
    p.set_defaults(func=run_submission)


def run_submission(args: argparse.Namespace) -> None:
    from .submission import make_submission

    from .checkpoint import ensemble_name, latest_checkpoint

    models = args.model or [latest_checkpoint()]
    test_dir = args.test_dir or Path("data") / args.competition / "test"
    if not test_dir.is_dir():
        raise UserError(f"no test folder at {test_dir} (run `catsdogs download` first?)")
    out = args.out or Path("submissions") / ensemble_name(models)
    path = make_submission(
        SubmissionOptions(
            model=_models(models),
            test_dir=test_dir,
            out=out,
            competition=args.competition,
            clip=args.clip,
            sample_submission=args.sample_submission,
            overwrite=args.overwrite,
            engine=_engine_options(args),
        )
    )
    say(f"submission written: {shown(path)}; upload it with: catsdogs submit {shown(path)} -m MESSAGE")


# --- export --------------------------------------------------------------------------------


def parse_export(sub: argparse._SubParsersAction) -> None:
    d = ExportOptions(model=Path())
    p = sub.add_parser(
        "export",
        help="convert a model for fast CPU inference (ONNX Runtime, OpenVINO; fp32 or int8)",
        description="Convert a checkpoint for ONNX Runtime or OpenVINO, optionally quantized to int8 "
        "with a few hundred calibration images, into a folder with a copy of its run.json that every "
        "command accepts as --model. The export is checked against the Keras model on the run's "
        "validation images (or the labelled --calibration images when those are not here) and "
        f"refused if its accuracy drops by more than {d.max_accuracy_drop:.1%}, its log loss rises by more "
        f"than {d.max_log_loss_increase}, or under {d.min_agreement:.1%} of the images the Keras model is "
        f"sure of (p_dog below {DEFAULT_BAND[0]} or above {DEFAULT_BAND[1]}) keep its label; int8 keeps "
        "more layers in fp32, one step at a time, until it passes.",
    )
    p.add_argument("model", type=Path, help="a run folder (models/<run>) or its model.keras")
    p.add_argument("--format", choices=("onnx", "openvino"), default=d.format, help=f"default: {d.format}")
    p.add_argument("--int8", action="store_true", help="quantize to int8 after training")
    p.add_argument(
        "--calibration", type=Path, metavar="DIR",
        help="images to calibrate on (default: a seeded sample of the run's training images); "
        "labelled ones (cat.N.jpg, cat/ and dog/) also check the export where the run's "
        "validation images are not on this machine",
    )  # fmt: skip
    p.add_argument(
        "--calibration-images", type=POSITIVE, default=d.calibration_images, metavar="N",
        help=f"how many calibration images (default: {d.calibration_images})",
    )  # fmt: skip
    p.add_argument("--out", type=Path, help="output folder (default: <run>/export/<format>[-int8])")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in the --out folder")
    p.add_argument("--force", action="store_true", help="keep an export that fails its check (see --help)")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> None:
    from .export import export_model

    options = ExportOptions(
        model=args.model,
        format=args.format,
        int8=args.int8,
        calibration=args.calibration,
        calibration_images=args.calibration_images,
        out=args.out,
        overwrite=args.overwrite,
        force=args.force,
    )
    out, agreement = export_model(options)
    failed = agreement.failures(options)
    if failed:
        say(f"kept {shown(out)} although it FAILED its check (--force): {'; '.join(failed)} ({agreement.describe()})")
    else:
        say(f"exported to {shown(out)}: {agreement.describe()}")


# --- submit --------------------------------------------------------------------------------


def parse_submit(sub: argparse._SubParsersAction) -> None:
    d = SubmitOptions(Path(), "")
    p = sub.add_parser(
        "submit",
        help="upload a submission file to Kaggle and read its score back",
        description="Upload a submission csv to the competition with the kaggle client, print "
        "Kaggle's answer, then wait (at most --wait seconds) until Kaggle has scored it and print "
        "the public score. A file Kaggle rejects is an error with Kaggle's message (exit 1); one "
        "still being scored when the wait ends exits 0 and says how to look later. With --status, "
        "list the latest submissions with their status and public score instead (no upload).",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("file", type=Path, nargs="?", help="the submission file, e.g. submissions/submission.csv")
    p.add_argument("-m", "--message", help="a description of this submission (required with FILE)")
    p.add_argument(
        "--wait",
        type=NON_NEGATIVE,
        default=d.wait,
        metavar="SECONDS",
        help="how long to wait for the score; 0 uploads only",
    )
    p.add_argument(
        "--poll-interval",
        type=number(float, 0.01),
        default=d.poll_interval,
        metavar="SECONDS",
        help="seconds between the first looks at the score; the waits grow 1.5 times each, up to 6 times this",
    )
    p.add_argument(
        "--status",
        action="store_true",
        help=f"list the competition's latest {SUBMISSIONS_LISTED} submissions with status and public score; "
        "upload nothing",
    )
    _add_competition(p)
    p.set_defaults(func=run_submit)


def run_submit(args: argparse.Namespace) -> None:
    from .scoring import status_report, submit_and_score

    if args.status:
        if args.file is not None or args.message is not None:
            raise UserError("--status uploads nothing: leave out FILE and -m")
        say(status_report(args.competition))
        return
    if args.file is None:
        raise UserError("give the submission FILE and -m MESSAGE, or --status to see the latest submissions")
    if args.message is None:
        raise UserError("give a description of the submission with -m MESSAGE")
    options = SubmitOptions(args.file, args.message, args.competition, args.wait, args.poll_interval)
    say(submit_and_score(options, report=say).describe())


# --- label, evaluate ----------------------------------------------------------------------


def parse_label(sub: argparse._SubParsersAction) -> None:
    d = LabelOptions(Path(), Path())
    p = sub.add_parser(
        "label",
        help="label a folder of photos as cat, dog or uncertain, and sort them",
        description="Predict every image under FOLDER (recursively) and write the results table "
        "(the same columns as `predict`); with --uncertain, images with LOW <= p_dog <= HIGH are "
        "labelled uncertain. With --sort-into, each image is also placed at "
        "DIR/{cat,dog,uncertain}/<its path relative to FOLDER>; no file is ever overwritten, "
        "unreadable files stay where they are, and an interrupted run finishes when rerun.",
    )
    p.add_argument("model", type=Path, nargs="+", help=MODELS_HELP)
    p.add_argument("folder", type=Path, help="folder of images")
    p.add_argument(
        "--out", type=Path, metavar="TABLE",
        help="results table, .csv or .parquet (default: submissions/labels-<folder name>.csv, "
        "relative to the current directory)",
    )  # fmt: skip
    p.add_argument(
        "--threshold", type=number(float, 0, 1), default=d.labelling.threshold,
        help=f"dog when p_dog >= this, else cat (default: {d.labelling.threshold})",
    )  # fmt: skip
    p.add_argument(
        "--uncertain", type=number(float, 0, 1), nargs=2, metavar=("LOW", "HIGH"),
        help="label images with LOW <= p_dog <= HIGH as uncertain",
    )  # fmt: skip
    p.add_argument("--sort-into", type=Path, metavar="DIR", help="place images into DIR/cat, DIR/dog, DIR/uncertain")
    p.add_argument(
        "--corrections", type=Path, metavar="CSV",
        help="a review's corrections.csv (path,label): its labels win over the model's (the table's "
        "`source` column says human); images labelled skip are not sorted",
    )  # fmt: skip
    p.add_argument(
        "--mode", choices=("copy", "link", "move"),
        help=f"with --sort-into: copy, hard-link or move the files (default: {d.mode}); a move "
        "removes each source only once its copy is in place",
    )  # fmt: skip
    _add_engine_options(p)
    p.set_defaults(func=run_label)


def run_label(args: argparse.Namespace) -> int:
    from .label import label_folder

    if args.mode and not args.sort_into:
        raise UserError("--mode needs --sort-into DIR")
    summary = label_folder(
        LabelOptions(
            model=_models(args.model),
            folder=args.folder,
            out=args.out,
            labelling=Labelling(args.threshold, tuple(args.uncertain) if args.uncertain else None),
            sort_into=args.sort_into,
            mode=args.mode or "copy",
            overwrite=args.overwrite,
            engine=_engine_options(args),
            corrections=args.corrections,
        )
    )
    say(summary.describe())
    unsorted = len(summary.sorting.problems) if summary.sorting else 0
    if unsorted:
        say(f"{unsorted} readable images were not sorted (listed above)", file=sys.stderr)
        return EXIT_NOT_ALL_SORTED
    return 0


def parse_evaluate(sub: argparse._SubParsersAction) -> None:
    d = EvaluateOptions(Path(), Path())
    p = sub.add_parser(
        "evaluate",
        help="metrics, pictures and an HTML report for a labelled folder",
        description="Predict every image of a folder labelled like the training data (cat.N.jpg "
        "/ dog.N.jpg, or cat/ and dog/ folders) and write into the output folder: results.csv "
        "(with the true label beside the prediction), metrics.json (accuracy, log loss, ROC AUC, "
        "precision and recall per class, confusion matrix, errors), confusion_matrix.png, "
        "roc_curve.png, reliability.png, confidently_wrong.jpg and report.html.",
    )
    p.add_argument("model", type=Path, nargs="+", help=MODELS_HELP)
    p.add_argument("folder", type=Path, metavar="labelled_folder", help="folder of labelled images")
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="output folder (default: submissions/evaluate-<run>-<folder name>)"
    )
    p.add_argument(
        "--worst", type=number(int, 0), default=d.worst,
        help=f"images on the contact sheet of the most confidently wrong (default: {d.worst})",
    )  # fmt: skip
    _add_engine_options(p)
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> None:
    from .evaluate import evaluate_folder

    evaluation = evaluate_folder(
        EvaluateOptions(_models(args.model), args.folder, args.out, args.worst, args.overwrite, _engine_options(args))
    )
    say(evaluation.describe())


# --- review --------------------------------------------------------------------------------


def parse_review(sub: argparse._SubParsersAction) -> None:
    d = ReviewOptions(Path())
    p = sub.add_parser(
        "review",
        help="decide uncertain and disagreeing images on a local web page",
        description="Serve a local web page (127.0.0.1, behind a random token) that shows the "
        "images of a results table that need a person: the uncertain band, closest to 0.5 first, "
        "then, for evaluate's tables, the most confident disagreements with the true label. Keys: "
        "c cat, d dog, x neither/unusable, space the model's label, u undo, arrows move. Every "
        "decision is saved at once to corrections.csv (path,label) beside the table.",
    )
    p.add_argument(
        "table", type=Path,
        help="results table of predict, label, evaluate or audit (or evaluate's folder), or a training run "
        "folder: its validation images, predicted by its model",
    )  # fmt: skip
    p.add_argument(
        "--images", type=Path, metavar="DIR",
        help="the folder the table's paths are relative to (default: the one recorded beside the table)",
    )  # fmt: skip
    p.add_argument("--corrections", type=Path, metavar="CSV", help="default: corrections.csv beside the table")
    p.add_argument(
        "--uncertain", type=number(float, 0, 1), nargs=2, metavar=("LOW", "HIGH"),
        help="review images with LOW <= p_dog <= HIGH (default: the band the table was labelled "
        "with, else 0.2 0.8)",
    )  # fmt: skip
    p.add_argument("--port", type=number(int, 0, 65535), default=d.port, help="on 127.0.0.1 (default: 0, a free one)")
    p.add_argument("--page-size", type=POSITIVE, default=d.page_size, help=f"thumbnails per page (default: {d.page_size})")
    p.add_argument("--no-browser", action="store_true", help="only print the URL")
    p.set_defaults(func=run_review)


def run_review(args: argparse.Namespace) -> None:
    from .review import review

    summary = review(
        ReviewOptions(
            table=args.table,
            images=args.images,
            corrections=args.corrections,
            uncertain=tuple(args.uncertain) if args.uncertain else None,
            port=args.port,
            open_browser=not args.no_browser,
            page_size=args.page_size,
        )
    )
    say(summary.describe())


# --- audit ---------------------------------------------------------------------------------


def parse_audit(sub: argparse._SubParsersAction) -> None:
    d, scratch = AuditOptions(Path()), FoldTraining()
    p = sub.add_parser(
        "audit",
        help="find likely label errors in a labelled folder, for review",
        description="Predict every image of a labelled folder (cat.N.jpg / dog.N.jpg, or cat/ and "
        "dog/ folders) with a classifier that did not see it (k-fold), find the likely label errors "
        "with cleanlab (confident learning) and write a results table ranked by how likely each given "
        "label is wrong (label_quality, lowest first; label_issue flags cleanlab's finds). With a "
        "pretrained --arch (the default) its ImageNet backbone embeds every image once and each fold "
        "gets a logistic regression on the others' embeddings; with --arch residual or seed each fold "
        "trains a small model from scratch on the others (offline, slower and much less accurate). "
        "`catsdogs review TABLE` shows the flagged ones.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("data", type=Path, help="folder of labelled images")
    p.add_argument(
        "--out", type=Path, metavar="TABLE",
        help="the table, .csv or .parquet (default: submissions/audit-<folder name>.csv)",
    )  # fmt: skip
    p.add_argument("--folds", type=number(int, 2), default=d.folds, help="k of the k-fold predictions")
    p.add_argument(
        "--arch", choices=tuple(ARCHITECTURES), default=d.arch,
        help="a pretrained backbone embeds the images (its ImageNet weights needed); residual or seed "
        "train a model per fold from scratch",
    )  # fmt: skip
    p.add_argument(
        "--weights", default=d.weights, metavar="imagenet|FILE",
        help="pretrained --arch: ImageNet weights (downloaded once into ~/.keras/models/) or a Keras "
        "weights file of that backbone (offline: that, or --arch residual)",
    )  # fmt: skip
    p.add_argument(
        "--image-size", type=number(int, MIN_IMAGE_SIZE),
        help=f"model input, pixels (default: the backbone's native size, 224; {scratch.image_size} from scratch)",
    )  # fmt: skip
    p.add_argument(
        "--epochs", type=POSITIVE,
        help=f"--arch residual|seed only: training epochs of each fold's model (default: {scratch.epochs})",
    )  # fmt: skip
    p.add_argument(
        "--batch-size", type=POSITIVE,
        help=f"--arch residual|seed only: images per training step (default: {scratch.batch_size})",
    )  # fmt: skip
    p.add_argument(
        "--learning-rate", type=number(float, 1e-12),
        help="--arch residual|seed only: Adam's initial rate, decaying to 0 over the epochs (default: the architecture's)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the folds (from scratch: also weights and augmentation)")
    p.add_argument("--no-tta", action="store_true", help="do not also embed (or predict) the mirrored image")
    p.add_argument(
        "--corrections", type=Path, metavar="CSV",
        help="a review's corrections.csv (path,label): its labels are the given ones, images labelled skip are left out",
    )  # fmt: skip
    p.add_argument("--workers", type=POSITIVE, default=d.workers, help="decoding threads")
    p.add_argument("--overwrite", action="store_true", help="replace an existing table")
    p.set_defaults(func=run_audit)


def run_audit(args: argparse.Namespace) -> None:
    from .audit import audit

    summary = audit(
        AuditOptions(
            data=args.data,
            out=args.out,
            folds=args.folds,
            epochs=args.epochs,
            image_size=args.image_size,
            arch=args.arch,
            weights=args.weights,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            tta=not args.no_tta,
            corrections=args.corrections,
            overwrite=args.overwrite,
            workers=args.workers,
        )
    )
    say(summary.describe())


# --- main ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="catsdogs",
        description="Kaggle Dogs vs. Cats: download the data, train the CNN, predict in batches, "
        "write submissions and bulk-label photo folders.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for parse_command in (
        parse_download, parse_train, parse_predict, parse_submission, parse_submit, parse_label, parse_evaluate,
        parse_export, parse_review, parse_audit,
    ):  # fmt: skip
        parse_command(sub)
    return parser


def say(text: str, file=None) -> None:
    """Print a report for people: each of its lines escaped (the reports escape the names they
    hold, so a name with a line break in it stays on its line), so no name drives the terminal."""
    print("\n".join(shown(line) for line in str(text).splitlines()), file=file or sys.stdout)


def say_error(command: str, message: object) -> None:
    """The one line of an error, escaped whole."""
    print(shown(f"catsdogs {command}: error: {message}"), file=sys.stderr)


class EscapedFormatter(logging.Formatter):
    """Log messages are one line each: escaped whole, names included."""

    def format(self, record: logging.LogRecord) -> str:
        return shown(super().format(record))


def own_or_error(record: logging.LogRecord) -> bool:
    """Without --verbose, a command prints its own lines: this package's messages, and only the
    errors of the libraries it runs (not matplotlib's "generated new fontManager", nor
    TensorFlow's notices)."""
    return record.name.partition(".")[0] == __package__ or record.levelno >= logging.ERROR


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what C libraries write straight to the stderr descriptor (TensorFlow's and oneDNN's
    start-up log) to /dev/null for the command's duration, while Python's own messages, the
    progress bar included, still reach the terminal."""
    try:
        sys.stderr.flush()
        python_on_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # stderr replaced (a test, an IDE)
        python_on_fd2 = False
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    python_stderr = sys.stderr
    if python_on_fd2:
        sys.stderr = open(saved, "w", buffering=1, closefd=False, errors="backslashreplace")
    try:
        yield
    finally:
        if python_on_fd2:
            sys.stderr.flush()
            sys.stderr = python_stderr
        os.dup2(saved, 2)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse has printed
        return int(e.code or 0)
    if not args.verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with contextlib.ExitStack() as quiet:
        if not args.verbose:
            quiet.enter_context(native_stderr_silenced())
            # Libraries' warnings (Keras' one per layer of a weights file it cannot match, Pillow's
            # about photos of 90 to 180 megapixels, decoded all the same) are theirs, not the
            # command's: its errors still end it with one line.
            quiet.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
        handler = logging.StreamHandler()  # after the silencing: it writes to sys.stderr
        handler.setFormatter(EscapedFormatter("%(message)s"))
        if not args.verbose:
            handler.addFilter(own_or_error)
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
        try:
            return args.func(args) or 0
        except UserError as e:
            say_error(args.command, e)
            return EXIT_ERROR
        except OSError as e:  # a full disk, a read-only folder, ...: the system's words, one line
            if args.verbose:
                raise
            where = f": {e.filename}" if e.filename else ""
            say_error(args.command, f"{e.strerror or e}{where}")
            return EXIT_ERROR
        except KeyboardInterrupt:
            say(f"catsdogs {args.command}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

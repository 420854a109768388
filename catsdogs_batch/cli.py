"""The `catsdogs` command: one subcommand per user job. It only parses options and calls the
library; expected problems become a one-line message and a non-zero exit, never a traceback.

Each flag is made from its option in options.py (`option`: the default, the range or choices,
the type), and each command's options dataclass from the parsed arguments (`options_from`), so
neither is written twice; the library checks them again however they were made.

Exit statuses: 0 done, 1 an error (one line on stderr), 2 bad usage (argparse), 3 `label
--sort-into` left readable images unsorted (listed), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import UserError
from .files import printable, shown
from .options import (
    ARCHITECTURES,
    DEFAULT_AUDIT_ARCH,
    DEFAULT_BAND,
    SUBMISSIONS_LISTED,
    Augmentation,
    AuditOptions,
    Bounds,
    DownloadOptions,
    EngineOptions,
    EvaluateOptions,
    ExportOptions,
    FoldTraining,
    LabelOptions,
    Labelling,
    PredictOptions,
    RayOptions,
    ReviewOptions,
    SubmissionOptions,
    SubmitOptions,
    TrainOptions,
    flag,
    number_pair,
)
from .quiet import QuietTensorFlowStart

EXIT_ERROR, EXIT_NOT_ALL_SORTED, EXIT_INTERRUPTED = 1, 3, 130


def number(kind: type, bounds: Bounds | None = None) -> Callable:
    """An argparse type: a `kind` that `bounds` admits, so that a bad value stops the command
    before any work, with argparse's one-line usage error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
        if bounds is not None and not bounds.admits(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {bounds}")
        return value

    return parse


def option(parser: argparse.ArgumentParser, options: type, name: str, help: str, *flags: str, **extra: Any) -> None:
    """Add the flag of option `name` of the dataclass `options` (its flag, or `flags`; a flag
    without a dash is a positional argument), with the default, type, range and choices the
    dataclass gives it. A yes/no option that is on by default is turned off by its flag (give
    it, e.g. --no-calibration)."""
    f = next(f for f in dataclasses.fields(options) if f.name == name)
    kind = typing.get_type_hints(options)[name]
    default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    prefix = extra.pop("prefix", "")
    positional = bool(flags) and not flags[0].startswith("-")
    kwargs: dict[str, Any] = {"help": help} if positional else {"dest": prefix + name, "help": help}
    if positional:
        flags, kwargs["metavar"] = (prefix + name,), flags[0]
    if kind is bool:  # a --no-X flag always turns X off
        kwargs["action"] = "store_false" if default or any(f.startswith("--no-") for f in flags) else "store_true"
    else:
        numeric = next((t for t in (int, float) if t == kind or t in typing.get_args(kind)), None)
        if number_pair(kind):
            kwargs.update(nargs=2, type=number(float, f.metadata.get("bounds")))
        elif numeric is not None:
            kwargs["type"] = number(numeric, f.metadata.get("bounds"))
        elif Path == kind or Path in typing.get_args(kind):
            kwargs["type"] = Path
        elif kind is not str and str not in typing.get_args(kind):
            raise TypeError(f"{options.__name__}.{name}: no flag for {kind}")
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    parser.add_argument(*(flags or (flag(prefix + name),)), **{**kwargs, **extra})


def options_from(options: type, args: argparse.Namespace, prefix: str = "", **given: Any) -> Any:
    """The dataclass `options` from parsed arguments: each field from the argument of its name
    (nested options dataclasses likewise; an engine's own with its prefix, e.g. ray_address),
    `given` as given, and the dataclass's default where the argument is absent or None."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(options):
        if f.name in given:
            values[f.name] = given[f.name]
        elif dataclasses.is_dataclass(f.default_factory):
            nested = f"{prefix}{f.name}_" if "engine" in f.metadata else prefix
            values[f.name] = options_from(f.default_factory, args, nested)
        elif getattr(args, prefix + f.name, None) is not None:
            value = getattr(args, prefix + f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return options(**values)


class Parser(argparse.ArgumentParser):
    """argparse, with what it prints escaped: a usage error quotes the user's words."""

    def _print_message(self, message: str, file=None) -> None:
        if message:
            lines = "\n".join(printable(line) for line in message.splitlines())
            super()._print_message(lines + ("\n" if message.endswith("\n") else ""), file)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" where there is a default worth showing and the help does not say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or isinstance(action.default, bool) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def command(sub: argparse._SubParsersAction, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    return sub.add_parser(name, formatter_class=DefaultsHelpFormatter, **kwargs)


# --- download ------------------------------------------------------------------------------


def parse_download(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "download",
        help="download and unpack the competition data",
        description="Download the competition archive with the kaggle client (or import one you "
        "already have, or the competition folder of a Kaggle notebook) and unpack train/ and test/ "
        "into DATA_DIR/<competition>/.",
    )  # fmt: skip
    option(p, DownloadOptions, "competition", "Kaggle competition")
    option(p, DownloadOptions, "data_dir", "where the data goes")
    option(
        p, DownloadOptions, "archive",
        "import this already-downloaded archive instead, or the competition folder (as Kaggle "
        "mounts it under /kaggle/input/<competition>/: train.zip and test.zip, or train/ and test/); "
        "it is only read. Without Kaggle credentials, /kaggle/input/<competition>/ (or below "
        "$CATSDOGS_KAGGLE_INPUT) is used where it exists",
        metavar="ZIP_OR_FOLDER",
    )  # fmt: skip
    option(p, DownloadOptions, "force", "download and unpack again")
    p.set_defaults(func=run_download)


def run_download(args: argparse.Namespace) -> None:
    from .kaggle.download import download

    download(options_from(DownloadOptions, args))


# --- train ---------------------------------------------------------------------------------


def _per_architecture(attribute: str) -> str:
    """The architectures' defaults of an attribute, grouped: "0 for efficientnet-lite0, ...; 50 for residual, seed"."""
    groups: dict[Any, list[str]] = {}
    for name, arch in ARCHITECTURES.items():
        groups.setdefault(getattr(arch, attribute), []).append(name)
    return "; ".join(f"{value} for {', '.join(names)}" for value, names in groups.items())


def parse_train(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "train",
        help="train a model on labelled images",
        description="Train a model on a folder of labelled images (Kaggle names cat.N.jpg/dog.N.jpg "
        "or class folders cat/ and dog/), calibrate its probabilities on the validation split, and "
        "save the best checkpoint, run.json and split.csv (and, for epochs trained, history.csv and "
        "curves.png) into the run folder. EfficientNet-Lite's head is a logistic regression fitted on "
        "its ImageNet features of each image and its mirror, in minutes on a CPU; --epochs N then "
        "fine-tunes the top of the backbone. "
        "Architectures: " + "; ".join(f"{name}: {a.about}" for name, a in ARCHITECTURES.items()) + ".",
    )  # fmt: skip
    t = TrainOptions
    option(p, t, "data", "folder of labelled images")
    option(p, t, "out", "run folder (default: models/<arch>-<size>px-<time>)")
    option(p, t, "arch", "the model to train")
    option(
        p, t, "weights",
        "pretrained --arch: ImageNet weights (EfficientNet-Lite: from its installed package; "
        "the others: downloaded once into ~/.keras/models/), none (random), or a weights file of "
        "that backbone (EfficientNet-Lite: its PyTorch checkpoint; the others: a Keras weights file)",
        metavar="imagenet|none|FILE",
    )  # fmt: skip
    option(p, t, "image_size", f"model input, pixels (default: the architecture's: {_per_architecture('image_size')})")
    option(p, t, "batch_size", "images per training step")
    option(
        p, t, "epochs",
        f"at most this many epochs (default: {_per_architecture('epochs')}; for a fitted head, "
        "EfficientNet-Lite's, the epochs that fine-tune it)",
    )  # fmt: skip
    option(p, t, "head_epochs", "pretrained --arch: epochs of the new head alone, before fine-tuning")
    option(
        p, t, "fine_tune_layers",
        "pretrained --arch: top backbone layers trained after the head (default: a fifth of "
        "them; BatchNormalization stays frozen)",
        metavar="N",
    )  # fmt: skip
    option(p, t, "fine_tune_rate", "pretrained --arch: fine-tuning learning rate, as a fraction of --learning-rate")
    option(p, t, "val_split", "fraction held out")
    option(p, t, "seed", "seed of the weights, shuffling and augmentation")
    option(p, t, "split_seed", "seed of the validation split: keep it to compare or ensemble runs")
    option(p, t, "learning_rate", f"Adam's initial rate (default: {_per_architecture('learning_rate')})")
    option(p, t, "l2", "L2 weight on conv and dense kernels")
    option(p, t, "dense_units", "seed: units of the hidden Dense layer")
    option(
        p, t, "calibrate", "keep the raw probabilities (no temperature fitted on the validation split)",
        "--no-calibration",
    )  # fmt: skip
    option(
        p, t, "fast_model",
        "do not end with the run's int8 OpenVINO export (export/openvino-int8, checked against model.keras), "
        "which the commands run by default: they then run model.keras with Keras",
        "--no-fast-model",
    )  # fmt: skip
    option(p, t, "dropout", "dropout rate before the output")
    option(p, t, "bn_momentum", "BatchNormalization momentum")
    option(p, t, "patience", "early-stopping patience")
    option(p, t, "lr_patience", "epochs before halving the rate")
    option(p, Augmentation, "rotation", "augmentation: degrees +-")
    option(p, Augmentation, "shift", "augmentation: fraction +-")
    option(p, Augmentation, "shear", "augmentation: degrees +-")
    option(p, Augmentation, "zoom", "augmentation: fraction +-")
    option(p, Augmentation, "flip", "augmentation: no horizontal flips", "--no-flip")
    option(
        p, t, "corrections",
        "a review's corrections.csv (path,label, paths relative to --data): its labels win over "
        "the names' and folders', images labelled skip are left out (recorded in run.json)",
        metavar="CSV",
    )  # fmt: skip
    option(p, t, "resume", "continue the interrupted run in --out")
    option(p, t, "tensorboard", "also write TensorBoard logs")
    option(p, t, "workers", "decoding threads")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> None:
    from .training.train import train

    train(options_from(TrainOptions, args))


# --- predict, submission ------------------------------------------------------------------


def _add_engine_options(parser: argparse.ArgumentParser, command_options: type) -> None:
    """The flags every command that predicts with the engine has (and its --overwrite)."""
    e = EngineOptions
    option(parser, e, "tta", "average with the mirrored image")
    option(parser, e, "batch_size", "images per batch of the model")
    option(parser, e, "workers", "decoding threads")
    option(parser, command_options, "overwrite", "replace existing output")
    option(parser, e, "shard_size", "files per resumable unit of work, on average")
    option(
        parser, e, "checksum",
        "on resume, keep a finished shard only if its photos' SHA-256 is unchanged too, not only their sizes and "
        "modification times (reads every photo once more)",
    )  # fmt: skip
    option(parser, e, "progress", "no progress bar", "--no-progress")
    option(
        parser, e, "runtime",
        "what runs the model (default: auto, from the model file: model.keras -> keras, "
        "model.onnx -> onnx, model.xml -> openvino; openvino also runs model.onnx)",
    )  # fmt: skip
    option(
        parser, e, "runtime_threads",
        "threads of the model, sharing the cores with the decoding --workers (default: every core)",
        metavar="N",
    )  # fmt: skip
    option(parser, e, "engine", "local: this process; ray: a Ray Data actor pool, one model per CPU")
    option(
        parser, RayOptions, "address",
        "with --engine ray: 'auto' or ray://HOST:PORT joins that cluster "
        "(default: $RAY_ADDRESS, else start Ray on this machine)",
        prefix="ray_", metavar="ADDRESS",
    )  # fmt: skip


MODELS_HELP = (
    "a run folder (models/<run>) or its model file; several make an ensemble (their calibrated "
    "p_dog averaged; each sees the image at its own size)"
)


def _models(models: list[Path] | None) -> Path | tuple[Path, ...] | None:
    return None if not models else models[0] if len(models) == 1 else tuple(models)


def parse_predict(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "predict",
        help="write the results table for a folder of images",
        description="Predict cat or dog for every image under FOLDER (recursively) and write "
        "one row per file: path, id, p_dog, label (cat, dog, neither or both), confidence, imagenet_dog, "
        "imagenet_cat, imagenet_top, width, height, status, error. "
        "An interrupted run continues where it stopped when rerun.",
    )  # fmt: skip
    option(p, PredictOptions, "model", MODELS_HELP, "model", nargs="+")
    option(p, PredictOptions, "folder", "folder of images", "folder")
    option(p, PredictOptions, "out", "results table, .csv or .parquet", required=True)
    _add_content_options(p)
    _add_engine_options(p, PredictOptions)
    p.set_defaults(func=run_predict)


def _add_content_options(p: argparse.ArgumentParser) -> None:
    """The content check's flags (predict, label, evaluate): neither and both (content.py)."""
    option(
        p, Labelling, "content_check",
        "label only cat or dog: no ImageNet classifier, no neither or both, empty imagenet_* columns",
        "--no-content-check",
    )  # fmt: skip
    option(
        p, Labelling, "neither_below",
        "neither where no region of the photo has this much of the ImageNet classifier's probability "
        "on cats and dogs (0: never neither)", metavar="P",
    )  # fmt: skip
    option(
        p, Labelling, "both_above",
        "both where one half of the photo is a dog and the other a cat, each with p_dog (or 1 - p_dog) "
        "of at least this (1: never both)", metavar="P",
    )  # fmt: skip


def run_predict(args: argparse.Namespace) -> None:
    from .inference.engine import predict_folder

    say(predict_folder(options_from(PredictOptions, args, model=_models(args.model))).describe())


def parse_submission(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "submission",
        help="predict the test images and write submission.csv",
        description="Predict every test image and write submission.csv (checked against the "
        "competition's sample submission) and results.csv into the output folder.",
    )  # fmt: skip
    option(
        p, SubmissionOptions, "model",
        "run folder (default: the newest finished run in models/); repeat it for an ensemble", action="append",
    )  # fmt: skip
    option(p, SubmissionOptions, "test_dir", "default: data/<competition>/test")
    option(p, SubmissionOptions, "competition", "Kaggle competition")
    option(p, SubmissionOptions, "clip", "redux: clip p_dog to [clip, 1-clip]")
    option(p, SubmissionOptions, "sample_submission", "default: found beside the test folder")
    option(p, SubmissionOptions, "out", "output folder (default: submissions/<run-name>)")
    _add_engine_options(p, SubmissionOptions)
    p.set_defaults(func=run_submission)


def run_submission(args: argparse.Namespace) -> None:
    from .inference.submission import make_submission

    path = make_submission(options_from(SubmissionOptions, args, model=_models(args.model)))
    say(f"submission written: {shown(path)}; upload it with: catsdogs submit {shown(path)} -m MESSAGE")


# --- export --------------------------------------------------------------------------------


def parse_export(sub: argparse._SubParsersAction) -> None:
    d = ExportOptions(model=Path())
    p = command(
        sub, "export",
        help="convert a model for fast CPU inference (ONNX Runtime, OpenVINO; fp32 or int8)",
        description="Convert a checkpoint for ONNX Runtime or OpenVINO, optionally quantized to int8 "
        "with a few hundred calibration images, into a folder with a copy of its run.json that every "
        "command accepts as --model. The export is checked against the Keras model on the run's "
        "validation images (or the labelled --calibration images when those are not here) and "
        f"refused if its accuracy drops by more than {d.max_accuracy_drop:.1%}, its log loss rises by more "
        f"than {d.max_log_loss_increase}, or under {d.min_agreement:.1%} of the images the Keras model is "
        f"sure of (p_dog below {DEFAULT_BAND[0]} or above {DEFAULT_BAND[1]}) keep its label; int8 keeps "
        "more layers in fp32, one step at a time, until it passes.",
    )  # fmt: skip
    option(p, ExportOptions, "model", "a run folder (models/<run>) or its model.keras", "model")
    option(p, ExportOptions, "format", "what will run it")
    option(p, ExportOptions, "int8", "quantize to int8 after training")
    option(
        p, ExportOptions, "calibration",
        "images to calibrate on (default: a seeded sample of the run's training images); "
        "labelled ones (cat.N.jpg, cat/ and dog/) also check the export where the run's "
        "validation images are not on this machine",
        metavar="DIR",
    )  # fmt: skip
    option(p, ExportOptions, "calibration_images", "how many calibration images", metavar="N")
    option(
        p, ExportOptions, "check_images",
        "check on at most N of the held-out images, a seeded sample (default: all)", metavar="N",
    )  # fmt: skip
    option(p, ExportOptions, "out", "output folder (default: <run>/export/<format>[-int8])")
    option(p, ExportOptions, "overwrite", "replace an earlier export in the --out folder")
    option(p, ExportOptions, "force", "keep an export that fails its check (see --help)")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> None:
    from .inference.export import export_model

    options = options_from(ExportOptions, args)
    out, agreement = export_model(options)
    failed = agreement.failures(options)
    if failed:
        say(f"kept {shown(out)} although it FAILED its check (--force): {'; '.join(failed)} ({agreement.describe()})")
    else:
        say(f"exported to {shown(out)}: {agreement.describe()}")


# --- submit --------------------------------------------------------------------------------


def parse_submit(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "submit",
        help="upload a submission file to Kaggle and read its score back",
        description="Upload a submission csv to the competition with the kaggle client, print "
        "Kaggle's answer, then wait (at most --wait seconds) until Kaggle has scored it and print "
        "the public score. A file Kaggle rejects is an error with Kaggle's message (exit 1); one "
        "still being scored when the wait ends exits 0 and says how to look later. With --status, "
        "list the latest submissions with their status and public score instead (no upload).",
    )  # fmt: skip
    option(p, SubmitOptions, "file", "the submission file, e.g. submissions/submission.csv", "file", nargs="?", default=None)
    option(p, SubmitOptions, "message", "a description of this submission (required with FILE)", "-m", "--message")
    option(p, SubmitOptions, "wait", "how long to wait for the score; 0 uploads only", metavar="SECONDS")
    option(
        p, SubmitOptions, "poll_interval",
        "seconds between the first looks at the score; the waits grow 1.5 times each, up to 6 times this",
        metavar="SECONDS",
    )  # fmt: skip
    p.add_argument(
        "--status", action="store_true",
        help=f"list the competition's latest {SUBMISSIONS_LISTED} submissions with status and public score; "
        "upload nothing",
    )  # fmt: skip
    option(p, SubmitOptions, "competition", "Kaggle competition")
    p.set_defaults(func=run_submit)


def run_submit(args: argparse.Namespace) -> None:
    from .kaggle.submit import status_report, submit_and_score

    if args.status:
        if args.file is not None or args.message is not None:
            raise UserError("--status uploads nothing: leave out FILE and -m")
        say(status_report(args.competition))
        return
    if args.file is None:
        raise UserError("give the submission FILE and -m MESSAGE, or --status to see the latest submissions")
    if args.message is None:
        raise UserError("give a description of the submission with -m MESSAGE")
    say(submit_and_score(options_from(SubmitOptions, args), report=say).describe())


# --- label, evaluate ----------------------------------------------------------------------


def parse_label(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "label",
        help="label a folder of photos as cat, dog, neither, both or uncertain, and sort them",
        description="Predict every image under FOLDER (recursively) and write the results table "
        "(the same columns as `predict`): neither where the ImageNet classifier finds no cat or dog in "
        "the photo, both where it holds a cat and a dog; with --uncertain, images with LOW <= p_dog <= HIGH "
        "are labelled uncertain. With --sort-into, each image is also placed at "
        "DIR/{cat,dog,neither,both,uncertain}/<its path relative to FOLDER>; no file is ever overwritten, "
        "unreadable files stay where they are, and an interrupted run finishes when rerun.",
    )  # fmt: skip
    option(p, LabelOptions, "model", MODELS_HELP, "model", nargs="+")
    option(p, LabelOptions, "folder", "folder of images", "folder")
    option(
        p, LabelOptions, "out",
        "results table, .csv or .parquet (default: submissions/labels-<folder name>.csv, "
        "relative to the current directory)",
        metavar="TABLE",
    )  # fmt: skip
    option(p, Labelling, "threshold", "dog when p_dog >= this, else cat")
    option(p, Labelling, "uncertain", "label images with LOW <= p_dog <= HIGH as uncertain", metavar=("LOW", "HIGH"))
    _add_content_options(p)
    option(p, LabelOptions, "sort_into", "place images into DIR/cat, DIR/dog, DIR/neither, DIR/both, DIR/uncertain", metavar="DIR")
    option(
        p, LabelOptions, "corrections",
        "a review's corrections.csv (path,label): its labels win over the model's (the table's "
        "`source` column says human); images labelled skip are not sorted",
        metavar="CSV",
    )  # fmt: skip
    option(
        p, LabelOptions, "mode",
        f"with --sort-into: copy, hard-link or move the files (default: {LabelOptions.mode}); a move "
        "removes each source only once its copy is in place",
        default=None,  # given or not: --mode needs --sort-into
    )  # fmt: skip
    _add_engine_options(p, LabelOptions)
    p.set_defaults(func=run_label)


def run_label(args: argparse.Namespace) -> int:
    from .labelling.label import label_folder

    if args.mode and not args.sort_into:
        raise UserError("--mode needs --sort-into DIR")
    summary = label_folder(options_from(LabelOptions, args, model=_models(args.model)))
    say(summary.describe())
    unsorted = len(summary.sorting.problems) if summary.sorting else 0
    if unsorted:
        say(f"{unsorted} readable images were not sorted (listed above)", file=sys.stderr)
        return EXIT_NOT_ALL_SORTED
    return 0


def parse_evaluate(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "evaluate",
        help="metrics, pictures and an HTML report for a labelled folder",
        description="Predict every image of a folder labelled like the training data (cat.N.jpg "
        "/ dog.N.jpg, or cat/ and dog/ folders) and write into the output folder: results.csv "
        "(with the true label beside the prediction), metrics.json (accuracy, log loss, ROC AUC, "
        "precision and recall per class, confusion matrix, errors), confusion_matrix.png, "
        "roc_curve.png, reliability.png, confidently_wrong.jpg and report.html.",
    )  # fmt: skip
    option(p, EvaluateOptions, "model", MODELS_HELP, "model", nargs="+")
    option(p, EvaluateOptions, "folder", "folder of labelled images", "labelled_folder")
    option(p, EvaluateOptions, "out", "output folder (default: submissions/evaluate-<run>-<folder name>)", metavar="DIR")
    option(p, EvaluateOptions, "worst", "images on the contact sheet of the most confidently wrong")
    _add_content_options(p)
    _add_engine_options(p, EvaluateOptions)
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> None:
    from .labelling.evaluate import evaluate_folder

    say(evaluate_folder(options_from(EvaluateOptions, args, model=_models(args.model))).describe())


# --- review --------------------------------------------------------------------------------


def parse_review(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "review",
        help="decide uncertain and disagreeing images on a local web page",
        description="Serve a local web page (127.0.0.1, behind a random token) that shows the "
        "images of a results table that need a person: the uncertain band, closest to the threshold "
        "first, then, for evaluate's tables, the most confident disagreements with the true label. Keys: "
        "c cat, d dog, x neither/unusable, space the model's label, u undo, arrows move. Every "
        "decision is saved at once to corrections.csv (path,label) beside the table.",
    )  # fmt: skip
    option(
        p, ReviewOptions, "table",
        "results table of predict, label, evaluate or audit (or evaluate's folder), or a training run "
        "folder: its validation images, predicted by its model", "table",
    )  # fmt: skip
    option(
        p, ReviewOptions, "images",
        "the folder the table's paths are relative to (default: the one recorded beside the table)",
        metavar="DIR",
    )  # fmt: skip
    option(p, ReviewOptions, "corrections", "default: corrections.csv beside the table", metavar="CSV")
    option(
        p, ReviewOptions, "uncertain",
        f"review images with LOW <= p_dog <= HIGH (default: the band the table was labelled "
        f"with, else {DEFAULT_BAND[0]} {DEFAULT_BAND[1]})",
        metavar=("LOW", "HIGH"),
    )  # fmt: skip
    option(p, ReviewOptions, "port", "on 127.0.0.1; 0 picks a free one")
    option(p, ReviewOptions, "page_size", "thumbnails per page")
    option(p, ReviewOptions, "open_browser", "only print the URL", "--no-browser")
    p.set_defaults(func=run_review)


def run_review(args: argparse.Namespace) -> None:
    from .labelling.review import review

    say(review(options_from(ReviewOptions, args)).describe())


# --- audit ---------------------------------------------------------------------------------


def parse_audit(sub: argparse._SubParsersAction) -> None:
    scratch = FoldTraining()
    p = command(
        sub, "audit",
        help="find likely label errors in a labelled folder, for review",
        description="Predict every image of a labelled folder (cat.N.jpg / dog.N.jpg, or cat/ and "
        "dog/ folders) with a classifier that did not see it (k-fold), find the likely label errors "
        "with cleanlab (confident learning) and write a results table ranked by how likely each given "
        "label is wrong (label_quality, lowest first; label_issue flags cleanlab's finds). With a "
        "pretrained --arch (the default) its ImageNet backbone embeds every image once and each fold "
        "gets a logistic regression on the others' embeddings; with --arch residual or seed each fold "
        "trains a small model from scratch on the others (offline, slower and much less accurate). "
        "`catsdogs review TABLE` shows the flagged ones.",
    )  # fmt: skip
    a = AuditOptions
    option(p, a, "data", "folder of labelled images", "data")
    option(p, a, "out", "the table, .csv or .parquet (default: submissions/audit-<folder name>.csv)", metavar="TABLE")
    option(p, a, "folds", "k of the k-fold predictions")
    option(
        p, a, "arch",
        "a pretrained backbone embeds the images (EfficientNet-Lite's ImageNet weights are installed "
        "with the package; the others' are downloaded once); residual or seed train a model per fold "
        "from scratch",
    )  # fmt: skip
    option(
        p, a, "weights",
        "pretrained --arch: ImageNet weights, or a weights file of that backbone (EfficientNet-Lite: "
        "its PyTorch checkpoint; the others: a Keras weights file)",
        metavar="imagenet|FILE",
    )  # fmt: skip
    option(
        p, a, "image_size",
        f"model input, pixels (default: the backbone's native size, {ARCHITECTURES[DEFAULT_AUDIT_ARCH].image_size} "
        f"for {DEFAULT_AUDIT_ARCH}; {scratch.image_size} from scratch)",
    )  # fmt: skip
    option(p, a, "epochs", f"--arch residual|seed only: training epochs of each fold's model (default: {scratch.epochs})")
    option(p, a, "batch_size", f"--arch residual|seed only: images per training step (default: {scratch.batch_size})")
    option(
        p, a, "learning_rate",
        "--arch residual|seed only: Adam's initial rate, decaying to 0 over the epochs (default: the architecture's)",
    )  # fmt: skip
    option(p, a, "seed", "seed of the folds (from scratch: also weights and augmentation)")
    option(p, a, "tta", "do not also embed (or predict) the mirrored image", "--no-tta")
    option(
        p, a, "corrections",
        "a review's corrections.csv (path,label): its labels are the given ones, images labelled skip are left out",
        metavar="CSV",
    )  # fmt: skip
    option(p, a, "workers", "decoding threads")
    option(p, a, "overwrite", "replace an existing table")
    option(
        p, Labelling, "content_check",
        "do not check the flagged images for a cat or a dog (those with neither are otherwise labelled "
        "neither and not counted as label issues)", "--no-content-check",
    )  # fmt: skip
    option(p, Labelling, "neither_below", "neither where no region of a flagged photo has this much of the "
           "ImageNet classifier's probability on cats and dogs (0: never)", metavar="P")  # fmt: skip
    p.set_defaults(func=run_audit)


def run_audit(args: argparse.Namespace) -> None:
    from .labelling.audit import audit

    say(audit(options_from(AuditOptions, args)).describe())


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
    print("\n".join(printable(line) for line in str(text).splitlines()), file=file or sys.stdout)


def say_error(command: str, message: object) -> None:
    """The one line of an error, escaped whole."""
    print(printable(f"catsdogs {command}: error: {message}"), file=sys.stderr)


class EscapedFormatter(logging.Formatter):
    """Log messages are one line each: escaped whole, names included."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def own_or_error(record: logging.LogRecord) -> bool:
    """Without --verbose, a command prints its own lines: this package's messages, and only the
    errors of the libraries it runs (not matplotlib's "generated new fontManager", nor
    TensorFlow's notices)."""
    return record.name.partition(".")[0] == __package__ or record.levelno >= logging.ERROR


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse has printed
        return int(e.code or 0)
    if not args.verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with contextlib.ExitStack() as quiet:
        if not args.verbose:
            if "tensorflow" not in sys.modules:
                start = QuietTensorFlowStart()
                sys.meta_path.insert(0, start)
                quiet.callback(lambda: start in sys.meta_path and sys.meta_path.remove(start))
            # Libraries' warnings (Keras' one per layer of a weights file it cannot match, Pillow's
            # about photos of 90 to 180 megapixels, decoded all the same) are theirs, not the
            # command's: its errors still end it with one line.
            quiet.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
        handler = logging.StreamHandler()
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

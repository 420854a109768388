"""The flags and calls of the jobs around a model: download, train, export, submit."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import UserError
from ..files import shown
from ..options import (
    ARCHITECTURES,
    DEFAULT_BAND,
    SUBMISSIONS_LISTED,
    Augmentation,
    DownloadOptions,
    ExportOptions,
    SubmitOptions,
    TrainOptions,
)
from .flags import command, option, options_from, say


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
    from ..kaggle.download import download

    download(options_from(DownloadOptions, args))


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
    from ..training.train import train

    train(options_from(TrainOptions, args))


def parse_export(sub: argparse._SubParsersAction) -> None:
    d = ExportOptions  # its defaults, as class attributes
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
    from ..inference.export import export_model

    options = options_from(ExportOptions, args)
    out, agreement = export_model(options)
    if failed := agreement.failures(options):
        say(f"kept {shown(out)} although it FAILED its check (--force): {'; '.join(failed)} ({agreement.describe()})")
    else:
        say(f"exported to {shown(out)}: {agreement.describe()}")


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
    from ..kaggle.submit import status_report, submit_and_score

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

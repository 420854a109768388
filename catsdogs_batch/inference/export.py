"""`catsdogs export`: a trained checkpoint -> a model for ONNX Runtime or OpenVINO (fp32, or
int8 calibrated on a few hundred images), beside a copy of its run.json, so that every command
takes the export wherever it takes the checkpoint.

Every export is checked against the Keras model on held-out labelled images before it is kept:
its accuracy and log loss may be only slightly worse, and it must give the Keras model's label to
the images that model is sure of (outside the review's uncertain band: near p_dog = 0.5 any
rounding flips labels). The figures go into the export's run.json; one that fails is refused
unless forced. An OpenVINO export of a default run (runtimes.shares_gate_backbone) carries the
ImageNet classifier as a second output, and its check compares the `neither` verdict too."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..models.checkpoint import EXPORT_DIR, MODEL_FILES, RUN_FILE, RUN_KIND, Checkpoint, find_checkpoint, training_folder
from ..errors import UserError
from ..files import atomic_write_json, put_in_place, sha256, shown, umask_mode
from ..metrics import accuracy, log_loss, predicted_labels
from ..models.networks import load_keras_model
from ..options import DEFAULT_BAND, NEITHER_BELOW, ExportOptions, check_options
from .quantize import OPENVINO_PLANS, quantize_openvino, uint8_function
from .runtimes import load_runtime, require, shares_gate_backbone, with_imagenet_outputs

log = logging.getLogger(__name__)

FORMATS = {"onnx": "model.onnx", "openvino": "model.xml"}
EXPORT_FILES = {RUN_FILE, "model.onnx", "model.xml", "model.bin"}  # all that an export folder holds
# What each int8 plan keeps in fp32, tried fastest first until the export passes its check
INT8_PLANS = {
    "openvino": OPENVINO_PLANS,
    "onnx": ("the first convolution and the output layer", "the first convolution and every dense layer"),
}
# What to try when an int8 export fails its check. ONNX Runtime's quantizer has no bias
# correction, NNCF's OpenVINO int8 has (the figures: docs/benchmarks.md).
ALTERNATIVE = {("onnx", True): "an OpenVINO int8 export, --format openvino --int8, corrects the biases that int8 shifts"}
BATCH = 64


@dataclass(frozen=True)
class Agreement:
    """How an export's probabilities compare with the Keras model's on the same images."""

    images: int
    label_agreement: float  # share of all images given the same label (p_dog >= 0.5)
    confident_images: int  # images the Keras model is sure of: p_dog outside `uncertain_band`
    confident_agreement: float  # share of those given the same label (1.0 when there are none)
    max_difference: float  # largest |p_export - p_keras|
    keras_accuracy: float
    export_accuracy: float
    keras_log_loss: float
    export_log_loss: float
    uncertain_band: tuple[float, float] = DEFAULT_BAND  # (LOW, HIGH), inclusive, as `catsdogs review`'s
    # An export with the ImageNet classifier: share of images whose `neither` verdict (content.py)
    # it gives as the Keras model does, and the largest difference of the cell share it is made from
    neither_agreement: float | None = None
    max_region_difference: float | None = None

    @property
    def accuracy_drop(self) -> float:
        return self.keras_accuracy - self.export_accuracy

    @property
    def log_loss_increase(self) -> float:
        return self.export_log_loss - self.keras_log_loss

    def failures(self, options: ExportOptions) -> list[str]:
        """The criteria of `options` this export fails, one phrase each (none: it passes)."""
        low, high = self.uncertain_band
        failed = []
        if self.accuracy_drop > options.max_accuracy_drop + ROUNDING:
            failed.append(
                f"accuracy dropped {self.accuracy_drop * 100:.2f} points ({self.keras_accuracy:.4f} -> "
                f"{self.export_accuracy:.4f}), more than the {options.max_accuracy_drop * 100:.2f} allowed"
            )
        if self.log_loss_increase > options.max_log_loss_increase + ROUNDING:
            failed.append(
                f"log loss rose by {self.log_loss_increase:.4f}, more than the {options.max_log_loss_increase} allowed"
            )
        if self.confident_agreement < options.min_agreement - ROUNDING:
            failed.append(
                f"labels agree on {self.confident_agreement:.2%} of the {self.confident_images} images the Keras "
                f"model is sure of (p_dog < {low} or > {high}), under the {options.min_agreement:.1%} needed"
            )
        if self.neither_agreement is not None and self.neither_agreement < options.min_agreement - ROUNDING:
            failed.append(
                f"the content check's neither agrees on {self.neither_agreement:.2%} of the images, under the "
                f"{options.min_agreement:.1%} needed"
            )
        return failed

    def passes(self, options: ExportOptions) -> bool:
        return not self.failures(options)

    def describe(self) -> str:
        low, high = self.uncertain_band
        return (
            f"label agreement {self.label_agreement:.2%} on {self.images} images ({self.confident_agreement:.2%} "
            f"on the {self.confident_images} the Keras model is sure of, p_dog < {low} or > {high}), largest "
            f"probability difference {self.max_difference:.4f}; accuracy {self.keras_accuracy:.4f} (keras) vs "
            f"{self.export_accuracy:.4f}, log loss {self.keras_log_loss:.4f} vs {self.export_log_loss:.4f} "
            f"({self.log_loss_increase:+.4f})"
        ) + (
            "" if self.neither_agreement is None else f"; neither agrees on {self.neither_agreement:.2%} "
            f"(largest cell-share difference {self.max_region_difference:.4f})"
        )


ROUNDING = 1e-9  # a figure exactly at its limit passes, whatever float rounding made of it


def compare(
    keras_p: np.ndarray, export_p: np.ndarray, labels: np.ndarray, band: tuple[float, float] = DEFAULT_BAND
) -> Agreement:
    """The agreement report of two sets of probabilities for the same labelled images (1 = dog);
    the Keras model is sure of the images whose p_dog lies outside `band`."""
    keras_p, export_p, labels = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (keras_p, export_p, labels))
    same = predicted_labels(keras_p) == predicted_labels(export_p)
    confident = (keras_p < band[0]) | (keras_p > band[1])
    return Agreement(
        images=len(labels),
        label_agreement=float(np.mean(same)),
        confident_images=int(confident.sum()),
        confident_agreement=float(np.mean(same[confident])) if confident.any() else 1.0,
        max_difference=float(np.max(np.abs(keras_p - export_p))),
        keras_accuracy=accuracy(labels, keras_p),
        export_accuracy=accuracy(labels, export_p),
        keras_log_loss=log_loss(labels, keras_p),
        export_log_loss=log_loss(labels, export_p),
        uncertain_band=(float(band[0]), float(band[1])),
    )


def with_content(agreement: Agreement, keras_imagenet: np.ndarray, export_imagenet: np.ndarray) -> Agreement:
    """`agreement` with the comparison of two sets of ImageNet classifier outputs (content.py)."""
    from ..models.content import Evidence

    keras_region, export_region = Evidence.from_outputs(keras_imagenet).region, Evidence.from_outputs(export_imagenet).region
    same = (keras_region < NEITHER_BELOW) == (export_region < NEITHER_BELOW)
    return replace(
        agreement, neither_agreement=float(np.mean(same)),
        max_region_difference=float(np.max(np.abs(keras_region - export_region))),
    )  # fmt: skip


def predict_all(runtime, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """p_dog of every image, and the ImageNet classifier's outputs where the runtime is `gated`."""
    batches = range(0, len(images), BATCH)
    if not runtime.gated:
        return np.concatenate([runtime(images[k : k + BATCH]) for k in batches]), None
    p_dog, imagenet = zip(*(runtime.with_imagenet(images[k : k + BATCH]) for k in batches))
    return np.concatenate(p_dog), np.concatenate(imagenet)


def held_out_images(
    checkpoint: Checkpoint, calibration: Path | None, workers: int, count: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, str]:
    """Held-out labelled images: the run's validation split if its files are here, else the
    labelled images of `calibration`; at most `count` of them (a seeded sample). Returns pixels,
    labels (1 = dog) and where they came from."""
    from ..data.dataset import SPLIT_FILE, decode_images, find_labelled_images, read_split

    data = training_folder(checkpoint)
    split = checkpoint.folder / SPLIT_FILE
    if split.exists() and data is not None and data.is_dir():
        items, source = read_split(split)[1], f"validation split of {checkpoint.folder / RUN_FILE}"
    elif calibration is not None:
        data, source = calibration, f"labelled images in {calibration}"
        items = find_labelled_images(calibration)
    else:
        raise UserError(
            f"the validation images of this run are {_where(data)}: pass --calibration with a folder "
            "of labelled images (cat.N.jpg/dog.N.jpg or cat/ and dog/) to check the export on"
        )
    if count is not None and count < len(items):
        items = [items[k] for k in sorted(np.random.default_rng(seed).permutation(len(items))[:count])]
        source = f"{count} of the {source}"
    images, labels, _ = decode_images(data, items, checkpoint.image_size, workers, "check")
    if len(images) == 0:
        raise UserError(f"no readable images to check the export on ({source})")
    return images, labels.reshape(-1), source


def _where(folder: Path | None) -> str:
    return f"not at {shown(folder)}" if folder is not None else "not recorded in its run.json"


def calibration_images(
    checkpoint: Checkpoint, calibration: Path | None, count: int, seed: int, workers: int
) -> tuple[np.ndarray, str]:
    """A seeded sample of `count` images: from `calibration`, else the run's training split."""
    from ..data.dataset import SPLIT_FILE, decode_sample, read_split
    from ..data.images import iter_image_files

    if calibration is not None:
        if not calibration.is_dir():
            raise UserError(f"{calibration} is not a folder")
        folder, source = calibration, str(calibration)
        paths = [p.relative_to(calibration).as_posix() for p in iter_image_files(calibration)]
    else:
        folder = training_folder(checkpoint)
        split = checkpoint.folder / SPLIT_FILE
        if not (split.exists() and folder is not None and folder.is_dir()):
            raise UserError(
                f"the training images of this run are {_where(folder)}: pass --calibration with a "
                "folder of a few hundred images like the ones you will predict"
            )
        paths, source = [i.path for i in read_split(split)[0]], f"training split of {checkpoint.folder / RUN_FILE}"
    if not paths:
        raise UserError(f"no images to calibrate on in {folder}")
    return decode_sample(folder, paths, count, seed, checkpoint.image_size, workers), source


def convert(model, format: str, path: Path, image_size: int, calibration: np.ndarray | None, plan: int = 0) -> dict:
    """Write `model` (Keras) to `path` in `format`, taking uint8 pixels like the Keras one; int8
    when calibration images are given, but for what INT8_PLANS[format][plan] keeps in fp32.
    Returns what did the conversion, for the metadata."""
    return (_to_onnx if format == "onnx" else _to_openvino)(model, path, image_size, calibration, plan)


def _to_onnx(model, path: Path, image_size: int, calibration: np.ndarray | None, plan: int) -> dict:
    ort = require("onnxruntime", "an onnx export")
    tf2onnx = require("tf2onnx", "an onnx export")
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    fp32_path = path if calibration is None else path.with_name("fp32.onnx")
    _tf_to_onnx(model, image_size, fp32_path)
    done = {"converter": f"tf2onnx {tf2onnx.__version__} (frozen graph)"}
    if calibration is None:
        return done
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter({"image": calibration[k : k + 1]} for k in range(len(calibration)))

        def get_next(self):
            return next(self.batches, None)

    prepared = path.with_name("prepared.onnx")
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)  # shapes are static
    layers = [n for n in onnx.load(str(prepared)).graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    dense = [n.name for n in layers if n.op_type != "Conv"]
    # The first convolution (full-range pixels, where ONNX Runtime's u8s8 kernels saturate) and
    # the last layer stay fp32; the rest is int8, ReLU6 (Clip) included: left in float, each one
    # of EfficientNet-Lite's gets a dequantize-quantize pair around it (docs/benchmarks.md).
    quantize_static(
        str(prepared), str(path), Reader(),
        quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv", "Gemm", "MatMul", "Relu", "Clip", "MaxPool", "Reshape", "Transpose"],
        nodes_to_exclude=[layers[0].name, *(dense if plan else dense[-1:])],
    )  # fmt: skip
    fp32_path.unlink()
    prepared.unlink()
    return done | {
        "quantizer": f"onnxruntime.quantization {ort.__version__} (static, QDQ, per-channel; "
        f"{INT8_PLANS['onnx'][plan]} fp32)"
    }


def _tf_to_onnx(model, image_size: int, path: Path) -> None:
    """Write `model` as fp32 ONNX with one input, `image`, and one output, `p_dog`. The graph is
    frozen first: tf2onnx's from_function (which keras.Model.export calls) would make every
    constant tensor the function captures a graph input, as the mean and variance of
    EfficientNetV2's Normalization layer, which the model then needs fed."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tf2onnx.convert import from_graph_def

    # the arguments are those tf2onnx freezes with
    frozen = convert_variables_to_constants_v2(
        uint8_function(model, image_size).get_concrete_function(), lower_control_flow=False, aggressive_inlining=True
    )
    (image,), (p_dog,) = frozen.inputs, frozen.outputs
    with warnings.catch_warnings(), tf.device("/cpu:0"):
        # Keras' fixes of tf2onnx 1.16 for numpy 2, as keras.Model.export applies them (they warn)
        warnings.simplefilter("ignore", FutureWarning)
        try:
            from keras.src.export.tf2onnx_lib import patch_tf2onnx
        except ImportError:  # a Keras without it: a tf2onnx that needs none
            pass
        else:
            patch_tf2onnx()
        from_graph_def(
            frozen.graph.as_graph_def(), name=model.name, input_names=[image.name], output_names=[p_dog.name],
            tensors_to_rename={image.name: "image", p_dog.name: "p_dog"}, output_path=str(path),
        )  # fmt: skip


def _to_openvino(model, path: Path, image_size: int, calibration: np.ndarray | None, plan: int) -> dict:
    ov = require("openvino", "an openvino export")
    ov_model = ov.convert_model(uint8_function(model, image_size))
    done = {"converter": f"openvino.convert_model {ov.__version__}"}
    if calibration is not None:
        ov_model, done["quantizer"], done["needs_vnni"] = quantize_openvino(ov_model, calibration, plan)
    ov.save_model(ov_model, str(path), compress_to_fp16=False)
    return done


def default_out(checkpoint: Checkpoint, format: str, int8: bool) -> Path:
    return checkpoint.folder / EXPORT_DIR / (format + ("-int8" if int8 else ""))


def check_out(out: Path, checkpoint: Checkpoint, overwrite: bool) -> None:
    """Refuse an --out this export may not take: the source run or a folder holding it, a
    link, or anything but an empty folder or (with --overwrite) an earlier export."""
    source = checkpoint.folder.resolve()
    if out.resolve() == source or out.resolve() in source.parents:
        raise UserError(f"--out {out} holds the checkpoint being exported: choose another folder")
    if not (out.exists() or out.is_symlink()):
        return
    if out.is_symlink():
        raise UserError(f"--out {out} is a symbolic link: refused (an export is never written through one); choose another --out")
    if not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder: choose another --out")
    names = {p.name for p in out.iterdir()}
    if not names:
        return
    if not _is_export(out, names):
        listed = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        raise UserError(f"--out {out} is not an export of this tool (it holds {listed}): choose another folder")
    if not overwrite:
        raise UserError(f"{out} holds an earlier export: pass --overwrite to replace it")


def _is_export(folder: Path, names: set[str]) -> bool:
    """Only the files an export writes, and a run.json that says it is one."""
    if not names <= EXPORT_FILES or not any(name in names for name in MODEL_FILES):
        return False
    try:
        run = json.loads((folder / RUN_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(run, dict) and run.get("kind") == RUN_KIND and isinstance(run.get("export"), dict)


def _remove_export(old: Path) -> None:
    """Remove an earlier export (checked by `check_out`), which put_in_place moved aside and hands
    over only once the new one is there: the files an export holds, then its folder."""
    for name in EXPORT_FILES:
        (old / name).unlink(missing_ok=True)
    old.rmdir()


def export_model(options: ExportOptions) -> tuple[Path, Agreement]:
    """Convert, check and keep (atomically) the export; returns its folder and its check."""
    check_options(options)
    checkpoint = find_checkpoint(options.model, "keras")
    if checkpoint.is_export:
        raise UserError(f"{checkpoint.model_path} is already an export: export the checkpoint it came from")
    needed = {"onnx": ["onnxruntime", "tf2onnx"], "openvino": ["openvino"] + (["nncf"] if options.int8 else [])}
    for module in needed[options.format]:  # fail on a missing extra before minutes of decoding
        require(module, f"an {options.format} export")
    out = options.out or default_out(checkpoint, options.format, options.int8)
    check_out(out, checkpoint, options.overwrite)
    workers = os.cpu_count() or 1

    images, labels, check_source = held_out_images(
        checkpoint, options.calibration, workers, options.check_images, options.seed
    )
    calibration, calibration_source = (
        calibration_images(checkpoint, options.calibration, options.calibration_images, options.seed, workers)
        if options.int8 else (None, None)
    )  # fmt: skip
    gated = options.format == "openvino" and shares_gate_backbone(checkpoint)  # carries the content check
    model = load_keras_model(checkpoint)
    if gated:
        model = with_imagenet_outputs(model)
    keras_p, keras_imagenet = predict_all(load_runtime(checkpoint, "keras", imagenet=gated), images)

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    os.chmod(work, umask_mode(0o777))
    try:
        attempts = []
        for plan, kept in enumerate(INT8_PLANS[options.format] if options.int8 else ["everything"]):
            log.info("converting %s to %s (%s in fp32)", checkpoint.model_path, options.format, kept)
            started = time.perf_counter()
            tools = convert(model, options.format, work / FORMATS[options.format], checkpoint.image_size, calibration, plan)
            export = {
                "format": options.format,
                "int8": options.int8,
                "content_check": gated,  # a second output: the ImageNet classifier's (content.gate_outputs)
                "fp32": kept,
                "source": str(checkpoint.model_path.resolve()),
                "source_sha256": sha256(checkpoint.model_path),
                **tools,
                "calibration": {"images": len(calibration), "source": calibration_source, "seed": options.seed}
                if calibration is not None else None,
                "seconds": round(time.perf_counter() - started, 1),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }  # fmt: skip
            run = dict(checkpoint.run, model_file=FORMATS[options.format], export=export)
            atomic_write_json(work / RUN_FILE, run)

            export_p, export_imagenet = predict_all(load_runtime(find_checkpoint(work), options.format, imagenet=gated), images)
            agreement = compare(keras_p, export_p, labels)
            if gated:
                agreement = with_content(agreement, keras_imagenet, export_imagenet)
            failed = agreement.failures(options)
            attempts.append({"fp32": kept, "label_agreement": agreement.label_agreement,
                             "confident_agreement": agreement.confident_agreement,
                             "accuracy_drop": agreement.accuracy_drop,
                             "log_loss_increase": agreement.log_loss_increase, "failed": failed,
                             "passed": not failed})  # fmt: skip
            if not failed:
                break
            log.info("%s in fp32: %s (%s); trying the next plan", kept, "; ".join(failed), agreement.describe())
        passed = not failed
        export["check"] = asdict(agreement) | {
            "accuracy_drop": agreement.accuracy_drop,
            "log_loss_increase": agreement.log_loss_increase,
            "images_from": check_source,
            "min_agreement": options.min_agreement,  # of confident_agreement
            "max_accuracy_drop": options.max_accuracy_drop,
            "max_log_loss_increase": options.max_log_loss_increase,
            "failed": failed,  # the criteria it fails, in words
            "passed": passed,
            "forced": not passed and options.force,
            "attempts": attempts,  # the plans tried, fastest first, and why the kept one was chosen
        }
        atomic_write_json(work / RUN_FILE, run)
        if not passed and not options.force:
            raise UserError(
                f"export refused: {'; '.join(failed)} ({agreement.describe()}); "
                f"{ALTERNATIVE.get((options.format, options.int8), 'more calibration images may help')}; "
                "--force keeps it anyway"
            )
        if not passed:
            log.warning("kept despite failing the check (--force): %s", "; ".join(failed))
        check_out(out, checkpoint, options.overwrite)  # again: minutes have passed
        put_in_place(work, out, _remove_export)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("%s -> %s", agreement.describe(), out)
    return out, agreement

"""Runtimes: load a model once, then probabilities of "dog" for batches of decoded images.

Every engine and command uses a runtime through this one small interface, so that nothing else
depends on which library runs the model: Keras (TensorFlow: training, GPUs) for `model.keras`,
ONNX Runtime for `model.onnx`, OpenVINO for `model.xml` (and `.onnx`), from `catsdogs export` or
the one `catsdogs train` writes into every run (checkpoint.find_checkpoint picks it by default)."""

from __future__ import annotations

import importlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Protocol

import numpy as np

from ..models.checkpoint import EXPORT_DIR, Checkpoint
from ..cpu import has_vnni
from ..errors import UserError
from ..options import RUNTIMES

log = logging.getLogger(__name__)

# The runtime that reads each model file, and every runtime that can.
FILE_RUNTIMES = {".keras": ("keras",), ".onnx": ("onnx", "openvino"), ".xml": ("openvino",)}
EXTRAS = {"onnxruntime": "onnx", "tf2onnx": "onnx"}  # OpenVINO and NNCF are in the default install


class Runtime(Protocol):
    name: str  # as the summary line says it (runtime_name)
    gated: bool  # also gives the ImageNet classifier's outputs (with_imagenet)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (n, size, size, 3) RGB -> float (n,) probabilities of dog."""


def require(module: str, purpose: str = "this"):
    """Import an optional backend, or fail with the one line that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        name = module.split(".")[0]
        how = f"pip install '.[{EXTRAS[name]}]'" if name in EXTRAS else "a requirement of catsdogs-batch: pip install -e ."
        raise UserError(f"{purpose} needs {name}, which is not installed ({how})") from None


def default_threads() -> int:
    """Threads of the model by default: every core; the decoders share them (measured in
    scripts/benchmark_runtimes.py: the split that gave the most images per second end to end)."""
    return os.cpu_count() or 1


def shares_gate_backbone(checkpoint: Checkpoint) -> bool:
    """Whether the checkpoint's backbone is the content check's (content.py): EfficientNet-Lite2
    at its native size with the ImageNet weights untouched (a fitted head that no fine-tuning
    epoch replaced), so that the ImageNet classifier can run on the model's own features."""
    from ..models.content import GATE_BACKBONE, GATE_IMAGE_SIZE

    config = checkpoint.run.get("config") if isinstance(checkpoint.run.get("config"), dict) else {}
    best = checkpoint.run.get("best") if isinstance(checkpoint.run.get("best"), dict) else {}
    return (
        not checkpoint.is_export and config.get("arch") == GATE_BACKBONE and config.get("weights") == "imagenet"
        and checkpoint.image_size == GATE_IMAGE_SIZE and "epoch" not in best
    )  # fmt: skip


def set_tensorflow_threads(threads: int | None) -> None:
    import tensorflow as tf

    if threads:
        try:  # possible only before TensorFlow has run anything in this process
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError:
            log.debug("TensorFlow is initialized: keeping its thread settings")


def compiled(model):
    """A Keras model as a TensorFlow function of uint8 pixels, in inference mode, traced once for
    any number of images (the last batch of a folder, the content check's halves)."""
    import tensorflow as tf

    signature = [tf.TensorSpec((None, *model.input_shape[1:]), tf.uint8)]
    function = tf.function(lambda x: model(tf.cast(x, tf.float32), training=False), input_signature=signature)
    return lambda pixels: function(np.asarray(pixels, dtype=np.uint8))


class KerasRuntime:
    """The trained Keras model, run by TensorFlow (CPU or GPU). With `imagenet` (a model that
    `shares_gate_backbone`), `with_imagenet` also gives the ImageNet classifier's outputs, same pass."""

    name = "keras"

    def __init__(self, checkpoint: Checkpoint, threads: int | None = None, imagenet: bool = False):
        from ..models.networks import load_keras_model

        set_tensorflow_threads(threads)
        model = load_keras_model(checkpoint)
        self.gated = imagenet
        self._predict = compiled(model)
        if imagenet:
            self._with_imagenet = compiled(with_imagenet_outputs(model))

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return np.asarray(self._predict(pixels)).reshape(-1)

    def with_imagenet(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """p_dog (n,) and the ImageNet classifier's (n, 1001) outputs, from one pass."""
        p, imagenet = self._with_imagenet(pixels)
        return np.asarray(p).reshape(-1), np.asarray(imagenet)


def with_imagenet_outputs(model):
    """`model` (a chain, as pretrained_model builds it) with a second output: the ImageNet
    classifier on its backbone's feature map, and the model's head on its sides. The layers,
    and so the weights, are shared."""
    import keras

    from ..models.content import GATE_BACKBONE, gate_outputs
    from ..models.networks import OUTPUT_LAYER, backbone_of
    from ..models.torch_weights import packaged_state_dict

    backbone = backbone_of(model)
    head = model.get_layer(OUTPUT_LAYER).get_weights()
    x = inputs = keras.Input(model.input_shape[1:], name="image")
    for layer in model.layers[1:]:
        x = layer(x)
        if layer is backbone:
            feature_map = x
    return keras.Model(inputs, [x, gate_outputs(feature_map, packaged_state_dict(GATE_BACKBONE)[0], head)])


class GateRuntime:
    """The content check's own model (content.gate_model) for models that do not share its
    backbone: uint8 pixels at content.GATE_IMAGE_SIZE in, (n, 1001) out."""

    def __init__(self, threads: int | None = None):
        from ..models.content import gate_model

        set_tensorflow_threads(threads)
        self._predict = compiled(gate_model())

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return np.asarray(self._predict(pixels))


class OnnxRuntime:
    """An exported `model.onnx` (fp32 or int8, uint8 pixels in) run by ONNX Runtime on the CPU."""

    gated = False

    def __init__(self, checkpoint: Checkpoint, threads: int | None = None):
        ort = require("onnxruntime", "the onnx runtime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        # Idle model threads must not spin: the decoding threads need those cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(checkpoint.model_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # ONNX Runtime raises its own exception types
            raise UserError(f"cannot load {checkpoint.model_path}: {str(e).splitlines()[0]}") from None
        self._input = self._session.get_inputs()[0].name
        _check_input(checkpoint, self._session.get_inputs()[0].shape)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: np.ascontiguousarray(pixels, dtype=np.uint8)})[0].reshape(-1)


class OpenVinoRuntime:
    """An exported `model.xml` (or `model.onnx`) compiled by OpenVINO for the CPU, fp32 in fp32
    (not bf16), int8 as int8. An export with the ImageNet classifier's second output
    (`shares_gate_backbone`) gives it with `imagenet` (`gated`); else only p_dog is computed."""

    def __init__(self, checkpoint: Checkpoint, threads: int | None = None, imagenet: bool = False):
        ov = require("openvino", "the openvino runtime")
        core, config = ov.Core(), openvino_config(threads)
        try:
            model = core.read_model(str(checkpoint.model_path))
            self.gated = imagenet and len(model.outputs) == 2
            p_dog = ov.Model([model.outputs[0]], model.get_parameters(), "p_dog") if len(model.outputs) > 1 else model
            self._request = core.compile_model(p_dog, "CPU", config).create_infer_request()
            if self.gated:
                self._both = core.compile_model(model, "CPU", config).create_infer_request()
        except Exception as e:  # OpenVINO raises RuntimeError with long messages
            raise UserError(f"cannot load {checkpoint.model_path}: {str(e).splitlines()[0]}") from None
        if checkpoint.run.get("export", {}).get("needs_vnni") and not has_vnni():
            log.warning(
                "%s was quantized for CPUs with VNNI and may lose accuracy on this one: "
                "export it again here (catsdogs export --format openvino --int8)", checkpoint.model_path,
            )
        shape = model.inputs[0].get_partial_shape()
        _check_input(checkpoint, [d.get_length() if d.is_static else None for d in shape])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        result = self._request.infer({0: np.ascontiguousarray(pixels, dtype=np.uint8)})
        return np.asarray(result[0]).reshape(-1).copy()

    def with_imagenet(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """p_dog (n,) and the ImageNet classifier's (n, 1003) outputs, from one pass."""
        result = self._both.infer({0: np.ascontiguousarray(pixels, dtype=np.uint8)})
        return np.asarray(result[0]).reshape(-1).copy(), np.asarray(result[1]).copy()


def openvino_config(threads: int | None = None) -> dict:
    """How OpenVINO compiles a model here: fp32 stays fp32 (not bf16), int8 stays int8; one batch
    at a time with all its threads on it."""
    return {
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": threads or default_threads(),
        "PERFORMANCE_HINT": "LATENCY",
    }


def _check_input(checkpoint: Checkpoint, shape: list) -> None:
    size = checkpoint.image_size
    if list(shape)[1:] != [size, size, 3]:
        raise UserError(
            f"{checkpoint.model_path} takes {list(shape)}, not ({size}, {size}, 3) images as its run.json says"
        )


def choose_runtime(checkpoint: Checkpoint, runtime: str = "auto") -> str:
    """The runtime's name: from the model file, or `runtime` if it can read that file."""
    readers = FILE_RUNTIMES.get(checkpoint.model_path.suffix)
    if readers is None:
        raise UserError(f"{checkpoint.model_path}: no runtime reads {checkpoint.model_path.suffix} files")
    if runtime == "auto":
        return readers[0]
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime {runtime!r}: choose one of auto, {', '.join(RUNTIMES)}")
    if runtime not in readers:
        run_folder = checkpoint.folder  # of an export (run/export/<format>/), the run it was made from
        if checkpoint.is_export:
            export = checkpoint.run.get("export")
            source = export.get("source") if isinstance(export, dict) else None
            run_folder = Path(source).parent if isinstance(source, str) else checkpoint.folder.parent.parent
        exported = run_folder / EXPORT_DIR / runtime
        if runtime == "keras":
            hint = "pass the checkpoint it was exported from"
        elif (exported / "run.json").exists():
            hint = f"pass its export: {exported}"
        else:
            hint = f"export it first: catsdogs export {run_folder} --format {runtime}"
        raise UserError(f"the {runtime} runtime cannot run {checkpoint.model_path.name}; {hint}")
    return runtime


def check_model(checkpoint: Checkpoint, runtime: str = "auto") -> None:
    """Refuse, with one line, a model its runtime cannot run, without loading TensorFlow (for a
    driver whose workers load the model): an export is loaded (that is cheap); of a Keras file,
    the archive and the input shape its config.json gives are read."""
    name = choose_runtime(checkpoint, runtime)
    if name != "keras":
        load_runtime(checkpoint, name, threads=1)
        return
    try:
        with zipfile.ZipFile(checkpoint.model_path) as archive:
            config = json.loads(archive.read("config.json"))
        shape = next(
            layer["config"]["batch_shape"] for layer in config["config"]["layers"] if layer["class_name"] == "InputLayer"
        )
    except (OSError, KeyError, TypeError, StopIteration, ValueError, zipfile.BadZipFile):
        raise UserError(f"cannot load {checkpoint.model_path}: not a Keras model file") from None
    _check_input(checkpoint, shape)


def load_runtime(checkpoint: Checkpoint, runtime: str = "auto", threads: int | None = None, imagenet: bool = False) -> Runtime:
    """Load the checkpoint's model into the runtime chosen for it (see `choose_runtime`); with
    `imagenet`, a Keras model that `shares_gate_backbone`, or an OpenVINO export of one, also
    gives the ImageNet classifier's outputs (its runtime is then `gated`)."""
    name = choose_runtime(checkpoint, runtime)
    log.debug("running %s with the %s runtime", checkpoint.model_path, name)
    if name == "keras":
        return KerasRuntime(checkpoint, threads, imagenet and shares_gate_backbone(checkpoint))
    loaded = OpenVinoRuntime(checkpoint, threads, imagenet) if name == "openvino" else OnnxRuntime(checkpoint, threads)
    loaded.name = runtime_name(checkpoint, name)
    return loaded


def runtime_name(checkpoint: Checkpoint, runtime: str = "auto") -> str:
    """What runs the checkpoint's model, as job records and summaries say it: keras, openvino,
    openvino int8, onnx or onnx int8."""
    name = choose_runtime(checkpoint, runtime)
    export = checkpoint.run.get("export")
    return name + (" int8" if checkpoint.is_export and isinstance(export, dict) and export.get("int8") else "")

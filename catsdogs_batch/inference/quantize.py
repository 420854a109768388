"""Keras models as OpenVINO models of uint8 pixels, quantized to int8 by NNCF: what `catsdogs
export --format openvino --int8` writes, and what `catsdogs train` and `catsdogs audit` embed
their images with (a frozen backbone is most of their time; int8 runs it several times faster
than Keras on a CPU, and the head fitted on its features scores as well: docs/benchmarks.md)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..quiet import held_back
from ..cpu import has_vnni
from .runtimes import openvino_config, require

log = logging.getLogger(__name__)

# What each OpenVINO int8 plan keeps in fp32, tried in order until an export passes its check:
# the fastest first. On CPUs without VNNI, the first plans quantize the first convolution to 7
# bits (NNCF's overflow fix); on a default-trained 128 px model that flipped 0.9% of the sample's
# validation labels (0.3% with 8 bits), while a first convolution in fp32 kept agreement at 99.7%
# at about half the model-only speed. The first plan corrects the biases int8 shifts the fast way
# (NNCF's fast_bias_correction: half the time to quantize), the others fully (it halved the label
# flips of the residual model's int8). The one-unit layers are p_dog and the content check's
# cat-or-dog share and side logits: int8 in p_dog's layer moved it by up to 0.2.
OPENVINO_PLANS = (
    "the one-unit layers (fast bias correction)",
    "the one-unit layers",
    "the first convolution and the one-unit layers",
)
EMBEDDING_CALIBRATION = 128  # images `train` and `audit` quantize their backbone on (a seeded sample)
CALIBRATION_SEED = 0  # of that sample: train's export draws the same images (ExportOptions.seed)
EMBEDDING_AGREEMENT = 0.98  # median cosine of int8 and Keras features on that sample, at least


def uint8_function(model, image_size: int):
    """The Keras model as a TensorFlow function of uint8 (n, size, size, 3) pixels named `image`."""
    import tensorflow as tf

    return tf.function(
        lambda image: model(tf.cast(image, tf.float32), training=False),
        input_signature=[tf.TensorSpec((None, image_size, image_size, 3), tf.uint8, name="image")],
    )


def quantize_openvino(ov_model, calibration: np.ndarray, plan: int = 0):
    """`ov_model` quantized to int8 by NNCF on `calibration` images (uint8 pixels), keeping in
    fp32 what OPENVINO_PLANS[plan] names; also what did it (for the metadata) and whether the
    result needs a CPU with VNNI."""
    nncf = require("nncf", "an int8 openvino model")
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    dataset = nncf.Dataset([calibration[k : k + 1] for k in range(len(calibration))])
    ops = ov_model.get_ordered_ops()
    one_unit = [
        op.get_friendly_name() for op in ops
        if op.get_type_name() == "MatMul" and op.get_output_partial_shape(0)[-1].get_length() == 1
    ]  # fmt: skip
    first = [op.get_friendly_name() for op in ops if op.get_type_name() == "Convolution"][:1]
    # The overflow fix costs label agreement: where this CPU has VNNI it is left out and the
    # model says so; the last plan keeps the first layer in fp32, which needs no fix on any CPU.
    last_plan = len(OPENVINO_PLANS) - 1
    needs_vnni = has_vnni() and plan < last_plan
    with held_back("nncf"):  # its log and progress bars, on stdout
        quantized = nncf.quantize(
            ov_model, dataset, subset_size=len(calibration),
            ignored_scope=nncf.IgnoredScope(names=one_unit + (first if plan == last_plan else []), validate=False),
            fast_bias_correction=plan == 0,
            advanced_parameters=AdvancedQuantizationParameters(
                overflow_fix=OverflowFix.FIRST_LAYER if plan < last_plan and not needs_vnni else OverflowFix.DISABLE
            ),
        )  # fmt: skip
    bias = "fast" if plan == 0 else "full"
    quantizer = f"nncf {nncf.__version__} (post-training, {bias} bias correction; {OPENVINO_PLANS[plan]} fp32)"
    return quantized, quantizer, needs_vnni


def embedder(features, image_size: int, folder: Path, paths: list[str], workers: int) -> tuple[Callable, str]:
    """What embeds images with a Keras feature extractor (pixels -> (n, features)), and its name:
    the extractor converted to OpenVINO and quantized by the first plan on a seeded sample of
    the images `paths` (relative to `folder`; the sample a run's export is calibrated on), or
    Keras itself where TensorFlow has a GPU. A function of uint8 pixels -> float32 features."""
    import tensorflow as tf

    from ..data.dataset import decode_sample
    from .runtimes import compiled

    keras_embed = compiled(features)
    if tf.config.list_physical_devices("GPU"):
        return keras_embed, "keras"
    ov = require("openvino", "embedding with openvino")
    calibration = decode_sample(folder, paths, EMBEDDING_CALIBRATION, CALIBRATION_SEED, image_size, workers)
    quantized, _, _ = quantize_openvino(ov.convert_model(uint8_function(features, image_size)), calibration)
    request = ov.Core().compile_model(quantized, "CPU", openvino_config()).create_infer_request()
    embed = lambda pixels: np.asarray(request.infer({0: np.ascontiguousarray(pixels, dtype=np.uint8)})[0]).copy()  # noqa: E731
    # The int8 features must point where Keras's do (Lite2's figure: docs/benchmarks.md); a
    # backbone int8 does not suit is embedded by Keras instead.
    agreement = float(np.median(_cosines(embed(calibration), np.asarray(keras_embed(calibration)))))
    if agreement < EMBEDDING_AGREEMENT:
        log.warning(
            "the int8 backbone's features depart from Keras's (median cosine %.3f, under %.2f): embedding with Keras",
            agreement, EMBEDDING_AGREEMENT,
        )  # fmt: skip
        return keras_embed, "keras"
    return embed, "openvino int8"


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(1) / np.maximum(norms, 1e-30), 0.0)

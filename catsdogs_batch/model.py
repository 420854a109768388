"""The regularized CNN, its augmentation layer, and the checkpoint format every stage reads.

A checkpoint is a folder `models/<run-name>/` holding `model.keras` and `run.json`; `run.json`
says what the model expects (image size, preprocessing, class mapping) so that prediction never
has to guess.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
from keras import layers, ops

from .errors import UserError
from .options import Augmentation

MODEL_FILE = "model.keras"
# What a folder may hold: a trained checkpoint, or an export of one (`catsdogs export`).
MODEL_FILES = (MODEL_FILE, "model.onnx", "model.xml")
RUN_FILE = "run.json"
RUN_KIND = "catsdogs-batch model"
PREPROCESSING = (
    "catsdogs_batch.images.load_image: upright RGB, JPEG DCT scaling or box reduction to within "
    "2x of the target, then bilinear resize to image_size x image_size "
    "(aspect ratio not kept); uint8 0-255 pixels in, rescaled to 0-1 inside the model"
)


def make_model(
    image_size: int = 128,
    dense_units: int = 128,
    dropout: float = 0.5,
    l2: float = 1e-4,
    bn_momentum: float = 0.9,
) -> keras.Model:
    """Conv2D 32/64/128, each with BatchNormalization and MaxPooling2D, L2 on the kernels,
    Flatten, Dense, Dropout and one sigmoid unit. Takes RGB pixels in 0-255."""
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=regularizer)(x)
        x = layers.BatchNormalization(momentum=bn_momentum)(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense_units, activation="relu", kernel_regularizer=regularizer)(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="p_dog")(x)
    return keras.Model(inputs, outputs, name="catsdogs_cnn")


def compile_model(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=[
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc"),
            keras.metrics.BinaryCrossentropy(name="log_loss"),
        ],
    )


class RandomAffine(layers.Layer):
    """Rotation, shift, shear, zoom and horizontal flip composed into ONE affine transform per
    image, so a batch costs a single resampling pass (five separate layers cost five)."""

    def __init__(self, augmentation: Augmentation = Augmentation(), seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.augmentation = augmentation
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        a = self.augmentation
        shape = ops.shape(images)
        n, height, width = shape[0], ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")

        def uniform(limit):
            return keras.random.uniform((n,), -limit, limit, seed=self.seed_generator)

        angle = uniform(math.radians(a.rotation))
        shear = uniform(math.radians(a.shear))
        zoom = 1.0 + uniform(a.zoom)
        flip = ops.ones((n,))
        if a.flip:
            flip = ops.where(keras.random.uniform((n,), seed=self.seed_generator) < 0.5, -1.0, 1.0)
        tx = uniform(a.shift) * width
        ty = uniform(a.shift) * height
        cos, sin, tan = ops.cos(angle), ops.sin(angle), ops.tan(shear)
        # Output pixel -> input pixel: rotation @ shear @ diag(zoom * flip, zoom), about the centre.
        a0 = cos * zoom * flip
        a1 = (cos * tan - sin) * zoom
        b0 = sin * zoom * flip
        b1 = (sin * tan + cos) * zoom
        cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
        a2 = cx - a0 * cx - a1 * cy + tx
        b2 = cy - b0 * cx - b1 * cy + ty
        zeros = ops.zeros((n,))
        transform = ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        return ops.image.affine_transform(images, transform, fill_mode="reflect")

    def compute_output_shape(self, input_shape):
        return input_shape


# --- checkpoints ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A trained model on disk: where it is and what its run.json says."""

    model_path: Path
    run: dict[str, Any]

    @property
    def folder(self) -> Path:
        return self.model_path.parent

    @property
    def image_size(self) -> int:
        return int(self.run["image_size"])

    @property
    def is_export(self) -> bool:
        """True for an ONNX or OpenVINO export (run.json then has an `export` block)."""
        return self.model_path.suffix in (".onnx", ".xml")


def find_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Resolve a run folder or a model file of this project; refuse anything else clearly."""
    path = Path(path)
    if path.is_dir():
        model_path = next((path / f for f in MODEL_FILES if (path / f).exists()), path / MODEL_FILE)
    else:
        model_path = path
    if not model_path.exists():
        raise UserError(f"no model at {path} (expected a run folder with {MODEL_FILE} and {RUN_FILE})")
    run_path = model_path.parent / RUN_FILE
    try:
        run = json.loads(run_path.read_text())
    except FileNotFoundError:
        raise UserError(f"{model_path} is not a catsdogs-batch model: no {RUN_FILE} beside it") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{run_path} is not valid JSON") from None
    if not isinstance(run, dict) or run.get("kind") != RUN_KIND or "image_size" not in run:
        raise UserError(f"{run_path} does not describe a catsdogs-batch model")
    size = run["image_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserError(f"{run_path}: image_size must be a positive whole number of pixels, not {size!r}")
    weights = model_path.with_suffix(".bin")
    if model_path.suffix == ".xml" and not weights.is_file():
        raise UserError(f"{model_path} is an OpenVINO model without its weights: {weights.name} is missing beside it")
    return Checkpoint(model_path, run)


def latest_checkpoint(models_dir: Path = Path("models")) -> Path:
    """The most recently finished run under `models_dir`: the default model of every command."""
    finished = []
    for run_path in models_dir.glob(f"*/{RUN_FILE}"):
        try:
            run = json.loads(run_path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if run.get("kind") == RUN_KIND and run.get("status") == "finished":
            finished.append(run_path)
    if not finished:
        raise UserError(f"no finished training run in {models_dir}/: run `catsdogs train` or pass --model")
    return max(finished, key=lambda p: p.stat().st_mtime).parent


def load_keras_model(checkpoint: Checkpoint) -> keras.Model:
    """Load the Keras model of a checkpoint (no optimizer), with a clear error for a bad file."""
    if checkpoint.is_export:
        raise UserError(f"{checkpoint.model_path} is an export, not a Keras model: use the checkpoint it came from")
    if not zipfile.is_zipfile(checkpoint.model_path):
        raise UserError(f"cannot load {checkpoint.model_path}: not a Keras model file (a .keras file is a zip archive)")
    try:
        model = keras.saving.load_model(checkpoint.model_path, compile=False)
    except Exception as e:  # Keras raises many types (ValueError, OSError, zipfile errors...)
        raise UserError(f"cannot load {checkpoint.model_path}: {str(e).splitlines()[0]}") from None
    expected = (None, checkpoint.image_size, checkpoint.image_size, 3)
    if tuple(model.input_shape) != expected or tuple(model.output_shape) != (None, 1):
        raise UserError(
            f"{checkpoint.model_path} takes {model.input_shape} -> {model.output_shape}, "
            f"not {expected} -> (None, 1) as {RUN_FILE} says"
        )
    return model

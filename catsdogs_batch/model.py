"""The regularized CNN, its augmentation layer, and loading a checkpoint's Keras model: the one
module of the package (with training and export) that imports Keras."""

from __future__ import annotations

import math
import zipfile

import keras
from keras import layers, ops

from .checkpoint import RUN_FILE, Checkpoint
from .errors import UserError
from .options import Augmentation


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

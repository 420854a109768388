"""The models `catsdogs train --arch` builds (the seed's CNN, a small residual network, pretrained
backbones), their augmentation layer, temperature scaling, and loading a checkpoint's Keras model
(which modules import Keras: docs/architecture.md). Every model takes uint8-range RGB pixels and
ends in one sigmoid unit named `p_dog`."""

from __future__ import annotations

import math
import re
import socket
import zipfile

import keras
from keras import layers, ops

from .checkpoint import RUN_FILE, Checkpoint
from ..errors import UserError
from ..options import ARCHITECTURES, LITE, Augmentation, TrainOptions
from ..quiet import held_back

DOWNLOAD_TIMEOUT = 60  # seconds without data before a download of ImageNet weights gives up

OUTPUT_LAYER = "p_dog"


def build_model(options: TrainOptions) -> keras.Model:
    """The model of `options.arch` at `options.image_size` (resolved), with its regularization."""
    if options.arch == "seed":
        return seed_cnn(options.image_size, options.dense_units, options.dropout, options.l2, options.bn_momentum)
    if options.arch == "residual":
        return residual_cnn(options.image_size, options.dropout, options.l2, options.bn_momentum)
    return pretrained_model(options.arch, options.image_size, options.weights, options.dropout)


def seed_cnn(
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
    outputs = layers.Dense(1, activation="sigmoid", name=OUTPUT_LAYER)(x)
    return keras.Model(inputs, outputs, name="catsdogs_cnn")


def residual_cnn(
    image_size: int = 128,
    dropout: float = 0.5,
    l2: float = 1e-4,
    bn_momentum: float = 0.9,
) -> keras.Model:
    """A small Xception: a stride-2 stem, then one residual block per width (two separable
    convolutions, each after BatchNormalization and ReLU, max-pooled, plus a strided 1x1
    shortcut), global average pooling, Dropout and one sigmoid unit. Takes RGB pixels in 0-255.
    Its receptive field covers the whole image and it has half the seed's parameters."""
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.Conv2D(48, 3, strides=2, padding="same", use_bias=False, kernel_regularizer=regularizer)(x)
    for filters in (64, 128, 256, 512, 728):
        shortcut = x
        for _ in range(2):
            x = layers.BatchNormalization(momentum=bn_momentum)(x)
            x = layers.Activation("relu")(x)
            x = layers.SeparableConv2D(
                filters, 3, padding="same", use_bias=False, pointwise_regularizer=regularizer
            )(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        shortcut = layers.Conv2D(
            filters, 1, strides=2, padding="same", use_bias=False, kernel_regularizer=regularizer
        )(shortcut)
        x = layers.add([x, shortcut])
    x = layers.BatchNormalization(momentum=bn_momentum)(x)
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(1, activation="sigmoid", name=OUTPUT_LAYER)(x)
    return keras.Model(inputs, outputs, name="catsdogs_residual")


def pretrained_features(arch: str, image_size: int, weights: str) -> keras.Model:
    """An ImageNet backbone (EfficientNet-Lite from its package, or one from keras.applications),
    without its classifier, its own preprocessing inside, then global average pooling:
    uint8-range pixels in, one feature vector per image out (1280 numbers for EfficientNet-Lite
    and EfficientNetV2-B0). Frozen; with pretrained weights it always runs in inference mode. A
    backbone without its weights stops here with a one-line UserError."""
    name = ARCHITECTURES[arch].backbone
    if name in LITE:
        from .efficientnet_lite import efficientnet_lite

        backbone = efficientnet_lite(name, image_size, weights)
    else:
        backbone = _keras_application(arch, name, image_size, weights)
    backbone.trainable = False
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = inputs
    # The preprocessing the backbone was trained with, as a layer (that of EfficientNet-Lite, EfficientNetV2
    # and MobileNetV3 is built into them): the saved model still takes plain pixels.
    if name == "ResNet50V2":
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="resnet_v2_preprocessing")(x)
    # ImageNet statistics stay (BatchNormalization in inference mode); random weights learn theirs.
    x = backbone(x) if weights == "none" else backbone(x, training=False)
    features = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, features, name=f"{arch.replace('-', '_')}_features")


def _keras_application(arch: str, name: str, image_size: int, weights: str) -> keras.Model:
    """The keras.applications backbone `name`, its ImageNet weights downloaded by Keras (once,
    into ~/.keras/models/, with a timeout), or a weights file of it."""
    constructor = getattr(keras.applications, name)
    timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)  # Keras' download would wait forever on a silent network
    try:
        with held_back():  # Keras' "Downloading data from ..." and its progress bar, on stdout
            return constructor(
                include_top=False,
                weights=None if weights == "none" else weights,
                input_shape=(image_size, image_size, 3),
                pooling=None,
            )
    except MemoryError:
        raise
    except Exception as e:  # a failed download, a weights file of another network...
        raise UserError(_weights_error(arch, weights, e)) from None
    finally:
        socket.setdefaulttimeout(timeout)


def pretrained_model(arch: str, image_size: int, weights: str, dropout: float = 0.5) -> keras.Model:
    """`pretrained_features` of `arch`, then Dropout and one sigmoid unit (the backbone starts
    frozen). Its layers are those of the features model, not the model itself: `backbone_of`
    finds the backbone."""
    features = pretrained_features(arch, image_size, weights)
    x = layers.Dropout(dropout)(features.output)
    outputs = layers.Dense(1, activation="sigmoid", name=OUTPUT_LAYER)(x)
    return keras.Model(features.input, outputs, name=f"catsdogs_{arch.replace('-', '_')}")


# Keras' error for a weights file whose layers do not fit: a count, then on later lines the
# first layer's own error (for another backbone: its shapes, and the tensor's values)
_NOT_LOADED = re.compile(r"A total of (\d+) objects could not be loaded\. Example error message for object <\w+ name=([^,>]+)")
_SHAPES = re.compile(r"variable\.shape=(\(.*?\)), Received: value\.shape=(\(.*?\))")


def _weights_error(arch: str, weights: str, error: Exception) -> str:
    """One line: what failed, and the ways out (a weights file, or training from scratch)."""
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    not_loaded = _NOT_LOADED.match(first_line)
    if not_loaded:
        detail = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), "")
        shapes = _SHAPES.search(detail)
        detail = f"shape {shapes[1]} here, {shapes[2]} in the file" if shapes else detail.split(" Target variable:")[0][:200]
        return (
            f"cannot load --weights {weights} into {arch}: not a weights file of that backbone "
            f"({not_loaded[1]} of its layers do not match; the first, {not_loaded[2]}: {detail})"
        )
    if weights == "imagenet":
        return (
            f"cannot get the ImageNet weights of {arch} ({first_line}): Keras downloads them once into "
            "~/.keras/models/; on a machine without internet copy that file there, or pass --weights FILE "
            "(a Keras weights file of that backbone), or --arch residual (trained from scratch: no download, "
            "much less accurate)"
        )
    return f"cannot load --weights {weights} into {arch}: {first_line}"


def backbone_of(model: keras.Model) -> keras.Model | None:
    """The pretrained backbone inside a model from `pretrained_model` (None for the others)."""
    return next((layer for layer in model.layers if isinstance(layer, keras.Model)), None)


def unfreeze_top(model: keras.Model, layers_count: int | None) -> int:
    """Make the top `layers_count` layers of the backbone trainable (None: a fifth of them),
    BatchNormalization excepted (it keeps its ImageNet statistics); return how many are now."""
    backbone = backbone_of(model)
    count = max(1, len(backbone.layers) // 5) if layers_count is None else layers_count
    backbone.trainable = True
    for k, layer in enumerate(backbone.layers):
        layer.trainable = k >= len(backbone.layers) - count and not isinstance(layer, layers.BatchNormalization)
    return sum(layer.trainable for layer in backbone.layers)


def scale_logit(model: keras.Model, temperature: float) -> None:
    """Divide the logit of the `p_dog` unit by `temperature` (its kernel and bias), so that
    every runtime and export of the model gives the calibrated probability."""
    dense = model.get_layer(OUTPUT_LAYER)
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel / temperature, bias / temperature])


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

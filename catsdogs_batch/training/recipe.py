"""What a training run is made of, shared by `catsdogs train` and `catsdogs audit` (whose folds
train the same models): its options checked and completed by the architecture's defaults, and
its tf.data pipelines."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tensorflow as tf

from ..errors import UserError
from ..files import shown
from ..models.networks import RandomAffine
from ..options import ARCHITECTURES, TrainOptions, check_options


def resolve_options(options: TrainOptions) -> TrainOptions:
    """Check every option before any work, and fill in the architecture's defaults."""
    check_options(options)
    arch = ARCHITECTURES[options.arch]
    options = dataclasses.replace(
        options,
        image_size=options.image_size or arch.image_size,
        learning_rate=options.learning_rate or arch.learning_rate,
        epochs=arch.epochs if options.epochs is None else options.epochs,
    )
    if options.epochs < 1 and not arch.fitted_head:  # a fitted head needs no epoch; fine-tuning is optional
        raise UserError(f"{options.arch} needs --epochs of at least 1, not {options.epochs}")
    if arch.fitted_head and options.weights == "none" and options.epochs == 0:
        raise UserError(f"--weights none with --epochs 0: {options.arch} would learn nothing; give --epochs")
    if arch.backbone is None:
        if options.weights != "imagenet":
            raise UserError(f"--weights is for pretrained backbones; {options.arch} is trained from scratch")
    elif options.weights not in ("imagenet", "none"):
        if not Path(options.weights).is_file():
            what = "is not a regular file" if Path(options.weights).exists() else "no such file"
            raise UserError(f"--weights {shown(options.weights)}: {what} (or say imagenet or none)")
        options = dataclasses.replace(options, weights=str(Path(options.weights).resolve()))  # for --resume
    return options


def make_datasets(options: TrainOptions, train_data, val_data):
    """tf.data pipelines: shuffled, augmented training batches; plain validation batches."""
    augment = RandomAffine(options.augmentation, seed=options.seed)

    def augment_batch(images, labels):
        return tf.cast(augment(images, training=True), tf.float32), labels

    def to_float(images, labels):
        return tf.cast(images, tf.float32), labels

    train_images, train_labels = train_data
    train = (
        tf.data.Dataset.from_tensor_slices((train_images, train_labels))
        .shuffle(len(train_images), seed=options.seed, reshuffle_each_iteration=True)
        .batch(options.batch_size)
        .map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    val = (
        tf.data.Dataset.from_tensor_slices(val_data)
        .batch(options.batch_size)
        .map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    return train, val

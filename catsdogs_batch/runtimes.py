"""Runtimes: load a model once, then probabilities of "dog" for batches of decoded images.

Every engine (local, Ray) and every command uses a runtime through this one small interface,
so decoding, batching, tables and resume never depend on which library runs the model."""

from __future__ import annotations

import numpy as np

from .model import Checkpoint, load_keras_model


class KerasRuntime:
    """The trained Keras model, run by TensorFlow (CPU or GPU, whichever TensorFlow finds)."""

    name = "keras"

    def __init__(self, checkpoint: Checkpoint):
        import tensorflow as tf

        model = load_keras_model(checkpoint)
        self._predict = tf.function(
            lambda x: model(tf.cast(x, tf.float32), training=False), reduce_retracing=True
        )

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (n, size, size, 3) RGB -> float (n,) probabilities of dog."""
        return np.asarray(self._predict(pixels)).reshape(-1)


def load_runtime(checkpoint: Checkpoint) -> KerasRuntime:
    return KerasRuntime(checkpoint)

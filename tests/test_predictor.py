"""inference/predictor.py: a model loaded once, its probabilities for a batch of images."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from catsdogs_batch.inference.predictor import Predictor

from conftest import write_image


def test_tta_averages_with_the_mirrored_image(tiny_model, tmp_path):
    """Images whose mirror is known without the code: Pillow's mirror of a half-cat, half-dog
    image (which the model tells from the original); and a left-right symmetric image, its own
    mirror, whose TTA answer is its plain one."""

    def generated(label: int, seed: int) -> np.ndarray:
        return np.asarray(Image.open(write_image(tmp_path / f"{label}-{seed}.png", label, size=32, seed=seed)))

    def mirrored(pixels: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(ImageOps.mirror(Image.fromarray(image))) for image in pixels])

    plain, tta = Predictor(tiny_model), Predictor(tiny_model, tta=True)
    halves = np.stack([np.concatenate([generated(0, n)[:, :16], generated(1, n)[:, 16:]], axis=1) for n in range(4)])
    p, p_mirror = plain.predict(halves), plain.predict(mirrored(halves))
    assert (abs(p - p_mirror) > 0.01).all()  # the model is not mirror-blind: TTA changes something
    assert np.allclose(tta.predict(halves), (p + p_mirror) / 2, atol=1e-6)
    assert np.allclose(tta.predict(mirrored(halves)), tta.predict(halves), atol=1e-6)

    symmetric = np.concatenate([halves[:, :, :16], mirrored(halves[:, :, :16])], axis=2)
    assert np.allclose(tta.predict(symmetric), plain.predict(symmetric), atol=1e-6)

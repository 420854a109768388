"""The predictor: a model (or an ensemble of models) loaded once, decoded images in, rows of the
results table out. The same class serves every engine (this process's threads, each Ray actor)
and every runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .checkpoint import Models, find_checkpoints
from .images import DecodedImage, ImageError, load_image, resize_batch
from .options import Labelling
from .runtimes import load_runtime
from .tables import Row, error_row, label_for, ok_row


class Predictor:
    """The model, loaded once: decoded images in, probabilities of dog out. Several models make
    an ensemble whose p_dog is the mean of theirs: the arithmetic mean of probabilities, because
    log loss is convex in p (the ensemble's is never above its members' mean log loss) and
    because one over-confident member cannot outvote the others as it can in a mean of logits.
    Members may take different image sizes: each image is decoded once, at the largest, and
    reduced to each smaller member's size (area interpolation)."""

    def __init__(self, model: Models, tta: bool = False, runtime: str = "auto", threads: int | None = None):
        self.checkpoints = find_checkpoints(model)
        self.image_size = max(c.image_size for c in self.checkpoints)  # what the engine decodes at
        self.tta = tta
        self.runtimes = [load_runtime(c, runtime, threads) for c in self.checkpoints]

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (n, image_size, image_size, 3) -> (n,) p_dog; with TTA, each model's is averaged
        with its p_dog of the mirrored images."""
        total = np.zeros(len(pixels), dtype=np.float64)
        for checkpoint, runtime in zip(self.checkpoints, self.runtimes):
            own = resize_batch(pixels, checkpoint.image_size)
            p = runtime(own).astype(np.float64)
            total += (p + runtime(np.ascontiguousarray(own[:, :, ::-1]))) / 2 if self.tta else p
        return total / len(self.runtimes)

    def rows(
        self, relative_paths: list[str], decoded: list[DecodedImage | ImageError], labelling: Labelling = Labelling()
    ) -> list[Row]:
        """Rows in input order for one batch: predictions (labelled by `labelling`) for the
        images, error rows for the rest."""
        images = [d for d in decoded if isinstance(d, DecodedImage)]
        probabilities = iter(self.predict(np.stack([d.pixels for d in images])) if images else [])
        rows = []
        for path, d in zip(relative_paths, decoded):
            if isinstance(d, DecodedImage):
                p = round(float(next(probabilities)), 6)  # the label agrees with the stored p_dog
                rows.append(ok_row(path, p, d.width, d.height, label_for(p, labelling)))
            else:
                rows.append(error_row(path, str(d)))
        return rows

    def predict_files(self, root: Path, relative_paths: list[str], labelling: Labelling = Labelling()) -> list[Row]:
        """Decode (in this thread) and predict one batch of files under `root`."""
        decoded: list[DecodedImage | ImageError] = []
        for path in relative_paths:
            try:
                decoded.append(load_image(root / path, self.image_size))
            except ImageError as e:
                decoded.append(e)
        return self.rows(relative_paths, decoded, labelling)

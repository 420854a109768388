"""The predictor: a model (or an ensemble of models) loaded once, decoded images in, rows of the
results table out. The same class serves every engine (this process's threads, each Ray actor)
and every runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..models.checkpoint import Models, find_checkpoints
from ..models.content import (
    BOTH_CANDIDATES,
    GATE_IMAGE_SIZE,
    PRESENT,
    SIDES_APART,
    Evidence,
    both_in_halves,
    class_names,
    halves,
)
from ..data.images import DecodedImage, ImageError, decode_many, resize_batch
from ..options import Labelling
from .runtimes import load_runtime
from .tables import ImageNetWord, Row, error_row, label_for, ok_row


class Predictor:
    """The model, loaded once: decoded images in, probabilities of dog out. An ensemble's p_dog
    is the mean of its members' probabilities: log loss is convex in p (never above the members'
    mean), and one over-confident member cannot outvote the others as in a mean of logits. Each
    image is decoded once, at the largest member's size, and reduced for the others.

    With `content_check` (content.py), the ImageNet classifier also says which photos hold
    neither a cat nor a dog, or both: on the first member's own features where it
    `shares_gate_backbone`, else by its own model on the same pixels."""

    def __init__(
        self, model: Models, tta: bool = False, runtime: str = "auto", threads: int | None = None,
        content_check: bool = False,
    ):  # fmt: skip
        self.checkpoints = find_checkpoints(model, runtime)
        self.tta = tta
        self.content_check = content_check
        self.runtimes = [
            load_runtime(c, runtime, threads, imagenet=content_check and i == 0) for i, c in enumerate(self.checkpoints)
        ]
        self.gate = None
        if content_check and not self.runtimes[0].gated:
            from .runtimes import GateRuntime

            self.gate = GateRuntime(threads)
        sizes = [c.image_size for c in self.checkpoints] + ([GATE_IMAGE_SIZE] if content_check else [])
        self.image_size = max(sizes)  # what the engine decodes at
        self._class_names = class_names() if content_check else []

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (n, image_size, image_size, 3) -> (n,) p_dog; with TTA, each model's is averaged
        with its p_dog of the mirrored images."""
        return self._predict(pixels, self.tta)[0]

    def _predict(self, pixels: np.ndarray, tta: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """p_dog, and the ImageNet classifier's outputs where the first member gives them."""
        total = np.zeros(len(pixels), dtype=np.float64)
        imagenet = None
        for checkpoint, runtime in zip(self.checkpoints, self.runtimes):
            own = resize_batch(pixels, checkpoint.image_size)
            if runtime.gated:
                p, imagenet = runtime.with_imagenet(own)
            else:
                p = runtime(own)
            p = p.astype(np.float64)
            total += (p + runtime(np.ascontiguousarray(own[:, :, ::-1]))) / 2 if tta else p
        return total / len(self.runtimes), imagenet

    def _imagenet(self, pixels: np.ndarray, given: np.ndarray | None) -> Evidence:
        if given is None:
            given = self.gate(resize_batch(pixels, GATE_IMAGE_SIZE))
        return Evidence.from_outputs(given)

    def content(
        self, pixels: np.ndarray, p_dog: np.ndarray, imagenet: np.ndarray | None, labelling: Labelling
    ) -> tuple[Evidence, np.ndarray]:
        """The ImageNet classifier's evidence on each image, and its verdict: neither, both, or
        None (the model's cat or dog stands). See content.py."""
        evidence = self._imagenet(pixels, imagenet)
        verdict = np.full(len(pixels), None, dtype=object)
        neither = evidence.region < labelling.neither_below
        verdict[neither] = "neither"
        unsure = ~neither & (p_dog > 1 - BOTH_CANDIDATES) & (p_dog < BOTH_CANDIDATES)
        if evidence.sides is not None:  # the model's own sides, for free: cut only where they differ
            unsure &= np.abs(evidence.sides[:, 0] - evidence.sides[:, 1]) >= SIDES_APART
        candidates = np.flatnonzero(unsure)
        if labelling.both_above < 1 and len(candidates):
            parts = halves(pixels[candidates]).reshape(-1, *pixels.shape[1:])
            half_p, half_imagenet = self._predict(parts, tta=False)
            half = self._imagenet(parts, half_imagenet)
            both = both_in_halves(
                half_p.reshape(-1, 2), (half.dog + half.cat).reshape(-1, 2), labelling.both_above, PRESENT
            )
            verdict[candidates[both]] = "both"
        return evidence, verdict

    def rows(
        self, relative_paths: list[str], decoded: list[DecodedImage | ImageError], labelling: Labelling = Labelling()
    ) -> list[Row]:
        """Rows in input order for one batch: predictions (labelled by `labelling`) for the
        images, error rows for the rest."""
        if labelling.content_check and not self.content_check:
            raise ValueError("labelling asks for the content check: make the Predictor with content_check=True")
        images = [d for d in decoded if isinstance(d, DecodedImage)]
        words: list[ImageNetWord | None] = [None] * len(images)
        verdicts: list[str | None] = [None] * len(images)
        p_dog = np.empty(0)
        if images:
            pixels = np.stack([d.pixels for d in images])
            p_dog, imagenet = self._predict(pixels, self.tta)
            if labelling.content_check:
                evidence, verdict = self.content(pixels, p_dog, imagenet, labelling)
                verdicts = list(verdict)
                words = [
                    ImageNetWord(float(dog), float(cat), self._class_names[top])
                    for dog, cat, top in zip(evidence.dog, evidence.cat, evidence.top)
                ]
        found = iter(zip(p_dog, words, verdicts))
        rows = []
        for path, d in zip(relative_paths, decoded):
            if isinstance(d, DecodedImage):
                p, word, verdict = next(found)
                p = round(float(p), 6)  # the label agrees with the stored p_dog
                rows.append(ok_row(path, p, d.width, d.height, label_for(p, labelling, verdict), word))
            else:
                rows.append(error_row(path, str(d)))
        return rows

    def predict_files(self, root: Path, relative_paths: list[str], labelling: Labelling = Labelling()) -> list[Row]:
        """Decode (in this thread) and predict one batch of files under `root`."""
        decoded = decode_many((root / path for path in relative_paths), self.image_size, workers=1)
        return self.rows(relative_paths, [d for _, d in decoded], labelling)

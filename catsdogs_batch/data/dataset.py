"""Labelled images (Kaggle name or class folder) for `train`, `evaluate`, `export` and `audit`: a
review's corrections applied, the seeded stratified split and its `split.csv`, and their decoding
(in memory, or a batch at a time into embeddings; no TensorFlow here: `embed_images` takes the
function that embeds)."""

from __future__ import annotations

import csv
import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .corrections import read_corrections
from ..errors import UserError
from ..files import TEXT, CsvWriter, atomic_path
from .images import CLASS_NAMES, HiddenEntries, decode_many, iter_image_files, label_from_path
from ..options import TrainOptions

log = logging.getLogger(__name__)

SPLIT_FILE = "split.csv"


@dataclass(frozen=True)
class LabelledImage:
    path: str  # relative to the data folder, POSIX separators
    label: int


def find_labelled_images(folder: Path) -> list[LabelledImage]:
    """All images under `folder` with a label from their Kaggle name or class folder."""
    items, unlabelled, hidden = [], 0, HiddenEntries()
    for path in iter_image_files(folder, hidden):
        relative = path.relative_to(folder)
        label = label_from_path(relative)
        if label is None:
            unlabelled += 1
        else:
            items.append(LabelledImage(relative.as_posix(), label))
    hidden.log(folder)
    if unlabelled:
        log.warning("ignored %d images whose name or folder says neither cat nor dog", unlabelled)
    if not items:
        raise UserError(
            f"no labelled images in {folder}: expected Kaggle names (cat.1.jpg, dog.1.jpg) "
            "or class folders (cat/, dog/)"
        )
    present = {item.label for item in items}
    if len(present) < 2:
        only = CLASS_NAMES[present.pop()]
        raise UserError(f"{folder} holds only {only} images: training needs both cats and dogs")
    return items


def corrected_images(folder: Path, corrections: Path | None) -> tuple[list[LabelledImage], dict | None]:
    """The labelled images of `folder` corrected (see _apply_corrections) and the corrections' record
    (None without a file); the file is read first, so a bad one stops the run before the walk."""
    given = read_corrections(corrections, folder) if corrections is not None else None
    (items,), record = _apply_corrections((find_labelled_images(folder),), given, folder)
    return items, record


def corrected_split(options: TrainOptions) -> tuple[list[LabelledImage], list[LabelledImage], dict | None]:
    """The training and validation images, split on the files' own labels and then corrected part
    by part, so a run with corrections validates on the same images as one without (their figures
    compare). Each part must hold cats and dogs (check_split)."""
    given = read_corrections(options.corrections, options.data) if options.corrections is not None else None
    split = stratified_split(find_labelled_images(options.data), options.val_split, options.split_seed)
    (train, val), record = _apply_corrections(split, given, options.data)
    check_split(train, val, f"the corrections in {options.corrections}" if given else f"the labels of {options.data}")
    return train, val, record


def check_split(train: list[LabelledImage], val: list[LabelledImage], source: str) -> None:
    """Refuse a split whose training or validation part lacks cats or dogs, checked on the final
    labels, which `source` (the corrections) may have changed. Nothing is written before it."""
    lacking = []
    for part, items in (("training", train), ("validation", val)):
        counts = [sum(item.label == label for item in items) for label in (0, 1)]
        if not all(counts):
            absent = " and no ".join(CLASS_NAMES[label] for label in (0, 1) if not counts[label])
            lacking.append(f"no {absent} image in the {part} split ({counts[0]} cats, {counts[1]} dogs)")
    if lacking:
        raise UserError(f"{source} leave {' and '.join(lacking)}: training needs cats and dogs in both splits")


def _apply_corrections(parts: tuple[list[LabelledImage], ...], given, folder: Path) -> tuple[tuple, dict | None]:
    """Each part with the corrections' labels (`skip`, `neither` and `both` images left out:
    none is a cat-or-dog example), and the record; PARTS as they are without corrections."""
    if given is None:
        return parts, None
    changed, skipped, corrected = 0, 0, []
    for items in parts:
        kept = []
        for item in items:
            label = given.labels.get(item.path)
            if label in CLASS_NAMES:
                changed += CLASS_NAMES.index(label) != item.label
                kept.append(LabelledImage(item.path, CLASS_NAMES.index(label)))
            elif label is None:
                kept.append(item)
            else:  # skip, neither, both
                skipped += 1
        corrected.append(kept)
    unknown = len(given.labels.keys() - {item.path for items in parts for item in items})
    if unknown:
        log.warning("%d corrections name no labelled image of %s: ignored", unknown, folder)
    log.info("corrections: %d labels changed, %d images skipped", changed, skipped)
    record = given.record() | {"rows": len(given.labels), "changed": changed, "skipped": skipped, "unknown": unknown}
    return tuple(corrected), record


def stratified_split(
    items: list[LabelledImage], val_split: float, seed: int
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Seeded split that keeps the cat/dog ratio in both parts."""
    if not 0 < val_split < 1:
        raise UserError(f"--val-split must be between 0 and 1, not {val_split}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in (0, 1):
        group = sorted((i for i in items if i.label == label), key=lambda i: i.path)
        order = rng.permutation(len(group))
        n_val = max(1, round(len(group) * val_split))
        if n_val >= len(group):
            raise UserError(f"too few {CLASS_NAMES[label]} images ({len(group)}) to hold some out")
        val += [group[k] for k in order[:n_val]]
        train += [group[k] for k in order[n_val:]]
    return sorted(train, key=lambda i: i.path), sorted(val, key=lambda i: i.path)


def write_split(path: Path, train: list[LabelledImage], val: list[LabelledImage]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", **TEXT) as f:
        writer = CsvWriter(f)
        writer.writerow(["path", "label", "subset"])
        for subset, items in (("train", train), ("val", val)):
            writer.writerows((i.path, CLASS_NAMES[i.label], subset) for i in items)


def read_split(path: Path) -> tuple[list[LabelledImage], list[LabelledImage]]:
    parts: dict[str, list[LabelledImage]] = {"train": [], "val": []}
    with open(path, newline="", **TEXT) as f:
        for row in csv.DictReader(f):
            parts[row["subset"]].append(LabelledImage(row["path"], CLASS_NAMES.index(row["label"])))
    return parts["train"], parts["val"]


def decode_images(
    folder: Path, items: list[LabelledImage], size: int, workers: int, what: str, sizes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
    """Decode once into uint8 arrays held in memory (the cache every epoch reads);
    unreadable files are skipped and returned with their error. `sizes`: see decode_labelled."""
    needed = len(items) * size * size * 3
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # macOS has no SC_AVPHYS_PAGES
        available = None
    if available is None:
        log.debug("this system does not say how much memory is free: %s %s images at %dpx (%.1f GiB) not checked",
                  len(items), what, size, needed / 2**30)  # fmt: skip
    elif needed > 0.6 * available:
        raise UserError(
            f"{len(items)} {what} images at {size}px need {needed / 2**30:.1f} GiB, more than "
            f"the {available / 2**30:.1f} GiB free: lower --image-size"
        )
    images = np.empty((len(items), size, size, 3), dtype=np.uint8)
    keep = np.zeros(len(items), dtype=bool)
    skipped: list[dict[str, str]] = []
    for k, pixels in decode_labelled(folder, items, size, workers, f"decode {what}", skipped, sizes):
        images[k] = pixels
        keep[k] = True
    labels = np.array([[i.label] for i in items], dtype=np.float32)
    return images[keep], labels[keep], skipped


def decode_sample(folder: Path, paths: list[str], count: int, seed: int, size: int, workers: int) -> np.ndarray:
    """A seeded sample of `count` of the images `paths` (relative to `folder`), decoded: what
    int8 models are calibrated on. The same paths, count and seed give the same images."""
    chosen = np.random.default_rng(seed).permutation(len(paths))[:count]
    items = [LabelledImage(paths[k], 0) for k in sorted(chosen)]
    skipped: list[dict[str, str]] = []
    pixels = [image for _, image in decode_labelled(folder, items, size, workers, "decode calibration", skipped)]
    if not pixels:
        raise UserError(f"none of the {len(items)} images drawn from {folder} to calibrate on is readable")
    return np.stack(pixels)


def decode_labelled(
    folder: Path, items: list[LabelledImage], size: int, workers: int, bar: str, skipped: list[dict[str, str]],
    sizes: np.ndarray | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """(index in `items`, uint8 pixels) of each readable image, in order, decoded on `workers` threads
    a bounded window ahead, under a progress bar named `bar` ("decode train", "embed train"). Each
    unreadable file goes to `skipped` as {"path", "error"}, logged once the bar is done. `sizes` (one
    row per item) gets each readable image's original upright (width, height)."""
    from tqdm import tqdm

    decoded = decode_many([folder / i.path for i in items], size, workers)
    for k, (_, result) in enumerate(tqdm(decoded, total=len(items), desc=bar, unit="img")):
        if isinstance(result, Exception):
            skipped.append({"path": items[k].path, "error": str(result)})
        else:
            if sizes is not None:
                sizes[k] = result.width, result.height
            yield k, result.pixels
    for row in skipped:
        log.warning("skipped %s: %s", row["path"], row["error"])


EMBED_BATCH = 32  # images decoded and embedded at a time (twice that through the backbone with the mirror)


def embed_images(
    folder: Path, items: list[LabelledImage], embed, size: int, workers: int, bar: str, mirrored: bool,
    sizes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, list[dict[str, str]]]:
    """The embeddings by `embed` (uint8 pixels in) of the readable images of `items` (float32, one
    row each, in order), with `mirrored` those of their flipped arrays too (else None), and the
    unreadable ones (rows of `decode_labelled`). EMBED_BATCH images at a time, so memory holds the
    embeddings and one batch of pixels, whatever their number. `bar`, `sizes`: see decode_labelled."""
    skipped: list[dict[str, str]] = []
    decoded = decode_labelled(folder, items, size, workers, bar, skipped, sizes)
    views = 2 if mirrored else 1  # the images, then their mirrors, in one call of `embed`
    rows, count = np.empty((1, 0, 0), np.float32), 0
    while chunk := [pixels for _, pixels in itertools.islice(decoded, EMBED_BATCH)]:
        batch = np.stack(chunk)
        embedded = np.asarray(embed(np.concatenate([batch, batch[:, :, ::-1]]) if mirrored else batch))
        if count == 0:
            rows = np.empty((views, len(items), embedded.shape[1]), np.float32)
        rows[:, count : count + len(batch)] = embedded.reshape(views, len(batch), -1)
        count += len(batch)
    return rows[0, :count], rows[1, :count] if mirrored and count else None, skipped

"""What `catsdogs review` shows: the table a review is of (a results table, evaluate's folder or
a training run's validation table), its queue (the uncertain band, closest to the threshold
first, then the most confident disagreements with a true label), and the images, opened only
inside the images folder and served as small upright JPEG thumbnails."""

from __future__ import annotations

import io
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from ..data.images import to_rgb
from ..errors import UserError
from ..files import plain_relative, resolves_inside, shown
from ..models.checkpoint import MODEL_FILES, RUN_FILE
from ..options import THRESHOLD
from ..side_files import job_file, parts_job_file, read_record, sorted_file, sorting_file
from ..inference.tables import ANSWERS, NOT_CAT_OR_DOG

log = logging.getLogger(__name__)

THUMBNAIL_PX = 384  # longest side of a thumbnail
THUMBNAIL_MAX_PIXELS = 40_000_000  # after a JPEG's reduced decode: about 160 MB decoded, 2 at a time
MODEL_SUFFIXES = {PurePosixPath(name).suffix for name in MODEL_FILES} | {".h5"}  # not tables: named as models


def find_table(path: Path, images: Path | None = None) -> Path:
    """The results table: `path` itself, the results.csv of an evaluate or submission folder,
    or a training run's validation images predicted by its model (see `validation_results`;
    `images`: its training folder, if not where the run says)."""
    if path.is_dir():
        if (path / "results.csv").is_file():
            return path / "results.csv"
        if (path / RUN_FILE).is_file():
            from .validation import validation_results

            return validation_results(path, images)
        raise UserError(f"{path} is a folder without results.csv: name the results table (or a training run)")
    if not path.is_file():
        raise UserError(f"no results table at {path}")
    if path.suffix in MODEL_SUFFIXES:
        run = path.parent
        which = f"review its run folder {run}" if (run / RUN_FILE).is_file() else "name a training run folder"
        raise UserError(
            f"{path} is a model, not a results table: {which} (the folder with {RUN_FILE} and split.csv) to see "
            "its validation images, or a results table of predict, label, evaluate or audit"
        )
    return path


def recorded_job(table: Path) -> dict:
    """What the run that wrote `table` recorded beside it, holding the images `folder`: a finished
    table's `<table>.job.json`, an unfinished run's `<table>.parts/job.json` or `<table>.sorting.json`,
    or evaluate's `metrics.json`; `_file` names the file read; {} when none is there."""
    from ..side_files import METRICS_FILE

    for sidecar in (job_file(table), parts_job_file(table), sorting_file(table), table.with_name(METRICS_FILE)):
        job = read_record(sidecar)
        if job is not None and isinstance(job.get("folder"), str):
            return job | {"_file": sidecar}
    return {}


def moved_to(table: Path) -> Path | None:
    """Where `label --sort-into DIR --mode move` moved the table's images, as its sorting record
    says (`<table>.sorting.json` while unfinished, `<table>.sorted.json` once done); None when
    they were not moved."""
    for sidecar in (sorting_file(table), sorted_file(table)):
        job = read_record(sidecar)
        if job is not None and job.get("mode") == "move" and isinstance(job.get("sort_into"), str):
            return Path(job["sort_into"])
    return None


def recorded_settings(job: dict) -> tuple[tuple[float, float] | None, float]:
    """The uncertain band (None when not recorded) and threshold that `job` records; a value
    edited by hand into something else is a one-line error naming the file."""

    def number(value: Any) -> bool:
        return type(value) in (int, float) and 0 <= value <= 1

    band, threshold = job.get("uncertain"), job.get("threshold", THRESHOLD)
    if band is not None and not (isinstance(band, list) and len(band) == 2 and all(map(number, band))):
        raise UserError(f"{shown(job['_file'])} records uncertain {band!r}, not [LOW, HIGH] between 0 and 1")
    if not number(threshold):
        raise UserError(f"{shown(job['_file'])} records threshold {threshold!r}, not a number between 0 and 1")
    return (tuple(band) if band else None), float(threshold)


@dataclass(frozen=True)
class Queue:
    """The rows to review, in order: `order[n]` is the table row at queue position n; the first
    `uncertain` positions are the band, the rest the disagreements."""

    paths: np.ndarray  # object: every row's path, as in the table
    p_dog: np.ndarray  # float
    model_label: np.ndarray  # object: the model's cat or dog (the threshold's side for uncertain and corrected rows)
    label: np.ndarray  # object: the table's label (cat, dog, neither, both, uncertain or a correction's skip; the folder label sorts into)
    true_label: np.ndarray | None  # object: the given label ("" where none); None without that column
    corrected: np.ndarray  # object: the person's label `label --corrections` applied (source human), "" elsewhere
    ok: np.ndarray  # bool: the row was read
    order: np.ndarray  # int64 row indices
    uncertain: int

    def __len__(self) -> int:
        return len(self.order)

    def section(self, position: int) -> str:
        return "uncertain" if position < self.uncertain else "disagrees"


def review_queue(table: pd.DataFrame, band: tuple[float, float], threshold: float = THRESHOLD) -> Queue:
    """Order `table` for review: rows with LOW <= p_dog <= HIGH (or labelled uncertain, neither or both),
    closest to `threshold` first; then, where a true label is given and the model disagrees, the most
    confident first; ties in table order. Error rows, rows without p_dog and a path's later rows are left
    out (one decision per path). An audit's table (`label_issue`): its label issues, lowest quality first."""
    p_dog = table["p_dog"].to_numpy(dtype=float, na_value=np.nan)
    first = ~table["path"].duplicated(keep="first").to_numpy(dtype=bool)
    ok = (table["status"] == "ok").to_numpy(dtype=bool, na_value=False) & ~np.isnan(p_dog) & first
    label = table["label"].to_numpy(dtype=object, na_value="")
    # `label --corrections` put a person's label in `label` (source human): the model's is p_dog's side
    human = np.zeros(len(table), dtype=bool)
    if "source" in table.columns:
        human = (table["source"] == "human").to_numpy(dtype=bool, na_value=False)
    corrected = np.where(human, label, "").astype(object)
    model_label = np.where(np.isin(label, ANSWERS) & ~human, label, np.where(p_dog >= threshold, "dog", "cat"))
    distance = np.abs(p_dog - threshold)
    # neither and both are the model's doubts about the photo itself: a person decides them too
    asks = np.isin(label, ("uncertain", *NOT_CAT_OR_DOG)) & ~human
    in_band = ok & (((band[0] <= p_dog) & (p_dog <= band[1])) | asks)
    band_rows = np.flatnonzero(in_band)
    band_rows = band_rows[np.argsort(distance[band_rows], kind="stable")]
    true_label = table["true_label"].to_numpy(dtype=object, na_value="") if "true_label" in table.columns else None
    wrong_rows = np.empty(0, dtype=np.int64)
    if "label_issue" in table.columns:  # an audit's table: its label issues, in its order (most likely wrong first)
        band_rows = np.empty(0, dtype=np.int64)
        wrong_rows = np.flatnonzero(ok & table["label_issue"].to_numpy(dtype=bool, na_value=False))
        quality = table["label_quality"].to_numpy(dtype=float, na_value=np.nan)
        wrong_rows = wrong_rows[np.argsort(quality[wrong_rows], kind="stable")]
    elif true_label is not None:
        wrong = ok & ~in_band & np.isin(true_label, ("cat", "dog")) & (true_label != model_label)
        wrong_rows = np.flatnonzero(wrong)
        wrong_rows = wrong_rows[np.argsort(-distance[wrong_rows], kind="stable")]
    return Queue(
        paths=table["path"].to_numpy(dtype=object),
        p_dog=p_dog,
        model_label=model_label.astype(object),
        label=label,
        true_label=true_label,
        corrected=corrected,
        ok=ok,
        order=np.concatenate([band_rows, wrong_rows]).astype(np.int64),
        uncertain=len(band_rows),
    )


class NotServed(Exception):
    """This row's image is not served (outside the folder, not a regular file, unreadable)."""


def open_inside(folder: Path, relative: str) -> io.BufferedReader:
    """Open `folder/relative` for reading only if it resolves to a regular file inside `folder`
    (a resolved, real path): links may be followed, but never out of the folder."""
    real = resolves_inside(folder, folder / relative) if plain_relative(relative) else None
    if real is None:
        raise NotServed("not a path inside the images folder")
    try:  # O_NOFOLLOW: a link put in its place since the check is refused; O_NONBLOCK: a FIFO opens at once
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as e:
        raise NotServed(e.strerror) from None
    try:  # a parent folder swapped for a link since the check: what was opened must be inside
        opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # no /proc (not Linux): the check above is all there is
        opened = real
    info = os.fstat(fd)
    if not opened.is_relative_to(folder) or not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        os.close(fd)
        raise NotServed("not a regular file with content inside the folder")
    return os.fdopen(fd, "rb")


def thumbnail(file: BinaryIO, size: int = THUMBNAIL_PX) -> bytes:
    """An upright JPEG of at most `size` pixels a side of the image in `file`."""
    from PIL import Image, ImageOps

    try:
        with Image.open(file) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
            if img.width * img.height > THUMBNAIL_MAX_PIXELS:  # before anything is decoded
                raise NotServed(f"too many pixels for a thumbnail ({img.width}x{img.height})")
            img = ImageOps.exif_transpose(img)
            img.thumbnail((size, size))
            out = io.BytesIO()
            to_rgb(img).save(out, "JPEG", quality=80)  # transparency on white, as the models see it
            return out.getvalue()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise NotServed(f"unreadable image: {e}") from None

"""`catsdogs label`: label every image under a folder with the batch engine and, if asked, sort
the files into `DIR/cat`, `DIR/dog` and `DIR/uncertain`.

Sorting keeps each file's path relative to the folder (so same-named files from different
subfolders never collide), never overwrites a file, and is safe to interrupt: a job file beside
the table (`<table>.sorting.json`) says what is being done, and every step can be repeated, so
rerunning the same command finishes the job with each image exactly once. A move removes the
source only once the file is in place (a hard link on the same file system, else a flushed copy).
"""

from __future__ import annotations

import errno
import filecmp
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .engine import predict_folder
from .errors import UserError
from .files import atomic_write_json
from .options import LabelOptions, PredictOptions
from .tables import check_labelling, check_table_name, iter_table

log = logging.getLogger(__name__)

MODES = ("copy", "link", "move")
LABELS = ("cat", "dog", "uncertain")
SHOWN = 20  # problems listed in the summary; the table has them all
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}


def default_table(folder: Path) -> Path:
    """Where `catsdogs label` writes its table unless told: never inside the labelled folder."""
    return Path("submissions") / f"labels-{folder.resolve().name}.csv"


# --- sorting -------------------------------------------------------------------------------


@dataclass
class SortCounts:
    placed: int = 0  # put in place by this run
    already: int = 0  # found in place (an earlier, interrupted run)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, why it stayed)


class Sorter:
    """Places files from `folder` at `target/<label>/<relative path>` by copy, hard link or move."""

    def __init__(self, folder: Path, target: Path, mode: str):
        self.folder, self.target, self.mode = folder, target, mode
        self.counts = SortCounts()

    def place(self, relative: str, label: str) -> None:
        source, target = self.folder / relative, self.target / label / relative
        try:
            if os.path.lexists(target):
                self._already_there(relative, source, target)
            elif not source.exists():
                self.counts.problems.append((relative, "missing: neither in the folder nor sorted"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                {"copy": _copy_new, "link": _link_new, "move": _move_new}[self.mode](source, target)
                self.counts.placed += 1
        except FileExistsError:  # appeared meanwhile: decide again, never overwrite
            self._already_there(relative, source, target)
        except OSError as e:
            self.counts.problems.append((relative, f"not sorted: {e.strerror or e}"))

    def _already_there(self, relative: str, source: Path, target: Path) -> None:
        """The target exists: the work of an earlier run (finish it) or another file (keep it)."""
        if not source.exists():  # moved by an earlier run
            self.counts.already += 1
        elif _same_file_or_content(source, target):
            if self.mode == "move":
                _remove_source(source)  # the earlier run stopped between placing and removing
            self.counts.already += 1
        else:
            self.counts.problems.append((relative, f"not sorted: {target} exists with other content"))


def _same_file_or_content(a: Path, b: Path) -> bool:
    return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)


def _link_new(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # fails if target exists: never overwrites
    except OSError as e:
        if e.errno == errno.EXDEV:
            raise UserError(
                f"cannot hard-link {source} into {target}: they are on different file systems; "
                "use --mode copy or move, or a --sort-into folder on the same file system"
            ) from None
        if e.errno in _NO_HARD_LINKS:
            raise UserError(f"cannot hard-link {source} into {target}: {e.strerror}; use --mode copy") from None
        raise


def _copy_new(source: Path, target: Path) -> None:
    """Copy to a hidden file beside the target, flush it to disk, then put it in place without
    overwriting: the target is either complete or absent."""
    partial = target.with_name(f".{target.name}.catsdogs-partial")  # a rerun reuses the name
    try:
        shutil.copy2(source, partial)
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        try:
            os.link(partial, target)
        except OSError as e:
            if e.errno not in _NO_HARD_LINKS:
                raise
            if os.path.lexists(target):  # a file system without hard links: check, then rename
                raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
            os.rename(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _move_new(source: Path, target: Path) -> None:
    """Put the file in place (a hard link, or a flushed copy across file systems), and only
    then remove the source."""
    try:
        os.link(source, target)
    except OSError as e:
        if e.errno != errno.EXDEV and e.errno not in _NO_HARD_LINKS:
            raise
        _copy_new(source, target)
    _remove_source(source)


def _remove_source(source: Path) -> None:
    source.unlink()


def check_sort_target(folder: Path, target: Path) -> None:
    """Refuse a target whose label folders overlap the labelled folder (a move could eat it)."""
    folder = folder.resolve()
    for label in LABELS:
        place = (target / label).resolve()
        if place == folder or folder in place.parents or place in folder.parents:
            raise UserError(f"--sort-into {target} overlaps {folder}: choose a folder outside it")


def _start_sorting_job(job_file: Path, job: dict, table: Path, overwrite: bool) -> bool:
    """Record what is being sorted; True when this continues an interrupted job with the same
    settings whose table is already complete (so only the sorting is left)."""
    if job_file.exists():
        previous = json.loads(job_file.read_text())
        if previous == job and not overwrite:
            log.info("continuing the interrupted sorting recorded in %s", job_file)
            return table.exists()
        if not overwrite:
            raise UserError(
                f"{job_file} records an unfinished sorting with other settings: rerun it with "
                "the same ones to finish it, or pass --overwrite to start over"
            )
    elif table.exists() and not overwrite:
        raise UserError(f"{table} already exists: pass --overwrite to replace it")
    atomic_write_json(job_file, job)
    return False


# --- the command ---------------------------------------------------------------------------


@dataclass
class LabelSummary:
    table: Path
    rows: int
    labels: dict[str, int]
    unreadable: list[tuple[str, str]]  # (path, error): left where they are
    processed: int  # images predicted by this run (0 when only the sorting was left)
    predict_seconds: float
    seconds: float  # the whole run
    sorted_into: Path | None = None
    mode: str = "copy"
    sorting: SortCounts | None = None

    @property
    def images_per_second(self) -> float:
        return self.processed / self.predict_seconds if self.predict_seconds else 0.0

    def describe(self) -> str:
        shown = [label for label in LABELS if label in self.labels or label != "uncertain"]
        counts = ", ".join(f"{self.labels.get(label, 0)} {label}" for label in shown)
        lines = [
            f"{self.rows} images: {counts}; {len(self.unreadable)} errors -> {self.table}",
            f"{self.processed} predicted at {self.images_per_second:.1f} img/s; {self.seconds:.1f} s in all",
        ]
        if self.sorting is not None:
            s = self.sorting
            lines.append(
                f"sorted into {self.sorted_into} ({self.mode}): {s.placed} placed, "
                f"{s.already} already there, {len(s.problems)} left in place"
            )
            lines += _listed("left in place", s.problems)
        lines += _listed("unreadable, left where they are", self.unreadable)
        return "\n".join(lines)


def _listed(title: str, items: list[tuple[str, str]]) -> list[str]:
    if not items:
        return []
    lines = [f"{title}:"] + [f"  {path}: {why}" for path, why in items[:SHOWN]]
    if len(items) > SHOWN:
        lines.append(f"  ... and {len(items) - SHOWN} more")
    return lines


def label_folder(options: LabelOptions) -> LabelSummary:
    """Write the labels table for every image under `options.folder` and, with `sort_into`,
    sort the files by label; an interrupted run finishes when rerun with the same options."""
    started = time.perf_counter()
    out = options.out or default_table(options.folder)
    check_table_name(out)
    check_labelling(options.labelling)
    if options.mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, not {options.mode}")
    if not options.folder.is_dir():
        raise UserError(f"{options.folder} is not a folder")
    only_sorting_left = False
    job_file = out.with_name(out.name + ".sorting.json")
    if options.sort_into is not None:
        check_sort_target(options.folder, options.sort_into)
        job = {
            "folder": str(options.folder.resolve()),
            "model": str(Path(options.model).resolve()),
            "sort_into": str(options.sort_into.resolve()),
            "mode": options.mode,
            "threshold": options.labelling.threshold,
            "uncertain": list(options.labelling.uncertain) if options.labelling.uncertain else None,
        }
        only_sorting_left = _start_sorting_job(job_file, job, out, options.overwrite)

    processed = 0
    if not only_sorting_left:
        predicted = predict_folder(
            PredictOptions(options.model, options.folder, out, options.overwrite, options.engine, options.labelling)
        )
        processed = predicted.processed
    predict_seconds = time.perf_counter() - started

    sorter = Sorter(options.folder, options.sort_into, options.mode) if options.sort_into else None
    labels: dict[str, int] = {}
    unreadable: list[tuple[str, str]] = []
    rows = 0
    for chunk in iter_table(out):
        for path, label, status, error in zip(chunk["path"], chunk["label"], chunk["status"], chunk["error"]):
            rows += 1
            if status != "ok":
                unreadable.append((path, error))
                continue
            labels[label] = labels.get(label, 0) + 1
            if sorter:
                sorter.place(path, label)
    if sorter:
        job_file.unlink(missing_ok=True)  # done: a rerun is a new job
    return LabelSummary(
        out, rows, labels, unreadable, processed, predict_seconds, time.perf_counter() - started,
        options.sort_into, options.mode, sorter.counts if sorter else None,
    )  # fmt: skip

"""`catsdogs label`: label every image under a folder with the batch engine and, if asked, sort
the files into `DIR/<label>/<path inside the folder>`, never overwriting one. A job file
(`<table>.sorting.json`) says what is being sorted and every step can be repeated, so a rerun
finishes with each image once. The rules on links, moves, locks and corrections are the README's
"Safety" and docs/commands.md's: `Sorter`, `_remove_source`, `sorting_lock` and `relabeller` keep them."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import filecmp
import logging
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ..models.checkpoint import model_paths
from ..inference.engine import check_engine_options, predict_folder, refuse_a_finished_table, table_lock
from ..errors import UserError
from ..files import atomic_write_json, folder_lock, plain_relative, shown
from ..options import LabelOptions, PredictOptions, check_options
from ..data.corrections import CorrectionsFile, read_corrections
from ..side_files import job_file as table_record, parts_folder, read_record, sorted_file, sorting_file
from ..inference.tables import ANSWERS, confidences, iter_table, label_for

log = logging.getLogger(__name__)

LABELS = (*ANSWERS, "uncertain")  # the folders of --sort-into
SKIP = "skip"  # a person's label for an unusable or undecided photo: such images stay where they are
SHOWN = 20  # problems listed in the summary; the table has them all
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}


@dataclass
class SortCounts:
    placed: int = 0  # put in place by this run
    already: int = 0  # found in place (an earlier, interrupted run)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, why it stayed)


class NotSorted(Exception):
    """This image stays where it is; the message says why."""


class Sorter:
    """Places files from `folder` at `target/<label>/<relative path>` by copy, hard link or move."""

    def __init__(self, folder: Path, target: Path, mode: str):
        self.folder, self.target, self.mode = folder, target, mode
        target.mkdir(parents=True, exist_ok=True)
        self._real_folder = Path(os.path.realpath(folder))
        self._real_target = Path(os.path.realpath(target))  # the user's own link to DIR is followed
        self.counts = SortCounts()

    def place(self, relative: str, label: str) -> None:
        source = self.folder / relative
        try:
            _check_row(relative, label)
            if self.mode == "move" and os.path.lexists(source):
                self._check_movable(source, relative)
            target = self._target_folder(label, relative) / PurePosixPath(relative).name
            if os.path.lexists(target):
                self._already_there(source, target)
            elif not os.path.lexists(source):
                raise NotSorted("missing: neither in the folder nor sorted")
            else:
                try:
                    {"copy": _copy_new, "link": _link_new, "move": self._move_new}[self.mode](source, target)
                except FileExistsError:  # appeared meanwhile: decide again, never overwrite
                    self._already_there(source, target)
                    return
                self.counts.placed += 1
        except NotSorted as e:
            self.counts.problems.append((relative, str(e)))
        except OSError as e:
            self.counts.problems.append((relative, f"not sorted: {e.strerror or e}"))

    def _target_folder(self, label: str, relative: str) -> Path:
        """`target/<label>/<folders of relative>`, made where missing; never through a link."""
        folder = self._real_target
        for name in (label, *PurePosixPath(relative).parts[:-1]):
            folder = folder / name
            try:
                os.mkdir(folder)
            except FileExistsError:
                mode = os.lstat(folder).st_mode
                if stat.S_ISLNK(mode):
                    raise NotSorted(f"not sorted: {folder} is a link (links in the sorted folder are not followed)") from None
                if not stat.S_ISDIR(mode):
                    raise NotSorted(f"not sorted: {folder} is in the way (not a folder)") from None
        return folder

    def _check_movable(self, source: Path, relative: str) -> None:
        """A move only takes regular files that are inside the folder, reached without a link."""
        mode = os.lstat(source).st_mode
        if stat.S_ISLNK(mode):
            raise NotSorted("a link: left in place (a move never takes what a link points to)")
        if not stat.S_ISREG(mode):
            raise NotSorted("not a regular file: left in place")
        if Path(os.path.realpath(source)) != self._real_folder / relative:
            raise NotSorted("inside a linked folder: left in place (a move never takes what a link points to)")

    def _already_there(self, source: Path, target: Path) -> None:
        """The target exists: the work of an earlier run (finish it) or another file (keep it)."""
        if not os.path.lexists(source):  # placed (and, for a move, removed) by an earlier run
            self.counts.already += 1
            return
        if os.path.islink(target):
            raise NotSorted(f"not sorted: {target} is a link")
        if os.path.isdir(target):
            raise NotSorted(f"not sorted: {target} is a folder, in the place of the photo")
        if not os.path.isfile(target):
            raise NotSorted(f"not sorted: {target} is not a regular file, in the place of the photo")
        if not (os.path.samefile(source, target) or filecmp.cmp(source, target, shallow=False)):
            raise NotSorted(f"not sorted: {target} exists with other content")
        if self.mode == "move":
            _remove_source(source, target)  # the earlier run stopped between placing and removing
        partial_copy(target).unlink(missing_ok=True)  # a killed copy's leftover, if any
        self.counts.already += 1

    def _move_new(self, source: Path, target: Path) -> None:
        """Put the file in place (a hard link, or a flushed copy across file systems), and only
        then remove the source."""
        try:
            os.link(source, target)
        except OSError as e:
            if e.errno != errno.EXDEV and e.errno not in _NO_HARD_LINKS:
                raise
            _copy_new(source, target)
        _remove_source(source, target)


def _remove_source(source: Path, target: Path) -> None:
    """Remove a moved file's source, only once `target` is proven to be its copy: a regular
    file, in another folder than the source (not the same file reached another way), and the
    same file (a hard link) or the same bytes."""
    placed = os.lstat(target)
    if not stat.S_ISREG(placed.st_mode):
        raise NotSorted(f"not sorted: {target} is not a regular file; the source stays")
    source_folder, target_folder = os.stat(source.parent), os.stat(target.parent)
    if (source_folder.st_dev, source_folder.st_ino) == (target_folder.st_dev, target_folder.st_ino):
        raise NotSorted(f"not sorted: {target} is the source itself, reached another way; the source stays")
    original = os.lstat(source)
    hard_link = (original.st_dev, original.st_ino) == (placed.st_dev, placed.st_ino)
    if not (placed.st_nlink >= 2 if hard_link else filecmp.cmp(source, target, shallow=False)):
        raise NotSorted(f"not sorted: {target} differs from the source; the source stays")
    source.unlink()


def _link_new(source: Path, target: Path) -> None:
    try:
        # fails if target exists: never overwrites; a linked photo's file is linked, not the link
        os.link(os.path.realpath(source), target)  # Linux's link() would link the link itself
    except OSError as e:
        if e.errno == errno.EXDEV:
            raise UserError(
                f"cannot hard-link {source} into {target}: they are on different file systems; "
                "use --mode copy or move, or a --sort-into folder on the same file system"
            ) from None
        if e.errno in _NO_HARD_LINKS:
            raise UserError(f"cannot hard-link {source} into {target}: {e.strerror}; use --mode copy") from None
        raise


def _check_row(relative: str, label: str) -> None:
    """Only what the walk gives (a relative path without hidden or special parts) and the labels
    this tool writes are sorted: a table edited by hand cannot point anywhere else."""
    if label not in LABELS:
        raise NotSorted(f"not sorted: the table says {label!r}, not one of {', '.join(LABELS)}")
    if not plain_relative(relative) or any(part.startswith(".") for part in PurePosixPath(relative).parts):
        raise NotSorted("not sorted: not a path the folder's walk gives")


def partial_copy(target: Path) -> Path:
    """The name this tool copies to before a file is put in place (a leftover of a killed run
    is replaced, never written through): hidden, named by a digest of the target's name, so that
    it fits the file system's limit on a name (255 bytes) whatever the photo's name."""
    digest = hashlib.sha1(os.fsencode(target.name)).hexdigest()[:24]
    return target.with_name(f".catsdogs-partial-{digest}")


def _copy_new(source: Path, target: Path) -> None:
    """Copy to a hidden file beside the target, flush it to disk, then put it in place without
    overwriting: the target is either complete or absent."""
    partial = partial_copy(target)
    try:
        partial.unlink(missing_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)  # the umask applies
        with open(source, "rb") as original, os.fdopen(fd, "wb") as copy:
            shutil.copyfileobj(original, copy, 1 << 20)
            copy.flush()
            os.fsync(copy.fileno())
        shutil.copystat(source, partial)
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


def check_sort_into(target: Path, folder: Path, mode: str) -> None:
    """Refuse, before minutes of predicting, a --sort-into whose label folders overlap the
    labelled folder (a move could eat it), one that cannot become a folder, or one a hard link
    cannot reach (another file system)."""
    resolved = folder.resolve()
    for label in LABELS:
        place = (target / label).resolve()
        if place == resolved or resolved in place.parents or place in resolved.parents:
            raise UserError(f"--sort-into {target} overlaps {resolved}: choose a folder outside it")
    if target.is_symlink() and not target.exists():
        raise UserError(f"--sort-into {target} is a link to nothing")
    existing = next(p for p in (target, *target.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"--sort-into {target}: {existing} is not a folder")
    if existing != target and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--sort-into {target}: cannot create folders in {existing}")
    if mode == "link" and os.stat(existing).st_dev != os.stat(folder).st_dev:
        raise UserError(
            f"cannot hard-link the photos of {shown(folder)} into {shown(target)}: they are on different file "
            "systems; use --mode copy or move, or a --sort-into folder on the same file system"
        )


def _sorting_left(job_file: Path, job: dict, table: Path, overwrite: bool) -> tuple[bool, str]:
    """Whether only the sorting is left, and this sorting's id: an interrupted one of the same settings
    keeps its id, and only its sorting is left once the table whose record names that id is complete
    (an earlier run's table of the same settings is not it); any other sorting gets a new id."""
    if not job_file.exists():
        return False, secrets.token_hex(8)
    previous = read_record(job_file)  # None when damaged: it cannot be continued
    if previous is not None and {k: v for k, v in previous.items() if k != "sorting"} == job:
        sorting = previous.get("sorting") or secrets.token_hex(8)
        record = read_record(table_record(table)) or {}
        finished = record.get("sorting") == sorting and table.exists() and not parts_folder(table).exists()
        if finished:
            log.info("continuing the interrupted sorting recorded in %s", job_file)
        return finished, sorting  # else its table is gone or unfinished: predict (resume), then sort
    if not overwrite:
        what = "is damaged" if previous is None else "records an unfinished sorting with other settings"
        raise UserError(
            f"{job_file} {what}: rerun with the settings of the interrupted run to finish it, "
            "or pass --overwrite to start over"
        )
    job_file.unlink()
    return False, secrets.token_hex(8)


def relabeller(corrections: Mapping[str, str]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A function that gives the rows of one shard the corrections' labels (`source` human, the
    confidence the model's probability of that label, none for `skip`; the rest `model`;
    unreadable rows keep no label and no source)."""

    def relabel(frame: pd.DataFrame) -> pd.DataFrame:
        # A plain lookup: pandas would turn the names into UTF-8 strings, which some names are not.
        paths = frame["path"].astype(object).tolist()
        human = pd.Series([corrections.get(path) for path in paths], index=frame.index, dtype=object)
        ok = (frame["status"] == "ok").to_numpy(dtype=bool, na_value=False)
        corrected = ok & human.notna().to_numpy()
        p = frame["p_dog"].to_numpy(dtype=float, na_value=np.nan)
        label = np.where(corrected, human.to_numpy(dtype=object, na_value=""), frame["label"].to_numpy(dtype=object))
        # a person's skip is no answer of the model's: no confidence (p_dog stays the model's)
        confidence = np.where(label == SKIP, np.nan, confidences(label, p))
        frame = frame.copy()
        frame["label"] = pd.array(label, dtype="string[python]")
        frame["confidence"] = np.where(corrected, confidence, frame["confidence"].to_numpy(dtype=float, na_value=np.nan))
        frame.insert(frame.columns.get_loc("label") + 1, "source",
                     pd.array(np.where(corrected, "human", np.where(ok, "model", "")), dtype="string[python]"))  # fmt: skip
        return frame

    return relabel


@dataclass
class CorrectionCounts:
    file: Path
    given: int  # rows of the corrections file
    applied: int = 0  # readable images of the table that a person labelled
    changed: int = 0  # of those, where the person's label is not what the model said
    unknown: int = 0  # corrections that name no readable image of the table: ignored

    def describe(self) -> str:
        return (
            f"corrections {shown(self.file)}: {self.applied} applied ({self.changed} changed the model's label), "
            f"{self.unknown} name no readable image here"
        )


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
    corrections: CorrectionCounts | None = None

    @property
    def images_per_second(self) -> float:
        return self.processed / self.predict_seconds if self.predict_seconds else 0.0

    def describe(self) -> str:
        present = [label for label in (*LABELS, SKIP) if label in self.labels or label in ("cat", "dog")]
        counts = ", ".join(f"{self.labels.get(label, 0)} {label}" for label in present)
        lines = [
            f"{self.rows} images: {counts}; {len(self.unreadable)} errors -> {shown(self.table)}",
            f"{self.processed} predicted at {self.images_per_second:.1f} img/s; {self.seconds:.1f} s in all",
        ]
        if self.corrections is not None:
            lines.append(self.corrections.describe())
        if self.sorting is not None:
            s = self.sorting
            lines.append(
                f"sorted into {shown(self.sorted_into)} ({self.mode}): {s.placed} placed, "
                f"{s.already} already there, {len(s.problems)} left in place"
            )
            if self.labels.get(SKIP):
                lines.append(f"{self.labels[SKIP]} images a person labelled skip: not sorted, left where they are")
            lines += _listed("left in place", s.problems)
        lines += _listed("unreadable, left where they are", self.unreadable)
        return "\n".join(lines)


def _listed(title: str, items: list[tuple[str, str]]) -> list[str]:
    if not items:
        return []
    lines = [f"{title}:"] + [f"  {shown(path)}: {shown(why)}" for path, why in items[:SHOWN]]
    if len(items) > SHOWN:
        lines.append(f"  ... and {len(items) - SHOWN} more")
    return lines


def label_folder(options: LabelOptions) -> LabelSummary:
    """Write the labels table for every image under `options.folder` and, with `sort_into`,
    sort the files by label; an interrupted run finishes when rerun with the same options."""
    started = time.perf_counter()
    out = options.out or Path("submissions") / f"labels-{options.folder.resolve().name}.csv"  # not in the folder
    corrections = read_corrections(options.corrections, options.folder) if options.corrections is not None else None
    predict = PredictOptions(
        options.model, options.folder, out, options.overwrite, options.engine, options.labelling,
        made_from={"corrections_sha256": corrections.sha256} if corrections else {},
    )  # fmt: skip
    check_options(options)
    check_engine_options(predict)
    if options.sort_into is not None:
        check_sort_into(options.sort_into, options.folder, options.mode)
    # a run that only labels reads the folder as a copy does: no move may take its files meanwhile
    with table_lock(out), sorting_lock(options.folder, options.mode if options.sort_into else "copy"):
        return _label_locked(options, predict, corrections, started)


@contextlib.contextmanager
def sorting_lock(folder: Path, mode: str) -> Iterator[None]:
    """The locks of a run that sorts (or reads) `folder`: a move holds the folder alone (a run
    reading it would find its files gone), copies and links share it; and every run shares each
    folder around it, which a move of that folder holds alone, so that a move of a folder and
    runs on a folder inside it never meet. A folder inside one a copy reads can still be moved
    (its files then become "file not found" rows of the copy's table: nothing is lost)."""
    real = Path(os.path.realpath(folder))
    with contextlib.ExitStack() as held:
        for around in reversed(real.parents):
            held.enter_context(folder_lock(around, (
                f"another catsdogs run is moving the files of {shown(around)}, which holds {shown(folder)}: "
                "wait for it"
            ), shared=True, if_readable=True))  # fmt: skip
        if mode == "move":
            busy = (
                f"another catsdogs run is sorting {shown(folder)} or a folder inside it (it holds a lock on the "
                "folder): move when it has finished"
            )
        else:
            busy = f"another catsdogs run is moving the files of {shown(folder)} (it holds a lock on the folder): wait for it"
        held.enter_context(folder_lock(real, busy, shared=mode != "move"))
        yield


def _label_locked(
    options: LabelOptions, predict: PredictOptions, corrections: CorrectionsFile | None, started: float
) -> LabelSummary:
    out = predict.out
    job_file = sorting_file(out)
    job = {
        "folder": str(options.folder.resolve()),
        "models": [str(path.resolve()) for path in model_paths(options.model)],
        "sort_into": str(options.sort_into.resolve()) if options.sort_into else None,
        "mode": options.mode,
        "threshold": options.labelling.threshold,
        "uncertain": list(options.labelling.uncertain) if options.labelling.uncertain else None,
    }
    if corrections:  # only then: the job files of earlier versions stay equal
        job["corrections"] = corrections.record()
    only_sorting_left = False
    if options.sort_into is not None:
        only_sorting_left, job["sorting"] = _sorting_left(job_file, job, out, options.overwrite)
        if not only_sorting_left:
            refuse_a_finished_table(predict)  # before the job is recorded: a refused run leaves none to finish
        atomic_write_json(job_file, job)  # from here on, a rerun finishes this job, the sorting included
        predict = replace(predict, made_from=predict.made_from | {"sorting": job["sorting"]})  # in its table's record
    processed = 0
    if not only_sorting_left:
        relabel = relabeller(corrections.labels) if corrections else None
        try:
            processed = predict_folder(predict, locked=True, relabel=relabel).processed
        except UserError:  # refused: nothing is sorted yet
            job_file.unlink(missing_ok=True)
            raise
    predict_seconds = time.perf_counter() - started
    sorter = Sorter(options.folder, options.sort_into, options.mode) if options.sort_into else None

    labels: dict[str, int] = {}
    unreadable: list[tuple[str, str]] = []
    rows = 0
    counts = CorrectionCounts(corrections.path, len(corrections.labels)) if corrections else None
    try:
        for chunk in iter_table(out):
            source = chunk["source"] if "source" in chunk.columns else [None] * len(chunk)
            for path, p_dog, label, status, error, by in zip(
                chunk["path"], chunk["p_dog"], chunk["label"], chunk["status"], chunk["error"], source
            ):
                rows += 1
                if status != "ok":
                    unreadable.append((path, error))
                    continue
                labels[label] = labels.get(label, 0) + 1
                if counts and by == "human":
                    counts.applied += 1
                    counts.changed += label != label_for(p_dog, options.labelling)
                if sorter and label != SKIP:
                    sorter.place(path, label)
    except UserError:
        if sorter and not (sorter.counts.placed or sorter.counts.already):
            job_file.unlink(missing_ok=True)  # refused before anything was placed: nothing to finish
        raise
    if sorter:  # done: a rerun is a new job; `catsdogs review` finds moved images by the record
        atomic_write_json(sorted_file(out), job)
        job_file.unlink(missing_ok=True)
    if counts:
        counts.unknown = counts.given - counts.applied
        if counts.unknown:
            log.warning("%d corrections name no readable image of %s: ignored", counts.unknown, shown(options.folder))
    return LabelSummary(
        out, rows, labels, unreadable, processed, predict_seconds, time.perf_counter() - started,
        options.sort_into, options.mode, sorter.counts if sorter else None, counts,
    )  # fmt: skip

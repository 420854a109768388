"""Shards: a folder's image files cut into units of work with deterministic ids (by their names:
`iter_shards`), each written to `<table>.parts/` with, once complete, a JSON done marker
(img2dataset's design). A rerun skips marked shards, so an interrupted run resumes with no
duplicated and no missing rows; a marker records its files' names, sizes and times as the walk
found them (with --checksum their SHA-256 too), and a shard whose files changed since is
predicted again. When every shard is done they are merged into the table (atomically)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..models.checkpoint import Checkpoint
from ..errors import UserError
from ..files import atomic_write_json, sha256, shown
from ..data.images import HiddenEntries, iter_image_files
from ..options import PredictOptions
from .runtimes import runtime_name
from ..side_files import (
    SHARD_FILE, job_file, parts_folder, parts_job_file, read_record, removed_parts_folder, shard_marker, shard_markers,
    shard_name, shard_rows_file,
)  # fmt: skip
from .tables import Row, merge_shards, write_shard

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    id: int  # from its first file's name (iter_shards): a change elsewhere in the folder leaves it
    paths: list[str]  # relative to the folder
    states: list[str]  # file_state of each path, taken when the walk found it (before it is read)
    hashes: list[str] | None = None  # with --checksum, content_hash of each path, taken with its state

    @property
    def name(self) -> str:
        return shard_name(self.id)

    @property
    def files(self) -> str:
        """Its file names, sizes and modification times: another answer means its rows are out of date."""
        return _digest(self.paths, self.states)

    @property
    def contents(self) -> str | None:
        """Its file names and SHA-256s (None without --checksum): another answer means a file
        holds other bytes, whatever its size and time say."""
        return None if self.hashes is None else _digest(self.paths, self.hashes)


def _digest(paths: list[str], values: list[str]) -> str:
    digest = hashlib.sha1()
    for path, value in zip(paths, values, strict=True):
        digest.update(f"{path}\0{value}\n".encode(errors="surrogateescape"))
    return digest.hexdigest()


def file_state(path: Path) -> str:
    """What a row of `path` depends on besides its name: its size and modification time (or
    why they cannot be read). Another state means another content, to be predicted again."""
    try:
        stat = path.stat()
        return f"{stat.st_size} {stat.st_mtime_ns}"
    except OSError as e:
        return f"error {e.errno}"


def content_hash(path: Path) -> str:
    """The SHA-256 of a regular file's bytes (or why it has none): a FIFO or a device named like
    a photo is not opened, as reading it could wait forever."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return "not a regular file"
        return sha256(path)
    except OSError as e:
        return f"error {e.errno}"


def files_fingerprint(folder: Path, hidden: HiddenEntries | None = None, checksum: bool = False) -> dict[str, str]:
    """`files`: the folder's image files' names, sizes and times, hashed (with `checksum`, also
    `contents`: their names and SHA-256s); another answer means a table of it is out of date."""
    paths = [path.relative_to(folder).as_posix() for path in iter_image_files(folder, hidden)]
    found = {"files": _digest(paths, [file_state(folder / path) for path in paths])}
    if checksum:
        found["contents"] = _digest(paths, [content_hash(folder / path) for path in paths])
    return found


SHARD_IDS = 10**12  # a shard's id is below this: its first name's hash modulo it, then the next free one


def iter_shards(
    folder: Path, shard_size: int, hidden: HiddenEntries | None = None, files: Sequence[str] | None = None,
    checksum: bool = False,
) -> Iterator[Shard]:  # fmt: skip
    """The folder's image files in their stable order (or `files`, relative to it, in theirs), in
    shards of about `shard_size` with their files' states as the walk found them (and, with
    `checksum`, their SHA-256); `hidden` counts the hidden names left out.

    A shard begins at the first file and at every file whose name hashes to 0 modulo `shard_size`,
    and is named by that file: a file added or removed changes only the shard it falls in (splits
    it, or joins it to the one before), and every other shard keeps its files and its id. Sizes
    vary around `shard_size` (more than 5 times it: under 1%)."""
    found = iter_image_files(folder, hidden) if files is None else (folder / name for name in files)
    taken: set[int] = set()  # the ids given, so that two shards never share one
    shard: Shard | None = None
    for file in found:
        path = file.relative_to(folder).as_posix()
        name_hash = hashlib.blake2b(path.encode(errors="surrogateescape"), digest_size=16).digest()
        if shard is None or int.from_bytes(name_hash[:8], "big") % shard_size == 0:
            if shard is not None:
                yield shard
            shard_id = int.from_bytes(name_hash[8:], "big") % SHARD_IDS
            while shard_id in taken:
                shard_id = (shard_id + 1) % SHARD_IDS
            taken.add(shard_id)
            shard = Shard(shard_id, [], [], [] if checksum else None)
        shard.paths.append(path)
        shard.states.append(file_state(file))
        if shard.hashes is not None:
            shard.hashes.append(content_hash(file))
    if shard is not None:
        yield shard


class PartsFolder:
    """`<table>.parts/`: job.json (what is being computed), then per shard a rows file and,
    once that is complete, its done marker."""

    def __init__(self, table: Path, job: dict, overwrite: bool):
        self.table, self.path = table, parts_folder(table)
        job_file = parts_job_file(table)
        if self.path.is_symlink() or self.path.exists():
            if self.path.is_symlink() or not self.path.is_dir():
                raise UserError(f"{self.path} is in the way of this run's work folder: move it away")
            if job_file.exists():
                # a damaged record is never equal to a job: --overwrite starts over
                previous = read_record(job_file) or {"damaged": str(job_file)}
            elif not any(self.path.iterdir()):
                previous = None  # stopped before it recorded its job
            elif all(SHARD_FILE.fullmatch(p.name) for p in self.path.iterdir()):
                # a run killed while it removed the folder (job.json may go first): its shards'
                # settings are unknown, so they are not kept; --overwrite starts over
                previous = {"damaged": f"{job_file} is gone"}
            else:
                raise UserError(f"{self.path} is not a catsdogs work folder: move it away")
            if overwrite or (previous != job and not any(shard_markers(table))):
                # --overwrite, or a run that stopped before it finished a shard: nothing to keep
                log.info("starting over, discarding the interrupted run in %s", self.path)
                discard_parts(table)
            elif previous in (job, None):
                log.info("resuming the interrupted run in %s", self.path)
            else:
                raise UserError(
                    f"{self.path} holds an interrupted run with other settings: rerun it with "
                    "the same ones to finish it, or pass --overwrite to start over"
                )
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(job_file, job)
        self.job = job

    def rows_file(self, shard: Shard) -> Path:
        return shard_rows_file(self.table, shard.id)

    def done(self, shard: Shard) -> dict | None:
        """The done marker of `shard` if its rows are of its files as they are now (the same
        names, sizes and modification times; with --checksum the same SHA-256 too); None if it is
        to be predicted (again). Markers of shards the folder no longer has are never asked for:
        their rows are left out of the table and go with the parts folder."""
        marker = shard_marker(self.table, shard.id)
        if not marker.exists():
            return None
        stats = read_record(marker)
        if stats is None or not isinstance(stats.get("files"), str):  # cut short or edited: not trusted
            why = "its done marker is damaged"
        elif not self.rows_file(shard).is_file():
            why = "its rows file is gone"
        elif stats["files"] != shard.files:
            why = "its files changed since (one added, removed, or of another size or time)"
        elif shard.contents is not None and stats.get("contents") != shard.contents:
            why = "a file holds other bytes" if stats.get("contents") else "the interrupted run took no checksums"
        else:
            return stats
        log.info("predicting %s again: %s", shard.name, why)
        marker.unlink()  # until its new rows are complete, this shard is not done
        return None

    def finish(self, shard: Shard, rows: list[Row], seconds: float) -> dict:
        write_shard(self.rows_file(shard), rows)
        errors = sum(r.status == "error" for r in rows)
        stats = {
            "files": shard.files,
            "contents": shard.contents,
            "rows": len(rows),
            "ok": len(rows) - errors,
            "errors": errors,
            "labels": dict(Counter(r.label for r in rows if r.label)),
            "seconds": round(seconds, 3),
        }
        atomic_write_json(shard_marker(self.table, shard.id), stats)
        return stats


@dataclass(frozen=True)
class FinishedShard:
    """All the rows of one shard, in its order, as an engine hands them back."""

    shard: Shard
    rows: list[Row]
    seconds: float


@dataclass
class Summary:
    table: Path
    rows: int
    errors: int
    labels: dict[str, int]
    seconds: float  # of this run (a resumed run counts only its own work)
    processed: int  # rows computed by this run
    engine: str = "local"
    startup_seconds: float = 0.0  # to the first rows: loading the model (and starting Ray)
    startup_rows: int = 0  # rows that arrived with the first results
    runtimes: str = ""  # what ran the model(s): keras, openvino int8, ... (runtimes.runtime_name)

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds else 0.0

    @property
    def images_per_second_after_startup(self) -> float:
        seconds = self.seconds - self.startup_seconds
        return (self.processed - self.startup_rows) / seconds if seconds > 0 else 0.0

    def describe(self) -> str:
        counts = [f"{n} {label}" for label, n in sorted(self.labels.items())]
        errors = f"{self.errors} error{'' if self.errors == 1 else 's'}"
        text = (
            f"{self.rows} images ({'; '.join([', '.join(counts)] * bool(counts) + [errors])}) -> {shown(self.table)}; "
            f"{self.processed} predicted in {self.seconds:.1f} s ({self.images_per_second:.1f} img/s"
            + (f", {self.runtimes})" if self.runtimes else ")")
        )
        if self.engine != "local" and self.processed:
            text += f"; {self.engine.capitalize()}: {self.startup_seconds:.1f} s start-up"
            if self.processed > self.startup_rows:
                text += f", then {self.images_per_second_after_startup:.1f} img/s"
        return text


def job_description(options: PredictOptions, checkpoints: list[Checkpoint]) -> dict:
    """What a table is computed from (the models of an ensemble in order): a rerun continues an
    interrupted run only if this is equal."""
    models = []
    for checkpoint in checkpoints:
        model = checkpoint.model_path.resolve()
        stat = model.stat()
        models.append({
            "model": str(model), "model_size": stat.st_size, "model_mtime": stat.st_mtime_ns,
            "runtime": runtime_name(checkpoint, options.engine.runtime),
        })  # fmt: skip
    job = {
        "folder": str(options.folder.resolve()),
        "models": models,
        "tta": options.engine.tta,
        "shard_size": options.engine.shard_size,
        "threshold": options.labelling.threshold,
        "uncertain": list(options.labelling.uncertain) if options.labelling.uncertain else None,
        "content_check": content_job(options.labelling),
        "files_sha1": None if options.files is None else hashlib.sha1(
            "\n".join(options.files).encode(errors="surrogateescape")
        ).hexdigest(),
    }
    job.update(options.made_from)  # label's corrections, a validation table's model and split
    return job


def content_job(labelling) -> dict | None:
    """The content check's settings as a job records them, its fixed ones (content.py) too."""
    if not labelling.content_check:
        return None
    from ..models.content import BOTH_CANDIDATES, PRESENT, SIDES_APART

    return {
        "neither_below": labelling.neither_below, "both_above": labelling.both_above,
        "both_candidates": BOTH_CANDIDATES, "sides_apart": SIDES_APART, "present": PRESENT,
    }  # fmt: skip


def merge_table(
    options: PredictOptions, parts: PartsFolder, shard_files: list[Path],
    relabel: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> None:  # fmt: skip
    """Once every shard is done: merge them, in order, into the table (each shard's rows
    through `relabel`, if given), record its job beside it and remove the parts folder."""
    if not shard_files:
        discard_parts(options.out)
        raise UserError(f"no image files in {options.folder}")
    job_file(options.out).unlink(missing_ok=True)  # a table being replaced loses its record first
    merge_shards(shard_files, options.out, relabel)
    atomic_write_json(job_file(options.out), parts.job)
    discard_parts(options.out)


def discard_parts(table: Path) -> None:
    """Remove `<table>.parts/`, renamed aside first so that no run finds half of it (a marker
    without its rows); a leftover at that name went when the table's lock was taken (table_lock)."""
    os.rename(parts_folder(table), removed_parts_folder(table))
    shutil.rmtree(removed_parts_folder(table))


def remove_removed_parts(table: Path) -> None:
    """Under the table's lock, remove the work folder a stopped run left half-discarded
    (side_files.removed_parts_folder): only a work folder's files; anything else is refused."""
    leftover = removed_parts_folder(table)
    if not (leftover.exists() or leftover.is_symlink()):
        return
    if leftover.is_symlink() or not leftover.is_dir():
        raise UserError(f"{shown(leftover)} is in the way of this run's work folder: move it away")
    if not all(SHARD_FILE.fullmatch(p.name) or p.name == "job.json" for p in leftover.iterdir()):
        raise UserError(f"{shown(leftover)} is not a catsdogs work folder: move it away")
    log.info("removing %s, left by a run stopped while it removed its work folder", shown(leftover))
    shutil.rmtree(leftover)


def count(stats: list[dict]) -> tuple[int, int, dict[str, int]]:
    """Rows, errors and rows per label of the shards whose done markers are `stats`."""
    labels: Counter[str] = Counter()
    for s in stats:
        labels.update(s["labels"])
    return sum(s["rows"] for s in stats), sum(s["errors"] for s in stats), dict(labels)

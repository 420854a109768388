"""The batch inference engine: stream a folder of any size through the model and write the
per-image results table.

Files are found as the walk goes and cut into shards of a fixed size in a stable order. Each
shard's rows go to their own file in `<table>.parts/` with, once that file is complete, a small
JSON marker; a rerun of the same command skips marked shards, so an interrupted run (Ctrl-C,
kill -9) resumes with no duplicated and no missing rows; `--overwrite` starts over instead. When
every shard is done they are merged into the table (atomically) and the parts folder is removed.
A lock file beside the table (`<table>.lock`) keeps a second run from writing the same table.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .files import atomic_write_json, exclusive_lock, shown
from .images import DecodedImage, ImageError, decode_many, iter_image_files, load_image
from .model import find_checkpoint
from .options import Labelling, PredictOptions
from .runtimes import load_runtime
from .tables import Row, check_labelling, check_table_name, error_row, label_for, merge_shards, ok_row, write_shard

log = logging.getLogger(__name__)


class Predictor:
    """The model, loaded once: decoded images in, probabilities of dog out. The same class
    serves the local engine and the Ray engine's actors."""

    def __init__(self, model: str | Path, tta: bool = False, runtime: str = "auto", threads: int | None = None):
        self.checkpoint = find_checkpoint(model)
        self.image_size = self.checkpoint.image_size
        self.tta = tta
        self.runtime = load_runtime(self.checkpoint, runtime, threads)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (n, size, size, 3) -> (n,) p_dog; with TTA, averaged with the mirrored images."""
        p = self.runtime(pixels)
        if self.tta:
            p = (p + self.runtime(np.ascontiguousarray(pixels[:, :, ::-1]))) / 2
        return p

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


# --- shards and resume ---------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    index: int
    paths: list[str]  # relative to the folder

    @property
    def name(self) -> str:
        return f"shard-{self.index:06d}"

    @property
    def fingerprint(self) -> str:
        return hashlib.sha1("\n".join(self.paths).encode(errors="surrogateescape")).hexdigest()


def files_fingerprint(folder: Path) -> str:
    """What the folder's image files are: their names, sizes and modification times, hashed;
    a different answer means a table of this folder is out of date."""
    digest = hashlib.sha1()
    for path in iter_image_files(folder):
        try:
            stat = path.stat()
            state = f"{stat.st_size} {stat.st_mtime_ns}"
        except OSError as e:
            state = f"error {e.errno}"
        digest.update(f"{path.relative_to(folder)}\0{state}\n".encode(errors="surrogateescape"))
    return digest.hexdigest()


def iter_shards(folder: Path, shard_size: int) -> Iterator[Shard]:
    """The folder's image files, in their stable order, cut into shards of `shard_size`."""
    relative = (p.relative_to(folder).as_posix() for p in iter_image_files(folder))
    for index in itertools.count():
        paths = list(itertools.islice(relative, shard_size))
        if not paths:
            return
        yield Shard(index, paths)


class PartsFolder:
    """`<table>.parts/`: job.json (what is being computed), then per shard a rows file and,
    once that is complete, its done marker."""

    def __init__(self, table: Path, job: dict, overwrite: bool):
        self.path = table.with_name(table.name + ".parts")
        job_file = self.path / "job.json"
        if self.path.is_symlink() or self.path.exists():
            if self.path.is_symlink() or not self.path.is_dir():
                raise UserError(f"{self.path} is in the way of this run's work folder: move it away")
            if job_file.exists():
                try:
                    previous = json.loads(job_file.read_text())
                except (ValueError, UnicodeError):
                    previous = {"damaged": str(job_file)}  # never equal to a job: --overwrite starts over
            elif not any(self.path.iterdir()):
                previous = None  # stopped before it recorded its job
            else:
                raise UserError(f"{self.path} is not a catsdogs work folder: move it away")
            if overwrite:
                log.info("--overwrite: starting over, discarding the interrupted run in %s", self.path)
                shutil.rmtree(self.path)
            elif previous in (job, None):
                log.info("resuming the interrupted run in %s", self.path)
            else:
                raise UserError(
                    f"{self.path} holds an interrupted run with other settings: rerun it with "
                    "the same ones to finish it, or pass --overwrite to start over"
                )
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(job_file, job)

    def rows_file(self, shard: Shard) -> Path:
        return self.path / f"{shard.name}.csv"

    def done(self, shard: Shard) -> dict | None:
        marker = self.path / f"{shard.name}.json"
        if not marker.exists():
            return None
        stats = json.loads(marker.read_text())
        if stats["fingerprint"] != shard.fingerprint:
            raise UserError(
                f"the folder changed since the interrupted run in {self.path} "
                "(different files): pass --overwrite to start over"
            )
        return stats

    def finish(self, shard: Shard, rows: list[Row], seconds: float) -> dict:
        write_shard(self.rows_file(shard), rows)
        errors = sum(r.status == "error" for r in rows)
        stats = {
            "fingerprint": shard.fingerprint,
            "rows": len(rows),
            "ok": len(rows) - errors,
            "errors": errors,
            "labels": {label: sum(r.label == label for r in rows) for label in {r.label for r in rows if r.label}},
            "seconds": round(seconds, 3),
        }
        atomic_write_json(self.path / f"{shard.name}.json", stats)
        return stats


# --- the local engine ----------------------------------------------------------------------


@dataclass
class Summary:
    table: Path
    rows: int
    errors: int
    labels: dict[str, int]
    seconds: float  # of this run (a resumed run counts only its own work)
    processed: int  # rows computed by this run

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds else 0.0

    def describe(self) -> str:
        counts = ", ".join(f"{n} {label}" for label, n in sorted(self.labels.items()))
        return (
            f"{self.rows} images ({counts}; {self.errors} errors) -> {shown(self.table)}; "
            f"{self.processed} predicted in {self.seconds:.1f} s ({self.images_per_second:.1f} img/s)"
        )


def job_description(options: PredictOptions, predictor_checkpoint_path: Path) -> dict:
    model = predictor_checkpoint_path.resolve()
    stat = model.stat()
    return {
        "folder": str(options.folder.resolve()),
        "model": str(model),
        "model_size": stat.st_size,
        "model_mtime": stat.st_mtime_ns,
        "tta": options.engine.tta,
        "shard_size": options.engine.shard_size,
        "runtime": options.engine.runtime,
        "threshold": options.labelling.threshold,
        "uncertain": list(options.labelling.uncertain) if options.labelling.uncertain else None,
    }


def check_engine_options(options: PredictOptions) -> None:
    """Refuse bad settings before any work starts (the command line refuses them earlier)."""
    check_table_name(options.out)
    check_labelling(options.labelling)
    engine = options.engine
    for name in ("batch_size", "workers", "shard_size"):
        if getattr(engine, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(engine, name)}")
    if engine.runtime_threads is not None and engine.runtime_threads < 1:
        raise UserError(f"--runtime-threads must be at least 1, not {engine.runtime_threads}")
    if not options.folder.is_dir():
        raise UserError(f"{options.folder} is not a folder")


def table_lock(table: Path):
    """The lock that one run writing `table` holds (see `exclusive_lock`)."""
    table.parent.mkdir(parents=True, exist_ok=True)
    return exclusive_lock(table.with_name(table.name + ".lock"), str(table))


def predict_folder(options: PredictOptions, predictor: Predictor | None = None, *, locked: bool = False) -> Summary:
    """Write the results table for every image under `options.folder` (resuming if a run with
    the same settings was interrupted) and return counts and speed. `locked`: the caller holds
    the table's lock already."""
    check_engine_options(options)
    if not locked:
        with table_lock(options.out):
            return predict_folder(options, predictor, locked=True)
    if options.out.exists() and not options.overwrite:
        raise UserError(f"{options.out} already exists: pass --overwrite to replace it")
    engine = options.engine
    if engine.engine == "ray":
        from .ray_engine import predict_folder_ray  # Ray is an optional extra

        if predictor is not None:
            raise ValueError("the Ray engine loads its own predictor in every actor")
        return predict_folder_ray(options)
    predictor = predictor or Predictor(options.model, engine.tta, engine.runtime, engine.runtime_threads)
    parts = PartsFolder(options.out, job_description(options, predictor.checkpoint.model_path), options.overwrite)

    started = time.perf_counter()
    all_shards: list[Path] = []
    stats: list[dict] = []
    processed = 0
    with Progress(options) as bar:
        todo: deque[Shard] = deque()

        def pending_paths() -> Iterator[Path]:
            """Paths of shards not done yet, registering each shard as it starts."""
            for shard in iter_shards(options.folder, engine.shard_size):
                all_shards.append(parts.rows_file(shard))
                done = parts.done(shard)
                if done:
                    stats.append(done)
                    bar.update(done["rows"])
                    continue
                todo.append(shard)
                yield from (options.folder / p for p in shard.paths)

        rows: list[Row] = []
        shard_started = time.perf_counter()
        decoded = decode_many(pending_paths(), predictor.image_size, engine.workers, window=4 * engine.batch_size)
        for chunk in _chunks(decoded, engine.batch_size):
            relative = [p.relative_to(options.folder).as_posix() for p, _ in chunk]
            rows += predictor.rows(relative, [d for _, d in chunk], options.labelling)
            processed += len(chunk)
            bar.update(len(chunk))
            while todo and len(rows) >= len(todo[0].paths):
                shard = todo.popleft()
                n = len(shard.paths)
                stats.append(parts.finish(shard, rows[:n], time.perf_counter() - shard_started))
                rows = rows[n:]
                shard_started = time.perf_counter()
    return finish_table(options, parts, all_shards, stats, time.perf_counter() - started, processed)


def finish_table(
    options: PredictOptions,
    parts: PartsFolder,
    shard_files: list[Path],
    stats: list[dict],
    seconds: float,
    processed: int,
) -> Summary:
    """Once every shard is done (by either engine): merge them into the table, remove the
    parts folder, and count."""
    if not shard_files:
        shutil.rmtree(parts.path)
        raise UserError(f"no image files in {options.folder}")
    merge_shards(shard_files, options.out)
    shutil.rmtree(parts.path)
    labels: dict[str, int] = {}
    for s in stats:
        for label, n in s["labels"].items():
            labels[label] = labels.get(label, 0) + n
    return Summary(
        options.out,
        rows=sum(s["rows"] for s in stats),
        errors=sum(s["errors"] for s in stats),
        labels=labels,
        seconds=seconds,
        processed=processed,
    )


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class Progress:
    """A tqdm bar whose total (hence time left) appears once a background walk has counted
    the files; the walk never holds more than one directory listing."""

    def __init__(self, options: PredictOptions):
        self.options = options

    def __enter__(self):
        from tqdm import tqdm

        self.bar = tqdm(unit="img", desc="predict", disable=not self.options.engine.progress, smoothing=0.1)
        self._stop = threading.Event()
        threading.Thread(target=self._count, daemon=True).start()
        return self.bar

    def _count(self) -> None:
        total = 0
        for total, _ in enumerate(iter_image_files(self.options.folder), start=1):
            if self._stop.is_set():
                return
        self.bar.total = total
        self.bar.refresh()

    def __exit__(self, *exc):
        self._stop.set()
        self.bar.close()

"""The batch inference driver: stream a folder of any size through the model into the per-image
results table. One driver, interchangeable engines (img2dataset's "distributors"): it locks the
table, walks the folder into shards, skips the done ones and hands the rest to the engine named
in `ENGINES`; an engine only computes rows, the driver writes every shard, then the table. The
engine contract (`distributor(options, predictor=None)`): docs/architecture.md."""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..models.checkpoint import find_checkpoints
from ..errors import UserError
from ..files import exclusive_lock, made_folder, plain_relative, remove_unfinished_writes, shown
from ..data.images import HiddenEntries, iter_image_files
from ..options import ENGINES, PredictOptions, check_options
from .predictor import Predictor
from .runtimes import runtime_name
from .shards import (
    FinishedShard, PartsFolder, Shard, Summary, count, iter_shards, job_description, merge_table, remove_removed_parts,
)  # fmt: skip
from ..side_files import job_file, lock_file, parts_job_file, sorted_file, sorting_file
from .tables import check_band, check_table_name

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def check_engine_options(options: PredictOptions) -> None:
    """Refuse bad settings before any work starts (the command line refuses them earlier)."""
    check_options(options)
    check_table_name(options.out)
    check_band(options.labelling.uncertain)
    if not options.folder.is_dir():
        raise UserError(f"{options.folder} is not a folder")
    for name in options.files or ():
        if not plain_relative(name):
            raise UserError(f"{shown(name)} is not a plain path inside {shown(options.folder)}")


@contextlib.contextmanager
def table_lock(table: Path, *also: Path) -> Iterator[None]:
    """The lock of one run writing `table` (and `also`, a command's other outputs), in the table's
    folder (made if missing, removed if left empty). Once held, what a killed run left
    half-written of these files or the table's side files (atomic_path's temporary, a work
    folder being removed) is removed."""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(made_folder(table.parent))
        except (FileExistsError, NotADirectoryError):  # the system would say "File exists"
            blocking = next((p for p in (table.parent, *table.parent.parents) if p.is_symlink() or p.exists()), table.parent)
            what = "a link that leads to no folder" if blocking.is_symlink() else "a file, not a folder"
            raise UserError(f"cannot write {shown(table)}: {shown(blocking)} is {what}") from None
        held.enter_context(exclusive_lock(lock_file(table), str(table)))
        remove_unfinished_writes([table, job_file(table), sorting_file(table), sorted_file(table), *also])
        remove_removed_parts(table)
        yield


def refuse_a_finished_table(options: PredictOptions) -> None:
    """A table already there is replaced only with --overwrite, but for one beside its parts folder:
    a run killed before it recorded its job merged it, and the rerun resumes (or refuses) as any."""
    if options.out.exists() and not options.overwrite and not parts_job_file(options.out).exists():
        raise UserError(f"{options.out} already exists: pass --overwrite to replace it")


def predict_folder(
    options: PredictOptions,
    predictor: Predictor | None = None,
    *,
    locked: bool = False,
    relabel: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> Summary:
    """Write the results table for every image under `options.folder` (or its `files`),
    resuming if a run with the same settings was interrupted, and return counts and speed.
    `predictor`: a loaded model for the local engine; `locked`: the caller holds the table's lock
    already; `relabel`: a function that rewrites each shard's rows as they are merged into the
    table (label's corrections, evaluate's true labels; `options.made_from` names its inputs)."""
    check_engine_options(options)
    if not locked:
        with table_lock(options.out):
            return predict_folder(options, predictor, locked=True, relabel=relabel)
    refuse_a_finished_table(options)
    started = time.perf_counter()
    engine = importlib.import_module(ENGINES[options.engine.engine])
    distribute = engine.distributor(options, predictor)  # the model is loaded or checked here
    checkpoints = predictor.checkpoints if predictor else find_checkpoints(options.model, options.engine.runtime)
    parts = PartsFolder(options.out, job_description(options, checkpoints), options.overwrite)

    shard_files: list[Path] = []
    stats: list[dict] = []
    hidden = HiddenEntries()  # counted by the walk, said once the bar is gone
    processed, startup_seconds, startup_rows = 0, 0.0, 0
    with progress(options) as bar:

        def pending() -> Iterator[Shard]:
            """Shards not done yet, in order, registering every shard as the walk finds it."""
            settings = options.engine
            for shard in iter_shards(options.folder, settings.shard_size, hidden, options.files, settings.checksum):
                shard_files.append(parts.rows_file(shard))
                done = parts.done(shard)
                if done:
                    stats.append(done)
                    bar.update(done["rows"])
                else:
                    yield shard

        for event in distribute(pending()):
            if isinstance(event, FinishedShard):
                stats.append(parts.finish(event.shard, event.rows, event.seconds))
                continue
            if not processed:
                startup_seconds, startup_rows = time.perf_counter() - started, event
            processed += event
            bar.update(event)
    hidden.log(options.folder)
    merge_table(options, parts, shard_files, relabel)
    rows, errors, labels = count(stats)
    seconds = time.perf_counter() - started
    runtimes = " + ".join(runtime_name(c, options.engine.runtime) for c in checkpoints)
    return Summary(
        options.out, rows, errors, labels, seconds, processed, options.engine.engine, startup_seconds, startup_rows,
        runtimes,
    )  # fmt: skip


@contextlib.contextmanager
def progress(options: PredictOptions) -> Iterator:
    """A tqdm bar whose total (hence time left) appears once a background walk has counted
    the files; the walk never holds more than one directory listing."""
    from tqdm import tqdm

    bar = tqdm(unit="img", desc="predict", disable=not options.engine.progress, smoothing=0.1)
    stop = threading.Event()

    def count_files() -> None:
        total = len(options.files) if options.files is not None else 0
        if options.files is None:
            for total, _ in enumerate(iter_image_files(options.folder), start=1):
                if stop.is_set():
                    return
        bar.total = total
        bar.refresh()

    if options.engine.progress:  # no bar, no second walk of the folder
        threading.Thread(target=count_files, daemon=True).start()
    try:
        yield bar
    finally:
        stop.set()
        bar.close()

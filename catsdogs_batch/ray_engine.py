"""The Ray Data engine: the local engine's shards, predictor and results table, with the
images spread over a pool of Ray actors (on a cluster, or on a Ray started on this machine).

The driver walks the folder and cuts it into the same shards as the local engine
(`iter_shards`). The pending shards' files become a Ray dataset of (shard, position, path) in
blocks of one batch; `map_batches` runs `PredictorActor` (one `Predictor` per actor, loaded
once). Rows come back in any order: the driver files each under its shard and position, and
writes a shard (file and done marker, via `PartsFolder`) as soon as all its rows are in, so an
interrupted run resumes, with either engine, exactly as a local one. A batch whose actor died
is rerun by Ray on a restarted actor; rows are keyed by position, so none is lost or doubled.

Workers read images and the model by path: on a cluster, the folder and the model must be at
the same path on every node (a shared filesystem). The results table is written by the driver.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from .engine import PartsFolder, Predictor, Progress, Shard, Summary, finish_table, iter_shards, job_description
from .errors import UserError
from .options import PredictOptions
from .tables import COLUMNS, DTYPES, Row

log = logging.getLogger(__name__)

INSTALL_HINT = "--engine ray needs Ray: pip install '.[ray]' (or pip install 'ray[data]')"
LOCAL_OBJECT_STORE_BYTES = 500 * 1024**2  # only paths and rows travel through it


def import_ray():
    """The `ray` module with Ray Data, or a UserError that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return ray


class PredictorActor:
    """One actor of the pool: loads the model once, then turns batches of paths into rows."""

    def __init__(self, options: PredictOptions):
        engine = options.engine
        self.options = options
        self.predictor = Predictor(options.model, engine.tta, engine.runtime, actor_threads(options))

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """{shard, position, path} -> the same keys, the batch's seconds and the Row columns."""
        started = time.perf_counter()
        paths = [str(p) for p in batch["path"]]
        rows = self.predictor.predict_files(self.options.folder, paths, self.options.labelling)
        table = rows_to_arrow(rows)
        seconds = (time.perf_counter() - started) / len(rows)
        table = table.append_column("shard", pa.array(batch["shard"], pa.int64()))
        table = table.append_column("position", pa.array(batch["position"], pa.int64()))
        return table.append_column("seconds", pa.array(np.full(len(rows), seconds)))


def actor_threads(options: PredictOptions) -> int:
    """Model threads per actor, and CPUs it reserves: --runtime-threads, else one (an actor per CPU)."""
    return options.engine.runtime_threads or 1


def rows_to_arrow(rows: list[Row]) -> pa.Table:
    """Rows as an Arrow table with the results table's column types (None -> null)."""
    frame = pd.DataFrame([r.__dict__ for r in rows], columns=COLUMNS).astype(DTYPES)
    return pa.Table.from_pandas(frame, preserve_index=False)


@dataclass
class RaySummary(Summary):
    startup_seconds: float = 0.0  # Ray start (or connection) and the actors' model loading, to the first rows
    startup_rows: int = 0  # rows that arrived with the first results

    @property
    def images_per_second_after_startup(self) -> float:
        seconds = self.seconds - self.startup_seconds
        return (self.processed - self.startup_rows) / seconds if seconds > 0 else 0.0

    def describe(self) -> str:
        ray = f"Ray: {self.startup_seconds:.1f} s start-up"
        if self.processed > self.startup_rows:
            ray += f", then {self.images_per_second_after_startup:.1f} img/s"
        return f"{super().describe()}; {ray}"


def predict_folder_ray(options: PredictOptions) -> Summary:
    """`predict_folder` on a Ray actor pool: same shards, same resume, same table."""
    import_ray()
    started = time.perf_counter()
    # Actors run in other folders (and machines): they get absolute paths.
    options = replace(options, model=Path(options.model).resolve(), folder=options.folder.resolve())
    # Loaded once here too, so that a model that cannot be loaded is a one-line error before
    # any actor starts (an actor's failure arrives as a Ray traceback).
    checkpoint = Predictor(options.model, options.engine.tta, options.engine.runtime).checkpoint
    parts = PartsFolder(options.out, job_description(options, checkpoint.model_path), options.overwrite)
    shard_files: list[Path] = []
    stats: list[dict] = []
    pending: dict[int, Shard] = {}
    for shard in iter_shards(options.folder, options.engine.shard_size):
        shard_files.append(parts.rows_file(shard))
        done = parts.done(shard)
        if done:
            stats.append(done)
        else:
            pending[shard.index] = shard
    processed, startup_seconds, startup_rows = 0, 0.0, 0
    if pending:
        with ray_cluster(options.engine.ray_address), Progress(options) as bar:
            bar.update(sum(s["rows"] for s in stats))
            for n, shard_stats in stream_shards(options, pending, parts):
                if not processed:
                    startup_seconds, startup_rows = time.perf_counter() - started, n
                processed += n
                bar.update(n)
                stats += shard_stats
    summary = finish_table(options, parts, shard_files, stats, time.perf_counter() - started, processed)
    return RaySummary(**vars(summary), startup_seconds=startup_seconds, startup_rows=startup_rows)


def stream_shards(
    options: PredictOptions, pending: dict[int, Shard], parts: PartsFolder
) -> Iterator[tuple[int, list[dict]]]:
    """Run the pending shards through the actor pool; yield (rows received, stats of the shards
    just written) as results arrive."""
    ray = import_ray()
    received: dict[int, dict[int, Row]] = {index: {} for index in pending}
    seconds = dict.fromkeys(pending, 0.0)
    with _ray_data_quiet(ray):  # before the dataset is made: it keeps the settings of then
        dataset = predictions(ray, options, pending)
        for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            new, finished = 0, []
            for record in table.to_pylist():
                shard, position = record.pop("shard"), record.pop("position")
                seconds_per_row = record.pop("seconds")
                rows = received.get(shard)
                if rows is None or position in rows:
                    continue  # a retried batch's copy of rows already in (or already written)
                rows[position] = Row(**record)
                seconds[shard] += seconds_per_row
                new += 1
                if len(rows) == len(pending[shard].paths):
                    ordered = [rows[p] for p in range(len(rows))]
                    finished.append(parts.finish(pending[shard], ordered, seconds[shard]))
                    del received[shard]
            yield new, finished
    if received:
        raise RuntimeError(f"Ray returned no rows for some files of shards {sorted(received)}")


def predictions(ray, options: PredictOptions, pending: dict[int, Shard]):
    """The Ray dataset of the pending files' rows, computed by a pool of `PredictorActor`s."""
    blocks = file_blocks(pending, options.engine.batch_size)
    threads = actor_threads(options)
    actors = max(1, min(int(ray.cluster_resources().get("CPU", 1)) // threads, len(blocks)))
    log.debug("%d batches of files over %d actors of %d threads", len(blocks), actors, threads)
    # Ray Data's actors default to max_restarts=-1 and max_task_retries=-1: an actor that dies
    # is restarted and its batch rerun.
    return ray.data.from_arrow(blocks).map_batches(
        PredictorActor,
        fn_constructor_args=(options,),
        batch_size=options.engine.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=threads,
    )


def file_blocks(pending: dict[int, Shard], batch_size: int) -> list[pa.Table]:
    """The pending shards' files as Arrow blocks of one batch each: shard, position, path."""
    files = ((s.index, position, path) for s in pending.values() for position, path in enumerate(s.paths))
    blocks = []
    while chunk := list(itertools.islice(files, batch_size)):
        shard, position, path = (list(column) for column in zip(*chunk))
        blocks.append(pa.table({"shard": shard, "position": position, "path": path}))
    return blocks


@contextlib.contextmanager
def ray_cluster(address: str | None) -> Iterator[None]:
    """Join the Ray cluster at `address` ('auto', 'ray://host:port'; RAY_ADDRESS when None), or
    else start Ray on this machine; shut down only a Ray started here. A Ray already connected
    in this process is used as it is."""
    ray = import_ray()
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    verbose = log.isEnabledFor(logging.DEBUG)
    quiet = {"logging_level": logging.INFO if verbose else logging.ERROR, "log_to_driver": verbose}
    try:
        if address is None:
            ray.init(
                num_cpus=os.cpu_count(), object_store_memory=LOCAL_OBJECT_STORE_BYTES, include_dashboard=False, **quiet
            )
        else:
            # Ship this package's code to the workers; its dependencies must be installed there.
            ray.init(address, runtime_env={"py_modules": [str(Path(__file__).parent)]}, **quiet)
    except ConnectionError as e:
        raise UserError(f"cannot connect to the Ray cluster at {address}: {e}".splitlines()[0]) from None
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _ray_data_quiet(ray) -> Iterator[None]:
    """Our progress bar instead of Ray Data's; Ray Data's logging only with --verbose (its
    errors still arrive as exceptions)."""
    context = ray.data.DataContext.get_current()
    logger = logging.getLogger("ray.data")
    bars, level = context.enable_progress_bars, logger.level
    context.enable_progress_bars = False
    if not log.isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        context.enable_progress_bars = bars
        logger.setLevel(level)

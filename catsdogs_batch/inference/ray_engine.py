"""The Ray Data engine: the pending shards a window at a time (bounded memory) as a dataset of
(shard, position, path) in blocks of one batch, mapped by a pool of `PredictorActor`s, each with
one `Predictor`. Rows come back in any order and are filed by shard and position, so a batch Ray
reruns on a restarted actor loses or doubles none, and a shard is handed back once all its rows
are in. Names travel escaped (tables.utf8_name), so names that are not UTF-8 survive. Workers
read images and models by path: on a cluster, the same path on every node (docs/architecture.md)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..models.checkpoint import find_checkpoints
from ..errors import UserError
from ..options import PredictOptions
from .predictor import Predictor
from .runtimes import check_model
from .shards import FinishedShard, Shard
from .tables import COLUMNS, DTYPES, Row, name_from_utf8, utf8_name

log = logging.getLogger(__name__)
PACKAGE = Path(__file__).resolve().parents[1]  # catsdogs_batch/, what a cluster's workers import

WINDOW_FILES = 100_000  # at least this many files (whole shards) per Ray dataset: the actor pool starts once per window


def import_ray():
    """The `ray` module with Ray Data, or a UserError that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UserError("--engine ray needs Ray: pip install '.[ray]' (or pip install 'ray[data]')") from None
    return ray


def distributor(
    options: PredictOptions, predictor: Predictor | None = None
) -> Callable[[Iterator[Shard]], Iterator[int | FinishedShard]]:
    """Check the model here (a model that cannot be used is one line, not an actor's
    traceback) without loading TensorFlow: the actors load it."""
    if predictor is not None:
        raise ValueError("the Ray engine loads its own predictor in every actor")
    import_ray()
    checkpoints = find_checkpoints(options.model, options.engine.runtime)
    for checkpoint in checkpoints:
        check_model(checkpoint, options.engine.runtime)
    # Actors run in other folders (and machines): they get absolute paths, of the model files
    # chosen here (a run folder's fastest export, see checkpoint.find_checkpoint).
    models = tuple(checkpoint.model_path.resolve() for checkpoint in checkpoints)
    options = replace(options, model=models, folder=options.folder.resolve())
    return lambda shards: distribute(options, shards)


def distribute(options: PredictOptions, shards: Iterator[Shard]) -> Iterator[int | FinishedShard]:
    """Predict the shards window by window on one Ray (started or joined once)."""
    windows = shard_windows(shards, WINDOW_FILES)
    first = next(windows, None)
    if first is None:
        return  # every shard was done already: no Ray to start
    ray = import_ray()
    with ray_cluster(options.engine.ray.address), _ray_data_quiet(ray):
        for window in itertools.chain([first], windows):
            yield from distribute_window(ray, options, {shard.id: shard for shard in window})


def shard_windows(shards: Iterator[Shard], files: int) -> Iterator[list[Shard]]:
    """Whole shards, in order, taken as they come in lists of at least `files` files (the last:
    what is left)."""
    window: list[Shard] = []
    count = 0
    for shard in shards:
        window.append(shard)
        count += len(shard.paths)
        if count >= files:
            yield window
            window, count = [], 0
    if window:
        yield window


class PredictorActor:
    """One actor of the pool: loads the model once, then turns batches of paths into rows."""

    def __init__(self, options: PredictOptions):
        engine = options.engine
        self.options = options
        self.predictor = Predictor(
            options.model, engine.tta, engine.runtime, actor_threads(options), options.labelling.content_check
        )  # it decodes on its one CPU (predict_files: one thread, OpenCV's own threads off)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """{shard, position, path} -> the same keys, the batch's seconds and the Row columns."""
        started = time.perf_counter()
        paths = [name_from_utf8(str(p)) for p in batch["path"]]
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
    """Rows as an Arrow table: numbers typed (None -> null), text as UTF-8 that keeps whatever a
    name holds (tables.utf8_name, as in a Parquet table; see `row_from_arrow`)."""
    columns = {}
    for name in COLUMNS:
        values = [getattr(row, name) for row in rows]
        if DTYPES[name].startswith("string"):
            columns[name] = pa.array([utf8_name(v) for v in values], pa.string())
        else:
            columns[name] = pa.array(values, pa.int64() if DTYPES[name] == "Int64" else pa.float64())
    return pa.table(columns)


def row_from_arrow(record: dict) -> Row:
    return Row(**{
        name: name_from_utf8(record[name]) if DTYPES[name].startswith("string") else record[name]
        for name in COLUMNS
    })  # fmt: skip


def distribute_window(ray, options: PredictOptions, pending: dict[int, Shard]) -> Iterator[int | FinishedShard]:
    """Run one window of shards through an actor pool; yield rows received and shards completed
    as results arrive."""
    received: dict[int, dict[int, Row]] = {index: {} for index in pending}
    seconds = dict.fromkeys(pending, 0.0)
    for table in predictions(ray, options, pending).iter_batches(batch_size=None, batch_format="pyarrow"):
        new = 0
        finished = []
        for record in table.to_pylist():
            shard, position = record["shard"], record["position"]
            rows = received.get(shard)
            if rows is None or position in rows:
                continue  # a retried batch's copy of rows already in (or already handed back)
            rows[position] = row_from_arrow(record)  # (which reads the Row columns only)
            seconds[shard] += record["seconds"]
            new += 1
            if len(rows) == len(pending[shard].paths):
                finished.append(FinishedShard(pending[shard], [rows[p] for p in range(len(rows))], seconds[shard]))
                del received[shard]
        yield new
        yield from finished
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
    """The pending shards' files as Arrow blocks of one batch each: shard, position, path (tables.utf8_name)."""
    files = ((s.id, position, path) for s in pending.values() for position, path in enumerate(s.paths))
    blocks = []
    while chunk := list(itertools.islice(files, batch_size)):
        shard, position, path = (list(column) for column in zip(*chunk))
        names = [utf8_name(p) for p in path]
        blocks.append(pa.table({"shard": shard, "position": position, "path": pa.array(names, pa.string())}))
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
        if address is None:  # "local": a new Ray, even where `ray start` left one to join
            # Ray sizes its object store itself (RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION).
            ray.init("local", num_cpus=os.cpu_count(), include_dashboard=False, **quiet)
        else:
            # Ship this package's code to the workers; its dependencies must be installed there.
            ray.init(address, runtime_env={"py_modules": [str(PACKAGE)]}, **quiet)
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

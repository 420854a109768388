"""The local engine: this process. Decoding threads read images ahead (bounded, in order) while
the model runs on batches; rows are handed back shard by shard."""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from ..data.images import decode_many
from ..options import PredictOptions
from .predictor import Predictor
from .shards import FinishedShard, Shard


def distributor(
    options: PredictOptions, predictor: Predictor | None = None
) -> Callable[[Iterator[Shard]], Iterator[int | FinishedShard]]:
    """Load the model once (unless given), then predict shards with it."""
    engine = options.engine
    predictor = predictor or Predictor(
        options.model, engine.tta, engine.runtime, engine.runtime_threads, options.labelling.content_check
    )
    return lambda shards: distribute(options, predictor, shards)


def distribute(options: PredictOptions, predictor: Predictor, shards: Iterator[Shard]) -> Iterator[int | FinishedShard]:
    engine = options.engine
    todo: deque[Shard] = deque()
    relative: deque[str] = deque()  # the table's path of each file handed to the decoders, in order

    def paths():
        for shard in shards:
            todo.append(shard)
            for path in shard.paths:
                relative.append(path)
                yield options.folder / path

    rows = []
    shard_started = time.perf_counter()
    decoded = decode_many(paths(), predictor.image_size, engine.workers, window=4 * engine.batch_size)
    for chunk in chunks(decoded, engine.batch_size):
        names = [relative.popleft() for _ in chunk]
        rows += predictor.rows(names, [d for _, d in chunk], options.labelling)
        yield len(chunk)
        while todo and len(rows) >= len(todo[0].paths):
            shard = todo.popleft()
            n = len(shard.paths)
            yield FinishedShard(shard, rows[:n], time.perf_counter() - shard_started)
            rows = rows[n:]
            shard_started = time.perf_counter()


def chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk

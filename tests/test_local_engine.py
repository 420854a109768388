"""The local engine (inference/local_engine.py): decoding threads and the model in this process,
driven here as the engine driver drives it, with shards made by hand: rows come back in each
shard's order, a shard at a time, with unreadable files as error rows, whatever the batch size
and the number of threads."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from catsdogs_batch.inference.local_engine import chunks, distribute, distributor
from catsdogs_batch.inference.predictor import Predictor
from catsdogs_batch.inference.shards import FinishedShard, Shard
from catsdogs_batch.options import EngineOptions, Labelling, PredictOptions

from conftest import write_image

# name -> what it holds: generated cats (reddish) and dogs (bluish) the tiny model was not trained on
PHOTOS = {"b/dog.1.jpg": "dog", "a/cat.1.png": "cat", "cat.2.jpg": "cat", "z.jpg": "dog", "dog.3.jpg": "dog"}


@pytest.fixture(scope="module")
def predictor(tiny_model) -> Predictor:
    return Predictor(tiny_model, runtime="keras")


@pytest.fixture
def folder(tmp_path) -> Path:
    for n, (name, kind) in enumerate(PHOTOS.items()):
        write_image(tmp_path / name, kind == "dog", seed=300 + n)
    (tmp_path / "notes.jpg").write_text("not a photo")
    return tmp_path


def shard(id: int, paths: list[str]) -> Shard:
    return Shard(id, paths, states=[""] * len(paths))  # the states are the driver's (resume), not the engine's


def options(folder: Path, **engine) -> PredictOptions:
    return PredictOptions(Path("unused"), folder, folder / "r.csv", engine=EngineOptions(progress=False, **engine))


def test_chunks_cut_any_iterable_into_batches_and_a_last_short_one():
    assert list(chunks(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunks(iter("ab"), 2)) == [["a", "b"]]
    assert list(chunks([], 4)) == []


def test_each_shard_comes_back_whole_in_its_order_after_the_rows_it_counted(predictor, folder):
    """Seven files in two shards, batches of 2: the counts of rows come as each batch is done,
    and a shard as soon as its last row is, its rows in the shard's order, not sorted."""
    first = shard(1, ["b/dog.1.jpg", "notes.jpg", "a/cat.1.png"])
    second = shard(2, ["z.jpg", "missing.jpg", "cat.2.jpg", "dog.3.jpg"])  # missing.jpg: deleted since the walk
    out = list(distribute(options(folder, batch_size=2, workers=2), predictor, iter([first, second])))

    # batches [b/dog.1, notes] [a/cat.1, z] [missing, cat.2] [dog.3]: the first shard is done with the second
    assert [x if isinstance(x, int) else x.shard.id for x in out] == [2, 2, 1, 2, 1, 2]
    done = [x for x in out if isinstance(x, FinishedShard)]
    assert [[row.path for row in d.rows] for d in done] == [first.paths, second.paths]
    assert all(d.seconds >= 0 for d in done)

    rows = {row.path: row for d in done for row in d.rows}
    for name, kind in PHOTOS.items():
        assert (rows[name].status, rows[name].label) == ("ok", kind), rows[name]
    for name in ("notes.jpg", "missing.jpg"):  # errors are rows too, and stop nothing
        row = rows[name]
        assert (row.status, row.p_dog, row.label) == ("error", None, "") and row.error
    assert rows["missing.jpg"].error == "file not found"


@pytest.mark.parametrize("workers, batch_size", [(1, 1), (3, 2), (4, 64)])
def test_the_rows_are_the_same_for_any_threads_and_batch_size(predictor, folder, workers, batch_size):
    shards = [shard(1, ["a/cat.1.png", "z.jpg"]), shard(2, ["notes.jpg"]), shard(3, ["b/dog.1.jpg", "cat.2.jpg", "dog.3.jpg"])]
    one_by_one = {
        path: predictor.predict_files(folder, [path], Labelling(content_check=False))[0] for s in shards for path in s.paths
    }  # each file on its own, decoded in this thread
    out = list(distribute(options(folder, batch_size=batch_size, workers=workers), predictor, iter(shards)))
    assert sum(x for x in out if isinstance(x, int)) == 6
    done = [x for x in out if isinstance(x, FinishedShard)]
    assert [d.shard.id for d in done] == [1, 2, 3]
    for d in done:
        assert [row.path for row in d.rows] == d.shard.paths
        for row in d.rows:
            expected = one_by_one[row.path]
            assert (row.label, row.status, row.width, row.height) == (expected.label, expected.status, expected.width, expected.height)
            assert row.p_dog == pytest.approx(expected.p_dog, abs=1e-5)


def test_the_decoders_are_threads_that_read_a_bounded_window_ahead(predictor, tmp_path):
    """40 one-file shards, batches of 2, 3 threads: the first batch comes after the decoders
    took the window (4 batches: 8 files) and the batch, not the whole folder."""
    for n in range(40):
        write_image(tmp_path / f"{n:02}.png", n % 2, size=16, seed=n)
    taken = []

    def shards():
        for n in range(40):
            taken.append(n)
            yield shard(n, [f"{n:02}.png"])

    run = distribute(options(tmp_path, batch_size=2, workers=3), predictor, shards())
    assert next(run) == 2
    assert 8 <= len(taken) <= 10, taken
    assert [t.name for t in threading.enumerate() if t.name.startswith("decode")]  # decoding off this thread
    rest = list(run)
    assert len(taken) == 40 and sum(x for x in rest if isinstance(x, int)) == 38
    assert [x.shard.id for x in rest if isinstance(x, FinishedShard)] == list(range(40))


def test_the_distributor_loads_the_model_once_unless_given_one(predictor, tiny_model, folder):
    given = options(folder, batch_size=4, workers=2, runtime="keras")
    given.model = tiny_model
    work = [shard(7, ["cat.2.jpg", "b/dog.1.jpg"])]
    with_its_own = [x for x in distributor(given)(iter(work)) if isinstance(x, FinishedShard)]
    with_ours = [x for x in distributor(given, predictor)(iter(work)) if isinstance(x, FinishedShard)]
    assert [[(r.path, r.label) for r in d.rows] for d in with_its_own] == [[("cat.2.jpg", "cat"), ("b/dog.1.jpg", "dog")]]
    assert [[(r.path, r.p_dog) for r in d.rows] for d in with_ours] == [[(r.path, r.p_dog) for r in d.rows] for d in with_its_own]

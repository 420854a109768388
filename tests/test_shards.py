"""inference/shards.py: the cut of a folder into shards, the photos' checksums, and what a job records."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from catsdogs_batch.options import Labelling

from conftest import write_image


@given(
    names=st.lists(st.text("abc", min_size=1, max_size=6), unique=True, max_size=120).map(sorted),
    change=st.text("abc", min_size=1, max_size=6),
    shard_size=st.integers(1, 8),
)
@settings(max_examples=150, deadline=None)
def test_a_change_to_the_files_touches_only_the_shards_it_falls_in(tmp_path_factory, names, change, shard_size):
    """The cut does not shift with an insertion or a removal: every shard (its id and its files)
    but at most two on each side is the same before and after."""
    from catsdogs_batch.inference.shards import iter_shards

    folder = tmp_path_factory.getbasetemp()  # the files need not exist: their state is an error
    changed = sorted(set(names) ^ {change})  # added if absent, removed if present

    def cut(files: list[str]) -> set[tuple[int, tuple[str, ...]]]:
        shards = list(iter_shards(folder, shard_size, files=files))
        assert [p for s in shards for p in s.paths] == files and len({s.id for s in shards}) == len(shards)
        return {(s.id, tuple(s.paths)) for s in shards}

    before, after = cut(names), cut(changed)
    assert len(before - after) <= 2 and len(after - before) <= 2


def test_checksums_read_only_regular_files(tmp_path):
    """A FIFO named like a photo is not opened to be hashed (it would wait for a writer forever);
    the walk goes on, and the engine makes its error row."""
    import threading

    from catsdogs_batch.inference.shards import iter_shards

    folder = tmp_path / "odd"
    write_image(folder / "a.jpg", 0)
    os.mkfifo(folder / "pipe.jpg")
    shards: list = []
    walk = threading.Thread(target=lambda: shards.extend(iter_shards(folder, 1, checksum=True)), daemon=True)
    walk.start()
    walk.join(timeout=10)
    assert not walk.is_alive(), "the walk hung on the FIFO"
    hashes = {path: h for s in shards for path, h in zip(s.paths, s.hashes, strict=True)}
    assert len(hashes["a.jpg"]) == 64 and hashes["pipe.jpg"] == "not a regular file"


def test_the_content_checks_settings_are_part_of_the_job(tmp_path):
    """A rerun with other thresholds, or without the check, is another job: its rows are not reused."""
    import json

    from catsdogs_batch.models.checkpoint import RUN_KIND, find_checkpoints
    from catsdogs_batch.options import PredictOptions
    from catsdogs_batch.inference.shards import job_description

    run = tmp_path / "run"  # what a job records of a model: its path, size and time (it is not loaded)
    run.mkdir()
    (run / "model.keras").write_bytes(b"a model")
    (run / "run.json").write_text(json.dumps({"kind": RUN_KIND, "image_size": 32}))

    def job(labelling: Labelling) -> dict:
        options = PredictOptions(run, tmp_path, tmp_path / "t.csv", labelling=labelling)
        return job_description(options, find_checkpoints(run))

    jobs = [job(Labelling(content_check=True)), job(Labelling(content_check=True, neither_below=0.5)),
            job(Labelling(content_check=True, both_above=0.9)), job(Labelling(content_check=False))]  # fmt: skip
    assert all(a != b for i, a in enumerate(jobs) for b in jobs[i + 1 :])
    assert job(Labelling(content_check=True)) == jobs[0]

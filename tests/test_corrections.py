"""The compact index that `label`, `train` and `audit` read a review's corrections into: the
same answers as a dict of path -> label, for millions of rows (its memory is measured by
scripts/benchmark_corrections.py, not here)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from catsdogs_batch.data import corrections as corrections_module
from catsdogs_batch.data.corrections import CorrectionsIndex, read_corrections
from catsdogs_batch.labelling.label import relabeller
from catsdogs_batch.inference.tables import DTYPES

RAW = b"caf\xe9.jpg".decode("utf-8", "surrogateescape")  # a name that is not UTF-8
ESCAPED = "caf\\xe9.jpg"  # the four characters \xe9: another name


def index_of(rows: list[tuple[str, str]]) -> CorrectionsIndex:
    builder = CorrectionsIndex.builder()
    for path, label in rows:
        builder[path] = label
    return builder.build()


def test_the_index_answers_as_a_dict_of_the_last_decisions():
    rows = [("cat.1.jpg", "dog"), ("sub/x.jpg", "skip"), (RAW, "cat"), ("cat.1.jpg", "cat"), (ESCAPED, "dog")]
    index = index_of(rows)
    assert index == dict(rows) and len(index) == 4
    assert (index["cat.1.jpg"], index.get(RAW), index.get(ESCAPED), index.get("café.jpg")) == ("cat", "cat", "dog", None)
    assert "sub/x.jpg" in index and "sub/y.jpg" not in index and "\ud800" not in index
    with pytest.raises(KeyError):
        index["nothing.jpg"]
    paths = ["sub/x.jpg", "a.jpg", RAW, "cat.1.jpg", ESCAPED, "\ud800"]
    assert index.get_many(paths).tolist() == ["skip", None, "cat", "cat", "dog", None]
    assert index_of([]) == {} and index_of([]).get_many(["a.jpg"]).tolist() == [None]


def test_paths_whose_hashes_collide_are_still_told_apart(monkeypatch):
    """The index finds a path by its hash, then compares its bytes: two names with one hash (here
    every name of a length) each keep their own label, and the last decision of each wins."""
    monkeypatch.setattr(corrections_module, "_hash", len)
    rows = [("a.jpg", "cat"), ("b.jpg", "dog"), ("a.jpg", "skip"), ("c.jpg", "dog"), ("b.jpg", "cat"), ("long.jpg", "dog")]
    index = index_of(rows)
    assert index == dict(rows) and len(index) == 4
    assert index.get_many(["c.jpg", "d.jpg", "b.jpg", "a.jpg", "long.jpg"]).tolist() == ["dog", None, "cat", "skip", "dog"]


def test_an_index_sent_to_another_process_answers_there(tmp_path):
    """Python's string hashes differ between processes: an unpickled index hashes its paths anew."""
    import pickle
    import subprocess
    import sys

    (tmp_path / "index.pickle").write_bytes(pickle.dumps(index_of([("a.jpg", "cat"), (RAW, "skip")])))
    code = (
        "import pickle, sys; index = pickle.load(open(sys.argv[1], 'rb')); "
        "print(index.get_many(['a.jpg', 'b.jpg', sys.argv[2]]).tolist())"
    )
    env = {"PYTHONHASHSEED": "12345", "PATH": ""}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "index.pickle"), RAW], capture_output=True,
                          text=True, errors="surrogateescape", env=env, timeout=60)  # fmt: skip
    assert done.stdout.strip() == "['cat', None, 'skip']", done.stderr


def test_label_reads_a_corrections_file_into_the_index_and_applies_it(tmp_path):
    """read_corrections streams the file (the labels and the SHA-256 of the same bytes) into the
    index, and label's relabeller gives each shard's rows their corrections."""
    path = tmp_path / "corrections.csv"
    data = "\ufeffpath,label\n" + "".join(f"album/IMG_{n:05d}.jpg,{('cat', 'dog', 'skip')[n % 3]}\n" for n in range(3000))
    data += f"album/IMG_00000.jpg,Dog\n{RAW},dog\n\n"
    path.write_bytes(data.encode("utf-8", "surrogateescape"))
    read = read_corrections(path, tmp_path)
    assert isinstance(read.labels, CorrectionsIndex) and len(read.labels) == 3001
    assert read.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (read.labels["album/IMG_00000.jpg"], read.labels["album/IMG_02999.jpg"], read.labels[RAW]) == ("dog", "skip", "dog")

    frame = pd.DataFrame({
        "path": pd.array(["album/IMG_00001.jpg", "album/IMG_00002.jpg", RAW, "other.jpg"], dtype="string[python]"),
        "id": [None] * 4,
        "p_dog": [0.1, 0.9, 0.2, 0.3], "label": ["cat", "dog", "cat", "cat"], "confidence": [0.9, 0.9, 0.8, 0.7],
        "imagenet_dog": [np.nan] * 4, "imagenet_cat": [np.nan] * 4, "imagenet_top": [""] * 4, "width": [48] * 4, "height": [48] * 4, "status": ["ok"] * 4, "error": [""] * 4,
    }).astype(DTYPES)  # fmt: skip
    relabelled = relabeller(read.labels)(frame)
    assert relabelled["label"].tolist() == ["dog", "skip", "dog", "cat"]
    assert relabelled["source"].tolist() == ["human", "human", "human", "model"]
    assert np.isnan(relabelled["confidence"][1]) and relabelled["confidence"][0] == pytest.approx(0.1)

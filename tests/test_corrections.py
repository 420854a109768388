"""A review's corrections as `label`, `train` and `audit` read them: the last decision of each
path, names that are not UTF-8 kept apart from their escapes, and the hash of the bytes read."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from catsdogs_batch.data.corrections import read_corrections
from catsdogs_batch.labelling.label import relabeller
from catsdogs_batch.inference.tables import DTYPES

RAW = b"caf\xe9.jpg".decode("utf-8", "surrogateescape")  # a name that is not UTF-8
ESCAPED = "caf\\xe9.jpg"  # the four characters \xe9: another name


def test_label_reads_a_corrections_file_into_the_index_and_applies_it(tmp_path):
    """read_corrections gives the last decision of each path (an escape is another name than the
    bytes it spells) and the SHA-256 of the bytes read, and label's relabeller gives each shard's
    rows their corrections."""
    path = tmp_path / "corrections.csv"
    data = "\ufeffpath,label\n" + "".join(f"album/IMG_{n:05d}.jpg,{('cat', 'dog', 'skip')[n % 3]}\n" for n in range(3000))
    data += f"album/IMG_00000.jpg,Dog\n{RAW},dog\n{ESCAPED},skip\n\n"
    path.write_bytes(data.encode("utf-8", "surrogateescape"))
    read = read_corrections(path, tmp_path)
    assert len(read.labels) == 3002 and read.labels[ESCAPED] == "skip"
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

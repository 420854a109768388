"""Shared fixtures: small generated images, one small trained model and the sample competition archive."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# A cut-down copy of Kaggle's redux archive (train.zip with 5,000 images, test.zip with 1,000, the
# sample submission), kept beside the repository; CATSDOGS_SAMPLE_ARCHIVE points elsewhere.
SAMPLE_ARCHIVE = Path(
    os.environ.get("CATSDOGS_SAMPLE_ARCHIVE")
    or Path(__file__).resolve().parents[2] / "shared/data/dogs-vs-cats-redux-kernels-edition-mini.zip"
)
SAMPLE_ARCHIVE_MISSING = (
    f"sample archive not found: {SAMPLE_ARCHIVE} (copy the project's shared test data "
    "dogs-vs-cats-redux-kernels-edition-mini.zip there, or set CATSDOGS_SAMPLE_ARCHIVE to its path)"
)


def write_image(path: Path, label: int, size: int = 48, seed: int = 0, **save_options) -> Path:
    """A small image a tiny CNN can tell apart: cats are reddish, dogs bluish, with noise."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
    pixels[..., 0 if label == 0 else 2] += 150
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **save_options)
    return path


@pytest.fixture
def kaggle_train_folder(tmp_path: Path) -> Path:
    """24 labelled images named like Kaggle's train/ (cat.N.jpg, dog.N.jpg)."""
    folder = tmp_path / "train"
    for n in range(12):
        write_image(folder / f"cat.{n}.jpg", 0, seed=n)
        write_image(folder / f"dog.{n}.jpg", 1, seed=100 + n)
    return folder


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """The sample archive's train/ and test/ unpacked once per test session."""
    if not SAMPLE_ARCHIVE.is_file():
        pytest.skip(SAMPLE_ARCHIVE_MISSING)
    root = tmp_path_factory.mktemp("sample")
    with zipfile.ZipFile(SAMPLE_ARCHIVE) as outer:
        for inner in ("train.zip", "test.zip"):
            with outer.open(inner) as f, zipfile.ZipFile(f) as z:
                z.extractall(root)
        outer.extract("sample_submission.csv", root)
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A real checkpoint of this project (the seed's CNN, 32 px, 16 dense units, calibrated),
    trained once per session on 60
    generated images until it is sure of its answers: confident enough that its validation split
    (12 images) tells a faithful export from a broken one. Tests that write into a model folder
    work on a copy (see tests/test_export.py)."""
    from catsdogs_batch.options import TrainOptions
    from catsdogs_batch.train import train

    root = tmp_path_factory.mktemp("tiny")
    for n in range(30):
        write_image(root / "train" / f"cat.{n}.jpg", 0, seed=n)
        write_image(root / "train" / f"dog.{n}.jpg", 1, seed=100 + n)
    options = TrainOptions(
        data=root / "train", out=root / "model", arch="seed", image_size=32, batch_size=8, epochs=4,
        learning_rate=3e-3, dense_units=16, dropout=0.0,
    )  # fmt: skip
    return train(options)


@pytest.fixture(scope="session")
def second_model(tiny_model, tmp_path_factory) -> Path:
    """Another model of the same input size that answers differently: the tiny model with its
    logit halved (as a temperature of 2 would)."""
    import shutil

    import keras

    from catsdogs_batch.model import scale_logit

    folder = tmp_path_factory.mktemp("second") / "model"
    shutil.copytree(tiny_model, folder)
    model = keras.saving.load_model(folder / "model.keras", compile=False)
    scale_logit(model, 2.0)
    model.save(folder / "model.keras")
    return folder

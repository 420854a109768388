"""The jobs as Python functions, for notebooks: what `catsdogs download`, `train`, `predict`,
`label` and `submission` do, with the same defaults, checks and files, returning a path or a
pandas DataFrame. Settings are the commands' options as keyword arguments, by the name of the
option without its dashes (`tta=True`, `batch_size=32`, `content_check=False`, `arch="seed"`);
an unknown one is a TypeError. docs/python.md has examples."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .options import (
    DownloadOptions,
    LabelOptions,
    PredictOptions,
    SubmissionOptions,
    TrainOptions,
)

PathLike = str | os.PathLike


def download(**settings: Any) -> Path:
    """The competition's data folder (`data/<competition>/` with train/ and test/), downloaded
    or imported (`archive=`) once; a rerun finds it there."""
    from .kaggle.download import download as download_job

    return download_job(_options(DownloadOptions, settings))


def train(data: PathLike, out: PathLike | None = None, **settings: Any) -> Path:
    """Train on a labelled folder (Kaggle names or cat/ and dog/ folders) into the run folder
    `out` (default: models/<arch>-...), which is returned."""
    from .training.train import train as train_job

    return train_job(_options(TrainOptions, settings, data=Path(data), out=None if out is None else Path(out)))


def predict(model: PathLike | Sequence[PathLike], images: PathLike | Sequence[PathLike], out: PathLike | None = None,
            **settings: Any) -> pd.DataFrame:  # fmt: skip
    """The results table (one row per image: p_dog, label, ...) of a folder, found recursively,
    or of a list of image files, as a DataFrame; also written to `out` (.csv or .parquet) when
    given, where a rerun resumes. Several models make an ensemble."""
    from .inference.engine import predict_folder
    from .inference.tables import read_table

    folder, files = _images(images)
    with _table(out) as table:
        predict_folder(_options(PredictOptions, settings, model=_models(model), folder=folder, out=table, files=files))
        return read_table(table)


def label(model: PathLike | Sequence[PathLike], folder: PathLike, out: PathLike | None = None, **settings: Any) -> pd.DataFrame:
    """Label every image under `folder` (cat, dog, neither, both) and, with `sort_into=DIR`,
    place each into DIR/<label>/ (`mode=` copy, link or move); the table as a DataFrame (also at
    `out`, default submissions/labels-<folder>.csv, as `catsdogs label` writes it)."""
    from .inference.tables import read_table
    from .labelling.label import label_folder

    if settings.get("sort_into") is not None:
        settings["sort_into"] = Path(settings["sort_into"])
    options = _options(LabelOptions, settings, model=_models(model), folder=Path(folder), out=None if out is None else Path(out))
    return read_table(label_folder(options).table)


def submission(model: PathLike | Sequence[PathLike] | None = None, **settings: Any) -> Path:
    """Kaggle's submission.csv for the test images (default: the newest finished run in models/
    on data/<competition>/test), returned as its path."""
    from .inference.submission import make_submission

    for name in ("test_dir", "out"):
        if settings.get(name) is not None:
            settings[name] = Path(settings[name])
    return make_submission(_options(SubmissionOptions, settings, model=None if model is None else _models(model)))


def _models(model: PathLike | Sequence[PathLike]) -> Path | tuple[Path, ...]:
    if isinstance(model, (str, os.PathLike)):
        return Path(model)
    models = tuple(Path(m) for m in model)
    return models[0] if len(models) == 1 else models


def _images(images: PathLike | Sequence[PathLike]) -> tuple[Path, tuple[str, ...] | None]:
    """A folder, or the folder the files share and their paths below it (in the order given)."""
    if isinstance(images, (str, os.PathLike)):
        return Path(images), None
    paths = [Path(p).absolute() for p in images]
    if not paths:
        raise ValueError("no images given")
    folder = Path(os.path.commonpath([p.parent for p in paths]))
    return folder, tuple(p.relative_to(folder).as_posix() for p in paths)


@contextlib.contextmanager
def _table(out: PathLike | None) -> Iterator[Path]:
    """The table's path: `out`, or one in a temporary folder removed afterwards."""
    if out is not None:
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix="catsdogs-") as temporary:
        yield Path(temporary) / "results.csv"


def _options(cls, settings: dict[str, Any], **given: Any):
    """`cls` made from `given` and the `settings` its fields (and those of its nested option
    dataclasses: EngineOptions, Labelling, ...) name; a setting no field names is a TypeError."""
    values = dict(given)
    for field in dataclasses.fields(cls):
        if field.name in given:
            continue
        nested = field.default_factory
        if dataclasses.is_dataclass(nested):
            names = {f.name for f in dataclasses.fields(nested)}
            chosen = {name: settings.pop(name) for name in list(settings) if name in names}
            if field.name in settings:  # the whole block given as one object
                values[field.name] = settings.pop(field.name)
            elif chosen:
                values[field.name] = nested(**chosen)
        elif field.name in settings:
            values[field.name] = settings.pop(field.name)
    if settings:
        raise TypeError(f"unknown setting{'s' if len(settings) > 1 else ''} for {cls.__name__}: {', '.join(sorted(settings))}")
    return cls(**values)


__all__ = ["download", "train", "predict", "label", "submission"]

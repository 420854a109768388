"""A training run's validation images predicted by its model, as evaluate's table with the labels
the run trained against: what `catsdogs review RUN` shows (`<run>/validation.csv`)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import UserError
from ..files import sha256, shown
from ..inference.engine import predict_folder
from ..inference.tables import with_true_labels
from ..options import PredictOptions

log = logging.getLogger(__name__)

VALIDATION_TABLE = "validation.csv"  # in a run folder: its validation images, predicted (for review)


def validation_results(run: Path, images: Path | None = None) -> Path:
    """`<run>/validation.csv` (the labels it trained against include its corrections; `images`: the
    training folder, if no longer where run.json says), written by the engine (resumable) on first use
    and again when the model, split or folder changed (the table's job records their sha256s and the
    folder); a validation.csv this tool did not write is never replaced."""
    from ..models.checkpoint import find_checkpoint, training_folder
    from ..data.dataset import SPLIT_FILE, read_split
    from ..inference.engine import table_lock
    from ..inference.shards import job_description
    from ..side_files import job_file, parts_job_file, read_record

    checkpoint = find_checkpoint(run, "keras")
    if checkpoint.is_export:
        raise UserError(f"{checkpoint.model_path} is an export: name the run folder it came from")
    split = checkpoint.folder / SPLIT_FILE
    if not split.is_file():
        raise UserError(f"{shown(checkpoint.folder)} has no {SPLIT_FILE}: no validation images to review")
    data = images or training_folder(checkpoint)
    if data is None or not data.is_dir():
        where = f"not at {shown(data)}" if data is not None else "not recorded in its run.json"
        raise UserError(f"the training images of {shown(checkpoint.folder)} are {where}: pass --images DIR")
    table = checkpoint.folder / VALIDATION_TABLE
    model = find_checkpoint(checkpoint.folder)  # the run's fastest model that passed its check
    made_from = {
        "command": "validation", "model_sha256": sha256(model.model_path), "split_sha256": sha256(split),
    }  # fmt: skip
    with table_lock(table):
        recorded = read_record(job_file(table)) or {}
        if table.exists() and recorded.get("command") != "validation":
            raise UserError(f"{shown(table)} was not written by catsdogs review: move it away (it is never replaced)")
        if table.is_file() and (made_from | {"folder": str(data.resolve())}).items() <= recorded.items():
            return table  # of this very model, split and folder
        labels = {item.path: item.label for item in read_split(split)[1]}
        predict = PredictOptions(model.model_path, data, table, files=tuple(labels), made_from=made_from)
        # resumed where the interrupted run is this very job (the model file's size and time too),
        # else started over: review has no --overwrite to answer "other settings" with
        job = job_description(predict, [model])
        predict.overwrite = table.exists() or read_record(parts_job_file(table)) != job
        predict_folder(predict, locked=True, relabel=lambda rows: with_true_labels(rows, [labels[p] for p in rows["path"]]))
    log.info("validation images of %s predicted -> %s", shown(checkpoint.folder), shown(table))
    return table

"""labelling/validation.py: a run's validation table for review, resumed after an interruption."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest


def test_an_interrupted_validation_table_of_a_copied_run_is_finished(tiny_model, tmp_path, monkeypatch):
    """`catsdogs review RUN` stopped while it predicted the validation images, then the run is
    copied or its model file touched (same bytes, another time): the next review predicts them
    again instead of asking for an --overwrite that review does not have."""
    import os

    import catsdogs_batch.labelling.validation as validation

    run = tmp_path / "run"
    shutil.copytree(tiny_model, run)
    with monkeypatch.context() as m:
        m.setattr(validation, "with_true_labels", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):  # every shard done, stopped as they merge
            validation.validation_results(run)
    assert (run / "validation.csv.parts").is_dir() and not (run / "validation.csv").exists()
    later = (run / "model.keras").stat().st_mtime_ns + 10**9
    os.utime(run / "model.keras", ns=(later, later))
    table = validation.validation_results(run)
    assert len(pd.read_csv(table)) == 12 and not (run / "validation.csv.parts").exists()

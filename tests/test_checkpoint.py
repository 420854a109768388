"""checkpoint.py: what a run folder runs. Given the folder, a command runs the fastest export in
it that passed its check against the model.keras there now; `--runtime keras`, an older run
without an export, an export that failed its check or one of an earlier model.keras run the
Keras model."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path

import pytest

from catsdogs_batch.models.checkpoint import find_checkpoint
from catsdogs_batch.cli import main
from catsdogs_batch.inference.export import export_model
from catsdogs_batch.options import ExportOptions
from catsdogs_batch.side_files import job_file

from conftest import write_image


@pytest.fixture(scope="module")
def exported_run(tiny_model, tmp_path_factory) -> Path:
    """A copy of the tiny run with an ONNX export (fp32), made once."""
    run = Path(shutil.copytree(tiny_model, tmp_path_factory.mktemp("checkpoint") / "run"))
    export_model(ExportOptions(run, "onnx"))
    return run


@pytest.fixture
def run(exported_run, tmp_path) -> Path:
    """A copy that a test may change."""
    return Path(shutil.copytree(exported_run, tmp_path / "run"))


def edit_record(folder: Path, change) -> None:
    record = json.loads((folder / "run.json").read_text())
    change(record)
    (folder / "run.json").write_text(json.dumps(record))


def test_a_run_folder_runs_its_checked_export_unless_told_keras(run):
    assert find_checkpoint(run).model_path == run / "export" / "onnx" / "model.onnx"
    assert find_checkpoint(run, "onnx").model_path == run / "export" / "onnx" / "model.onnx"
    assert find_checkpoint(run, "keras").model_path == run / "model.keras"
    assert find_checkpoint(run / "model.keras").model_path == run / "model.keras"  # a file is what it names


def test_the_fastest_passing_export_comes_first(run):
    """int8 before fp32 (an fp32 export renamed and recorded as int8 stands in for a quantized one)."""
    shutil.copytree(run / "export" / "onnx", run / "export" / "onnx-int8")
    edit_record(run / "export" / "onnx-int8", lambda r: r["export"].update(int8=True))
    assert find_checkpoint(run).model_path == run / "export" / "onnx-int8" / "model.onnx"


def test_an_older_run_without_an_export_runs_its_keras_model(run):
    shutil.rmtree(run / "export")
    assert find_checkpoint(run).model_path == run / "model.keras"


def test_an_export_that_failed_its_check_is_not_run(run):
    edit_record(run / "export" / "onnx", lambda r: r["export"]["check"].update(passed=False, forced=True))
    assert find_checkpoint(run).model_path == run / "model.keras"


def test_an_export_of_an_earlier_model_is_not_run(run):
    """model.keras replaced (retrained, recalibrated) after the export was made."""
    with open(run / "model.keras", "ab") as f:
        f.write(b"\0")
    assert find_checkpoint(run).model_path == run / "model.keras"


def test_an_export_folder_reached_through_a_link_is_not_run(run, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.move(run / "export", elsewhere)
    (run / "export").symlink_to(elsewhere, target_is_directory=True)
    assert find_checkpoint(run).model_path == run / "model.keras"


def test_the_summary_line_says_what_ran(run, tmp_path, capsys):
    photos = tmp_path / "photos"
    for n in range(3):
        write_image(photos / f"{n}.jpg", n % 2, seed=n)
    assert main(["predict", str(run), str(photos), "--out", str(tmp_path / "a.csv")]) == 0
    assert capsys.readouterr().out.strip().endswith("img/s, onnx)")
    assert main(["predict", str(run), str(photos), "--out", str(tmp_path / "b.csv"), "--runtime", "keras"]) == 0
    assert capsys.readouterr().out.strip().endswith("img/s, keras)")
    for table, runtime in (("a.csv", "onnx"), ("b.csv", "keras")):
        job = json.loads(job_file(tmp_path / table).read_text())
        assert [model["runtime"] for model in job["models"]] == [runtime]


def test_the_install_without_extras_has_the_fast_runtime():
    """OpenVINO (the runtime) and NNCF (its int8) are requirements of the package itself."""
    plain = [r for r in importlib.metadata.requires("catsdogs-batch") if "extra ==" not in r]
    names = {r.split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in plain}
    assert {"openvino", "nncf"} <= names

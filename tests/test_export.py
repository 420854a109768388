"""`catsdogs export`: ONNX Runtime and OpenVINO exports (fp32 and int8) of a small trained model
give the Keras model's answers, a broken export is refused, and every command takes an export
wherever it takes the checkpoint (the runtimes that run them: tests/test_runtimes.py)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from catsdogs_batch.cli import main
from catsdogs_batch.inference.predictor import Predictor
from catsdogs_batch.errors import UserError
from catsdogs_batch.inference.export import compare, export_model
from catsdogs_batch.options import ARCHITECTURES, LITE, ExportOptions
from catsdogs_batch.inference.tables import read_table

from conftest import pixels, write_image, write_photos

FORMATS = [("onnx", False), ("onnx", True), *(pytest.param("openvino", int8, marks=pytest.mark.slow) for int8 in (False, True))]


@pytest.fixture
def photos(tmp_path) -> Path:
    return write_photos(tmp_path / "photos")


@pytest.mark.parametrize("format, int8", FORMATS)
def test_an_export_gives_the_keras_models_answers(model, exports, photos, format, int8):
    folder = exports(format, int8)
    model_file = {"onnx": "model.onnx", "openvino": "model.xml"}[format]
    assert (folder / model_file).exists() and folder == model / "export" / (format + ("-int8" if int8 else ""))

    run = json.loads((folder / "run.json").read_text())
    assert run["image_size"] == 32 and run["model_file"] == model_file
    export = run["export"]
    assert (export["format"], export["int8"]) == (format, int8)
    assert export["check"]["passed"] and export["check"]["label_agreement"] >= 0.995
    assert export["check"]["images"] == 12 and "validation split" in export["check"]["images_from"]
    assert (export["calibration"] or {}).get("images") == (40 if int8 else None)

    keras_p = Predictor(model, runtime="keras").predict(pixels(photos))
    export_p = Predictor(folder).predict(pixels(photos))
    assert Predictor(folder).runtimes[0].name == format + (" int8" if int8 else "")
    assert np.allclose(export_p, keras_p, atol=0.03 if int8 else 1e-4)
    assert ((export_p >= 0.5) == (keras_p >= 0.5)).all()


def test_the_agreement_report():
    labels = np.array([0, 0, 1, 1])
    keras_p = np.array([0.1, 0.4, 0.6, 0.9])
    report = compare(keras_p, np.array([0.1, 0.6, 0.6, 0.8]), labels)
    assert report.label_agreement == 0.75 and report.max_difference == pytest.approx(0.2)
    assert (report.confident_images, report.confident_agreement) == (2, 1.0)  # 0.1 and 0.9, outside (0.2, 0.8)
    assert report.keras_accuracy == 1.0 and report.export_accuracy == 0.75
    # -(ln .9 + ln .6 + ln .6 + ln .9)/4 = 0.30809 and -(ln .9 + ln .4 + ln .6 + ln .8)/4 = 0.43891
    assert report.log_loss_increase == pytest.approx(0.13082, abs=1e-5)
    failed = report.failures(ExportOptions(Path("m")))
    assert len(failed) == 2 and failed[0].startswith("accuracy dropped 25.00 points") and "log loss rose" in failed[1]
    assert compare(keras_p, keras_p + 1e-4, labels).passes(ExportOptions(Path("m")))


def sure_and_unsure(flip_sure: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """200 images: 198 the Keras model is sure of and right about, one cat at 0.51 (wrong) and
    one at 0.49 (right), whose labels the export swaps (accuracy unchanged); and, if
    `flip_sure`, a cat at p_dog 0.1 that the export calls a dog (0.6)."""
    labels = np.array([0] * 100 + [1] * 98 + [0, 0])
    keras_p = np.concatenate([np.full(100, 0.1), np.full(98, 0.9), [0.51, 0.49]])
    export_p = keras_p.copy()
    export_p[-2:] = [0.49, 0.51]
    if flip_sure:
        export_p[0] = 0.6
    return keras_p, export_p, labels


def test_label_flips_where_the_model_is_unsure_pass_the_check_and_one_where_it_is_sure_fails_it():
    """Images near p_dog = 0.5 change label under any rounding: the check counts agreement only
    where the Keras model is sure (outside the review's band), so 99% overall agreement passes
    and 99.49% among sure images fails."""
    options = ExportOptions(Path("m"))
    report = compare(*sure_and_unsure(flip_sure=False))
    assert report.label_agreement == 0.99 and report.accuracy_drop == 0.0 and report.passes(options)

    report = compare(*sure_and_unsure(flip_sure=True))
    assert (report.confident_images, report.confident_agreement) == (198, pytest.approx(197 / 198))
    assert report.accuracy_drop == pytest.approx(0.005)  # 1 of 200: at the limit, allowed
    # (ln .9... unchanged) ln(0.9 / 0.4) / 200 = 0.00405: under the 0.005 allowed
    assert report.log_loss_increase == pytest.approx(0.004055, abs=1e-5)
    (failed,) = report.failures(options)
    assert failed.startswith("labels agree on 99.49% of the 198 images the Keras model is sure of")


def test_a_broken_export_is_refused_unless_forced(model, monkeypatch, capsys):
    """An export whose model says the opposite of the checkpoint never replaces a good one."""
    import catsdogs_batch.inference.export as export

    real_convert = export.convert

    def convert_flipped(keras_model, *args):
        layer = keras_model.get_layer("p_dog")
        kernel, bias = layer.get_weights()
        layer.set_weights([-kernel, -bias])  # p -> 1 - p
        return real_convert(keras_model, *args)

    monkeypatch.setattr(export, "convert", convert_flipped)
    out = model / "export" / "broken"
    with pytest.raises(UserError, match=r"export refused: .*labels agree on 0\.00% of the"):
        export_model(ExportOptions(model, "onnx", out=out))
    assert not out.exists() and not list(out.parent.glob(".broken*"))

    assert main(["export", str(model), "--format", "onnx", "--out", str(out), "--force"]) == 0
    said = capsys.readouterr().out
    assert f"exported to {out}" not in said
    assert f"kept {out} although it FAILED its check (--force): " in said and "labels agree on 0.00%" in said
    check = json.loads((out / "run.json").read_text())["export"]["check"]
    assert (check["passed"], check["forced"], check["label_agreement"]) == (False, True, 0.0)
    assert any(failed.startswith("labels agree on 0.00% of the") for failed in check["failed"])


@pytest.mark.slow
def test_predict_and_submission_give_the_same_tables_with_an_export(model, exports, tmp_path):
    test_dir = tmp_path / "test"
    for n in range(1, 9):
        write_image(test_dir / f"{n}.jpg", n % 2, seed=700 + n)
    (tmp_path / "sample_submission.csv").write_text("id,label\n" + "".join(f"{n},0.5\n" for n in range(1, 9)))

    models = {
        "checkpoint": model,
        "onnx-int8": exports("onnx", True),  # a folder
        "openvino": exports("openvino", False) / "model.xml",  # or its model file
    }
    tables = {}
    for name, path in models.items():
        out = tmp_path / name
        assert main(["predict", str(path), str(test_dir), "--out", str(out / "r.parquet"), "--no-progress"]) == 0
        assert main(["submission", "--model", str(path), "--test-dir", str(test_dir), "--out", str(out)]) == 0
        tables[name] = (read_table(out / "r.parquet"), pd.read_csv(out / "submission.csv"))

    reference, reference_submission = tables.pop("checkpoint")
    for table, submission in tables.values():
        assert list(table.columns) == list(reference.columns)
        assert (table["path"] == reference["path"]).all() and (table["label"] == reference["label"]).all()
        assert np.allclose(table["p_dog"], reference["p_dog"], atol=0.03)
        assert list(submission.columns) == ["id", "label"]
        assert (submission["id"] == reference_submission["id"]).all()


@pytest.mark.slow
def test_a_model_and_its_own_export_are_not_an_ensemble(model, exports, second_model, photos, tmp_path, capsys):
    """An export's run.json records the checksum of the model it came from: the model beside its
    export, two exports of it (fp32 and int8) or a copy of its file would average the model with
    itself, and are refused with one line naming both; an export beside another model is an ensemble."""
    keras_file, onnx, openvino_int8 = model / "model.keras", exports("onnx", False), exports("openvino", True)
    copy = tmp_path / "copy" / "model.keras"
    copy.parent.mkdir()
    shutil.copyfile(keras_file, copy)
    shutil.copyfile(model / "run.json", copy.parent / "run.json")
    capsys.readouterr()  # the exports' progress
    for given, named in (
        ([keras_file, onnx], [keras_file, onnx / "model.onnx"]),
        ([model, onnx], [openvino_int8 / "model.xml", onnx / "model.onnx"]),  # the run folder runs its int8 export
        ([onnx / "model.onnx", openvino_int8], [onnx / "model.onnx", openvino_int8 / "model.xml"]),
        ([openvino_int8, second_model, copy.parent], [openvino_int8 / "model.xml", copy]),
        ([keras_file, copy], [keras_file, copy]),
    ):
        out = tmp_path / "t.csv"
        assert main(["predict", *map(str, given), str(photos), "--out", str(out), "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and all(str(path) in err for path in named), err
        assert "the same model" in err and not out.exists()
    assert main(["predict", str(second_model), str(onnx), str(photos), "--out", str(tmp_path / "e.csv"), "--no-progress"]) == 0


def test_a_model_away_from_its_training_images_is_calibrated_and_checked_on_others(model, tmp_path, capsys):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(model, moved, ignore=shutil.ignore_patterns("export"))
    run = json.loads((moved / "run.json").read_text())
    run["config"]["data"] = str(tmp_path / "gone")
    (moved / "run.json").write_text(json.dumps(run))
    assert main(["export", str(moved), "--int8"]) == 1
    assert "pass --calibration" in capsys.readouterr().err
    del run["config"]["data"]  # a run.json that records no folder: not this folder instead
    (moved / "run.json").write_text(json.dumps(run))
    assert main(["export", str(moved), "--int8"]) == 1
    assert "not recorded in its run.json: pass --calibration" in capsys.readouterr().err

    labelled = tmp_path / "labelled"
    for n in range(10):
        write_image(labelled / "cat" / f"{n}.png", 0, seed=900 + n)
        write_image(labelled / "dog" / f"{n}.png", 1, seed=950 + n)
    assert main(["export", str(moved), "--int8", "--calibration", str(labelled)]) == 0
    assert "exported to" in capsys.readouterr().out
    export = json.loads((moved / "export" / "onnx-int8" / "run.json").read_text())["export"]
    assert export["calibration"]["source"] == str(labelled) and export["calibration"]["images"] == 20
    assert export["check"]["images"] == 20 and export["check"]["images_from"] == f"labelled images in {labelled}"


def test_export_never_replaces_a_folder_that_is_not_an_earlier_export(model, exports, tmp_path, capsys):
    other_run = tmp_path / "other-run"
    shutil.copytree(model, other_run, ignore=shutil.ignore_patterns("export"))
    precious = files_in(other_run) | {"notes.txt": b"mine"}
    (other_run / "notes.txt").write_bytes(b"mine")
    own = files_in(model)
    for out in (other_run, model, model.parent):
        assert main(["export", str(model), "--out", str(out), "--overwrite"]) == 1
        assert "--out" in capsys.readouterr().err
    assert files_in(other_run) == precious and files_in(model) == own

    earlier = exports("onnx", False)  # <run>/export/onnx
    assert main(["export", str(model)]) == 1
    assert "holds an earlier export: pass --overwrite" in capsys.readouterr().err
    before = (earlier / "run.json").read_text()
    assert main(["export", str(model), "--overwrite"]) == 0
    assert sorted(p.name for p in earlier.iterdir()) == ["model.onnx", "run.json"]
    assert (earlier / "run.json").read_text() != before  # a new export, not the old one
    assert not [p for p in earlier.parent.iterdir() if p.name.startswith(".")]


def test_an_out_that_is_a_link_is_refused_as_a_link(model, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for target in (elsewhere, tmp_path / "nowhere"):  # a link to a folder, a dangling one
        link = tmp_path / "link"
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        assert main(["export", str(model), "--out", str(link)]) == 1
        err = capsys.readouterr().err
        assert re.search(r"--out \S*link is a symbolic link.*refused", err) and "not a folder" not in err, err
    assert not any(elsewhere.iterdir())


@pytest.mark.slow
def test_an_int8_openvino_export_prints_its_own_lines_only(model, tmp_path):
    """NNCF logs on stdout and draws its progress bars there; the command says what it did."""
    import subprocess

    copy = Path(shutil.copytree(model, tmp_path / "model", ignore=shutil.ignore_patterns("export")))
    done = subprocess.run(
        [sys.executable, "-m", "catsdogs_batch.cli", "export", str(copy), "--format", "openvino", "--int8",
         "--calibration-images", "40"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"exported to \S+openvino-int8: label agreement [^\n]*\n", done.stdout), done.stdout
    for chatter in ("nncf", "Statistics collection", "Bias correction", "━"):
        assert chatter not in done.stdout + done.stderr


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("format", ["onnx", "openvino"])
def test_int8_keeps_more_in_fp32_until_the_check_passes(model, tmp_path, format):
    """The fastest plan first; a guard it fails makes the next, safer plan run; every plan tried
    is recorded with its agreement (here a guard no export can pass, kept with --force)."""
    from catsdogs_batch.inference.export import INT8_PLANS

    out, _ = export_model(ExportOptions(model, format, True, calibration_images=40, out=tmp_path / "first"))
    check = json.loads((out / "run.json").read_text())["export"]["check"]
    tried = [(a["fp32"], a["passed"]) for a in check["attempts"]]  # the plans in order up to the first that passes
    assert tried == [(plan, k == len(tried) - 1) for k, plan in enumerate(INT8_PLANS[format][: len(tried)])]

    impossible = ExportOptions(model, format, True, calibration_images=40, out=tmp_path / "all",
                               max_log_loss_increase=-1.0, force=True)  # fmt: skip
    out, agreement = export_model(impossible)
    export = json.loads((out / "run.json").read_text())["export"]
    assert [a["fp32"] for a in export["check"]["attempts"]] == list(INT8_PLANS[format])
    assert export["fp32"] == INT8_PLANS[format][-1] and export["check"]["forced"]
    assert agreement.label_agreement >= 0.9  # the safest plan still gives the model's answers


@pytest.mark.slow
@pytest.mark.parametrize("arch", [name for name, spec in ARCHITECTURES.items() if spec.backbone and name not in LITE[1:]])
def test_every_pretrained_architecture_exports_with_the_image_as_its_only_input(arch, tmp_path):
    """Both converters on each backbone (random weights where ImageNet's would be downloaded;
    Lite1 and Lite2 are Lite0's code with the shapes of their checkpoints, left out for time):
    the graph takes the pixels alone (tf2onnx made EfficientNetV2's normalization constants
    graph inputs) and gives the Keras model's probabilities."""
    import onnxruntime
    import openvino

    from catsdogs_batch.inference.export import convert
    from catsdogs_batch.models.networks import pretrained_model

    model = pretrained_model(arch, 64, "imagenet" if arch in LITE else "none")
    images = np.random.default_rng(3).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    keras_p = np.asarray(model(images.astype(np.float32), training=False))

    convert(model, "onnx", tmp_path / "model.onnx", 64, None)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert np.allclose(session.run(None, {"image": images})[0], keras_p, atol=1e-4)

    convert(model, "openvino", tmp_path / "model.xml", 64, None)
    # In fp32 as the runtime runs it (OpenVINO would pick bf16 where the CPU has it)
    compiled = openvino.Core().compile_model(str(tmp_path / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert len(compiled.inputs) == 1
    assert np.allclose(compiled(images)[0], keras_p, atol=1e-4)

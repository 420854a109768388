"""The runtimes (inference/runtimes.py): which one runs a model file, the ones that can be named
for it, and the one-line refusals when it cannot run (a runtime not installed, a file it does
not read)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from catsdogs_batch.cli import main
from catsdogs_batch.errors import UserError
from catsdogs_batch.inference.predictor import Predictor
from catsdogs_batch.inference.runtimes import (
    check_model,
    choose_runtime,
    load_runtime,
    require,
    runtime_name,
    shares_gate_backbone,
)
from catsdogs_batch.models.checkpoint import Checkpoint, find_checkpoint

from conftest import pixels, write_photos


@pytest.fixture
def photos(tmp_path) -> Path:
    return write_photos(tmp_path / "photos")


def test_a_runtime_can_be_named(model, exports, photos, tmp_path, capsys):
    onnx = exports("onnx", False)
    assert Predictor(onnx, runtime="openvino").runtimes[0].name == "openvino"  # OpenVINO reads .onnx too
    by_openvino = Predictor(onnx, runtime="openvino").predict(pixels(photos))
    assert np.allclose(by_openvino, Predictor(onnx).predict(pixels(photos)), atol=1e-4)

    # Given the run folder, --runtime onnx runs its fastest onnx export (int8 here, if made)
    args = ["predict", str(model), str(photos), "--out", str(tmp_path / "r.csv"), "--runtime", "onnx"]
    assert main(args) == 0
    assert re.search(r"img/s, onnx( int8)?\)$", capsys.readouterr().out.strip())
    assert main([*args[:-1], "keras", "--overwrite"]) == 0
    assert capsys.readouterr().out.strip().endswith("img/s, keras)")
    assert main(["predict", str(model / "model.keras"), str(photos), "--out", str(tmp_path / "k.csv"), "--runtime", "onnx"]) == 1
    assert "the onnx runtime cannot run model.keras; pass its export: " in capsys.readouterr().err
    assert main(["export", str(onnx)]) == 1
    assert "already an export" in capsys.readouterr().err


@pytest.mark.parametrize(
    "module, format, advice",
    [
        ("onnxruntime", "onnx", "pip install '.[onnx]'"),
        # a requirement of the package itself, missing from a broken install
        pytest.param("openvino", "openvino", "a requirement of catsdogs-batch: pip install -e .", marks=pytest.mark.slow),
    ],
)
def test_a_missing_runtime_names_its_install_command(model, exports, photos, tmp_path, monkeypatch, capsys, module, format, advice):
    folder = exports(format, False)
    capsys.readouterr()  # making the export (when no earlier test made it) has its own progress bar
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    assert main(["predict", str(folder), str(photos), "--out", str(tmp_path / "r.csv"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and advice in err
    assert main(["export", str(model), "--format", format, "--out", str(tmp_path / "e")]) == 1
    assert advice in capsys.readouterr().err


@pytest.mark.slow
def test_an_int8_openvino_export_for_vnni_cpus_warns_on_others(exports, tmp_path, monkeypatch, caplog):
    import shutil

    import catsdogs_batch.inference.runtimes as runtimes

    copy = tmp_path / "openvino-int8"
    shutil.copytree(exports("openvino", True), copy)
    run = json.loads((copy / "run.json").read_text())
    run["export"]["needs_vnni"] = True  # as exported on a CPU with VNNI
    (copy / "run.json").write_text(json.dumps(run))
    monkeypatch.setattr(runtimes, "has_vnni", lambda: False)
    Predictor(copy)
    assert "quantized for CPUs with VNNI" in caplog.text


# --- which runtime runs a model file, and the one-line refusals ---------------------------------


def checkpoint(path: Path, **run) -> Checkpoint:
    """A model file and what its run.json says (a run folder's image size by default)."""
    return Checkpoint(path, {"kind": "catsdogs-batch model", "image_size": 32} | run)


@pytest.mark.parametrize(
    "model_file, asked, runs",
    [
        ("model.keras", "auto", "keras"),
        ("model.onnx", "auto", "onnx"),
        ("model.xml", "auto", "openvino"),
        ("model.onnx", "openvino", "openvino"),  # OpenVINO reads ONNX files too
        ("model.onnx", "onnx", "onnx"),
        ("model.keras", "keras", "keras"),
    ],
)
def test_the_model_files_suffix_picks_its_runtime(tmp_path, model_file, asked, runs):
    assert choose_runtime(checkpoint(tmp_path / model_file), asked) == runs


def test_a_runtime_that_cannot_read_the_model_file_says_what_to_pass_instead(tmp_path):
    run = tmp_path / "run"
    cases = [
        (run / "model.h5", "auto", f"{run}/model.h5: no runtime reads .h5 files"),
        (run / "model.keras", "tensorrt", "unknown runtime 'tensorrt': choose one of auto, keras, onnx, openvino"),
        (run / "export/onnx/model.onnx", "keras", "the keras runtime cannot run model.onnx; pass the checkpoint it was exported from"),
        (run / "model.keras", "openvino",
         f"the openvino runtime cannot run model.keras; export it first: catsdogs export {run} --format openvino"),
    ]  # fmt: skip
    for model_file, asked, message in cases:
        with pytest.raises(UserError) as refused:
            choose_runtime(checkpoint(model_file), asked)
        assert str(refused.value) == message

    (run / "export/openvino").mkdir(parents=True)  # once the run has that export, the line names it
    (run / "export/openvino/run.json").write_text("{}")
    with pytest.raises(UserError, match=f"^the openvino runtime cannot run model.keras; pass its export: {run}/export/openvino$"):
        choose_runtime(checkpoint(run / "model.keras"), "openvino")


def test_an_openvino_export_asked_for_onnx_is_sent_to_its_run_folder(tmp_path):
    """An OpenVINO export run with --runtime onnx was told "export it first: catsdogs export
    <the export's folder> --format onnx", a command that refuses an export: the hint names the
    run the export was made from (by its record, else by the folder layout), or its ONNX export."""
    export = tmp_path / "run" / "export" / "openvino"
    with pytest.raises(UserError) as refused:
        choose_runtime(checkpoint(export / "model.xml", export={"format": "openvino"}), "onnx")
    assert str(refused.value).endswith(f"export it first: catsdogs export {tmp_path / 'run'} --format onnx")
    source = tmp_path / "elsewhere" / "model.keras"
    with pytest.raises(UserError) as refused:
        choose_runtime(checkpoint(export / "model.xml", export={"source": str(source)}), "onnx")
    assert str(refused.value).endswith(f"export it first: catsdogs export {source.parent} --format onnx")
    (tmp_path / "run" / "export" / "onnx").mkdir(parents=True)
    (tmp_path / "run" / "export" / "onnx" / "run.json").write_text("{}")
    with pytest.raises(UserError) as refused:
        choose_runtime(checkpoint(export / "model.xml", export={"format": "openvino"}), "onnx")
    assert str(refused.value).endswith(f"pass its export: {tmp_path / 'run' / 'export' / 'onnx'}")


def test_the_runtime_name_says_int8_only_of_an_int8_export(tmp_path):
    assert runtime_name(checkpoint(tmp_path / "model.onnx", export={"int8": True})) == "onnx int8"
    assert runtime_name(checkpoint(tmp_path / "model.onnx", export={"int8": True}), "openvino") == "openvino int8"
    assert runtime_name(checkpoint(tmp_path / "model.xml", export={"int8": False})) == "openvino"
    assert runtime_name(checkpoint(tmp_path / "model.xml", export="damaged")) == "openvino"
    assert runtime_name(checkpoint(tmp_path / "model.keras", export={"int8": True})) == "keras"  # a Keras file is not int8


def test_an_optional_backend_is_imported_or_named_with_its_install_line(monkeypatch):
    assert require("json") is json
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if not installed
    with pytest.raises(UserError, match=r"^the onnx export needs tf2onnx, which is not installed \(pip install '\.\[onnx\]'\)$"):
        require("tf2onnx", "the onnx export")
    monkeypatch.setitem(sys.modules, "onnxruntime.capi", None)  # a submodule: named by its package
    with pytest.raises(UserError, match=r"^this needs onnxruntime, which is not installed \(pip install '\.\[onnx\]'\)$"):
        require("onnxruntime.capi")
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(UserError, match=r"^int8 needs nncf, which is not installed \(a requirement of catsdogs-batch: pip install -e \.\)$"):
        require("nncf", "int8")


LITE2_RUN = {"arch": "efficientnet-lite2", "weights": "imagenet"}


@pytest.mark.parametrize(
    "model_file, run, shares",
    [
        ("model.keras", {"config": LITE2_RUN, "image_size": 260, "best": {"val_log_loss": 0.1}}, True),  # a fitted head
        ("model.keras", {"config": LITE2_RUN, "image_size": 260, "best": {"epoch": 3}}, False),  # fine-tuned since
        ("model.keras", {"config": LITE2_RUN, "image_size": 224}, False),  # not at the classifier's size
        ("model.keras", {"config": LITE2_RUN | {"weights": "none"}, "image_size": 260}, False),
        ("model.keras", {"config": LITE2_RUN | {"arch": "efficientnet-lite0"}, "image_size": 260}, False),
        ("model.xml", {"config": LITE2_RUN, "image_size": 260}, False),  # an export carries the classifier itself
        ("model.keras", {"config": "damaged", "best": [], "image_size": 260}, False),
    ],
)
def test_only_an_untouched_lite2_at_260_px_shares_the_content_checks_backbone(tmp_path, model_file, run, shares):
    assert shares_gate_backbone(checkpoint(tmp_path / model_file, **run)) is shares


# --- a Keras file checked without TensorFlow, an export loaded -----------------------------------


def keras_file(path: Path, config: object) -> Path:
    """A .keras archive holding only its config.json (what check_model reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
    return path


def input_layer(shape: list) -> dict:
    return {"config": {"layers": [{"class_name": "InputLayer", "config": {"batch_shape": shape}}, {"class_name": "Dense"}]}}


def test_a_keras_files_input_is_checked_against_its_run_json(tmp_path):
    model_file = keras_file(tmp_path / "model.keras", input_layer([None, 48, 48, 3]))
    check_model(checkpoint(model_file, image_size=48))
    with pytest.raises(UserError, match=rf"^{model_file} takes \[None, 48, 48, 3\], not \(32, 32, 3\) images as its run.json says$"):
        check_model(checkpoint(model_file, image_size=32))

    for name, content in (("random.keras", os.urandom(64)), ("no-input.keras", {"config": {"layers": []}}), ("list.keras", [])):
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            keras_file(path, content)
        with pytest.raises(UserError, match=rf"^cannot load {path}: not a Keras model file$"):
            check_model(checkpoint(path))


def test_checking_a_real_checkpoint_loads_no_tensorflow(tiny_model):
    """What a driver whose workers load the model (Ray) checks first, in a process of its own."""
    source = (
        "import sys\n"
        "from catsdogs_batch.inference.runtimes import check_model\n"
        "from catsdogs_batch.models.checkpoint import find_checkpoint\n"
        f"check_model(find_checkpoint({str(tiny_model)!r}, 'keras'))\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'loaded TensorFlow'\n"
    )
    done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_an_export_whose_run_json_says_another_size_is_refused_when_loaded(exports):
    onnx = find_checkpoint(exports("onnx", False))
    for runtime in ("onnx", "openvino"):
        check_model(onnx, runtime)  # as exported: 32 px
        wrong = Checkpoint(onnx.model_path, onnx.run | {"image_size": 64})
        with pytest.raises(UserError) as refused:
            check_model(wrong, runtime)
        assert re.fullmatch(rf"{onnx.model_path} takes \[\S+, 32, 32, 3\], not \(64, 64, 3\) images as its run.json says", str(refused.value))


@pytest.mark.parametrize("runtime, model_file", [("onnx", "model.onnx"), ("openvino", "model.xml")])
def test_a_damaged_export_is_one_line_naming_it(tmp_path, runtime, model_file):
    path = tmp_path / model_file
    path.write_bytes(b"<net> not a model")
    path.with_suffix(".bin").write_bytes(b"")
    with pytest.raises(UserError) as refused:
        load_runtime(checkpoint(path, export={"format": runtime}), runtime, threads=1)
    assert str(refused.value).startswith(f"cannot load {path}: ") and "\n" not in str(refused.value)


@pytest.mark.parametrize("runtime", ["keras", "onnx", "openvino"])
def test_every_runtime_gives_one_probability_an_image_for_any_batch_size(model, exports, photos, runtime):
    """The interface every engine relies on: uint8 (n, size, size, 3) in, n probabilities out,
    each image's the same whatever else is in its batch (the last batch of a folder is short;
    no engine hands a runtime an empty one)."""
    path = model if runtime == "keras" else exports("onnx", False)
    loaded = load_runtime(find_checkpoint(path, runtime), runtime, threads=1)
    batch = pixels(photos)
    together = loaded(batch)
    assert together.shape == (6,) and ((together >= 0) & (together <= 1)).all()
    apart = np.concatenate([loaded(batch[:1]), loaded(batch[1:4]), loaded(batch[4:])])
    assert np.allclose(apart, together, atol=1e-5)

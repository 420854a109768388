"""The runtimes (inference/runtimes.py): which one runs a model file, the ones that can be named
for it, and the one-line refusals when it cannot run (a runtime not installed, a file it does
not read)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from catsdogs_batch.cli import main
from catsdogs_batch.inference.predictor import Predictor

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

"""`catsdogs evaluate`: metrics checked against values worked out by hand, and the report folder
written for a real labelled folder (Kaggle names, class folders, an unlabelled and an
unreadable file)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from catsdogs_batch.cli import main
from catsdogs_batch.labelling.evaluate import PICTURES, binary_metrics, draw_contact_sheet
from catsdogs_batch.metrics import roc_curve

from conftest import write_image


def test_metrics_match_values_computed_by_hand():
    true = [0, 0, 1, 1, 1]  # cat, cat, dog, dog, dog
    p_dog = [0.1, 0.8, 0.35, 0.8, 0.8]  # predicted: cat, dog, cat, dog, dog
    m = binary_metrics(true, p_dog)
    assert m["images"] == 5
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.2) + math.log(0.35) + 2 * math.log(0.8)) / 5)
    # dog above cat in 3 of the 6 (dog, cat) pairs, tied at 0.8 in 2 (half each): 4/6
    assert m["roc_auc"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"]["counts"] == [[1, 1], [1, 2]]  # rows true cat/dog, columns predicted
    assert m["per_class"] == {
        "cat": {"precision": 0.5, "recall": 0.5, "support": 2},
        "dog": {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3), "support": 3},
    }
    # bins [0.1, 0.2): p 0.1, no dog; [0.3, 0.4): p 0.35, a dog; [0.8, 0.9): p 0.8, 2 dogs of 3
    assert m["expected_calibration_error"] == pytest.approx(0.2 * 0.1 + 0.2 * 0.65 + 0.6 * (0.8 - 2 / 3))
    fpr, tpr = roc_curve(np.array(true), np.array(p_dog))
    assert np.trapezoid(tpr, fpr) == pytest.approx(m["roc_auc"])


def test_log_loss_is_clipped_and_undefined_values_are_none():
    m = binary_metrics([0], [1.0])  # a cat called a certain dog
    assert m["log_loss"] == pytest.approx(-math.log(1e-7))
    assert m["roc_auc"] is None  # needs both classes
    assert m["per_class"]["dog"] == {"precision": 0.0, "recall": None, "support": 0}


def test_the_contact_sheet_shows_each_wrong_image_even_an_unreadable_one(tmp_path):
    """Five images of one colour each (two rows of three): each colour covers one thumbnail's
    area of the sheet (not none, not two), and the empty file gets a tile of its own (light grey,
    its error written on it; the captions' anti-aliased text adds a few pixels of each grey)."""
    colours = {"cat.1.jpg": (0, 150, 0), "cat.2.png": (0, 0, 200), "dog.3.jpg": (230, 200, 0),
               "dog.4.jpg": (150, 0, 150), "cat.5.jpg": (0, 170, 170)}  # fmt: skip
    for name, colour in colours.items():
        Image.new("RGB", (80, 60), colour).save(tmp_path / name)
    (tmp_path / "dog.6.jpg").write_bytes(b"")
    paths = [*colours, "dog.6.jpg"]
    wrong = pd.DataFrame({"path": paths, "true_label": [p[:3] for p in paths], "p_dog": [0.9] * len(paths)})
    thumb = 40
    draw_contact_sheet(tmp_path, wrong, tmp_path / "sheet.jpg", thumb=thumb, columns=3)
    sheet = np.asarray(Image.open(tmp_path / "sheet.jpg").convert("RGB")).astype(int)

    def area(colour: tuple[int, int, int]) -> int:
        return int((np.abs(sheet - colour).max(axis=2) <= 12).sum())

    for name, colour in [*colours.items(), ("dog.6.jpg", (211, 211, 211))]:  # PIL's "lightgrey"
        assert 0.6 * thumb**2 <= area(colour) <= 1.3 * thumb**2, (name, area(colour))


@pytest.fixture
def labelled_folder(kaggle_train_folder: Path) -> Path:
    """24 Kaggle-named images plus class folders, an unlabelled and an unreadable image."""
    write_image(kaggle_train_folder / "extra" / "Cats" / "tabby.jpg", 0, seed=50)
    write_image(kaggle_train_folder / "extra" / "dogs" / "rex.png", 1, seed=51)
    write_image(kaggle_train_folder / "unsorted" / "who.jpg", 1, seed=52)
    (kaggle_train_folder / "cat.99.jpg").write_bytes(b"")
    return kaggle_train_folder


def test_evaluate_writes_metrics_pictures_table_and_report(tiny_model, labelled_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["evaluate", str(tiny_model), str(labelled_folder), "--no-progress"]
    assert main(args) == 0
    out = tmp_path / "submissions" / "evaluate-model-train"  # the default: <run>-<folder>
    assert "26 images: accuracy" in capsys.readouterr().out

    results = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert list(results.columns[3:6]) == ["label", "true_label", "confidence"]
    truth = dict(zip(results["path"], results["true_label"]))
    assert truth["extra/Cats/tabby.jpg"] == "cat" and truth["extra/dogs/rex.png"] == "dog"
    assert truth["unsorted/who.jpg"] == "" and truth["dog.3.jpg"] == "dog"

    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["files"], metrics["images"], metrics["errors"], metrics["unlabelled"]) == (28, 26, 1, 1)
    assert metrics["unreadable"] == [{"path": "cat.99.jpg", "error": "empty file"}]
    used = results[(results["status"] == "ok") & (results["true_label"] != "")]
    assert metrics["accuracy"] == pytest.approx((used["label"] == used["true_label"]).mean())
    expected = binary_metrics((used["true_label"] == "dog").astype(int), used["p_dog"].astype(float))
    for key in ("accuracy", "log_loss", "roc_auc", "expected_calibration_error"):
        assert metrics[key] == pytest.approx(expected[key])
    assert metrics["confusion_matrix"] == expected["confusion_matrix"]

    # Calibration: the raw probability is sigmoid(T * logit(p)) for the temperature in run.json.
    temperature = json.loads((tiny_model / "run.json").read_text())["calibration"]["temperature"]
    true, p = (used["true_label"] == "dog").to_numpy(), used["p_dog"].to_numpy(dtype=float)
    raw = [1 / (1 + ((1 - q) / q) ** temperature) for q in p]
    raw_loss = -sum(math.log(r if dog else 1 - r) for r, dog in zip(raw, true)) / len(raw)
    calibration = metrics["calibration"]
    assert calibration["temperature"] == temperature
    assert calibration["log_loss"]["before"] == pytest.approx(raw_loss, rel=1e-4)
    assert calibration["log_loss"]["after"] == pytest.approx(metrics["log_loss"])

    page = (out / "report.html").read_text()
    assert f"without calibration (temperature {temperature:.3f})" in page
    assert sorted(re.findall(r'<img src="([^"]+)"', page)) == sorted(PICTURES.values())
    for picture in PICTURES.values():
        with Image.open(out / picture) as image:
            assert image.width > 200 and image.height > 100
    assert "cat.99.jpg: empty file" in page

    assert main(args) == 1  # never overwrites a report unless asked
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_an_unlabelled_folder_is_refused(tiny_model, tmp_path, capsys):
    for n in range(3):
        write_image(tmp_path / "test" / f"{n}.jpg", n % 2)
    assert main(["evaluate", str(tiny_model), str(tmp_path / "test"), "--out", str(tmp_path / "e")]) == 1
    assert "no labelled images" in capsys.readouterr().err


def test_with_tta_no_uncalibrated_figures_are_made_up(tiny_model, labelled_folder, tmp_path):
    """The mean of calibrated mirrored predictions does not tell the mean of raw ones."""
    assert main(["evaluate", str(tiny_model), str(labelled_folder), "--tta", "--out", str(tmp_path / "e")]) == 0
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["calibration"] is None


def test_a_model_trained_before_calibration_is_evaluated_as_it_is(tiny_model, labelled_folder, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_model, old)
    run = json.loads((old / "run.json").read_text())
    del run["calibration"]
    (old / "run.json").write_text(json.dumps(run))
    assert main(["evaluate", str(old), str(labelled_folder), "--out", str(tmp_path / "e"), "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["calibration"] is None and 0 <= metrics["log_loss"]

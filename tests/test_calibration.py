"""Temperature scaling: the fitted temperature and the calibration figures checked against values
worked out by hand, and the temperature baked into a real model gives the calibrated p_dog in
Keras, ONNX Runtime and OpenVINO alike."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from catsdogs_batch.training.calibration import calibration_report, fit_temperature, logit, sigmoid
from catsdogs_batch.data.images import load_image
from catsdogs_batch.inference.predictor import Predictor

# Four images at logit +2 (three dogs, a cat) and four at -2 (three cats, a dog). Platt's targets
# are 5/6 for a dog and 1/6 for a cat (4 of each), so the best p at +2 is their mean there,
# (3 * 5/6 + 1/6) / 4 = 2/3: sigmoid(2 / T) = 2/3, 2 / T = ln 2, T = 2 / ln 2.
TRUE = [1, 1, 1, 0, 0, 0, 0, 1]
LOGITS = [2, 2, 2, 2, -2, -2, -2, -2]


def test_the_temperature_is_the_one_worked_out_by_hand():
    assert fit_temperature(TRUE, LOGITS) == pytest.approx(2 / math.log(2), rel=1e-4)


def test_the_report_gives_log_loss_and_calibration_error_before_and_after():
    report = calibration_report(TRUE, LOGITS, 2 / math.log(2))
    p = 1 / (1 + math.exp(-2))  # before: every image 0.881 sure, right 3 times in 4
    assert report["log_loss"]["before"] == pytest.approx(-(3 * math.log(p) + math.log(1 - p)) / 4)
    assert report["log_loss"]["after"] == pytest.approx(-(3 * math.log(2 / 3) + math.log(1 / 3)) / 4)
    # one reliability bin each side: |0.881 - 0.75| before, |2/3 - 3/4| after
    assert report["expected_calibration_error"]["before"] == pytest.approx(p - 0.75)
    assert report["expected_calibration_error"]["after"] == pytest.approx(0.75 - 2 / 3)


def test_a_separable_split_does_not_make_the_model_certain():
    """Plain 0/1 targets would drive T to its lower bound here; Platt's (4+1)/(4+2) keep it finite."""
    temperature = fit_temperature([1, 1, 1, 1, 0, 0, 0, 0], [3, 4, 5, 6, -3, -4, -5, -6])
    assert 0.5 < temperature < 5
    assert sigmoid(6 / temperature) < 0.999


def test_logit_and_sigmoid_are_inverse_and_finite_at_the_ends():
    p = np.array([0.0, 1e-9, 0.25, 0.5, 0.9, 1.0])
    assert np.all(np.isfinite(logit(p)))
    assert sigmoid(logit(p[2:5])) == pytest.approx(p[2:5])
    assert sigmoid(np.array([-800.0, 800.0])) == pytest.approx([0.0, 1.0])


@pytest.mark.slow
def test_the_temperature_is_in_the_model_for_every_runtime(tiny_model, tmp_path):
    """`calibrate` divides the model's logit by T: Keras gives sigmoid(logit(p_before) / T), and
    so do ONNX Runtime and OpenVINO exports of the calibrated checkpoint."""
    from catsdogs_batch.inference.export import export_model
    from catsdogs_batch.options import ExportOptions
    from catsdogs_batch.training.calibration import calibrate

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    images = sorted((tiny_model.parent / "train").glob("*.jpg"))
    pixels = np.stack([load_image(path, 32).pixels for path in images])
    labels = np.array([[1.0 if path.name.startswith("dog") else 0.0] for path in images])
    before = Predictor(model).predict(pixels)

    # Overconfident labels would give T < 1; flipping a third of them makes the model overconfident.
    noisy = labels.copy()
    noisy[::3] = 1 - noisy[::3]
    record = calibrate(model, noisy, images=pixels, batch_size=16)
    temperature = record["temperature"]
    assert temperature > 1
    expected = 1 / (1 + np.exp(-logit(before) / temperature))
    assert Predictor(model).predict(pixels) == pytest.approx(expected, abs=2e-5)

    run = json.loads((model / "run.json").read_text())
    (model / "run.json").write_text(json.dumps(run | {"calibration": record}))
    for format in ("onnx", "openvino"):
        out, _ = export_model(ExportOptions(model=model, format=format, out=tmp_path / format, force=True))
        assert Predictor(out).predict(pixels) == pytest.approx(expected, abs=1e-4), format

"""Temperature scaling (Guo et al., 2017): one scalar T that divides the model's logit, fitted to
minimise log loss on the validation split. It changes no label (the sign of the logit stays) and
only makes p_dog honest: an over-confident network gets T > 1. `train` fits it once the best
epoch is known and bakes it into the model's last layer (`model.scale_logit`), so that Keras,
ONNX Runtime, OpenVINO, Ray and every export give the same calibrated p_dog."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from ..metrics import EPS, expected_calibration_error, log_loss
from ..models.checkpoint import MODEL_FILE

log = logging.getLogger(__name__)

TEMPERATURES = (0.05, 20.0)  # the search range: far beyond what a trained network needs


def sigmoid(logits: ArrayLike) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def logit(p_dog: ArrayLike) -> np.ndarray:
    """The logit of probabilities, clipped to [EPS, 1 - EPS] so that 0 and 1 stay finite."""
    p = np.clip(np.asarray(p_dog, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def fit_temperature(true: ArrayLike, logits: ArrayLike) -> float:
    """The T > 0 that minimises the log loss of sigmoid(logits / T) against `true` (0 cat, 1 dog)
    taken as Platt's targets, (dogs + 1) / (dogs + 2) for a dog and 1 / (cats + 2) for a cat: on
    a validation split the model separates perfectly, plain 0/1 targets would send T to 0 (a
    certain model), which no unseen image justifies."""
    from scipy.optimize import minimize_scalar

    true = np.asarray(true, dtype=np.float64).reshape(-1)
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    dogs, cats = true.sum(), len(true) - true.sum()
    target = np.where(true == 1, (dogs + 1) / (dogs + 2), 1 / (cats + 2))

    def loss(log_t: float) -> float:  # cross-entropy, written with softplus: exact for large |z|
        scaled = z / np.exp(log_t)
        return float(np.mean(target * np.logaddexp(0.0, -scaled) + (1 - target) * np.logaddexp(0.0, scaled)))

    result = minimize_scalar(loss, bounds=tuple(np.log(TEMPERATURES)), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def calibration_report(true: ArrayLike, logits: ArrayLike, temperature: float) -> dict:
    """Log loss and expected calibration error before and after dividing the logits by T."""
    before, after = sigmoid(logits), sigmoid(np.asarray(logits, dtype=np.float64) / temperature)
    return {
        "log_loss": {"before": log_loss(true, before), "after": log_loss(true, after)},
        "expected_calibration_error": {
            "before": expected_calibration_error(true, before),
            "after": expected_calibration_error(true, after),
        },
    }


UNCALIBRATED = "uncalibrated.keras"  # in BACKUP_DIR: the best model before calibration


def calibrate(
    run: Path, labels: np.ndarray, *, images: np.ndarray | None = None, features: np.ndarray | None = None,
    batch_size: int = 32, fit: bool = True,
) -> dict:
    """Fit the temperature of the run's best model on the validation `images` (or their p_dog
    layer's input `features`), bake it into that layer and return run.json's record of it. The
    uncalibrated model stays in the backup folder until the run ends: calibrating again after a
    kill starts from it. Without `fit` (a fitted head, whose C was chosen by cross-validated log
    loss) T stays 1: a fitted T made held-out log loss worse (docs/commands.md)."""
    import keras

    from ..models.networks import OUTPUT_LAYER, scale_logit
    from .callbacks import save_atomically
    from .run_record import BACKUP_DIR

    source = run / BACKUP_DIR / UNCALIBRATED
    if not source.exists():
        source.parent.mkdir(exist_ok=True)
        save_atomically(lambda tmp: shutil.copyfile(run / MODEL_FILE, tmp), source, ".keras")
    model = keras.saving.load_model(source, compile=False)
    dense = model.get_layer(OUTPUT_LAYER)
    if features is None:
        embed = keras.Model(model.inputs, dense.input).predict_on_batch
        features = np.concatenate(
            [np.asarray(embed(images[k : k + batch_size].astype(np.float32))) for k in range(0, len(images), batch_size)]
        )
    kernel, bias = dense.get_weights()
    logits = (features.astype(np.float64) @ kernel.astype(np.float64) + bias).reshape(-1)
    if not np.all(np.isfinite(logits)):
        log.warning("not calibrated: the model gives non-finite logits on the validation split")
        return {"temperature": None, "skipped": "non-finite logits on the validation split"}
    if not fit:
        report = calibration_report(labels, logits, 1.0)
        log.info(
            "not rescaled (a fitted head is calibrated by its cross-validated C): validation log loss %.4f, "
            "calibration error %.4f", report["log_loss"]["after"], report["expected_calibration_error"]["after"],
        )  # fmt: skip
        return {
            "temperature": 1.0,
            "not_fitted": "a linear head whose regularization was chosen by cross-validated log loss on the "
            "training split: a temperature fitted on the validation split made held-out log loss worse",
            "validation": report,
        }
    temperature = fit_temperature(labels, logits)
    report = calibration_report(labels, logits, temperature)
    scale_logit(model, temperature)
    save_atomically(model.save, run / MODEL_FILE, ".keras")
    log.info(
        "calibrated: temperature %.3f; validation log loss %.4f -> %.4f, calibration error %.4f -> %.4f",
        temperature, report["log_loss"]["before"], report["log_loss"]["after"],
        report["expected_calibration_error"]["before"], report["expected_calibration_error"]["after"],
    )
    record = {
        "temperature": temperature,
        "fitted_on": f"the validation split ({len(labels)} images)",
        "applied": f"the logit of {OUTPUT_LAYER} is divided by the temperature (its kernel and bias, in the model file)",
        "validation": report,
    }
    if not TEMPERATURES[0] * 1.01 < temperature < TEMPERATURES[1] / 1.01:
        log.warning("the temperature %.3f is at the end of its range %s: the model stays miscalibrated", temperature, TEMPERATURES)
        record["at_limit"] = True
    return record

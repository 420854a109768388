"""Temperature scaling (Guo et al., 2017): one scalar T that divides the model's logit, fitted to
minimise log loss on the validation split. It changes no label (the sign of the logit stays) and
only makes p_dog honest: an over-confident network gets T > 1. `train` fits it once the best
epoch is known and bakes it into the model's last layer (`model.scale_logit`), so that Keras,
ONNX Runtime, OpenVINO, Ray and every export give the same calibrated p_dog."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ..metrics import EPS, expected_calibration_error, log_loss

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

    low, high = np.log(TEMPERATURES)
    result = minimize_scalar(loss, bounds=(low, high), method="bounded", options={"xatol": 1e-6})
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

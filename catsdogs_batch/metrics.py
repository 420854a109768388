"""Binary metrics of p_dog (the probability of dog) against true labels (0 cat, 1 dog), shared by
`evaluate` and `export`. scikit-learn computes most of them; it takes about a second to import,
so it is imported inside the functions that need it."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .data.images import CLASS_NAMES
from .options import THRESHOLD

EPS = 1e-7  # log loss clips probabilities to [EPS, 1 - EPS]
BINS = 10  # of the reliability diagram


def _arrays(true: ArrayLike, p_dog: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(true, dtype=int).reshape(-1), np.asarray(p_dog, dtype=np.float64).reshape(-1)


def _defined(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def predicted_labels(p_dog: ArrayLike) -> np.ndarray:
    """The engine's labels: 1 (dog) where p_dog >= THRESHOLD, else 0 (cat)."""
    return (np.asarray(p_dog, dtype=np.float64).reshape(-1) >= THRESHOLD).astype(int)


def accuracy(true: ArrayLike, p_dog: ArrayLike) -> float:
    """Share of images whose predicted label is the true one."""
    from sklearn.metrics import accuracy_score

    true, p_dog = _arrays(true, p_dog)
    return float(accuracy_score(true, predicted_labels(p_dog)))


def log_loss(true: ArrayLike, p_dog: ArrayLike) -> float:
    """Mean binary cross-entropy, p_dog clipped to [EPS, 1 - EPS]: a certain mistake costs -log(EPS), not infinity."""
    from sklearn.metrics import log_loss as cross_entropy

    true, p_dog = _arrays(true, p_dog)
    return float(cross_entropy(true, np.clip(p_dog, EPS, 1 - EPS), labels=[0, 1]))


def roc_auc(true: ArrayLike, p_dog: ArrayLike) -> float | None:
    """Chance that a random dog scores above a random cat (ties count half); None with one class."""
    from sklearn.metrics import roc_auc_score

    true, p_dog = _arrays(true, p_dog)
    return float(roc_auc_score(true, p_dog)) if len(np.unique(true)) == 2 else None


def roc_curve(true: ArrayLike, p_dog: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, (0, 0) to (1, 1); needs both classes."""
    from sklearn.metrics import roc_curve as curve

    fpr, tpr, _ = curve(*_arrays(true, p_dog), drop_intermediate=False)
    return fpr, tpr


def confusion_matrix(true: ArrayLike, p_dog: ArrayLike) -> list[list[int]]:
    """Image counts, rows the true class and columns the predicted one (cat, dog)."""
    from sklearn.metrics import confusion_matrix as counts

    true, p_dog = _arrays(true, p_dog)
    return counts(true, predicted_labels(p_dog), labels=[0, 1]).tolist()


def per_class(true: ArrayLike, p_dog: ArrayLike) -> dict[str, dict]:
    """Precision, recall (None where undefined) and number of true images of each class."""
    from sklearn.metrics import precision_recall_fscore_support

    true, p_dog = _arrays(true, p_dog)
    precision, recall, _, support = precision_recall_fscore_support(
        true, predicted_labels(p_dog), labels=[0, 1], zero_division=np.nan
    )
    return {
        name: {"precision": _defined(precision[c]), "recall": _defined(recall[c]), "support": int(support[c])}
        for c, name in enumerate(CLASS_NAMES)
    }


def reliability_bins(true: ArrayLike, p_dog: ArrayLike, bins: int = BINS) -> list[dict]:
    """Equal-width bins of p_dog: how many images, their mean p_dog and the fraction that are dogs."""
    true, p_dog = _arrays(true, p_dog)
    index = np.minimum((p_dog * bins).astype(int), bins - 1)
    table = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        table.append({
            "low": b / bins, "high": (b + 1) / bins, "count": n,
            "mean_p_dog": float(p_dog[inside].mean()) if n else None,
            "fraction_dog": float(true[inside].mean()) if n else None,
        })  # fmt: skip
    return table


def expected_calibration_error(true: ArrayLike, p_dog: ArrayLike, bins: int = BINS) -> float:
    """Mean over images of |mean p_dog - fraction of dogs| in their reliability bin."""
    true, p_dog = _arrays(true, p_dog)
    table = reliability_bins(true, p_dog, bins)
    gaps = sum(b["count"] * abs(b["mean_p_dog"] - b["fraction_dog"]) for b in table if b["count"])
    return float(gaps / len(true))

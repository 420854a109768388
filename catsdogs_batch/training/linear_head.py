"""A logistic regression on frozen ImageNet features, and the same classifier as the weights of a
model's `p_dog` layer: how `catsdogs train` fits the head of a frozen backbone (minutes, not the
hours of training it by gradient descent on a CPU) and how `catsdogs audit` predicts each fold.

The features are standardized and the regularization C is chosen by log loss in a seeded k-fold
of the training rows only: the best C depends on how well the features separate the classes,
unknown in advance. Rows of one image (the photo and its mirror) share a group and so a fold,
else the search would score C on images it trained on."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

C_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)  # inverse regularization, chosen by log loss
INNER_FOLDS = 3  # the k-fold of the training rows that chooses C


@dataclass(frozen=True)
class LinearHead:
    """A fitted head: p_dog = sigmoid(features @ kernel + bias)."""

    kernel: np.ndarray  # (features, 1) float32
    bias: np.ndarray  # (1,) float32
    C: float
    cv_log_loss: float  # the chosen C's log loss in the inner k-fold

    def p_dog(self, features: np.ndarray) -> np.ndarray:
        logits = features.astype(np.float64) @ self.kernel.astype(np.float64) + float(self.bias[0])
        return 1 / (1 + np.exp(-logits.reshape(-1)))

    def record(self) -> dict:
        return {
            "method": "logistic regression on the frozen backbone's features",
            "standardized": True, "C_grid": list(C_GRID), "inner_folds": INNER_FOLDS, "chosen_by": "log loss",
            "C": self.C, "cv_log_loss": round(self.cv_log_loss, 6),
        }  # fmt: skip


def fit_head(features: np.ndarray, labels: np.ndarray, seed: int, groups: np.ndarray | None = None) -> LinearHead:
    """Fit the standardized logistic regression (C by inner k-fold, each fit warm-started from the
    smaller C's: the same solutions in a fraction of the iterations; then refitted on every row)
    and fold the standardization into its weights: (x - mean) / scale . w + b = x . (w / scale) +
    (b - sum(w * mean / scale))."""
    from sklearn.metrics import log_loss  # scikit-learn's, what the search ranks C by
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    folds = (
        StratifiedKFold(INNER_FOLDS, shuffle=True, random_state=seed)
        if groups is None
        else StratifiedGroupKFold(INNER_FOLDS, shuffle=True, random_state=seed)
    )
    losses = np.zeros(len(C_GRID))
    for train, held_out in folds.split(features, labels, groups):
        for k, (_, _, predict) in enumerate(_c_path(features[train], labels[train], C_GRID)):
            losses[k] += float(log_loss(labels[held_out], predict(features[held_out]), labels=[0, 1])) / INNER_FOLDS
    best = int(np.argmin(losses))
    *_, (scaler, regression, _) = _c_path(features, labels, C_GRID[: best + 1])
    weights = regression.coef_[0] / scaler.scale_
    bias = regression.intercept_[0] - float(np.sum(weights * scaler.mean_))
    return LinearHead(
        kernel=weights.reshape(-1, 1).astype(np.float32),
        bias=np.array([bias], dtype=np.float32),
        C=float(C_GRID[best]),
        cv_log_loss=float(losses[best]),
    )


def _c_path(features: np.ndarray, labels: np.ndarray, grid):
    """(scaler, regression, p_dog of new rows) for each C of `grid` in turn, on one standardization
    of `features`, each fit warm-started from the one before."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features)
    standardized = scaler.transform(features)
    regression = LogisticRegression(max_iter=2000, warm_start=True)
    for C in grid:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a weak C's fit is as good as it needs to be
            regression.set_params(C=C).fit(standardized, labels)
        yield scaler, regression, lambda rows, r=regression: r.predict_proba(scaler.transform(rows))[:, 1]

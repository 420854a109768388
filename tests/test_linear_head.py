"""linear_head.py: the fitted head. Its warm-started search over C chooses what scikit-learn's own
grid search chooses, and its head gives a fresh fit's probabilities at that C."""

from __future__ import annotations

import numpy as np
import pytest

from catsdogs_batch.training.linear_head import C_GRID, INNER_FOLDS, fit_head


def features(rows: int, columns: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping Gaussian classes, on columns of very different scales (as a backbone's)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, rows)
    x = rng.normal(size=(rows, columns)) + separation * labels[:, None] * rng.normal(size=columns)
    return (x * rng.uniform(0.1, 10, columns) + rng.normal(0, 5, columns)).astype(np.float32), labels


@pytest.mark.parametrize("separation", [0.05, 0.2])
def test_the_head_is_scikit_learns_grid_search_choice_and_fit(separation):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = features(600, 40, separation, seed=1)
    groups = np.arange(len(y)) // 2  # pairs, as a photo and its mirror
    head = fit_head(x, y, seed=0, groups=groups)

    search = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, tol=1e-8)),
        {"logisticregression__C": list(C_GRID)}, scoring="neg_log_loss",
        cv=StratifiedGroupKFold(INNER_FOLDS, shuffle=True, random_state=0),
    ).fit(x, y, groups=groups)  # fmt: skip
    assert head.C == search.best_params_["logisticregression__C"]
    assert head.cv_log_loss == pytest.approx(-search.best_score_, abs=1e-3)
    fresh = search.best_estimator_.predict_proba(x)[:, 1]
    assert np.abs(head.p_dog(x) - fresh).max() < 2e-3


def test_the_head_separates_what_is_separable():
    x, y = features(400, 20, 3.0, seed=2)
    head = fit_head(x, y, seed=0)
    assert ((head.p_dog(x) >= 0.5) == y).mean() > 0.97
    assert head.kernel.shape == (20, 1) and head.kernel.dtype == np.float32 and head.bias.shape == (1,)

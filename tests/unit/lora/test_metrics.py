"""Classification metrics: accuracy, macro-F1, macro one-vs-rest ROC-AUC, per-class AUC."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score

from ffa_lora.errors import DataError
from ffa_lora.lora.metrics import classification_metrics, per_class_auc, per_class_from

NAMES = ("a", "b", "c")


def _probs(rng: np.random.Generator, y: np.ndarray, k: int, signal: float) -> np.ndarray:
    logits = rng.normal(size=(len(y), k))
    logits[np.arange(len(y)), y] += signal
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_matches_sklearn_ovr_macro_when_every_class_is_present() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=300)
    p = _probs(rng, y, 3, 1.0)
    m = classification_metrics(y, p, NAMES)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert m["roc_auc_classes"] == 3
    for c, name in enumerate(NAMES):
        assert m[f"roc_auc/{name}"] == pytest.approx(roc_auc_score(y == c, p[:, c]))
    assert per_class_from(m) == {n: m[f"roc_auc/{n}"] for n in NAMES}
    assert m["accuracy"] == pytest.approx(float((p.argmax(1) == y).mean()))
    assert 0.6 < m["roc_auc"] < 1.0  # informative but noisy scores


def test_perfect_and_chance_scores() -> None:
    y = np.array([0, 1, 2, 0, 1, 2])
    perfect = np.eye(3)[y] * 0.9 + 0.1 / 3
    m = classification_metrics(y, perfect, NAMES)
    assert m["roc_auc"] == 1.0 and m["accuracy"] == 1.0 and m["macro_f1"] == 1.0
    constant = np.full((6, 3), 1 / 3)
    assert classification_metrics(y, constant, NAMES)["roc_auc"] == 0.5


def test_absent_class_is_left_out_of_the_mean() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=200)  # class "c" never occurs
    p = _probs(rng, y, 3, 1.5)
    with pytest.warns(UndefinedMetricWarning):  # scikit-learn's own mean: NaN
        assert math.isnan(roc_auc_score(y, p, multi_class="ovr", labels=[0, 1, 2]))
    m = classification_metrics(y, p, NAMES)
    assert "roc_auc/c" not in m and m["roc_auc_classes"] == 2
    assert m["roc_auc"] == pytest.approx(
        (roc_auc_score(y == 0, p[:, 0]) + roc_auc_score(y == 1, p[:, 1])) / 2
    )
    assert set(per_class_auc(y, p, NAMES)) == {"a", "b"}


def test_single_class_has_no_auc() -> None:
    y = np.zeros(5, dtype=int)
    m = classification_metrics(y, np.full((5, 3), 1 / 3), NAMES)
    assert math.isnan(m["roc_auc"]) and m["roc_auc_classes"] == 0
    assert not per_class_from(m)
    assert m["accuracy"] == 1.0  # argmax of a tie is class 0


def test_binary() -> None:
    y = np.array([0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.8, 0.9])
    m = classification_metrics(y, np.stack([1 - p1, p1], axis=1), ("neg", "pos"))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p1))
    assert m["roc_auc/neg"] == pytest.approx(m["roc_auc/pos"])


@pytest.mark.parametrize(
    ("labels", "probs", "match"),
    [
        ([], np.zeros((0, 3)), "zero examples"),
        ([0, 1], np.full((2, 2), 0.5), "shape"),
        ([0, 3], np.full((2, 3), 1 / 3), "class indices"),
        ([0, 1], np.array([[0.5, np.nan, 0.5], [1 / 3] * 3]), "NaN"),
    ],
)
def test_bad_input(labels: list[int], probs: np.ndarray, match: str) -> None:
    with pytest.raises(DataError, match=match):
        classification_metrics(labels, probs, NAMES)

"""Classification metrics from labels and predicted class probabilities.

Accuracy, macro-F1 and macro one-vs-rest ROC-AUC (with each class's own AUC), all computed by
scikit-learn. The returned dictionary is flat (``str → float``) so it can go as it is into
``summary.json``, a round table or a bench's JSON:

* ``accuracy``, ``macro_f1`` (over all ``num_labels`` classes; a class never predicted and
  never present scores 0, as scikit-learn's ``zero_division=0`` defines);
* ``roc_auc``: the unweighted mean of the per-class one-vs-rest AUCs that are defined;
* ``roc_auc/<class name>``: class ``c``'s AUC of ``p_c`` separating class ``c`` from the rest;
* ``roc_auc_classes``: how many classes the mean covers.

**Classes absent from the evaluated data.** A one-vs-rest AUC needs positives and negatives:
a class with no example in the data (or one that is every example) has no AUC. Such a class
gets no ``roc_auc/<name>`` entry and is left out of the macro mean, which is then over the
classes present — exactly scikit-learn's ``roc_auc_score(..., multi_class="ovr",
average="macro")`` when every class is present (given all labels, that function makes the
whole mean NaN when one is absent). With fewer than two classes present no AUC is defined at all: ``roc_auc`` is NaN and
``roc_auc_classes`` 0. Small per-site test splits often lack rare classes, so compare
``roc_auc`` values only together with ``roc_auc_classes``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

from ffa_lora.errors import DataError

#: prefix of the per-class AUC keys: ``roc_auc/<class name>``
PER_CLASS_AUC_PREFIX = "roc_auc/"


def per_class_auc(
    labels: Sequence[int] | np.ndarray, probs: np.ndarray, label_names: Sequence[str]
) -> dict[str, float]:
    """``{class name: one-vs-rest ROC-AUC}`` for every class that has an AUC in ``labels``
    (present, and not the only class present)."""
    y, p = _check(labels, probs, len(label_names))
    out: dict[str, float] = {}
    for c, name in enumerate(label_names):
        positives = y == c
        if positives.any() and not positives.all():
            out[name] = float(roc_auc_score(positives, p[:, c]))
    return out


def classification_metrics(
    labels: Sequence[int] | np.ndarray, probs: np.ndarray, label_names: Sequence[str]
) -> dict[str, float]:
    """Accuracy, macro-F1, macro one-vs-rest ROC-AUC and per-class AUC (see the module doc).

    Args:
        labels: true class index per example, in ``range(len(label_names))``.
        probs: predicted class probabilities, shape ``(n, len(label_names))`` (rows are
            softmax outputs; only their order within a column matters for the AUC).
        label_names: the class names, in index order (the per-class keys use them).
    """
    y, p = _check(labels, probs, len(label_names))
    preds = p.argmax(axis=1)
    aucs = per_class_auc(y, p, label_names)
    out = {
        "accuracy": float((preds == y).mean()),
        "macro_f1": float(
            f1_score(y, preds, average="macro", labels=list(range(len(label_names))),
                     zero_division=0)
        ),
        "roc_auc": float(np.mean(list(aucs.values()))) if aucs else math.nan,
        "roc_auc_classes": float(len(aucs)),
    }
    out.update({PER_CLASS_AUC_PREFIX + name: v for name, v in aucs.items()})
    return out


def per_class_from(metrics: dict[str, float]) -> dict[str, float]:
    """The ``roc_auc/<class>`` entries of a metrics dictionary, keyed by class name."""
    n = len(PER_CLASS_AUC_PREFIX)
    return {k[n:]: v for k, v in metrics.items() if k.startswith(PER_CLASS_AUC_PREFIX)}


def _check(
    labels: Sequence[int] | np.ndarray, probs: np.ndarray, num_labels: int
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    p = np.asarray(probs, dtype=np.float64)
    if len(y) == 0:
        raise DataError("cannot compute metrics on zero examples")
    if p.ndim != 2 or p.shape != (len(y), num_labels):
        raise DataError(
            f"probabilities have shape {p.shape}, expected ({len(y)}, {num_labels}): one row "
            "per example, one column per class"
        )
    if ((y < 0) | (y >= num_labels)).any():
        raise DataError(f"labels must be class indices in 0..{num_labels - 1}")
    if not np.isfinite(p).all():
        raise DataError("probabilities contain NaN or infinite values")
    return y, p

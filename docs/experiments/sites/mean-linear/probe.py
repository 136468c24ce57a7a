r"""Frozen-feature reference for `ffa-lora bench sites`: what a linear classifier on the
encoder's unit-norm mean-pooled features (the `mean_linear` head's input, no fine-tuning)
reaches on each site's data alone and on the pooled data.

    python docs/experiments/sites/mean-linear/probe.py --data hospital --seeds 1234,1,2,3,4
    python docs/experiments/sites/mean-linear/probe.py --data icd10 --max-train 6000 \
        --max-test 2000 --seeds 1234

Prints JSON: per seed and C (inverse L2 strength of scikit-learn's logistic regression), the
pooled model's global accuracy / macro AUC and every site's own-split AUC alone and pooled.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ffa_lora.data.builtin import load_builtin
from ffa_lora.data.dataset import Dataset
from ffa_lora.lora import LoRASpec
from ffa_lora.lora.model import build_model
from ffa_lora.lora.probe import pooled_features
from services.common.config import ModelConfig


def auc(clf: LogisticRegression, x: np.ndarray, y: np.ndarray, k: int) -> float | None:
    """Macro one-vs-rest ROC-AUC over the classes present in ``y`` (as the bench scores)."""
    p = np.zeros((len(x), k))
    p[:, clf.classes_] = clf.predict_proba(x)
    present = [c for c in range(k) if 0 < (y == c).sum() < len(y)]
    if not present:
        return None
    return float(np.mean([roc_auc_score(y == c, p[:, c]) for c in present]))


def xy(feats: dict[str, np.ndarray], data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The cached feature rows and the labels of ``data``."""
    return np.stack([feats[t] for t in data.texts]), np.asarray(data.labels)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="hospital")
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument("--max-test", type=int, default=None)
    p.add_argument("--seeds", default="1234")
    p.add_argument("--cs", default="1,10,100")
    a = p.parse_args()
    out = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        demo = load_builtin(a.data, seed=seed, max_train=a.max_train, max_test=a.max_test)
        k = len(demo.label_names)
        m = ModelConfig(name_or_path="demo", num_labels=k)
        model = build_model(LoRASpec(model=m.name_or_path, num_labels=k, max_length=m.max_length,
                                     target_modules=tuple(m.target_modules), r_max=m.rank,
                                     head="mean_linear", seed=seed))
        feats = {t: f for d in (demo.train, demo.test)
                 for t, f in zip(d.texts, pooled_features(model, d.texts))}

        xg, yg = xy(feats, demo.test)
        for c in [float(v) for v in a.cs.split(",")]:
            pooled = LogisticRegression(C=c, max_iter=2000).fit(*xy(feats, demo.train))
            row = {"seed": seed, "C": c, "pooled_global_accuracy": float(pooled.score(xg, yg)),
                   "pooled_global_auc": auc(pooled, xg, yg, k), "sites": {}}
            for s in sorted(demo.train_parts):
                xs, ys = xy(feats, demo.test_parts[s])
                alone = LogisticRegression(C=c, max_iter=2000).fit(*xy(feats, demo.train_parts[s]))
                row["sites"][s] = {"alone_own_auc": auc(alone, xs, ys, k),
                                   "pooled_own_auc": auc(pooled, xs, ys, k),
                                   "alone_global_accuracy": float(alone.score(xg, yg))}
            out.append(row)
            print(json.dumps({k2: v for k2, v in row.items() if k2 != "sites"}), file=sys.stderr)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

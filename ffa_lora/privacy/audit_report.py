"""The membership-inference audit of a released adapter, end to end: score members and
non-members with the adapter, train reference models, run the loss and LiRA attacks, measure
canary exposure, and report everything as one JSON-ready dict plus a ROC plot.

:func:`audit_from_scores` holds the arithmetic (numpy only); :func:`run_audit` produces the
scores with a model (torch) and calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ffa_lora.data.canaries import CanarySet
from ffa_lora.data.dataset import Dataset
from ffa_lora.errors import ConfigError, DataError
from ffa_lora.privacy.audit import (
    AttackResult,
    evaluate_attack,
    exposure,
    lira_offline,
    loss_attack_scores,
)
from ffa_lora.privacy.audit_model import reference_scores, reference_subsets, score_examples

if TYPE_CHECKING:
    from ffa_lora.lora.model import LoRAModel
    from ffa_lora.privacy.audit_model import ExampleScores, ReferenceTrainer


@dataclass(frozen=True)
class ScoreSet:
    """Target and reference scores of one candidate set.

    Attributes:
        loss: target model's loss per example, shape (n,).
        phi: target model's φ per example, shape (n,).
        ref_phi: reference models' φ, shape (m, n); ``None`` without reference models.
    """

    loss: np.ndarray
    phi: np.ndarray
    ref_phi: np.ndarray | None = None


def _lira(members: ScoreSet, nonmembers: ScoreSet) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """LiRA scores of both sets, fitted jointly (one pooled variance when it is global)."""
    if members.ref_phi is None or nonmembers.ref_phi is None:
        return None
    n = members.phi.size
    lira = lira_offline(np.concatenate([members.phi, nonmembers.phi]),
                        np.concatenate([members.ref_phi, nonmembers.ref_phi], axis=1))
    return lira.scores[:n], lira.scores[n:], lira.per_example_variance


def _attack_dict(result: AttackResult) -> dict[str, Any]:
    d = result.to_dict()
    pct = f"{result.fpr * 100:g}pct"
    return {"auc": d["auc"], "auc_ci": d["auc_ci"],
            f"tpr_at_{pct}_fpr": d["tpr_at_fpr"], f"tpr_at_{pct}_fpr_ci": d["tpr_at_fpr_ci"]}


def audit_from_scores(
    members: ScoreSet,
    nonmembers: ScoreSet,
    *,
    planted: ScoreSet | None = None,
    unseen: ScoreSet | None = None,
    fpr: float = 0.01,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[dict[str, Any], list[AttackResult]]:
    """The audit report from scores, and the attack results (for :func:`plot_roc`).

    The headline ``mia_auc`` / ``mia_tpr_at_1pct_fpr`` (at ``fpr``) is the strongest attack on
    natural records, each metric maximised separately and its attack named, so the report
    never shows the weaker attack's number as the privacy figure.
    """
    attack = partial(evaluate_attack, fpr=fpr, n_boot=n_boot, confidence=confidence)
    results = [attack("loss", loss_attack_scores(members.loss),
                               loss_attack_scores(nonmembers.loss), seed=seed)]
    lira = _lira(members, nonmembers)
    if lira is not None:
        results.append(attack("lira_offline", lira[0], lira[1], seed=seed + 10))
    pct = f"{fpr * 100:g}pct"
    best_auc = max(results, key=lambda r: r.auc)
    best_tpr = max(results, key=lambda r: r.tpr)
    report: dict[str, Any] = {
        "mia_auc": best_auc.auc,
        "mia_auc_ci": list(best_auc.auc_ci),
        "mia_auc_attack": best_auc.name,
        f"mia_tpr_at_{pct}_fpr": best_tpr.tpr,
        f"mia_tpr_at_{pct}_fpr_ci": list(best_tpr.tpr_ci),
        f"mia_tpr_at_{pct}_fpr_attack": best_tpr.name,
        "confidence": confidence,
        "attacks": {r.name: _attack_dict(r) for r in results},
        "counts": {"members": int(members.loss.size), "nonmembers": int(nonmembers.loss.size),
                   "reference_models": 0 if members.ref_phi is None else int(members.ref_phi.shape[0])},
        "lira_variance": None if lira is None else ("per_example" if lira[2] else "global"),
        "canaries": None,
    }
    if planted is not None and unseen is not None:
        canary = attack("canary_loss", loss_attack_scores(planted.loss),
                                 loss_attack_scores(unseen.loss), seed=seed + 20)
        results.append(canary)
        c: dict[str, Any] = exposure(planted.loss, unseen.loss).to_dict()
        c.update({"auc": canary.auc, "auc_ci": list(canary.auc_ci)})
        canary_lira = _lira(planted, unseen)
        if canary_lira is not None:
            lr = attack("canary_lira", canary_lira[0], canary_lira[1], seed=seed + 30)
            results.append(lr)
            c.update({"lira_auc": lr.auc, "lira_auc_ci": list(lr.auc_ci)})
        report["canaries"] = c
    return report, results


def plot_roc(results: Sequence[AttackResult], path: str | Path, *, title: str) -> Path:
    """ROC curves of the attacks, linear and log–log (where the low-FPR regime shows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, log in zip(axes, (False, True)):
        for r in results:
            ax.plot(r.roc_fpr, r.roc_tpr, label=f"{r.name} (AUC {r.auc:.3f})")
        ax.plot([1e-4, 1], [1e-4, 1], ":", color="grey", label="chance")
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(1e-3, 1)
            ax.set_ylim(1e-3, 1)
            ax.axvline(results[0].fpr, color="grey", lw=0.6)
        else:
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _balanced(a: Dataset, b: Dataset, cap: int | None, seed: int) -> tuple[Dataset, Dataset]:
    """Equal-size seeded samples of two sets (at most ``cap`` each)."""
    n = min(len(a), len(b), cap if cap is not None else len(a))
    rng = np.random.default_rng(seed)

    def take(d: Dataset) -> Dataset:
        return d if len(d) == n else d.subset(np.sort(rng.choice(len(d), size=n, replace=False)))

    return take(a), take(b)


def run_audit(
    model: LoRAModel,
    *,
    members: Dataset,
    nonmembers: Dataset,
    reference_pool: Dataset | None = None,
    reference_models: int = 4,
    reference_size: int | None = None,
    trainer: ReferenceTrainer | None = None,
    canaries: CanarySet | None = None,
    max_records: int | None = None,
    fpr: float = 0.01,
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    plot_path: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Audit ``model`` (the released adapter loaded) for membership leakage.

    Args:
        model: the target, e.g. from :func:`~ffa_lora.privacy.audit_model.load_adapter_model`.
        members: records the adapter was trained on (e.g. one site's training data, without
            canaries).
        nonmembers: records of the same distribution it never saw (e.g. the held-out test
            split). Members and non-members are sampled to the same size.
        reference_pool: records for the reference models, disjoint from members, non-members
            and canaries (e.g. other sites' data or public data); ``None`` or
            ``reference_models=0``: loss attack only.
        reference_models: how many reference models (LiRA needs at least 2).
        reference_size: records per reference model (default: as many as ``members``, the
            target's training set size; capped at the pool).
        trainer: trains a reference model on a subset (see ``audit_model.round_trainer``).
        canaries: the set planted into the target's training data, for exposure.
        max_records: at most this many members and non-members each.
        fpr: the false-positive level of the reported TPR (0.01 = 1 %).
        n_boot: bootstrap resamples of the confidence intervals (95 %).
        seed: seeds sampling, reference subsets and training, bootstrap.
        batch_size: scoring batch size.
        plot_path: where to write the ROC plot (PNG); ``None``: no plot.
        progress: called with a short line at each stage.

    Returns:
        The report of :func:`audit_from_scores` plus ``reference_train_size`` and ``plot``.
    """
    say = progress or (lambda _msg: None)
    if len(members) == 0 or len(nonmembers) == 0:
        raise DataError("the audit needs at least one member and one non-member record")
    use_refs = reference_pool is not None and reference_models > 0
    if use_refs and trainer is None:
        raise ConfigError("reference models need a trainer; pass trainer= (e.g. round_trainer(spec, ...))")
    if use_refs and reference_models < 2:
        raise ConfigError(f"reference_models: LiRA needs 0 (loss attack only) or >= 2, got {reference_models}")
    size = len(members) if reference_size is None else reference_size
    mem, non = _balanced(members, nonmembers, max_records, seed)
    sets = [mem, non] + ([canaries.planted, canaries.unseen] if canaries is not None else [])
    say(f"scoring {len(mem)} members and {len(non)} non-members with the target")
    target = [score_examples(model, d, batch_size=batch_size) for d in sets]
    refs: list[list[ExampleScores]] | None = None
    if use_refs:
        assert reference_pool is not None and trainer is not None
        size = min(size, len(reference_pool))
        subsets = reference_subsets(reference_pool, n_models=reference_models, size=size, seed=seed)
        refs = reference_scores(model, trainer, subsets, sets, seed=seed, batch_size=batch_size,
                                progress=say)

    def score_set(i: int) -> ScoreSet:
        ref_phi = None if refs is None else np.stack([r[i].phi for r in refs])
        return ScoreSet(loss=target[i].loss, phi=target[i].phi, ref_phi=ref_phi)

    report, results = audit_from_scores(
        score_set(0), score_set(1),
        planted=score_set(2) if canaries is not None else None,
        unseen=score_set(3) if canaries is not None else None,
        fpr=fpr, n_boot=n_boot, seed=seed,
    )
    report["counts"]["reference_train_size"] = size if use_refs else 0
    if canaries is not None:
        report["canaries"]["copies"] = canaries.copies
    report["plot"] = None
    if plot_path is not None:
        report["plot"] = str(plot_roc(results, plot_path, title="membership inference on the adapter"))
    return report

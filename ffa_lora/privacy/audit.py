"""Membership-inference statistics: attack scores, ROC metrics with bootstrap intervals, and
canary exposure. Pure numpy; the model side lives in :mod:`ffa_lora.privacy.audit_model`.

Convention: every attack turns per-example observations into a *score*, higher meaning
"more likely a member". An attack is judged by the ROC curve of its scores on known members
against known non-members:

- ``ROC-AUC`` — the probability that a random member scores above a random non-member
  (Mann–Whitney U / (n₁·n₀), ties counted one half); 0.5 is no signal.
- ``TPR at 1 % FPR`` — the share of members caught with a threshold that flags at most 1 % of
  non-members (Carlini et al., "Membership Inference Attacks From First Principles", 2022:
  what matters is confidently identifying a few members, not the average case).

Attacks:

- **loss threshold** (Yeom et al. 2018): score = −loss. Needs nothing but the target.
- **LiRA, offline** (Carlini et al. 2022, §IV-C): reference ("shadow") models trained on
  data of the same distribution that does *not* contain the audited examples give, per
  example, the distribution of the logit-scaled confidence φ = log(p_y / (1 − p_y)) when the
  example is OUT. Modelled as a Gaussian N(μ_i, σ_i²), the one-sided test
  Λ_i = Pr[Z ≤ φ_target(x_i)] = Φ((φ_target − μ_i) / σ_i) flags examples the target is more
  confident on than the models that never saw them. Subtracting μ_i removes each example's
  own difficulty, which is what the loss attack cannot do. With few reference models
  per-example variances are unreliable; the paper then uses one global variance (here the
  pooled within-example variance), which leaves the ranking equal to that of φ − μ_i.

Canary exposure (Carlini et al., "The Secret Sharer", 2019): a planted canary's rank among
N unseen canaries of the same form, ordered by loss (rank 1 = lower loss than all of them),
gives exposure = log₂(N + 1) − log₂(rank); log₂(N + 1) is the most it can be, and a canary
the model never saw has exposure 1/ln 2 ≈ 1.44 on average.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ffa_lora.errors import ConfigError

#: Below this many reference models LiRA uses one global variance (Carlini et al. 2022 find
#: per-example variances help only with many shadow models).
PER_EXAMPLE_VARIANCE_MIN_MODELS = 16

#: Smallest standard deviation LiRA divides by (guards examples all reference models agree on).
_MIN_STD = 1e-6

ScoreStat = Callable[[np.ndarray, np.ndarray], float]


def _scores(values: Any, name: str) -> np.ndarray:
    """A non-empty finite 1-D float64 array, or a :class:`ConfigError` naming ``name``."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ConfigError(f"{name}: need a non-empty 1-D array of scores, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name}: {int((~np.isfinite(arr)).sum())} scores are NaN or infinite")
    return arr


def _check_fpr(fpr: float) -> float:
    if not 0.0 < fpr < 1.0:
        raise ConfigError(f"fpr: must be in (0, 1), e.g. 0.01 for 1 %, got {fpr!r}")
    return float(fpr)


# -- ROC metrics ---------------------------------------------------------------------------


def roc_auc(member_scores: Any, nonmember_scores: Any) -> float:
    """ROC-AUC of scores (higher = member): Mann–Whitney U / (n₁·n₀), ties count one half."""
    pos = _scores(member_scores, "member_scores")
    neg = _scores(nonmember_scores, "nonmember_scores")
    return _auc(pos, neg)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    both = np.concatenate([pos, neg])
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    # Average rank (1-based) of each distinct value: the middle of its run in sorted order.
    ends = np.cumsum(counts)
    avg_rank = ends - (counts - 1) / 2.0
    rank_sum = float(avg_rank[inverse[: pos.size]].sum())
    u = rank_sum - pos.size * (pos.size + 1) / 2.0
    return u / (pos.size * neg.size)


def tpr_at_fpr(member_scores: Any, nonmember_scores: Any, *, fpr: float = 0.01) -> float:
    """Largest true-positive rate of a threshold that flags at most ``fpr`` of non-members.

    The threshold "score > t" with t the (k+1)-th largest non-member score, k = ⌊fpr·n₀⌋,
    flags at most k non-members and catches every member any such threshold catches.
    """
    pos = _scores(member_scores, "member_scores")
    neg = _scores(nonmember_scores, "nonmember_scores")
    return _tpr(pos, neg, _check_fpr(fpr))


def _tpr(pos: np.ndarray, neg: np.ndarray, fpr: float) -> float:
    k = math.floor(fpr * neg.size + 1e-9)
    if k >= neg.size:
        return 1.0
    t = np.partition(neg, neg.size - 1 - k)[neg.size - 1 - k]
    return float(np.count_nonzero(pos > t)) / pos.size


def roc_curve(member_scores: Any, nonmember_scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` of every distinct threshold "score ≥ s", from (0, 0) to (1, 1)."""
    pos = _scores(member_scores, "member_scores")
    neg = _scores(nonmember_scores, "nonmember_scores")
    both = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-both, kind="stable")
    sorted_scores, sorted_pos = both[order], is_pos[order]
    # The last index of each run of equal scores: thresholds between distinct values.
    last = np.r_[np.flatnonzero(np.diff(sorted_scores)), both.size - 1]
    tp = np.cumsum(sorted_pos)[last]
    fp = (last + 1) - tp
    return np.r_[0.0, fp / neg.size], np.r_[0.0, tp / pos.size]


def bootstrap_ci(
    member_scores: Any,
    nonmember_scores: Any,
    stat: ScoreStat,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(members, non-members)``.

    Members and non-members are resampled separately (each with replacement, keeping both
    counts), as the audit draws them as two samples.
    """
    if not isinstance(n_boot, int) or n_boot < 10:
        raise ConfigError(f"n_boot: need an integer >= 10 bootstrap resamples, got {n_boot!r}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence: must be in (0, 1), e.g. 0.95, got {confidence!r}")
    pos = _scores(member_scores, "member_scores")
    neg = _scores(nonmember_scores, "nonmember_scores")
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for b in range(n_boot):
        values[b] = stat(pos[rng.integers(0, pos.size, pos.size)],
                         neg[rng.integers(0, neg.size, neg.size)])
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(values, [tail, 1.0 - tail])
    return float(lo), float(hi)


@dataclass(frozen=True)
class AttackResult:
    """How well one attack separates members from non-members.

    Attributes:
        name: the attack (``loss``, ``lira_offline``, ``canary_loss``, …).
        auc, auc_ci: ROC-AUC and its bootstrap interval.
        tpr, tpr_ci: TPR at ``fpr`` false positives and its bootstrap interval.
        fpr: the false-positive level of ``tpr`` (0.01 = 1 %).
        n_members, n_nonmembers: how many scores of each kind.
        roc_fpr, roc_tpr: the ROC curve (for plots).
    """

    name: str
    auc: float
    auc_ci: tuple[float, float]
    tpr: float
    tpr_ci: tuple[float, float]
    fpr: float
    n_members: int
    n_nonmembers: int
    roc_fpr: np.ndarray
    roc_tpr: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the curve left out)."""
        return {
            "auc": self.auc,
            "auc_ci": list(self.auc_ci),
            "tpr_at_fpr": self.tpr,
            "tpr_at_fpr_ci": list(self.tpr_ci),
            "fpr": self.fpr,
            "members": self.n_members,
            "nonmembers": self.n_nonmembers,
        }


def evaluate_attack(
    name: str,
    member_scores: Any,
    nonmember_scores: Any,
    *,
    fpr: float = 0.01,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> AttackResult:
    """AUC and TPR at ``fpr`` with bootstrap intervals, and the ROC curve, of one attack."""
    fpr = _check_fpr(fpr)
    pos = _scores(member_scores, "member_scores")
    neg = _scores(nonmember_scores, "nonmember_scores")
    curve_fpr, curve_tpr = roc_curve(pos, neg)
    return AttackResult(
        name=name,
        auc=_auc(pos, neg),
        auc_ci=bootstrap_ci(pos, neg, _auc, n_boot=n_boot, confidence=confidence, seed=seed),
        tpr=_tpr(pos, neg, fpr),
        tpr_ci=bootstrap_ci(pos, neg, lambda p, n: _tpr(p, n, fpr), n_boot=n_boot,
                            confidence=confidence, seed=seed + 1),
        fpr=fpr,
        n_members=int(pos.size),
        n_nonmembers=int(neg.size),
        roc_fpr=curve_fpr,
        roc_tpr=curve_tpr,
    )


# -- attacks -------------------------------------------------------------------------------


def loss_attack_scores(losses: Any) -> np.ndarray:
    """Loss-threshold attack: score = −loss (members were fitted, so their loss is lower)."""
    return -_scores(losses, "losses")


@dataclass(frozen=True)
class LiRAScores:
    """Offline LiRA output.

    Attributes:
        scores: the standardized statistic z_i = (φ_i − μ_i) / σ_i (higher = member); the
            paper's Λ_i = Φ(z_i) is monotone in it, so both give the same ROC.
        mean_out, std_out: the fitted OUT Gaussians (σ the same for every example when
            ``per_example_variance`` is False).
        per_example_variance: whether σ was fitted per example or pooled.
    """

    scores: np.ndarray
    mean_out: np.ndarray
    std_out: np.ndarray
    per_example_variance: bool


def lira_offline(
    target_phi: Any,
    reference_phi: Any,
    *,
    per_example_variance: bool | None = None,
) -> LiRAScores:
    """Offline LiRA scores from the target's φ and reference models' φ on the same examples.

    Args:
        target_phi: shape (n,): φ = log(p_y / (1 − p_y)) of each example under the target.
        reference_phi: shape (m, n): the same under m ≥ 2 reference models none of which saw
            any of the n examples.
        per_example_variance: fit σ_i per example; default: only with at least
            :data:`PER_EXAMPLE_VARIANCE_MIN_MODELS` reference models, else one pooled σ.
    """
    phi = _scores(target_phi, "target_phi")
    ref = np.asarray(reference_phi, dtype=np.float64)
    if ref.ndim != 2 or ref.shape[1] != phi.size:
        raise ConfigError(
            f"reference_phi: need shape (models, {phi.size}) to match target_phi, got {ref.shape}"
        )
    if ref.shape[0] < 2:
        raise ConfigError(
            f"LiRA needs at least 2 reference models to estimate a variance, got {ref.shape[0]}"
        )
    if not np.all(np.isfinite(ref)):
        raise ConfigError("reference_phi: contains NaN or infinite values")
    if per_example_variance is None:
        per_example_variance = ref.shape[0] >= PER_EXAMPLE_VARIANCE_MIN_MODELS
    mean = ref.mean(axis=0)
    var = ref.var(axis=0, ddof=1)
    std = np.sqrt(var) if per_example_variance else np.full(phi.size, math.sqrt(var.mean()))
    std = np.maximum(std, _MIN_STD)
    return LiRAScores(scores=(phi - mean) / std, mean_out=mean, std_out=std,
                      per_example_variance=bool(per_example_variance))


# -- canaries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExposureResult:
    """Exposure of planted canaries against unseen ones.

    Attributes:
        exposure: per planted canary, log₂(N + 1) − log₂(rank).
        max_possible: log₂(N + 1), the exposure of a canary ranked first.
        n_planted, n_unseen: counts.
    """

    exposure: np.ndarray
    max_possible: float
    n_planted: int
    n_unseen: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        e = self.exposure
        return {
            "exposure_mean": float(e.mean()),
            "exposure_median": float(np.median(e)),
            "exposure_max": float(e.max()),
            "exposure_max_possible": self.max_possible,
            "ranked_first": int(np.count_nonzero(np.isclose(e, self.max_possible))),
            "planted": self.n_planted,
            "unseen": self.n_unseen,
        }


def exposure(planted_losses: Any, unseen_losses: Any) -> ExposureResult:
    """Exposure of each planted canary: its rank by loss among the unseen canaries.

    rank = 1 + (number of unseen canaries with a strictly lower loss), so a canary the model
    fits better than every unseen one has rank 1 and exposure log₂(N + 1).
    """
    planted = _scores(planted_losses, "planted_losses")
    unseen = np.sort(_scores(unseen_losses, "unseen_losses"))
    rank = 1 + np.searchsorted(unseen, planted, side="left")
    top = math.log2(unseen.size + 1)
    return ExposureResult(exposure=top - np.log2(rank), max_possible=top,
                          n_planted=int(planted.size), n_unseen=int(unseen.size))

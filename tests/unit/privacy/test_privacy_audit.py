"""Membership-inference statistics on synthetic scores: ROC metrics against sklearn and brute
force, bootstrap intervals that cover the true value, LiRA against the loss attack, exposure,
and the report."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from ffa_lora.errors import ConfigError
from ffa_lora.privacy.audit import (
    bootstrap_ci,
    evaluate_attack,
    exposure,
    lira_offline,
    loss_attack_scores,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
)
from ffa_lora.privacy.audit_report import ScoreSet, audit_from_scores, plot_roc

# Scores with many ties (small integers), the case where AUC conventions differ.
_tied = st.lists(st.integers(-3, 3).map(float), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(pos=_tied, neg=_tied)
def test_auc_matches_sklearn_with_ties(pos: list[float], neg: list[float]) -> None:
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    assert roc_auc(pos, neg) == pytest.approx(roc_auc_score(y, np.r_[pos, neg]), abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(pos=_tied, neg=_tied, fpr=st.sampled_from([0.01, 0.1, 0.25, 0.5]))
def test_tpr_at_fpr_is_best_roc_point_under_the_level(pos: list[float], neg: list[float], fpr: float) -> None:
    curve_fpr, curve_tpr = roc_curve(pos, neg)
    best = max(t for f, t in zip(curve_fpr, curve_tpr) if f <= fpr + 1e-12)
    assert tpr_at_fpr(pos, neg, fpr=fpr) == pytest.approx(best)


def test_roc_curve_is_monotone_from_origin_to_corner() -> None:
    rng = np.random.default_rng(0)
    f, t = roc_curve(rng.normal(1, 1, 300), rng.normal(0, 1, 200))
    assert (f[0], t[0]) == (0.0, 0.0) and (f[-1], t[-1]) == (1.0, 1.0)
    assert np.all(np.diff(f) >= 0) and np.all(np.diff(t) >= 0)


def test_trapezoid_area_equals_auc() -> None:
    rng = np.random.default_rng(1)
    pos, neg = np.round(rng.normal(0.5, 1, 400), 1), np.round(rng.normal(0, 1, 300), 1)
    f, t = roc_curve(pos, neg)
    assert np.trapezoid(t, f) == pytest.approx(roc_auc(pos, neg), abs=1e-12)


def test_separable_scores_give_auc_one() -> None:
    rng = np.random.default_rng(2)
    r = evaluate_attack("x", rng.normal(8, 1, 500), rng.normal(0, 1, 500), n_boot=200)
    assert r.auc > 0.999 and r.auc_ci[0] > 0.99
    assert r.tpr > 0.99 and r.tpr_ci[0] > 0.95


def test_identical_distributions_give_chance() -> None:
    rng = np.random.default_rng(3)
    r = evaluate_attack("x", rng.normal(0, 1, 2000), rng.normal(0, 1, 2000), n_boot=400)
    assert r.auc_ci[0] <= 0.5 <= r.auc_ci[1]
    assert r.auc_ci[1] - r.auc_ci[0] < 0.06
    assert r.tpr_ci[0] <= 0.01 <= r.tpr_ci[1]


def test_bootstrap_intervals_cover_the_true_auc() -> None:
    """Nominal 95 %: over independent samples the interval holds the true AUC most times."""
    d = 0.8
    true_auc = norm.cdf(d / math.sqrt(2))  # P(X > Y), X ~ N(d, 1), Y ~ N(0, 1)
    rng = np.random.default_rng(4)
    trials, hits = 80, 0
    for i in range(trials):
        lo, hi = bootstrap_ci(rng.normal(d, 1, 150), rng.normal(0, 1, 150), roc_auc, n_boot=300, seed=i)
        hits += lo <= true_auc <= hi
    assert hits / trials >= 0.85


def test_bootstrap_intervals_cover_the_true_tpr() -> None:
    d, level = 1.0, 0.1
    true_tpr = 1 - norm.cdf(norm.ppf(1 - level) - d)
    rng = np.random.default_rng(5)
    trials, hits = 80, 0
    for i in range(trials):
        lo, hi = bootstrap_ci(rng.normal(d, 1, 400), rng.normal(0, 1, 400),
                              lambda p, n: tpr_at_fpr(p, n, fpr=level), n_boot=300, seed=i)
        hits += lo <= true_tpr <= hi
    assert hits / trials >= 0.85


def _difficulty_case(n: int = 1500, refs: int = 4, seed: int = 6) -> tuple[ScoreSet, ScoreSet]:
    """Per-example difficulty dominates φ; membership adds a small shift LiRA can isolate."""
    rng = np.random.default_rng(seed)

    def sample(member: bool) -> ScoreSet:
        difficulty = rng.normal(0, 2.0, n)
        phi = difficulty + (1.0 if member else 0.0) + rng.normal(0, 0.5, n)
        ref_phi = difficulty + rng.normal(0, 0.5, (refs, n))
        return ScoreSet(loss=np.logaddexp(0, -phi), phi=phi, ref_phi=ref_phi)

    return sample(True), sample(False)


def test_lira_beats_the_loss_attack_when_difficulty_varies() -> None:
    members, nonmembers = _difficulty_case()
    report, _ = audit_from_scores(members, nonmembers, n_boot=200)
    loss, lira = report["attacks"]["loss"], report["attacks"]["lira_offline"]
    assert lira["auc_ci"][0] > loss["auc_ci"][1]
    assert lira["tpr_at_1pct_fpr"] > 3 * loss["tpr_at_1pct_fpr"]
    assert report["mia_auc_attack"] == "lira_offline" and report["mia_auc"] == lira["auc"]
    assert report["lira_variance"] == "global"


def test_lira_without_membership_signal_is_chance() -> None:
    rng = np.random.default_rng(7)
    difficulty = rng.normal(0, 2.0, 2000)
    phi = difficulty + rng.normal(0, 0.5, 2000)
    ref = difficulty + rng.normal(0, 0.5, (4, 2000))
    s = lira_offline(phi, ref).scores
    r = evaluate_attack("lira", s[:1000], s[1000:], n_boot=300)
    assert r.auc_ci[0] <= 0.5 <= r.auc_ci[1]


def test_lira_variance_choice() -> None:
    rng = np.random.default_rng(8)
    phi, few, many = rng.normal(size=50), rng.normal(size=(4, 50)), rng.normal(size=(32, 50))
    assert not lira_offline(phi, few).per_example_variance
    assert np.ptp(lira_offline(phi, few).std_out) == 0.0
    assert lira_offline(phi, many).per_example_variance
    assert np.ptp(lira_offline(phi, many).std_out) > 0.0
    forced = lira_offline(phi, few, per_example_variance=True)
    assert np.allclose(forced.std_out, few.std(axis=0, ddof=1))
    assert np.allclose(forced.scores, (phi - few.mean(axis=0)) / forced.std_out)


@pytest.mark.parametrize("ref, match", [
    (np.zeros((1, 5)), "at least 2 reference models"),
    (np.zeros((3, 4)), "shape"),
    (np.full((3, 5), np.nan), "NaN"),
])
def test_lira_rejects_bad_reference_scores(ref: np.ndarray, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        lira_offline(np.zeros(5), ref)


@pytest.mark.parametrize("call, match", [
    (lambda: roc_auc([], [1.0]), "non-empty"),
    (lambda: roc_auc([np.nan], [1.0]), "NaN"),
    (lambda: tpr_at_fpr([1.0], [0.0], fpr=0.0), "fpr"),
    (lambda: bootstrap_ci([1.0], [0.0], roc_auc, n_boot=1), "n_boot"),
    (lambda: bootstrap_ci([1.0], [0.0], roc_auc, confidence=1.5), "confidence"),
])
def test_bad_input_is_rejected_with_the_field_named(call, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=match):
        call()


def test_loss_attack_scores_lower_loss_higher() -> None:
    assert list(loss_attack_scores([0.1, 2.0])) == [-0.1, -2.0]


def test_exposure_of_canaries_fitted_best_is_maximal() -> None:
    e = exposure([0.01, 0.02], np.linspace(1, 2, 255))
    assert e.max_possible == 8.0
    assert np.allclose(e.exposure, 8.0)
    assert e.to_dict()["ranked_first"] == 2


def test_exposure_of_canaries_fitted_worst_is_zero() -> None:
    e = exposure([5.0], np.linspace(1, 2, 63))
    assert e.exposure[0] == pytest.approx(0.0)


def test_exposure_of_unmemorised_canaries_is_chance() -> None:
    """Planted and unseen from one distribution: mean exposure ≈ 1/ln 2."""
    rng = np.random.default_rng(9)
    e = exposure(rng.exponential(size=4000), rng.exponential(size=2000))
    assert e.to_dict()["exposure_mean"] == pytest.approx(1 / math.log(2), abs=0.08)


def test_report_with_canaries_and_plot(tmp_path: Path) -> None:
    members, nonmembers = _difficulty_case(n=300)
    rng = np.random.default_rng(10)
    unseen_loss = rng.exponential(1.0, 100)
    planted = ScoreSet(loss=rng.exponential(0.05, 20), phi=rng.normal(5, 1, 20), ref_phi=rng.normal(0, 1, (4, 20)))
    unseen = ScoreSet(loss=unseen_loss, phi=rng.normal(0, 1, 100), ref_phi=rng.normal(0, 1, (4, 100)))
    report, results = audit_from_scores(members, nonmembers, planted=planted, unseen=unseen, n_boot=100)
    c = report["canaries"]
    assert c["planted"] == 20 and c["unseen"] == 100
    assert c["exposure_mean"] > 3.0 and c["auc"] > 0.9 and c["lira_auc"] > 0.9
    assert {"mia_auc", "mia_auc_ci", "mia_tpr_at_1pct_fpr", "mia_tpr_at_1pct_fpr_ci"} <= report.keys()
    assert report["counts"] == {"members": 300, "nonmembers": 300, "reference_models": 4}
    png = plot_roc(results, tmp_path / "roc.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_without_reference_models_has_the_loss_attack_only() -> None:
    rng = np.random.default_rng(11)
    m = ScoreSet(loss=rng.exponential(0.5, 200), phi=rng.normal(size=200))
    n = ScoreSet(loss=rng.exponential(1.0, 200), phi=rng.normal(size=200))
    report, _ = audit_from_scores(m, n, n_boot=50)
    assert list(report["attacks"]) == ["loss"]
    assert report["mia_auc_attack"] == "loss" and report["lira_variance"] is None
    assert report["canaries"] is None

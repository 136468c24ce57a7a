"""Mechanisms: empirical noise matches the configured distribution (KS, fixed seeds), the
secure source is really random, sensitivity follows the documented relation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ffa_lora.errors import ConfigError
from ffa_lora.privacy.mechanisms import (
    GaussianMechanism,
    LaplaceMechanism,
    get_mechanism,
)
from ffa_lora.privacy.rng import SeededNoiseSource, SystemNoiseSource, resolve_source
from ffa_lora.privacy.sensitivity import mean_sensitivity, sum_sensitivity

N = 20_000


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_laplace_noise_matches_laplace_distribution(seed: int) -> None:
    mech = get_mechanism("laplace")
    # Δ1 = 0.02, ε_t = 0.5 → b = Δ/ε = 0.04, noise multiplier z = 1/ε = 2
    out = mech.add_noise(np.zeros(N), noise_multiplier=2.0, sensitivity=0.02, rng=seed)
    b = LaplaceMechanism.scale_for_epsilon(sensitivity=0.02, epsilon=0.5)
    assert b == pytest.approx(0.04)
    assert stats.kstest(out, stats.laplace(scale=b).cdf).pvalue > 1e-3
    # and it is not a Gaussian of the same variance
    assert stats.kstest(out, stats.norm(scale=math.sqrt(2) * b).cdf).pvalue < 1e-6


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_gaussian_noise_matches_normal_distribution(seed: int) -> None:
    mech = get_mechanism("gaussian")
    x = np.linspace(-1, 1, N)
    out = mech.add_noise(x, noise_multiplier=1.3, sensitivity=0.1, rng=seed) - x
    assert stats.kstest(out, stats.norm(scale=0.13).cdf).pvalue > 1e-3
    assert stats.kstest(out, stats.laplace(scale=0.13 / math.sqrt(2)).cdf).pvalue < 1e-6


def test_secure_source_is_default_and_unpredictable() -> None:
    src = resolve_source(None)
    assert isinstance(src, SystemNoiseSource) and src.secure
    mech = GaussianMechanism()
    a = mech.add_noise(np.zeros(1000), noise_multiplier=1.0, sensitivity=1.0)
    b = mech.add_noise(np.zeros(1000), noise_multiplier=1.0, sensitivity=1.0)
    assert not np.array_equal(a, b)
    # a loose sanity check (failure probability far below 1e-9)
    assert stats.kstest(a, "norm").pvalue > 1e-9


def test_seeded_source_reproducible_and_marked_insecure() -> None:
    s1, s2 = SeededNoiseSource(7), SeededNoiseSource(7)
    assert not s1.secure
    np.testing.assert_array_equal(s1.uniform(10), s2.uniform(10))
    u = SeededNoiseSource(8).uniform(100_000)
    assert u.min() > 0 and u.max() < 1


def test_gamma_sampler_matches_gamma() -> None:
    g = SeededNoiseSource(9).gamma(shape=0.25, scale=2.0, size=N)
    assert stats.kstest(g, stats.gamma(a=0.25, scale=2.0).cdf).pvalue > 1e-3


def test_add_noise_keeps_shape_and_does_not_modify_input() -> None:
    v = np.ones((3, 4))
    out = LaplaceMechanism().add_noise(v, noise_multiplier=1.0, sensitivity=1.0, rng=0)
    assert out.shape == (3, 4)
    np.testing.assert_array_equal(v, np.ones((3, 4)))


def test_event_and_registry() -> None:
    ev = get_mechanism("gaussian").event(noise_multiplier=2.0, count=3)
    assert (ev.mechanism, ev.noise_multiplier, ev.count) == ("gaussian", 2.0, 3)
    with pytest.raises(ConfigError, match="laplace, gaussian"):
        get_mechanism("exponential")
    with pytest.raises(TypeError, match="rng must be"):
        resolve_source("seed")  # type: ignore[arg-type]


@pytest.mark.parametrize("z", [0.0, -1.0, float("inf")])
def test_bad_noise_multiplier(z: float) -> None:
    with pytest.raises(ConfigError, match="noise_multiplier"):
        LaplaceMechanism().add_noise(np.zeros(2), noise_multiplier=z, sensitivity=1.0)


def test_sensitivity_fixed_and_ratio() -> None:
    # fixed public denominator: one client moves the sum by at most w_max·C
    assert mean_sensitivity(
        clip_bound=1.0, max_client_weight=100, denominator_weight=500
    ) == pytest.approx(0.2)
    # ratio estimator: twice that, over the minimum releasable total weight
    assert mean_sensitivity(
        clip_bound=1.0, max_client_weight=100, denominator_weight=500, denominator="ratio"
    ) == pytest.approx(0.4)
    assert sum_sensitivity(clip_bound=0.5, max_client_weight=10) == 5.0
    with pytest.raises(ConfigError, match="dominate"):
        mean_sensitivity(clip_bound=1.0, max_client_weight=10, denominator_weight=5)
    with pytest.raises(ConfigError, match="denominator"):
        mean_sensitivity(
            clip_bound=1.0,
            max_client_weight=1,
            denominator_weight=5,
            denominator="x",  # type: ignore[arg-type]
        )


def test_ratio_sensitivity_bound_holds_empirically() -> None:
    """Adding one client to a ratio-weighted mean moves it by at most 2·w_max·C/W_min."""
    rng = np.random.default_rng(0)
    c, w_max, d = 1.0, 10.0, 20
    for _ in range(200):
        k = int(rng.integers(3, 8))
        us = [u * min(1.0, c / np.linalg.norm(u)) for u in rng.normal(size=(k + 1, d)) * 3]
        ws = rng.uniform(5, w_max, size=k + 1)
        f_small = sum(w * u for w, u in zip(ws[:k], us[:k])) / ws[:k].sum()
        f_big = sum(w * u for w, u in zip(ws, us)) / ws.sum()
        bound = mean_sensitivity(
            clip_bound=c,
            max_client_weight=w_max,
            denominator_weight=float(ws[:k].sum()),
            denominator="ratio",
        )
        assert np.linalg.norm(f_big - f_small) <= bound + 1e-12

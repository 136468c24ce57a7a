"""Distributed noise: the sum of the clients' shares has the target distribution (KS, fixed
seeds), dropouts are covered, and the headroom keeps range clipping rare."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ffa_lora.errors import ConfigError, PrivacyError
from ffa_lora.privacy.distributed import (
    aggregate_noise_std,
    check_survivors,
    min_contributors,
    noise_headroom,
    noise_share,
    share_std,
)
from ffa_lora.privacy.rng import SeededNoiseSource

N = 20_000


def _shares(mechanism: str, scale: float, n: int, t: int, k: int, seed: int) -> np.ndarray:
    src = SeededNoiseSource(seed)
    return np.stack(
        [
            noise_share(
                mechanism=mechanism, scale=scale, n_clients=n, tolerated_dropouts=t, size=N, rng=src
            )  # type: ignore[arg-type]
            for _ in range(k)
        ]
    )


@pytest.mark.parametrize("n, seed", [(2, 0), (5, 1), (10, 2)])
def test_laplace_shares_sum_to_laplace(n: int, seed: int) -> None:
    total = _shares("laplace", 0.3, n, 0, n, seed).sum(axis=0)
    assert stats.kstest(total, stats.laplace(scale=0.3).cdf).pvalue > 1e-3


@pytest.mark.parametrize("n, seed", [(3, 3), (8, 4)])
def test_gaussian_shares_sum_to_gaussian(n: int, seed: int) -> None:
    total = _shares("gaussian", 0.7, n, 0, n, seed).sum(axis=0)
    assert stats.kstest(total, stats.norm(scale=0.7).cdf).pvalue > 1e-3


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_dropouts_tolerated(mechanism: str) -> None:
    n, t = 6, 2
    shares = _shares(mechanism, 1.0, n, t, n, seed=5)
    target = stats.laplace(scale=1.0) if mechanism == "laplace" else stats.norm(scale=1.0)
    # exactly n - t survivors: the target distribution
    assert stats.kstest(shares[: n - t].sum(axis=0), target.cdf).pvalue > 1e-3
    # all n: more noise than the target, never less
    full = shares.sum(axis=0)
    assert full.std() > target.std()
    expected = aggregate_noise_std(
        mechanism=mechanism,
        scale=1.0,
        n_clients=n,
        tolerated_dropouts=t,
        survivors=n,  # type: ignore[arg-type]
    )
    assert full.std() == pytest.approx(expected, rel=0.05)
    assert expected == pytest.approx(target.std() * math.sqrt(n / (n - t)))
    with pytest.raises(PrivacyError, match="under-noised"):
        check_survivors(survivors=n - t - 1, n_clients=n, tolerated_dropouts=t)
    check_survivors(survivors=n - t, n_clients=n, tolerated_dropouts=t)


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_share_std_matches_samples(mechanism: str) -> None:
    s = _shares(mechanism, 2.0, 4, 1, 1, seed=6)[0]
    assert s.std() == pytest.approx(
        share_std(mechanism=mechanism, scale=2.0, n_clients=4, tolerated_dropouts=1),  # type: ignore[arg-type]
        rel=0.05,
    )


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_headroom_keeps_clipping_rare(mechanism: str) -> None:
    p = 1e-2
    h = noise_headroom(
        mechanism=mechanism,
        scale=1.0,
        n_clients=4,
        tolerated_dropouts=1,  # type: ignore[arg-type]
        tail_probability=p,
    )
    s = _shares(mechanism, 1.0, 4, 1, 5, seed=7).ravel()
    frac = float(np.mean(np.abs(s) > h.headroom))
    assert frac <= p * 1.3  # bound holds empirically (Laplace bound is conservative)
    assert frac > 0 if mechanism == "gaussian" else True
    if mechanism == "gaussian":
        assert h.headroom_in_std == pytest.approx(stats.norm.isf(p / 2))
    # spreading over a 1000-dim vector needs more headroom per coordinate
    h1000 = noise_headroom(
        mechanism=mechanism,
        scale=1.0,
        n_clients=4,
        tolerated_dropouts=1,  # type: ignore[arg-type]
        tail_probability=p,
        dimension=1000,
    )
    assert h1000.headroom > h.headroom


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_clients": 0, "tolerated_dropouts": 0}, "n_clients"),
        ({"n_clients": 3, "tolerated_dropouts": 3}, "tolerated_dropouts"),
        ({"n_clients": 3, "tolerated_dropouts": -1}, "tolerated_dropouts"),
        ({"n_clients": 3.0, "tolerated_dropouts": 0}, "integer"),
    ],
)
def test_share_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        min_contributors(**kwargs)
    with pytest.raises(ConfigError, match="scale"):
        noise_share(mechanism="gaussian", scale=0.0, n_clients=2, size=3)


def test_default_share_uses_secure_source() -> None:
    a = noise_share(mechanism="laplace", scale=1.0, n_clients=3, size=100)
    b = noise_share(mechanism="laplace", scale=1.0, n_clients=3, size=100)
    assert a.shape == (100,) and not np.array_equal(a, b)

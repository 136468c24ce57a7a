"""Bounded stochastic rounding: whatever the update, its quantized norm stays within C + β."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ffa_lora.crypto.quantize import Quantizer
from ffa_lora.errors import ConfigError, PrivacyError
from ffa_lora.privacy.clipping import clip_by_norm, vector_norm
from ffa_lora.privacy.rounding import quantize_within_norm, rounding_slack


def values(codes: np.ndarray, q: Quantizer) -> np.ndarray:
    return codes.astype(np.float64) * q.step - q.clip


@st.composite
def updates(draw: st.DrawFn) -> tuple[np.ndarray, float, float, int, str]:
    """An update already clipped to C, of one of several adversarial shapes."""
    d = draw(st.integers(1, 3000))
    norm = draw(st.sampled_from(["l1", "l2"]))
    clip = draw(st.floats(1e-3, 2.0))
    q_range = draw(st.floats(1e-3, 2.0))
    bits = draw(st.integers(2, 16))
    shape = draw(st.sampled_from(["zeros", "spike", "uniform", "gaussian", "grid_midpoints"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q = Quantizer(clip=q_range, bits=bits)
    if shape == "zeros":
        x = np.zeros(d)
    elif shape == "spike":
        x = np.zeros(d)
        x[rng.integers(d)] = rng.choice([-1, 1]) * 10 * clip
    elif shape == "uniform":
        x = np.full(d, rng.choice([-1, 1]) * clip)
    elif shape == "grid_midpoints":  # every coordinate halfway between two grid points: p = 1/2
        k = rng.integers(0, q.levels, size=d)
        x = (k + 0.5) * q.step - q.clip
    else:
        x = rng.normal(size=d)
    x = clip_by_norm(x, bound=clip, norm=norm).vector  # type: ignore[arg-type]
    return x, clip, q_range, bits, norm


@settings(max_examples=300, deadline=None)
@given(updates(), st.integers(0, 2**32 - 1), st.integers(0, 8))
def test_quantized_norm_never_exceeds_clip_plus_slack(
    case: tuple[np.ndarray, float, float, int, str], seed: int, draws: int
) -> None:
    x, clip, q_range, bits, norm = case
    q = Quantizer(clip=q_range, bits=bits)
    beta = rounding_slack(
        norm_clip=clip, step=q.step, dimension=x.size, norm=norm  # type: ignore[arg-type]
    )
    codes = quantize_within_norm(
        x,
        quantizer=q,
        bound=clip + beta,
        norm=norm,  # type: ignore[arg-type]
        rng=np.random.default_rng(seed),
        max_draws=draws,
    )
    assert codes.dtype == q.dtype and codes.min() >= 0 and codes.max() <= q.levels
    assert vector_norm(values(codes, q), norm=norm) <= clip + beta  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(updates(), st.integers(0, 2**32 - 1))
def test_rounding_toward_zero_meets_the_bound_on_its_own(
    case: tuple[np.ndarray, float, float, int, str], seed: int
) -> None:
    """max_draws=0 forces the deterministic fallback: it must satisfy the bound by itself."""
    x, clip, q_range, bits, norm = case
    q = Quantizer(clip=q_range, bits=bits)
    if norm == "l2":
        bound = math.sqrt(clip**2 + x.size * q.step**2 / 4) * (1 + 1e-12)
    else:
        bound = (clip + x.size * q.step / 2) * (1 + 1e-12)
    codes = quantize_within_norm(
        x,
        quantizer=q,
        bound=bound,
        norm=norm,  # type: ignore[arg-type]
        rng=np.random.default_rng(seed),
        max_draws=0,
    )
    assert vector_norm(values(codes, q), norm=norm) <= bound  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5000), st.integers(2, 16), st.floats(1e-3, 2.0), st.integers(0, 2**32 - 1))
def test_noised_updates_are_bounded_beyond_their_noise(
    d: int, bits: int, clip: float, seed: int
) -> None:
    """Distributed mode: the rounded noised update, minus the share, is within C + β."""
    rng = np.random.default_rng(seed)
    q = Quantizer(clip=clip + 6 * 0.1, bits=bits)  # range ± (C + 6 std) of a share of std 0.1
    x = clip_by_norm(rng.normal(size=d), bound=clip, norm="l2").vector
    share = np.clip(rng.normal(scale=0.1, size=d), -0.6, 0.6)
    beta = rounding_slack(norm_clip=clip, step=q.step, dimension=d, norm="l2")
    codes = quantize_within_norm(
        x + share, quantizer=q, bound=clip + beta, norm="l2", rng=rng, offset=share
    )
    assert np.linalg.norm(values(codes, q) - share) <= clip + beta


def test_the_slack_keeps_stochastic_rounding_unbiased() -> None:
    """With β from the tail bound, stochastic draws are kept: the mean of many quantizations of
    one update is that update (the fallback, which is biased, is not used)."""
    rng = np.random.default_rng(1)
    x = clip_by_norm(rng.normal(size=38_000), bound=0.5, norm="l2").vector
    q = Quantizer(clip=0.5, bits=8)
    beta = rounding_slack(norm_clip=0.5, step=q.step, dimension=x.size, norm="l2")
    assert 0 < beta < 0.2  # sqrt(C² + d·s²/4) - C plus the tail terms
    mean = np.mean(
        [
            values(
                quantize_within_norm(
                    x, quantizer=q, bound=0.5 + beta, norm="l2", rng=rng, max_draws=1
                ),
                q,
            )
            for _ in range(200)
        ],
        axis=0,
    )
    assert np.abs(mean - x).max() < 5 * q.step / np.sqrt(200)


def test_range_clipping_of_the_noise_is_refused() -> None:
    """A share larger than the quantization range cannot be bounded: the update is not sent."""
    q = Quantizer(clip=0.1, bits=8)
    share = np.full(100, 5.0)
    with pytest.raises(PrivacyError, match="not sent"):
        quantize_within_norm(
            np.zeros(100) + share,
            quantizer=q,
            bound=0.2,
            norm="l2",
            rng=np.random.default_rng(0),
            offset=share,
        )


@pytest.mark.parametrize(
    "kwargs", [{"norm_clip": 0.0}, {"step": -1.0}, {"dimension": -1}, {"norm": "l3"}, {"tail": 1.5}]
)
def test_slack_arguments_are_checked(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "norm_clip": 1.0,
        "step": 0.01,
        "dimension": 10,
        "norm": "l2",
    } | kwargs
    with pytest.raises(ConfigError):
        rounding_slack(**args)  # type: ignore[arg-type]

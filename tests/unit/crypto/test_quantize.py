"""Quantizer: clipping, unbiased stochastic rounding, dequantized (weighted) means."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ffa_lora.crypto.quantize import QuantizationError, Quantizer
from ffa_lora.errors import ConfigError

floats = st.floats(-10.0, 10.0, allow_nan=False, width=32)


@pytest.mark.parametrize("kwargs", [{"clip": 0.0}, {"clip": -1.0}, {"clip": float("nan")},
                                    {"clip": 1.0, "bits": 1}, {"clip": 1.0, "bits": 17},
                                    {"clip": 1.0, "bits": 8.5}])
def test_invalid_config(kwargs) -> None:
    with pytest.raises(ConfigError):
        Quantizer(**kwargs)


def test_keyword_only() -> None:
    with pytest.raises(TypeError):
        Quantizer(1.0)  # type: ignore[misc]


@settings(max_examples=60, deadline=None)
@given(x=hnp.arrays(np.float32, st.integers(1, 300), elements=floats),
       clip=st.floats(0.01, 5.0), bits=st.sampled_from([2, 8, 16]), seed=st.integers(0, 2**32))
def test_codes_in_range_and_single_error_below_step(x, clip, bits, seed) -> None:
    q = Quantizer(clip=clip, bits=bits)
    codes = q.quantize(x, rng=np.random.default_rng(seed))
    assert codes.dtype == (np.uint8 if bits <= 8 else np.uint16)
    assert codes.shape == (x.size,) and int(codes.max()) <= q.levels
    err = np.abs(q.dequantize(codes).astype(np.float64) - np.clip(x.astype(np.float64), -clip, clip))
    assert err.max() <= q.step * (1 + 1e-5) + 1e-6


@settings(max_examples=60, deadline=None)
@given(data=st.data(), clients=st.integers(1, 12), size=st.integers(1, 200),
       clip=st.floats(0.05, 3.0), seed=st.integers(0, 2**32))
def test_weighted_mean_within_quantization_bound(data, clients, size, clip, seed) -> None:
    q = Quantizer(clip=clip, bits=8)
    rng = np.random.default_rng(seed)
    xs = [data.draw(hnp.arrays(np.float32, size, elements=floats)) for _ in range(clients)]
    ws = data.draw(st.lists(st.integers(1, 16), min_size=clients, max_size=clients))
    sums = sum(w * q.quantize(x, rng=rng).astype(np.int64) for x, w in zip(xs, ws))
    mean = q.dequantize_mean(sums, float(sum(ws)))
    exact = sum(w * np.clip(x.astype(np.float64), -clip, clip) for x, w in zip(xs, ws)) / sum(ws)
    assert np.abs(mean.astype(np.float64) - exact).max() <= q.step * (1 + 1e-5) + 1e-6


def test_stochastic_rounding_is_unbiased() -> None:
    q = Quantizer(clip=1.0, bits=8)
    rng = np.random.default_rng(1234)
    values = np.array([-0.9991, -0.3333, 0.0017, 0.25, 0.77777], dtype=np.float32)
    reps = 20000
    codes = q.quantize(np.tile(values, reps), rng=rng).reshape(reps, -1).astype(np.float64)
    y = (values.astype(np.float64) + 1.0) * q.levels / 2.0
    frac = y - np.floor(y)
    se = np.sqrt(frac * (1 - frac) / reps) + 1e-12
    z = np.abs(codes.mean(axis=0) - y) / se
    assert (z < 5).all(), z
    # and the dequantized mean is unbiased for the float
    assert np.abs(q.dequantize(codes.mean(axis=0).round().astype(np.int64)) - values).max() <= q.step


def test_clipping_and_heterogeneous_weight_totals() -> None:
    q = Quantizer(clip=0.5, bits=8)
    codes = q.quantize(np.array([-7.0, 9.0, 0.5, -0.5]), rng=np.random.default_rng(0))
    assert codes.tolist() == [0, 255, 255, 0]
    sums = np.array([255 * 3, 0, 0])
    out = q.dequantize_mean(sums, np.array([3.0, 2.0, 0.0]))
    assert out.dtype == np.float32
    assert out[0] == pytest.approx(0.5) and out[1] == pytest.approx(-0.5) and out[2] == 0.0


def test_rejects_non_finite_and_inconsistent_sums() -> None:
    q = Quantizer(clip=1.0)
    with pytest.raises(QuantizationError):
        q.quantize(np.array([0.0, np.nan]), rng=np.random.default_rng(0))
    with pytest.raises(QuantizationError):
        q.quantize(np.array([np.inf]), rng=np.random.default_rng(0))
    with pytest.raises(QuantizationError):
        q.dequantize_mean(np.array([600]), 2.0)  # > 2 × 255: weights do not match the sums
    with pytest.raises(QuantizationError):
        q.dequantize(np.array([256]))

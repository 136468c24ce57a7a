"""Clipping: every clipped vector respects its bound (property tests), and what clipping
reports is right."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ffa_lora.errors import ConfigError, PrivacyError
from ffa_lora.privacy.clipping import clip_by_norm, clip_l1, clip_l2, vector_norm

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
vectors = arrays(np.float64, st.integers(1, 300), elements=finite)
bounds = st.floats(min_value=1e-6, max_value=1e4, allow_nan=False)
norms = st.sampled_from(["l1", "l2"])


@settings(max_examples=300, deadline=None)
@given(v=vectors, bound=bounds, norm=norms)
def test_clipped_vector_respects_bound(v: np.ndarray, bound: float, norm: str) -> None:
    res = clip_by_norm(v, bound=bound, norm=norm)  # type: ignore[arg-type]
    assert vector_norm(res.vector, norm=norm) <= bound  # type: ignore[arg-type]
    assert res.norm == pytest.approx(vector_norm(v, norm=norm))  # type: ignore[arg-type]
    assert res.clipped == (res.norm > bound)


@settings(max_examples=200, deadline=None)
@given(v=vectors, bound=bounds, norm=norms)
def test_clipping_keeps_direction_and_inside_vectors(
    v: np.ndarray, bound: float, norm: str
) -> None:
    res = clip_by_norm(v, bound=bound, norm=norm)  # type: ignore[arg-type]
    if not res.clipped:
        np.testing.assert_array_equal(res.vector, v)
    else:
        # a non-negative multiple of the input, shrunk to (just under) the bound
        factor = bound / res.norm
        np.testing.assert_allclose(res.vector, v * factor, rtol=1e-12, atol=0)
        assert vector_norm(res.vector, norm=norm) == pytest.approx(bound, rel=1e-12)  # type: ignore[arg-type]


def test_l1_and_l2_differ_on_same_vector() -> None:
    v = np.array([3.0, 4.0])
    assert clip_l2(v, bound=5.0).clipped is False
    r1 = clip_l1(v, bound=5.0)
    assert r1.clipped and r1.norm == 7.0
    np.testing.assert_allclose(r1.vector, v * 5.0 / 7.0)


def test_input_not_modified_and_shape_flattened() -> None:
    v = np.ones((2, 3), dtype=np.float32)
    before = v.copy()
    res = clip_l2(v, bound=1.0)
    np.testing.assert_array_equal(v, before)
    assert res.vector.shape == (6,) and res.vector.dtype == np.float64


@pytest.mark.parametrize("bound", [0.0, -1.0, float("inf"), float("nan"), "1"])
def test_bad_bound_rejected(bound: object) -> None:
    with pytest.raises(ConfigError, match="clip bound"):
        clip_l2(np.ones(3), bound=bound)  # type: ignore[arg-type]


def test_non_finite_update_rejected_without_values_in_message() -> None:
    with pytest.raises(PrivacyError, match="NaN or infinite") as exc:
        clip_l1(np.array([1.5, np.nan]), bound=1.0)
    assert "1.5" not in str(exc.value)


def test_unknown_norm() -> None:
    with pytest.raises(ConfigError, match="'l1' or 'l2'"):
        clip_by_norm(np.ones(2), bound=1.0, norm="linf")  # type: ignore[arg-type]

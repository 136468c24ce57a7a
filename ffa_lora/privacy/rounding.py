"""Stochastic rounding whose output norm is bounded, so that the DP sensitivity covers the update
as it enters the secure sum, not only as it was clipped.

The problem
-----------
A client clips its update ``x`` to norm ``C`` and then quantizes every coordinate to the grid
``-R + k·s`` (``k = 0..L``, ``s = 2R/L``, :class:`~ffa_lora.crypto.quantize.Quantizer`) by
stochastic rounding. What enters the sum is the rounded vector ``g = x + e`` with
``|e_j| < s``; its norm can exceed ``C`` by up to ``√d·s`` (L2) or ``d·s`` (L1), while the
noise would be calibrated to ``C``. The grid has an even number of points, so 0 is not one of
them: a coordinate at 0 always becomes ``±s/2``.

The bound
---------
Let ``β`` be :func:`rounding_slack`. :func:`quantize_within_norm` returns codes whose
dequantized vector (minus the client's noise share ``n`` in distributed mode, see below) has
norm ``<= C + β`` -- always, not with high probability:

1. It draws ordinary stochastic rounding and keeps the draw if the bound holds (it re-draws
   up to ``max_draws`` times).
2. Otherwise it rounds every coordinate to the one of its two neighbouring grid points that is
   closer to zero ("toward zero"). For ``x_j`` between grid points ``lo <= x_j <= hi``: if both
   have the sign of ``x_j`` the chosen point has ``|g_j| <= |x_j|``; if they straddle 0 they
   are at most ``s`` apart, so the one closer to 0 has ``|g_j| <= s/2``. Hence
   ``|g_j| <= max(|x_j|, s/2)`` and

   * L2: ``||g||² <= ||x||² + d·s²/4 <= C² + d·s²/4``,
   * L1: ``||g||₁ <= ||x||₁ + d·s/2 <= C + d·s/2``.

``β`` is at least the fallback's bound, so step 2 always satisfies it; the sensitivity of the
weighted sum is then ``w_max · (C + β)``.

For L2, ``β`` is also large enough that step 1 almost never re-draws, so the rounding stays
unbiased: ``E||x + e||² = ||x||² + Σ p_j(1-p_j)s² <= C² + d·s²/4`` and, by Hoeffding's
inequality (``e_j`` lies in an interval of length ``s``, ``e_j²`` in ``[0, s²]``),
``2<x, e> <= C·s·sqrt(2 ln(2/p))`` and ``Σ(e_j² - E e_j²) <= s²·sqrt(d ln(2/p) / 2)``, each
except with probability ``p/2``. So

    β_L2 = sqrt(C² + d·s²/4 + C·s·sqrt(2 ln(2/p)) + s²·sqrt(d·ln(2/p)/2)) - C

keeps a draw with probability at least ``1 - p`` (``p`` = :data:`ROUNDING_TAIL`). For L1,
``β_L1 = d·s/2`` (the fallback's bound; the rounding's mean exceeds ``||x||₁`` by up to that).
Both grow with the step: 16-bit codes make them 256 times smaller than 8-bit ones.

Distributed noise
-----------------
A client that adds its noise share ``n`` before quantizing rounds ``x + n``; what its update
contributes beyond its noise is ``g - n``. The same construction bounds ``||g - n||``: the
two grid points around ``x_j + n_j``, shifted by ``-n_j``, lie around ``x_j`` and are ``s``
apart. Only a coordinate whose noised value falls outside the range ``±R`` breaks the
argument (the quantizer clips it); the range has headroom for the noise
(:func:`~ffa_lora.privacy.distributed.noise_headroom`), and if the bound fails anyway the
client refuses to send (:class:`~ffa_lora.errors.PrivacyError`) rather than send more than
the sensitivity allows.
"""

from __future__ import annotations

import math

import numpy as np

from ffa_lora.crypto.quantize import Quantizer
from ffa_lora.errors import ConfigError, PrivacyError
from ffa_lora.privacy.clipping import NormKind, vector_norm

__all__ = ["ROUNDING_TAIL", "quantize_within_norm", "rounding_slack"]

#: probability that one stochastic rounding draw exceeds ``C + β`` (L2) and is re-drawn
ROUNDING_TAIL = 1e-9


def rounding_slack(
    *, norm_clip: float, step: float, dimension: int, norm: NormKind, tail: float = ROUNDING_TAIL
) -> float:
    """β: how far above the clip bound ``C`` a quantized update's norm may be (module docstring).

    Args:
        norm_clip: C, the norm the update was clipped to.
        step: the quantization step ``s = 2R/L``.
        dimension: d, the number of coordinates the client sends.
        norm: ``"l2"`` (Gaussian mechanism) or ``"l1"`` (Laplace).
        tail: probability that one stochastic rounding draw exceeds ``C + β`` (L2).
    """
    c = _positive("norm_clip", norm_clip)
    s = _positive("step", step)
    if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 0:
        raise ConfigError(f"dimension must be a non-negative integer, got {dimension!r}")
    if not (isinstance(tail, float) and 0 < tail < 1):
        raise ConfigError(f"tail must be a float in (0, 1), got {tail!r}")
    d = float(dimension)
    if norm == "l1":
        return d * s / 2.0
    if norm != "l2":
        raise ConfigError(f"norm must be 'l1' or 'l2', got {norm!r}")
    log_term = math.log(2.0 / tail)
    squared = (
        c * c
        + d * s * s / 4.0
        + c * s * math.sqrt(2.0 * log_term)
        + s * s * math.sqrt(d * log_term / 2.0)
    )
    return math.sqrt(squared) - c


def quantize_within_norm(
    x: np.ndarray,
    *,
    quantizer: Quantizer,
    bound: float,
    norm: NormKind,
    rng: np.random.Generator,
    offset: np.ndarray | None = None,
    max_draws: int = 8,
) -> np.ndarray:
    """Codes of ``x`` whose dequantized values, minus ``offset``, have ``norm <= bound``.

    Args:
        x: the (clipped, possibly noised) update.
        quantizer: the round's quantizer (range and bits).
        bound: ``C + β`` with β from :func:`rounding_slack` for this quantizer's step.
        norm: ``"l2"`` or ``"l1"``.
        rng: randomness of the stochastic rounding.
        offset: the client's noise share in distributed mode (``x`` includes it), else None.
        max_draws: stochastic rounding draws before rounding toward zero.

    Raises:
        PrivacyError: not even rounding toward zero meets the bound (only possible when
            noised values fell outside the quantization range).
    """
    a = np.asarray(x, dtype=np.float64).ravel()
    off = np.zeros_like(a) if offset is None else np.asarray(offset, dtype=np.float64).ravel()
    for _ in range(max_draws):
        codes = quantizer.quantize(a, rng=rng)
        if _norm_of(codes, quantizer, off, norm) <= bound:
            return codes
    codes = _toward_zero(a, quantizer, off)
    if _norm_of(codes, quantizer, off, norm) > bound:
        raise PrivacyError(
            "the quantized update exceeds the norm the noise is calibrated to (noised values fell "
            "outside the quantization range); this update is not sent"
        )
    return codes


def _values(codes: np.ndarray, q: Quantizer) -> np.ndarray:
    return codes.astype(np.float64) * q.step - q.clip


def _norm_of(codes: np.ndarray, q: Quantizer, offset: np.ndarray, norm: NormKind) -> float:
    return vector_norm(_values(codes, q) - offset, norm=norm)


def _toward_zero(a: np.ndarray, q: Quantizer, offset: np.ndarray) -> np.ndarray:
    """Per coordinate, the neighbouring grid point whose value minus ``offset`` is smaller."""
    y = (np.clip(a, -q.clip, q.clip) + q.clip) * (q.levels / (2.0 * q.clip))
    np.clip(y, 0.0, float(q.levels), out=y)
    low = np.floor(y).astype(np.int64)
    high = np.minimum(low + 1, q.levels)
    below = np.abs(low * q.step - q.clip - offset)
    above = np.abs(high * q.step - q.clip - offset)
    codes = np.where(above < below, high, low)
    return codes.astype(q.dtype)


def _positive(name: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)

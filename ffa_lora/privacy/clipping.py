"""Norm clipping of a client's update before it is weighted, quantized and encrypted.

Clipping is what bounds one client's influence on the aggregate (docs/architecture.md): the
Laplace mechanism needs an L1 bound, the Gaussian mechanism an L2 bound. The client clips the
whole flattened update (B factors + head) as one vector, so the bound holds for the vector that
is summed, whatever its layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ffa_lora.errors import ConfigError, PrivacyError

NormKind = Literal["l1", "l2"]

# Scaling by bound/norm in floating point can overshoot the bound by a few ulps; shrink the
# factor by this relative margin so the clipped norm is never above the bound.
_SAFETY = 1.0 - 4.0 * np.finfo(np.float64).eps


@dataclass(frozen=True)
class ClipResult:
    """A clipped update and what clipping did to it.

    Attributes:
        vector: the clipped vector (a new array; the input is not modified).
        norm: the norm of the input before clipping.
        clipped: whether the input was scaled down.
    """

    vector: np.ndarray
    norm: float
    clipped: bool


def vector_norm(vector: np.ndarray, *, norm: NormKind) -> float:
    """Return the L1 or L2 norm of a flat float vector (computed in float64)."""
    v = np.asarray(vector, dtype=np.float64).ravel()
    if norm == "l1":
        return float(np.sum(np.abs(v)))
    if norm == "l2":
        return float(np.linalg.norm(v))
    raise ConfigError(f"norm must be 'l1' or 'l2', got {norm!r}")


def clip_by_norm(vector: np.ndarray, *, bound: float, norm: NormKind) -> ClipResult:
    """Scale ``vector`` down so that its ``norm`` is at most ``bound``; keep it if already inside.

    Args:
        vector: the client's flattened update (any float dtype, any shape; returned flat, float64).
        bound: the clipping bound C (> 0), sent with the round task.
        norm: ``"l1"`` (for the Laplace mechanism) or ``"l2"`` (for the Gaussian mechanism).

    Raises:
        ConfigError: if the bound is not a positive finite number or the norm kind is unknown.
        PrivacyError: if the update contains NaN or infinity (it cannot be bounded).
    """
    if not (isinstance(bound, (int, float)) and math.isfinite(bound) and bound > 0):
        raise ConfigError(f"clip bound must be a positive finite number, got {bound!r}")
    v = np.asarray(vector, dtype=np.float64).ravel()
    if not np.all(np.isfinite(v)):
        raise PrivacyError(
            "update contains NaN or infinite values and cannot be clipped; "
            "check the local training (learning rate, loss scaling)"
        )
    n = vector_norm(v, norm=norm)
    if n <= bound:
        return ClipResult(vector=v.copy(), norm=n, clipped=False)
    factor = (bound / n) * _SAFETY
    out = v * factor
    # Defensive: guarantee the bound even for pathological rounding.
    while vector_norm(out, norm=norm) > bound:
        out = out * _SAFETY
    return ClipResult(vector=out, norm=n, clipped=True)


def clip_l1(vector: np.ndarray, *, bound: float) -> ClipResult:
    """L1 clipping (Laplace mechanism). See :func:`clip_by_norm`."""
    return clip_by_norm(vector, bound=bound, norm="l1")


def clip_l2(vector: np.ndarray, *, bound: float) -> ClipResult:
    """L2 clipping (Gaussian mechanism). See :func:`clip_by_norm`."""
    return clip_by_norm(vector, bound=bound, norm="l2")

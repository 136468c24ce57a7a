"""Integer aggregation weights an edge applies by homomorphic scalar multiplication.

Asynchronous mode (FedBuff): an update trained on an adapter ``tau`` versions older than the
edge's current one is weighted by s(tau) = (1 + tau)^-a. Ciphertexts can only be multiplied by
integers, so s is quantized: a fresh update carries weight ``w * STALENESS_SCALE``, a stale one
``w * round(STALENESS_SCALE * (1+tau)^-a)`` (at least ``w``). The coordinator divides by the
summed effective weights, so the scale cancels out. Edges, the coordinator and the key holders
compute the same factor from the same signed versions.
"""

from __future__ import annotations

__all__ = ["STALENESS_SCALE", "staleness_weight"]

STALENESS_SCALE = 4


def staleness_weight(tau: int, exponent: float) -> int:
    """Integer staleness factor of an update ``tau`` versions behind (see the module doc)."""
    return max(1, round(STALENESS_SCALE * (1.0 + max(0, tau)) ** (-exponent)))

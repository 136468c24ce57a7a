"""Aggregation exactness: what averaging factors does to the product ΔW = s·B·A.

With FFA-LoRA every client shares A, so ``mean_i(B_i)·A = mean_i(B_i·A)`` — averaging B (what
the secure sum computes) is averaging the clients' ΔW exactly. With fedavg-LoRA each client
trains its own A_i, and ``mean(B_i)·mean(A_i) ≠ mean(B_i·A_i)`` in general: the discrepancy
below is the error the classic baseline makes every round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ffa_lora.errors import StateError
from ffa_lora.lora.state import lora_modules


def _weights(n: int, weights: Sequence[float] | np.ndarray | None) -> np.ndarray:
    if n == 0:
        raise StateError("need at least one adapter state")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or (w < 0).any() or w.sum() <= 0:
        raise StateError("weights must be one non-negative number per state, not all zero")
    return w / w.sum()


def delta_w(state: Mapping[str, np.ndarray], *, scaling: float = 1.0) -> dict[str, np.ndarray]:
    """``scaling · B·A`` per LoRA module (float64)."""
    return {
        m: scaling * (np.asarray(state[m + ".lora_B.weight"], dtype=np.float64)
                      @ np.asarray(state[m + ".lora_A.weight"], dtype=np.float64))
        for m in lora_modules(state)
    }


def mean_state(
    states: Sequence[Mapping[str, np.ndarray]],
    weights: Sequence[float] | np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Entry-wise weighted mean of adapter states (float64)."""
    w = _weights(len(states), weights)
    keys = set(states[0])
    if any(set(s) != keys for s in states):
        raise StateError("adapter states have different keys")
    return {k: sum(wi * np.asarray(s[k], dtype=np.float64) for wi, s in zip(w, states))
            for k in states[0]}


def aggregation_discrepancy(
    states: Sequence[Mapping[str, np.ndarray]],
    weights: Sequence[float] | None = None,
    *,
    scaling: float = 1.0,
) -> float:
    """``‖mean(B_i)·mean(A_i) − mean(B_i·A_i)‖_F`` over all modules (√ of summed squares).

    0 (up to float rounding) when every state has the same A (FFA-LoRA); > 0 in general when
    the A_i differ (fedavg-LoRA).
    """
    w = _weights(len(states), weights)
    avg = delta_w(mean_state(states, w), scaling=scaling)
    per_client = [delta_w(s, scaling=scaling) for s in states]
    total = 0.0
    for m, dw in avg.items():
        mean_of_products = sum(wi * pc[m] for wi, pc in zip(w, per_client))
        total += float(np.square(dw - mean_of_products).sum())
    return float(np.sqrt(total))

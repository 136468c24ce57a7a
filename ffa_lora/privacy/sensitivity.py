"""Sensitivity of the federation's aggregate under client-level differential privacy.

Neighbouring relation
---------------------
Two federations are neighbours when one has one more client than the other — that client's
whole local dataset is added or removed (*add/remove one client*, dp-accounting's
``ADD_OR_REMOVE_ONE``). The guarantee therefore protects everything a single institution
contributes, in every round, not just one record. Sample-level DP (one record) is the job of
DP-SGD at the client (:mod:`ffa_lora.privacy.dp_sgd`).

What is released each round is the weighted mean update ``sum_i w_i u_i / D`` where
``u_i`` is client i's clipped update (``||u_i|| <= C`` in the mechanism's norm: L1 for
Laplace, L2 for Gaussian) and ``w_i = min(n_i, w_max)`` is its *capped* weight (sample count
capped at a public ``w_max``, so no client can buy more influence by claiming more data).

Two choices of the denominator ``D`` are supported:

``"fixed"`` (default, recommended; McMahan et al. 2018, "Learning Differentially Private
    Recurrent Language Models", the fixed-denominator estimator)
    ``D = W_ref`` is a public constant fixed before training (e.g. the expected total weight,
    or ``min_clients * w_max``). Adding or removing client x changes the sum by ``w_x u_x``,
    so ``Δ = w_max * C / W_ref`` — data independent. The mean is slightly biased when the real
    total weight differs from ``W_ref``; the real totals need not be published. This is the
    only choice compatible with distributed noise, where shares are calibrated in sum space.

``"ratio"``
    ``D = sum_i w_i`` is the real total weight, and the coordinator refuses to release unless
    ``D >= W_min`` (public; min_clients times the smallest admitted weight). Then
    ``f(D ∪ {x}) - f(D) = w_x (u_x - f(D)) / (W + w_x)`` and ``||u_x - f(D)|| <= 2C`` (a
    weighted mean of vectors of norm <= C has norm <= C, for any norm), so
    ``Δ = 2 * w_max * C / W_min``. Twice the noise of "fixed" for the same W, and the weight
    totals themselves reveal participation, so they must not be published.

Heterogeneous rank: if columns of B are averaged over different client subsets, use the
smallest column denominator as ``W_ref`` / ``W_min`` (conservative).
"""

from __future__ import annotations

import math
from typing import Literal

from ffa_lora.errors import ConfigError

Denominator = Literal["fixed", "ratio"]


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")
    return float(value)


def mean_sensitivity(
    *,
    clip_bound: float,
    max_client_weight: float,
    denominator_weight: float,
    denominator: Denominator = "fixed",
) -> float:
    """Sensitivity Δ of the weighted mean update under add/remove-one-client.

    The norm of Δ is the norm of the clip bound: pass the L1 bound for Laplace, the L2 bound for
    Gaussian.

    Args:
        clip_bound: C, the per-client norm bound applied before encryption.
        max_client_weight: w_max, the public cap on one client's weight (1.0 for unweighted).
        denominator_weight: W_ref (``"fixed"``) or W_min (``"ratio"``), public.
        denominator: ``"fixed"`` → ``w_max C / W_ref``; ``"ratio"`` → ``2 w_max C / W_min``.

    Raises:
        ConfigError: on non-positive values, an unknown denominator, or ``w_max > W``.
    """
    c = _positive("clip_bound", clip_bound)
    w_max = _positive("max_client_weight", max_client_weight)
    w_den = _positive("denominator_weight", denominator_weight)
    if w_max > w_den:
        raise ConfigError(
            f"max_client_weight ({w_max}) exceeds the denominator weight ({w_den}): one client "
            "would dominate the mean; cap client weights lower or raise min_clients"
        )
    if denominator == "fixed":
        return w_max * c / w_den
    if denominator == "ratio":
        return 2.0 * w_max * c / w_den
    raise ConfigError(f"denominator must be 'fixed' or 'ratio', got {denominator!r}")


def sum_sensitivity(*, clip_bound: float, max_client_weight: float) -> float:
    """Sensitivity of the weighted *sum* ``sum_i w_i u_i`` (add/remove one client): ``w_max C``.

    This is the scale distributed noise shares are calibrated in, because clients add their
    shares to the weighted update before it is summed.
    """
    return _positive("max_client_weight", max_client_weight) * _positive("clip_bound", clip_bound)

"""Distributed noise: every client adds a share of the DP noise before it quantizes and
encrypts, so that no party — edge or coordinator — ever sees an un-noised sum.

Calibration
-----------
Shares are added to the *weighted* update ``w_i u_i`` that is summed, so the target scale is
in sum space: ``scale = z · w_max · C`` (:func:`~ffa_lora.privacy.sensitivity.sum_sensitivity`
times the noise multiplier). Dividing the decrypted sum by the fixed public denominator
``W_ref`` then gives exactly noise ``z · Δ_mean`` on the mean (use the ``"fixed"`` denominator;
see :mod:`ffa_lora.privacy.sensitivity`).

With ``n`` clients, each share is sized for ``m = n - t`` contributors, where ``t`` bounds
the shares missing from the sum (dropouts) plus the shares an adversary can subtract (its own,
if clients collude with it) — together, not each:

* Gaussian: share ~ N(0, σ²/m). Any ``k >= m`` shares sum to N(0, kσ²/m) — at least σ².
* Laplace: share = G1 - G2 with G1, G2 ~ Gamma(shape 1/m, scale b) independent. Laplace(b)
  is infinitely divisible: the sum of ``m`` such shares is exactly Laplace(0, b)
  (Gamma(1, b) = Exponential(b), and the difference of two Exponential(b) is Laplace(b)).
  ``k > m`` shares sum to Laplace(b) plus independent extra noise.

Extra noise independent of the data is post-processing, so any ``k >= m`` survivors give at
least the target guarantee. With fewer than ``m`` survivors the sum is under-noised and must
not be decrypted (:func:`check_survivors`). The coordinator sizes the shares for
``m = min_clients - t`` (any quorum carries the full noise) and charges, for Gaussian shares,
the noise the actual survivors carry (:mod:`ffa_lora.privacy.round_noise`).

Caveats (documented, not solved here): each client's stochastic rounding and range clipping
act on its own noised value, not on the sum, so they are not strictly post-processing of the
noised sum; discrete mechanisms (distributed discrete Gaussian / Skellam, Kairouz et al.
2021) would make this exact. The headroom below makes range clipping rare.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from ffa_lora.errors import ConfigError, PrivacyError
from ffa_lora.privacy.events import MechanismName, check_mechanism
from ffa_lora.privacy.rng import NoiseSource, resolve_source


def min_contributors(*, n_clients: int, tolerated_dropouts: int) -> int:
    """``m = n - t``: the number of shares that together carry the full target noise."""
    for name, v in (("n_clients", n_clients), ("tolerated_dropouts", tolerated_dropouts)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{name} must be an integer, got {v!r}")
    if n_clients < 1:
        raise ConfigError(f"n_clients must be >= 1, got {n_clients}")
    if not 0 <= tolerated_dropouts < n_clients:
        raise ConfigError(
            f"tolerated_dropouts must be in [0, n_clients - 1] = [0, {n_clients - 1}], got "
            f"{tolerated_dropouts}; at least one client's share must remain"
        )
    return n_clients - tolerated_dropouts


def _scale(scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ConfigError(f"noise scale must be a positive finite number, got {scale!r}")
    if scale <= 0:
        raise ConfigError(f"noise scale must be > 0, got {scale!r}")
    return float(scale)


def share_std(
    *, mechanism: MechanismName, scale: float, n_clients: int, tolerated_dropouts: int = 0
) -> float:
    """Standard deviation of one client's share per coordinate.

    Gaussian: ``σ/sqrt(m)``. Laplace: ``b·sqrt(2/m)`` (a Gamma(1/m, b) has variance ``b²/m``).
    """
    mech = check_mechanism(mechanism)
    m = min_contributors(n_clients=n_clients, tolerated_dropouts=tolerated_dropouts)
    s = _scale(scale)
    return s / math.sqrt(m) if mech == "gaussian" else s * math.sqrt(2.0 / m)


def noise_share(
    *,
    mechanism: MechanismName,
    scale: float,
    n_clients: int,
    tolerated_dropouts: int = 0,
    size: int,
    rng: NoiseSource | np.random.Generator | int | None = None,
) -> np.ndarray:
    """One client's noise share (float64 vector of ``size``) for a target total ``scale``.

    Args:
        mechanism: ``"laplace"`` (scale = b) or ``"gaussian"`` (scale = σ).
        scale: the target noise scale on the *sum* (see module docstring).
        n_clients: clients expected in the round.
        tolerated_dropouts: t; any ``n - t`` surviving shares carry the full target noise.
        size: number of coordinates.
        rng: ``None`` for the OS CSPRNG (always in production); a seed/generator in tests.
    """
    mech = check_mechanism(mechanism)
    m = min_contributors(n_clients=n_clients, tolerated_dropouts=tolerated_dropouts)
    s = _scale(scale)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ConfigError(f"size must be a non-negative integer, got {size!r}")
    src = resolve_source(rng)
    if mech == "gaussian":
        return src.normal(std=s / math.sqrt(m), size=size)
    return src.gamma(shape=1.0 / m, scale=s, size=size) - src.gamma(
        shape=1.0 / m, scale=s, size=size
    )


def check_survivors(*, survivors: int, n_clients: int, tolerated_dropouts: int) -> None:
    """Raise :class:`PrivacyError` if too few shares arrived to carry the target noise."""
    m = min_contributors(n_clients=n_clients, tolerated_dropouts=tolerated_dropouts)
    if survivors < m:
        raise PrivacyError(
            f"only {survivors} noise shares arrived but {m} are needed (n={n_clients}, "
            f"tolerated dropouts={tolerated_dropouts}); the sum is under-noised and must not "
            "be decrypted — set min_clients >= n - t or tolerate more dropouts"
        )


def aggregate_noise_std(
    *,
    mechanism: MechanismName,
    scale: float,
    n_clients: int,
    tolerated_dropouts: int,
    survivors: int,
) -> float:
    """Per-coordinate std of the noise in the sum of ``survivors`` shares (>= the target's)."""
    check_survivors(survivors=survivors, n_clients=n_clients, tolerated_dropouts=tolerated_dropouts)
    one = share_std(
        mechanism=mechanism,
        scale=scale,
        n_clients=n_clients,
        tolerated_dropouts=tolerated_dropouts,
    )
    return one * math.sqrt(survivors)


@dataclass(frozen=True)
class NoiseHeadroom:
    """Extra quantization range a client needs so its noised values are rarely clipped.

    Attributes:
        share_std: std of one share per coordinate.
        headroom: h such that ``P(|share_j| > h) <= tail_probability / dimension`` for each
            coordinate j; widen the quantizer's range from ``±w·C`` to ``±(w·C + h)``.
        tail_probability: probability that *any* of the ``dimension`` coordinates of one
            client's share exceeds h (union bound).
        dimension: number of coordinates the probability is spread over.
    """

    share_std: float
    headroom: float
    tail_probability: float
    dimension: int

    @property
    def headroom_in_std(self) -> float:
        """The headroom as a multiple k of the share's std (h = k·std)."""
        return self.headroom / self.share_std


def noise_headroom(
    *,
    mechanism: MechanismName,
    scale: float,
    n_clients: int,
    tolerated_dropouts: int = 0,
    tail_probability: float = 1e-6,
    dimension: int = 1,
) -> NoiseHeadroom:
    """Headroom h for one client's share so that it exceeds h with small probability.

    Gaussian: ``h = (σ/√m) · Φ⁻¹(1 - p/2)`` (exact two-sided tail). Laplace share
    ``G1 - G2`` with ``G1, G2 >= 0``: ``|G1 - G2| <= max(G1, G2)``, so
    ``P(|share| > h) <= 2·P(G > h)`` and ``h = Gamma(1/m, b).isf(p/2)`` is a rigorous bound.
    ``p`` is ``tail_probability / dimension`` (union bound over coordinates).
    """
    mech = check_mechanism(mechanism)
    if not (isinstance(tail_probability, float) and 0 < tail_probability < 1):
        raise ConfigError(f"tail_probability must be a float in (0, 1), got {tail_probability!r}")
    if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
        raise ConfigError(f"dimension must be an integer >= 1, got {dimension!r}")
    m = min_contributors(n_clients=n_clients, tolerated_dropouts=tolerated_dropouts)
    s = _scale(scale)
    std = share_std(
        mechanism=mech, scale=s, n_clients=n_clients, tolerated_dropouts=tolerated_dropouts
    )
    p = tail_probability / dimension
    if mech == "gaussian":
        h = std * float(-special.ndtri(p / 2.0))
    else:
        h = float(stats.gamma.isf(p / 2.0, a=1.0 / m, scale=s))
    return NoiseHeadroom(
        share_std=std, headroom=h, tail_probability=tail_probability, dimension=dimension
    )

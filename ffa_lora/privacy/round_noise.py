"""One round's noise under client-level DP: what is planned before any update exists, and what a
decrypted sum actually carries once the contributors are known.

Sensitivity
-----------
The noise goes on the weighted *sum* ``Σ_i f_i w_i g_i``, where ``g_i`` is client i's update as
it enters the sum (clipped to ``C``, then rounded: norm ``<= C + β``, see
:mod:`ffa_lora.privacy.rounding`), ``w_i`` its planned weight and ``f_i`` the factor its edge
applies on top (the staleness factor in asynchronous rounds, at most ``STALENESS_SCALE``;
1 in synchronous ones). Adding or removing one client moves the sum by at most

    Δ = W · (C + β),   W = max_i w_i · max f   (the largest weight that can be applied).

Central mode adds Gaussian/Laplace noise of scale ``z·Δ`` after decryption; the charge is the
planned multiplier ``z``.

Distributed mode
----------------
Each client adds a share sized so that any ``m`` of them carry the full noise, ``m`` being the
smallest number of shares a decrypted sum can hold: the quorum ``min_clients`` (the coordinator
never decrypts with fewer), less the ``t`` shares that clients colluding with the coordinator
could subtract (``privacy.tolerated_dropouts``). The edge multiplies a share by ``f_i ≥ f_min``,
so the share is sized for the smallest factor: ``scale_share = z·Δ / f_min``, and a Gaussian
share has per-coordinate std ``scale_share / sqrt(m)`` (before the edge's factor).

When the contributors are known, the sum's noise at position j has variance
``Σ_{i covers j} (f_i · scale_i)² / m_i`` (clients of a lower rank do not cover the higher
columns): :func:`carried_noise_multiplier` returns ``sqrt(min_j variance_j) / Δ`` -- the
smallest noise any coordinate carries, which is what the Gaussian mechanism's guarantee rests
on -- and raises :class:`~ffa_lora.errors.PrivacyError` when it is below the planned ``z``: such
a sum must not be decrypted. The ledger charges the carried multiplier: more survivors than
``m`` carry more noise and cost less ε. For Laplace shares (Gamma differences) a sum of ``k >= m``
equal shares is Laplace(b) plus independent noise, so the charge is the planned multiplier,
and factors other than 1 (staleness) are refused.

Quantization range
------------------
Under client-level DP the per-coordinate range is ``R = min(secure_sum.clip, C)`` (no
coordinate of a vector of norm ``<= C`` exceeds ``C``); distributed mode widens it by the
shares' headroom, which makes the step, hence β, depend on the noise, which depends on β:
:func:`plan_round_noise` solves that fixed point and refuses settings where the rounding
would dominate the clipped update (use 16-bit codes then).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ffa_lora.errors import ConfigError, PrivacyError
from ffa_lora.privacy.clipping import NormKind
from ffa_lora.privacy.distributed import check_survivors, noise_headroom
from ffa_lora.privacy.events import MechanismName, check_mechanism
from ffa_lora.privacy.rounding import rounding_slack

__all__ = ["RoundNoisePlan", "carried_noise_multiplier", "plan_round_noise"]

#: the rounding slack β may be at most this multiple of the clip bound C
MAX_SLACK_RATIO = 1.0


@dataclass(frozen=True)
class RoundNoisePlan:
    """The public, data-independent noise plan of one round.

    Attributes:
        mode: ``"central"`` or ``"distributed"``.
        mechanism: ``"gaussian"`` or ``"laplace"``.
        noise_multiplier: z planned by the per-round schedule.
        norm_clip: C, the per-client clip bound.
        rounding_slack: β, how far quantization may take an update's norm above C.
        max_applied_weight: W, the largest weight an edge can apply to one update.
        quant_range: R, the per-coordinate range the clients quantize with.
        dimension: d, the most values one client sends.
        share_scale: distributed: the scale the shares are sized for (sum space, before the
            edge's factor); 0 in central mode.
        share_clients: n, clients planned in the round.
        min_shares: m, shares any decrypted sum holds at least.
        min_factor: f_min, the smallest factor an edge applies to an update.
    """

    mode: str
    mechanism: MechanismName
    noise_multiplier: float
    norm_clip: float
    rounding_slack: float
    max_applied_weight: float
    quant_range: float
    dimension: int
    share_scale: float = 0.0
    share_clients: int = 0
    min_shares: int = 0
    min_factor: float = 1.0

    @property
    def sensitivity(self) -> float:
        """Δ = W · (C + β) on the weighted sum."""
        return self.max_applied_weight * (self.norm_clip + self.rounding_slack)

    @property
    def noise_scale(self) -> float:
        """The noise scale (Laplace b, Gaussian σ) the sum must carry: z · Δ."""
        return self.noise_multiplier * self.sensitivity

    @property
    def norm(self) -> NormKind:
        return "l1" if self.mechanism == "laplace" else "l2"


def plan_round_noise(
    *,
    mode: str,
    mechanism: MechanismName,
    noise_multiplier: float,
    norm_clip: float,
    bits: int,
    range_clip: float,
    dimension: int,
    max_applied_weight: float,
    share_clients: int = 0,
    quorum: int = 0,
    colluders: int = 0,
    min_factor: float = 1.0,
) -> RoundNoisePlan:
    """Plan one round's noise (see the module docstring).

    Args:
        mode: ``"central"`` or ``"distributed"``.
        mechanism: ``"gaussian"`` or ``"laplace"``.
        noise_multiplier: z of this round from the schedule.
        norm_clip: C.
        bits: the quantization's code width.
        range_clip: ``secure_sum.clip``, the configured per-coordinate range.
        dimension: d, the most values one client sends this round.
        max_applied_weight: W.
        share_clients: distributed: n, the clients planned.
        quorum: distributed: ``min_clients``.
        colluders: distributed: t, shares the coordinator might subtract.
        min_factor: distributed: f_min.

    Raises:
        ConfigError: invalid values, or a quantization too coarse for the clip bound.
    """
    mech = check_mechanism(mechanism)
    _check_positive(mode, noise_multiplier=noise_multiplier, norm_clip=norm_clip, range_clip=range_clip,
                    max_applied_weight=max_applied_weight, min_factor=min_factor)
    base = RoundNoisePlan(
        mode=mode,
        mechanism=mech,
        noise_multiplier=float(noise_multiplier),
        norm_clip=float(norm_clip),
        rounding_slack=0.0,
        max_applied_weight=float(max_applied_weight),
        quant_range=min(float(range_clip), float(norm_clip)),
        dimension=int(dimension),
    )
    if mode == "central":
        return _central_plan(base, bits=bits)
    return _distributed_plan(base, bits=bits, share_clients=share_clients, quorum=quorum,
                             colluders=colluders, min_factor=min_factor)


def _check_positive(mode: str, **values: float) -> None:
    if mode not in ("central", "distributed"):
        raise ConfigError(f"mode must be 'central' or 'distributed', got {mode!r}")
    for name, v in values.items():
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ConfigError(f"{name} must be a positive finite number, got {v!r}")


def _central_plan(base: RoundNoisePlan, *, bits: int) -> RoundNoisePlan:
    """Central noise: the codes span the clip range, and the rounding slack is that step's."""
    levels = (1 << int(bits)) - 1
    beta = rounding_slack(norm_clip=base.norm_clip, step=2 * base.quant_range / levels,
                          dimension=base.dimension, norm=base.norm)
    _check_slack(beta, base.norm_clip, bits, base.dimension)
    return replace(base, rounding_slack=beta)


def _distributed_plan(base: RoundNoisePlan, *, bits: int, share_clients: int, quorum: int, colluders: int,
                      min_factor: float) -> RoundNoisePlan:
    """Distributed noise: each client's share widens the quantization range by its headroom, a
    wider range means a coarser step and so a larger rounding slack, which raises the share:
    iterate to the fixed point (the slack the range needs is at most the slack assumed)."""
    if share_clients < 1 or quorum < 1 or not 0 <= colluders < min(share_clients, quorum):
        raise ConfigError(
            f"distributed noise needs share_clients >= 1, quorum >= 1 and 0 <= colluders < "
            f"min(share_clients, quorum); got {share_clients}, {quorum}, {colluders}"
        )
    levels = (1 << int(bits)) - 1
    m = min(share_clients, quorum) - colluders
    dimension = base.dimension

    def shares(beta: float) -> tuple[float, float]:
        scale = base.noise_multiplier * base.max_applied_weight * (base.norm_clip + beta) / min_factor
        head = noise_headroom(
            mechanism=base.mechanism,
            scale=scale,
            n_clients=share_clients,
            tolerated_dropouts=share_clients - m,
            dimension=max(1, dimension),
        ).headroom
        return scale, base.quant_range + head

    beta = 0.0
    for _ in range(200):
        scale, quant_range = shares(beta)
        needed = rounding_slack(
            norm_clip=base.norm_clip, step=2 * quant_range / levels, dimension=dimension, norm=base.norm
        )
        _check_slack(needed, base.norm_clip, bits, dimension)
        if needed <= beta:
            return replace(
                base,
                rounding_slack=beta,
                quant_range=quant_range,
                share_scale=scale,
                share_clients=share_clients,
                min_shares=m,
                min_factor=float(min_factor),
            )
        beta = needed * (1 + 1e-9) + 1e-15
    raise ConfigError(_coarse(bits, dimension))


def carried_noise_multiplier(
    plan: RoundNoisePlan,
    *,
    share_variance: np.ndarray,
    share_count: np.ndarray,
    factors: list[float],
) -> float:
    """The noise multiplier a decrypted distributed sum carries; refuses an under-noised sum.

    Args:
        plan: the round's plan (sensitivity, planned multiplier, share sizes).
        share_variance: per position, ``Σ (f_i · scale_i)² / m_i`` over the contributors that
            cover it (Gaussian shares).
        share_count: per position, how many contributors cover it.
        factors: every contributor's edge factor ``f_i``.

    Raises:
        PrivacyError: some covered position carries less noise than planned.
    """
    covered = np.asarray(share_count) > 0
    if not covered.any():
        raise PrivacyError("the sum holds no contribution; nothing to decrypt")
    if plan.mechanism == "laplace":
        if any(abs(f - 1.0) > 1e-12 for f in factors):
            raise PrivacyError(
                "Laplace shares scaled by an edge no longer add up to Laplace noise: the sum is "
                "not decrypted"
            )
        check_survivors(
            survivors=int(np.min(share_count[covered])),
            n_clients=plan.share_clients,
            tolerated_dropouts=plan.share_clients - plan.min_shares,
        )
        return plan.share_scale / plan.sensitivity
    carried = math.sqrt(float(np.min(np.asarray(share_variance)[covered]))) / plan.sensitivity
    if carried < plan.noise_multiplier * (1 - 1e-9):
        raise PrivacyError(
            f"the survivors' noise shares carry a noise multiplier of {carried:.4g}, below the "
            f"planned {plan.noise_multiplier:.4g}: the sum is under-noised and is not decrypted"
        )
    return carried


def _check_slack(beta: float, clip: float, bits: int, dimension: int) -> None:
    if beta > MAX_SLACK_RATIO * clip:
        raise ConfigError(_coarse(bits, dimension))


def _coarse(bits: int, dimension: int) -> str:
    return (
        f"quantizing {dimension} values to {bits}-bit codes can add more to an update's norm than "
        "the privacy clip bound itself, so the noise would have to cover mostly rounding; use "
        "secure_sum.bits: 16 (or a smaller secure_sum.clip)"
    )

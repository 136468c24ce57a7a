"""A round's noise plan and the noise a decrypted distributed sum carries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ffa_lora.errors import ConfigError, PrivacyError
from ffa_lora.privacy.distributed import noise_headroom
from ffa_lora.privacy.round_noise import RoundNoisePlan, carried_noise_multiplier, plan_round_noise
from ffa_lora.privacy.rounding import rounding_slack

D = 38_000


def central(**kw: object) -> RoundNoisePlan:
    args: dict[str, object] = {
        "mode": "central",
        "mechanism": "gaussian",
        "noise_multiplier": 1.2,
        "norm_clip": 1.0,
        "bits": 8,
        "range_clip": 0.5,
        "dimension": D,
        "max_applied_weight": 4,
    }
    return plan_round_noise(**(args | kw))  # type: ignore[arg-type]


def distributed(**kw: object) -> RoundNoisePlan:
    args: dict[str, object] = {
        "mode": "distributed",
        "mechanism": "gaussian",
        "noise_multiplier": 1.2,
        "norm_clip": 1.0,
        "bits": 16,
        "range_clip": 0.5,
        "dimension": D,
        "max_applied_weight": 1,
        "share_clients": 10,
        "quorum": 2,
        "colluders": 0,
    }
    return plan_round_noise(**(args | kw))  # type: ignore[arg-type]


def test_central_plan_covers_rounding_and_the_applied_weight() -> None:
    plan = central()
    beta = rounding_slack(norm_clip=1.0, step=2 * 0.5 / 255, dimension=D, norm="l2")
    assert plan.rounding_slack == pytest.approx(beta) and 0 < beta < 0.2
    assert plan.quant_range == 0.5
    assert plan.sensitivity == pytest.approx(4 * (1.0 + beta))
    # No coordinate of a vector of norm <= C exceeds C: the range shrinks to the norm clip.
    assert central(norm_clip=0.2).quant_range == 0.2


def test_distributed_shares_carry_the_noise_for_any_quorum() -> None:
    plan = distributed(colluders=1, quorum=3)
    assert plan.min_shares == 2 and plan.share_clients == 10
    # Sized for the smallest factor an edge applies; the scale is that of the whole sum.
    assert plan.share_scale == pytest.approx(plan.noise_scale)
    assert distributed(min_factor=2).share_scale < plan.share_scale
    # The range is widened by the shares' headroom, and β covers the resulting step (fixed point).
    head = noise_headroom(
        mechanism="gaussian",
        scale=plan.share_scale,
        n_clients=10,
        tolerated_dropouts=8,
        dimension=D,
    ).headroom
    assert plan.quant_range == pytest.approx(0.5 + head)
    step = 2 * plan.quant_range / 65535
    assert rounding_slack(norm_clip=1.0, step=step, dimension=D, norm="l2") <= plan.rounding_slack


def test_distributed_noise_at_8_bits_is_refused() -> None:
    """The shares' headroom makes the 8-bit step so coarse that rounding would dominate."""
    with pytest.raises(ConfigError, match="bits: 16"):
        distributed(bits=8)


def test_laplace_at_8_bits_is_refused_over_many_values() -> None:
    with pytest.raises(ConfigError, match="bits: 16"):
        central(mechanism="laplace")


def full_cover(plan: RoundNoisePlan, variances: list[float], size: int = 5) -> dict[str, object]:
    return {
        "share_variance": np.full(size, sum(variances)),
        "share_count": np.full(size, len(variances)),
        "factors": [1.0] * len(variances),
    }


def test_survivors_are_charged_for_what_they_carry() -> None:
    plan = distributed()
    one = plan.share_scale**2 / plan.min_shares
    z2 = carried_noise_multiplier(plan, **full_cover(plan, [one] * 2))  # type: ignore[arg-type]
    z5 = carried_noise_multiplier(plan, **full_cover(plan, [one] * 5))  # type: ignore[arg-type]
    assert z2 == pytest.approx(plan.noise_multiplier)
    assert z5 == pytest.approx(plan.noise_multiplier * math.sqrt(5 / 2))


def test_an_under_noised_position_is_refused() -> None:
    """A column only one client covers (heterogeneous ranks) carries one share: not decrypted."""
    plan = distributed()
    one = plan.share_scale**2 / plan.min_shares
    variance = np.array([2 * one, 2 * one, one, 0.0])
    count = np.array([2, 2, 1, 0])
    with pytest.raises(PrivacyError, match="under-noised"):
        carried_noise_multiplier(
            plan, share_variance=variance, share_count=count, factors=[1.0, 1.0]
        )  # type: ignore[arg-type]
    # Positions nobody covers hold no data and do not count.
    z = carried_noise_multiplier(
        plan,
        share_variance=variance[[0, 1, 3]],
        share_count=count[[0, 1, 3]],  # type: ignore[arg-type]
        factors=[1.0, 1.0],
    )
    assert z == pytest.approx(plan.noise_multiplier)


def test_laplace_shares_need_a_full_set_of_unscaled_shares() -> None:
    plan = distributed(mechanism="laplace", dimension=100)
    cover = full_cover(plan, [1.0, 1.0])
    z = carried_noise_multiplier(plan, **cover)  # type: ignore[arg-type]
    assert z == pytest.approx(plan.noise_multiplier)
    with pytest.raises(PrivacyError):
        scaled = cover | {"factors": [1.0, 4.0]}
        carried_noise_multiplier(plan, **scaled)  # type: ignore[arg-type]
    with pytest.raises(PrivacyError):
        carried_noise_multiplier(plan, **full_cover(plan, [1.0]))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kw", [{"mode": "local"}, {"norm_clip": 0.0}, {"quorum": 0}, {"colluders": 2}]
)
def test_invalid_plans_are_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        distributed(**kw)

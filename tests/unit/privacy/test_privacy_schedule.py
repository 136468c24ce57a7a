"""ε schedule and plan: loose early, strict later, and the composition within the budget."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from ffa_lora.errors import ConfigError, PrivacyError
from ffa_lora.privacy.accountant import epsilon_of
from ffa_lora.privacy.schedule import plan_privacy, schedule_weights

DELTA = 1e-5


def test_schedule_weights_shapes() -> None:
    lin = schedule_weights(schedule="linear", rounds=5, decay=0.5)
    np.testing.assert_allclose(lin, [1.0, 0.875, 0.75, 0.625, 0.5])
    geo = schedule_weights(schedule="geometric", rounds=5, decay=0.75)
    np.testing.assert_allclose(geo, 0.25 ** (np.arange(5) / 4))
    assert geo[0] == 1.0 and geo[-1] == pytest.approx(0.25)
    np.testing.assert_array_equal(schedule_weights(schedule="constant", rounds=3, decay=0.9), 1)
    np.testing.assert_array_equal(schedule_weights(schedule="linear", rounds=1, decay=0.9), [1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"schedule": "cosine", "rounds": 3, "decay": 0.5}, "unknown epsilon schedule"),
        ({"schedule": "linear", "rounds": 0, "decay": 0.5}, "rounds"),
        ({"schedule": "linear", "rounds": 3, "decay": 1.0}, "decay"),
        ({"schedule": "linear", "rounds": 3, "decay": -0.1}, "decay"),
    ],
)
def test_schedule_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        schedule_weights(**kwargs)


@pytest.mark.parametrize("schedule", ["linear", "geometric"])
@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_plan_stays_within_budget_and_gets_stricter(mechanism: str, schedule: str) -> None:
    plan = plan_privacy(
        mechanism=mechanism,
        epsilon_total=4.0,
        delta=DELTA,
        rounds=20,
        schedule=schedule,
        decay=0.5,
        sensitivity=0.01,  # type: ignore[arg-type]
    )
    assert len(plan.rounds) == 20
    # within budget, and not wastefully below it
    assert 3.95 <= plan.epsilon_total <= 4.0
    assert epsilon_of(plan.events(), delta=DELTA) == pytest.approx(plan.epsilon_total)
    eps = [r.epsilon for r in plan.rounds]
    z = [r.noise_multiplier for r in plan.rounds]
    assert all(a >= b for a, b in itertools.pairwise(eps))  # loose early, strict later
    assert all(a <= b for a, b in itertools.pairwise(z))  # more noise later
    assert eps[-1] < eps[0]
    cum = [r.cumulative_epsilon for r in plan.rounds]
    assert all(a < b for a, b in itertools.pairwise(cum)) and cum[-1] == plan.epsilon_total
    for r in plan.rounds:
        assert r.noise_scale == pytest.approx(r.noise_multiplier * 0.01)
    if mechanism == "laplace":
        # the design's b = Δ/ε_t
        assert plan.rounds[0].noise_scale == pytest.approx(0.01 / plan.rounds[0].epsilon)
        assert eps[-1] == pytest.approx(0.5 * eps[0])
    # the RDP cross-check is looser
    assert plan.cross_check["rdp"] is not None and plan.cross_check["rdp"] >= plan.epsilon_total


def test_geometric_spends_more_early_than_linear() -> None:
    kw = {"mechanism": "laplace", "epsilon_total": 2.0, "delta": DELTA, "rounds": 10, "decay": 0.8}
    lin = plan_privacy(schedule="linear", **kw)  # type: ignore[arg-type]
    geo = plan_privacy(schedule="geometric", **kw)  # type: ignore[arg-type]
    # same ratio first/last, but the geometric curve drops faster in the middle
    assert (
        lin.rounds[5].epsilon / lin.rounds[0].epsilon
        > geo.rounds[5].epsilon / geo.rounds[0].epsilon
    )


def test_constant_laplace_plan_matches_known_case() -> None:
    """Inverting the known case: 100 rounds within ε = 4.2203 need b/Δ ≈ 10 each."""
    plan = plan_privacy(
        mechanism="laplace",
        epsilon_total=4.2204,
        delta=DELTA,
        rounds=100,
        schedule="constant",
        decay=0.0,
    )
    assert plan.rounds[0].noise_multiplier == pytest.approx(10.0, rel=2e-3)
    assert plan.rounds[0].noise_multiplier >= 10.0 * (1 - 1e-9)


def test_plan_dict_is_json_and_table_rows() -> None:
    plan = plan_privacy(mechanism="gaussian", epsilon_total=1.0, delta=DELTA, rounds=5)
    d = json.loads(json.dumps(plan.to_dict()))
    assert d["num_rounds"] == 5 and d["epsilon_total"] <= 1.0
    assert d["rounds"][0].keys() == {
        "round",
        "epsilon",
        "noise_multiplier",
        "noise_scale",
        "cumulative_epsilon",
    }
    assert plan.to_table()[0]["noise_scale"] is None
    assert plan.noise_multiplier(4) == plan.rounds[4].noise_multiplier
    with pytest.raises(PrivacyError, match="outside the privacy plan"):
        plan.noise_multiplier(5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epsilon_total": float("inf")}, "epsilon_total"),
        ({"epsilon_total": 0.0}, "epsilon_total"),
        ({"delta": 1.0}, "delta"),
        ({"mechanism": "exponential"}, "unknown DP mechanism"),
        ({"sensitivity": -1.0}, "sensitivity"),
    ],
)
def test_plan_validation(kwargs: dict, match: str) -> None:
    base = {"mechanism": "laplace", "epsilon_total": 1.0, "delta": DELTA, "rounds": 3}
    base.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        plan_privacy(**base)  # type: ignore[arg-type]

"""Accountant: agrees with dp-accounting on the known cases, guards the budget, and its
state survives a JSON round trip."""

from __future__ import annotations

import json

import dp_accounting
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from ffa_lora.errors import BudgetExhaustedError, ConfigError, PrivacyError, StateError
from ffa_lora.privacy.accountant import (
    ACCOUNTANTS,
    PLDPrivacyAccountant,
    cross_check,
    epsilon_of,
    make_accountant,
)
from ffa_lora.privacy.events import PrivacyEvent

DELTA = 1e-5


def test_known_case_laplace_100_rounds_pld() -> None:
    """100 rounds of Laplace with b/Δ = 10 → ε ≈ 4.22 at δ = 1e-5 (PLD)."""
    acc = make_accountant("pld")
    for _ in range(100):
        acc.step(noise_multiplier=10.0, mechanism="laplace")
    eps = acc.get_epsilon(delta=DELTA)
    assert eps == pytest.approx(4.22, abs=0.005)
    ref = PLDAccountant()
    ref.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.LaplaceDpEvent(10.0), 100))
    assert eps == pytest.approx(ref.get_epsilon(DELTA), rel=1e-9)


def test_known_case_gaussian_100_rounds_pld() -> None:
    """100 rounds of Gaussian z = 1.0, no sampling → ε ≈ 91.8 at δ = 1e-5 (PLD)."""
    acc = make_accountant("pld")
    for _ in range(100):
        acc.step(noise_multiplier=1.0, mechanism="gaussian")
    assert acc.get_epsilon(delta=DELTA) == pytest.approx(91.8, abs=0.05)


@pytest.mark.parametrize(
    "grid",
    [1e-3, pytest.param(1e-4, marks=pytest.mark.slow)],  # 1e-4: dp-accounting default, ~5 s
)
def test_known_case_gaussian_through_the_pld_grid(grid: float) -> None:
    """Same figure with the PLD itself (no analytic shortcut), as dp-accounting computes it."""
    acc = PLDPrivacyAccountant(exact_gaussian=False, value_discretization_interval=grid)
    acc.step(noise_multiplier=1.0, mechanism="gaussian", count=100)
    ref = PLDAccountant(value_discretization_interval=grid)
    ref.compose(dp_accounting.GaussianDpEvent(1.0), 100)
    eps = acc.get_epsilon(delta=DELTA)
    assert eps == pytest.approx(91.8, abs=0.05)
    assert eps == pytest.approx(ref.get_epsilon(DELTA), rel=1e-9)


def test_rdp_cross_check_is_looser_but_close() -> None:
    lap = [PrivacyEvent("laplace", 10.0, count=100)]
    gau = [PrivacyEvent("gaussian", 1.0, count=100)]
    for events, pld_ref in ((lap, 4.22), (gau, 91.8)):
        checks = cross_check(events, delta=DELTA)
        assert checks["pld"] == pytest.approx(pld_ref, abs=0.05)
        assert checks["rdp"] is not None
        assert checks["pld"] <= checks["rdp"] <= 1.1 * checks["pld"]
    ref = RdpAccountant()
    ref.compose(dp_accounting.LaplaceDpEvent(10.0), 100)
    assert cross_check(lap, delta=DELTA)["rdp"] == pytest.approx(ref.get_epsilon(DELTA))


def test_heterogeneous_gaussians_merge_exactly() -> None:
    """Merging unsampled Gaussians is exact: same ε as composing them one by one in the PLD."""
    zs = [2.0, 3.0, 5.0, 4.0]
    ref = PLDAccountant()
    for z in zs:
        ref.compose(dp_accounting.GaussianDpEvent(z))
    for exact in (True, False):
        acc = PLDPrivacyAccountant(exact_gaussian=exact)
        for z in zs:
            acc.step(noise_multiplier=z, mechanism="gaussian")
        assert acc.get_epsilon(delta=DELTA) == pytest.approx(ref.get_epsilon(DELTA), rel=1e-3)


def test_mixed_and_sampled_events() -> None:
    events = [
        PrivacyEvent("laplace", 5.0),
        PrivacyEvent("gaussian", 3.0),
        PrivacyEvent("gaussian", 1.0, sample_rate=0.2, count=3),
    ]
    ref = PLDAccountant()
    for e in events:
        ref.compose(e.to_dp_event())
    assert epsilon_of(events, delta=DELTA) == pytest.approx(ref.get_epsilon(DELTA), rel=1e-6)
    # RDP cannot account a subsampled Laplace: say so instead of guessing
    with pytest.raises(PrivacyError, match="use the 'pld' accountant"):
        make_accountant("rdp").add_event(PrivacyEvent("laplace", 2.0, sample_rate=0.5))


def test_epsilon_grows_with_each_step_and_is_zero_at_start() -> None:
    acc = make_accountant("pld")
    assert acc.get_epsilon(delta=DELTA) == 0.0
    last = 0.0
    for _ in range(5):
        acc.step(noise_multiplier=4.0, mechanism="laplace")
        now = acc.get_epsilon(delta=DELTA)
        assert now > last
        last = now
    assert len(acc) == 5


def test_would_exceed_and_budget_exhausted_message() -> None:
    acc = make_accountant("pld")
    nxt = PrivacyEvent("laplace", 1.0)  # a pure ε = 1 round
    acc.step(noise_multiplier=1.0, mechanism="laplace", count=2)
    assert acc.get_epsilon(delta=DELTA) == pytest.approx(2.0, abs=0.01)
    assert not acc.would_exceed(next_event=nxt, epsilon_budget=3.5, delta=DELTA)
    assert acc.would_exceed(next_event=nxt, epsilon_budget=2.5, delta=DELTA)
    with pytest.raises(BudgetExhaustedError) as exc:
        acc.check_budget(next_event=nxt, epsilon_budget=2.5, delta=DELTA)
    msg = str(exc.value)
    assert "budget exhausted" in msg and "2.5000" in msg and "Training stops" in msg
    # nothing was recorded by the checks
    assert len(acc) == 2
    assert acc.check_budget(next_event=nxt, epsilon_budget=3.5, delta=DELTA) > 2.0


def test_state_dict_json_round_trip_and_cross_loading() -> None:
    acc = make_accountant("pld")
    acc.step(noise_multiplier=8.0, mechanism="laplace")
    acc.step(noise_multiplier=9.0, mechanism="laplace", count=3)
    acc.step(noise_multiplier=2.0, mechanism="gaussian")
    state = json.loads(json.dumps(acc.state_dict()))
    again = make_accountant("pld")
    again.load_state_dict(state)
    assert again.history == acc.history
    assert again.get_epsilon(delta=DELTA) == acc.get_epsilon(delta=DELTA)
    rdp = make_accountant("rdp")
    rdp.load_state_dict(state)  # events are accountant-agnostic
    assert rdp.get_epsilon(delta=DELTA) >= acc.get_epsilon(delta=DELTA)


@pytest.mark.parametrize(
    "state",
    [
        None,
        {},
        {"version": 99, "events": []},
        {"version": 1},
        {"version": 1, "events": [{}]},
        {"version": 1, "events": [{"mechanism": "laplace", "noise_multiplier": -1}]},
    ],
)
def test_corrupt_state_rejected(state: object) -> None:
    with pytest.raises(StateError):
        make_accountant("pld").load_state_dict(state)  # type: ignore[arg-type]


def test_registry_and_validation() -> None:
    assert set(ACCOUNTANTS) == {"pld", "rdp"}
    with pytest.raises(ConfigError, match="pld, rdp"):
        make_accountant("moments")
    acc = make_accountant("pld")
    with pytest.raises(ConfigError, match="delta"):
        acc.get_epsilon(delta=0.0)
    with pytest.raises(ConfigError, match="disable DP"):
        acc.step(noise_multiplier=0.0, mechanism="gaussian")
    with pytest.raises(ConfigError, match="unknown DP mechanism"):
        acc.step(noise_multiplier=1.0, mechanism="uniform")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="epsilon_budget"):
        acc.would_exceed(
            next_event=PrivacyEvent("laplace", 1.0), epsilon_budget=float("inf"), delta=DELTA
        )

"""Rank schedulers: phases, budget, cumulative cap, reasons, state round-trip, registry."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ffa_lora.errors import ConfigError, RankError, StateError
from ffa_lora.rank import (
    ClientReport,
    DynamicRankConfig,
    DynamicRankScheduler,
    FixedRankScheduler,
    RankDecision,
    available_schedulers,
    make_scheduler,
)


def minilm(rank: int) -> int:
    """Values a rank-``rank`` client uploads with MiniLM-L6, LoRA on query/value of 6 layers
    (12 modules, out=384) and a 3-class head: the head, then ``rank`` columns of B."""
    return 384 * 3 + 3 + rank * 12 * 384


def _reports(snrs: dict[str, float | None], samples: int = 3000) -> dict[str, ClientReport]:
    return {
        cid: ClientReport(samples, snr, None if snr is None else 0.05) for cid, snr in snrs.items()
    }


def _assert_reasons(decision: RankDecision) -> None:
    assert set(decision.reasons) == set(decision.ranks)
    assert all(isinstance(r, str) and len(r) > 10 for r in decision.reasons.values())


def test_registry() -> None:
    assert available_schedulers() == ("dynamic", "fixed")
    assert isinstance(make_scheduler("fixed", rank=8), FixedRankScheduler)
    dyn = make_scheduler("dynamic", values_at_rank=minilm, reduced_rank=2)
    assert isinstance(dyn, DynamicRankScheduler) and dyn.config.reduced_rank == 2
    with pytest.raises(ConfigError, match="unknown rank scheduler"):
        make_scheduler("adalora")
    with pytest.raises(ConfigError, match="unknown or missing option"):
        make_scheduler("dynamic", values_at_rank=minilm, no_such_option=1)
    with pytest.raises(ConfigError, match="values_at_rank"):
        make_scheduler("dynamic")


def test_phase_transitions_initial_promote_reduce() -> None:
    s = DynamicRankScheduler(values_at_rank=minilm)
    clients = {"a": ClientReport(3000), "b": ClientReport(900), "tiny": ClientReport(100)}
    d0 = s.decide(round_index=0, clients=clients)
    assert d0.phase == "initial" and d0.ranks == {"a": 8, "b": 8, "tiny": 4}
    assert d0.reduce_to is None and d0.r_max == 16
    assert "100 local samples" in d0.reasons["tiny"]
    _assert_reasons(d0)

    reports = {
        "a": ClientReport(3000, 2.5, 0.08),
        "b": ClientReport(900, 1.2, 0.05),
        "tiny": ClientReport(100, None, None),
    }
    d1 = s.decide(round_index=1, clients=reports, loss_history=[1.0])
    assert d1.phase == "promote" and d1.ranks == {"a": 16, "b": 8, "tiny": 4}
    assert d1.reasons["a"].startswith("promoted to rank 16")
    assert "no quality report" in d1.reasons["tiny"]
    _assert_reasons(d1)

    d2 = s.decide(round_index=2, clients=reports, loss_history=[1.0, 0.8])
    assert d2.ranks["a"] == 16 and "promoted in round 1" in d2.reasons["a"]  # sticky
    # Flat loss, but too early to reduce (min_rounds_before_reduce = 3).
    d2b = s.decide(round_index=2, clients=reports, loss_history=[1.0, 1.0, 1.0])
    assert d2b.reduce_to is None

    d3 = s.decide(round_index=3, clients=reports, loss_history=[1.0, 0.8, 0.795, 0.793])
    assert d3.phase == "reduce" and d3.reduce_to == 4 and d3.reduce_energy == 0.5
    assert set(d3.ranks.values()) == {4} and d3.r_max == 4
    assert all("plateaued" in r for r in d3.reasons.values())
    fixed = s.on_reduced(d3, 6)  # the SVD's energy bound needed rank 6
    assert set(fixed.ranks.values()) == {6} and fixed.r_max == 6
    assert "needed rank 6" in fixed.reasons["a"]
    assert s.values_uploaded_by_round()[3] == 3 * minilm(6)

    d4 = s.decide(round_index=4, clients=reports, loss_history=[1.0, 0.8, 0.795, 0.793, 0.7])
    assert d4.phase == "reduced" and d4.reduce_to is None and set(d4.ranks.values()) == {6}
    assert "since the reduction in round 3" in d4.reasons["a"]


def test_quality_gates() -> None:
    s = DynamicRankScheduler(
        DynamicRankConfig(
            promote_from_round=0,
            max_promotions_per_round=3,
            budget_fraction=1.0,
            max_cumulative_fraction=None,
        ),
        values_at_rank=minilm,
    )
    reports = {
        "good": ClientReport(3000, 3.0, 0.05),
        "worse": ClientReport(3000, 5.0, -0.01),  # high SNR but validation loss got worse
        "low": ClientReport(3000, 0.5, 0.10),  # below the median SNR
        "ok": ClientReport(3000, 3.0, 0.02),
    }
    d = s.decide(round_index=0, clients=reports)
    assert d.ranks == {"good": 16, "worse": 8, "low": 8, "ok": 16}
    assert "validation loss improved" in d.reasons["worse"]
    assert "below 1 x median" in d.reasons["low"]


def test_budget_limits_promotions_and_says_so() -> None:
    s = DynamicRankScheduler(DynamicRankConfig(max_promotions_per_round=3), values_at_rank=minilm)
    s.decide(round_index=0, clients=_reports({"a": None, "b": None, "c": None}))
    d = s.decide(round_index=1, clients=_reports({"a": 3.0, "b": 2.0, "c": 1.0}))
    assert d.ranks == {"a": 16, "b": 8, "c": 8}
    assert d.planned_values is not None and d.budget is not None
    assert d.planned_values <= d.budget == int(0.7 * 3 * minilm(16))
    assert "would exceed the per-round budget" in d.reasons["b"]


def test_explicit_budget_lowers_ranks_and_refuses_impossible() -> None:
    s = DynamicRankScheduler(values_at_rank=minilm)
    clients = {"big": ClientReport(5000), "small": ClientReport(300)}
    d = s.decide(round_index=0, clients=clients, budget=minilm(8) + minilm(4))
    assert d.ranks == {"big": 8, "small": 4}
    assert "lowered to 4 to fit" in d.reasons["small"]
    with pytest.raises(RankError, match="raise the budget"):
        s.decide(round_index=0, clients=clients, budget=minilm(1))


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 6),
    rounds=st.integers(1, 8),
    budget_frac=st.floats(0.2, 1.5),
    seed=st.integers(0, 10_000),
    cap=st.one_of(st.none(), st.floats(0.55, 1.0)),
)
def test_budget_and_cap_always_respected(
    n: int, rounds: int, budget_frac: float, seed: int, cap: float | None
) -> None:
    import random

    rng = random.Random(seed)
    cfg = DynamicRankConfig(
        max_promotions_per_round=n, max_cumulative_fraction=cap, min_rounds_before_reduce=rounds + 1
    )
    s = DynamicRankScheduler(cfg, values_at_rank=minilm)
    fixed_total = 0
    for r in range(rounds):
        clients = {
            f"c{i}": ClientReport(
                rng.choice([50, 300, 5000]), rng.uniform(0, 4), rng.uniform(-0.05, 0.2)
            )
            for i in range(n)
        }
        budget = int(budget_frac * n * minilm(16))
        try:
            d = s.decide(round_index=r, clients=clients, budget=budget)
        except RankError:
            assert budget < n * minilm(1)
            return
        _assert_reasons(d)
        assert d.planned_values == sum(minilm(x) for x in d.ranks.values()) <= budget
        assert all(1 <= x <= 16 for x in d.ranks.values())
        fixed_total += n * minilm(16)
        if cap is not None:
            # Promotions never push the running total over the cap (initial ranks are below it).
            assert s.values_uploaded_total <= cap * fixed_total + 1


def test_cumulative_cap_guarantees_savings_on_long_runs() -> None:
    s = DynamicRankScheduler(DynamicRankConfig(reduced_rank=None), values_at_rank=minilm)
    fixed = FixedRankScheduler(16, values_at_rank=minilm)
    withdrawn = False
    for r in range(40):
        clients = _reports(
            {"a": None, "b": None, "c": None} if r == 0 else {"a": 3.0, "b": 2.0, "c": 1.0}
        )
        d = s.decide(round_index=r, clients=clients, loss_history=[1.0] * r)
        fixed.decide(round_index=r, clients=clients)
        withdrawn |= any("withdrawn" in why for why in d.reasons.values())
        assert s.values_uploaded_total <= 0.65 * fixed.values_uploaded_total
    assert withdrawn


def test_bank_demo_like_run_saves_at_least_35_percent() -> None:
    """3 clients, 8 rounds; loss flattens after round 5 -> ≥ 35% fewer values than fixed 16."""
    s = make_scheduler("dynamic", values_at_rank=minilm)
    f = make_scheduler("fixed", values_at_rank=minilm, rank=16)
    losses = [0.9, 0.62, 0.51, 0.47, 0.466, 0.464, 0.463, 0.462]
    samples = {"bank_a": 2600, "bank_b": 2200, "bank_c": 1500}
    snr = {"bank_a": 1.9, "bank_b": 2.4, "bank_c": 1.1}
    phases = []
    for r in range(8):
        clients = {
            c: ClientReport(n, None if r == 0 else snr[c], None if r == 0 else 0.03)
            for c, n in samples.items()
        }
        d = s.decide(round_index=r, clients=clients, loss_history=losses[:r])
        if d.reduce_to is not None:
            d = s.on_reduced(d, d.reduce_to)
        f.decide(round_index=r, clients=clients, loss_history=losses[:r])
        phases.append(d.phase)
    assert phases == [
        "initial",
        "promote",
        "promote",
        "promote",
        "promote",
        "promote",
        "reduce",
        "reduced",
    ]
    saving = 1 - s.values_uploaded_total / f.values_uploaded_total
    assert saving >= 0.35, saving


def test_state_dict_round_trip_continues_identically() -> None:
    def run(sched: DynamicRankScheduler, start: int, stop: int) -> list[RankDecision]:
        out = []
        losses = [1.0, 0.7, 0.6, 0.55, 0.549, 0.548, 0.5475]
        for r in range(start, stop):
            out.append(
                sched.decide(
                    round_index=r,
                    loss_history=losses[:r],
                    clients=_reports({"a": 1.0 + r % 3, "b": 2.0, "c": None}),
                )
            )
        return out

    ref = DynamicRankScheduler(values_at_rank=minilm)
    expected = run(ref, 0, 7)
    first = DynamicRankScheduler(values_at_rank=minilm)
    run(first, 0, 3)
    blob = json.loads(json.dumps(first.state_dict()))
    second = DynamicRankScheduler(values_at_rank=minilm)
    second.load_state_dict(blob)
    assert second.state_dict() == first.state_dict()
    assert run(second, 3, 7) == expected[3:]
    assert second.values_uploaded_total == ref.values_uploaded_total


def test_state_dict_rejects_foreign_state() -> None:
    dyn = DynamicRankScheduler(values_at_rank=minilm)
    fixed = FixedRankScheduler(16, values_at_rank=minilm)
    fixed.decide(round_index=0, clients=_reports({"a": None}))
    with pytest.raises(StateError, match="expected 'dynamic'"):
        dyn.load_state_dict(fixed.state_dict())
    with pytest.raises(StateError, match="malformed"):
        dyn.load_state_dict(
            {
                "scheduler": "dynamic",
                "version": 1,
                "promoted": 5,
                "reduced_rank": None,
                "reduce_round": None,
            }
        )
    with pytest.raises(StateError, match="differs"):
        FixedRankScheduler(8).load_state_dict(fixed.state_dict())
    again = FixedRankScheduler(16, values_at_rank=minilm)
    again.load_state_dict(json.loads(json.dumps(fixed.state_dict())))
    assert again.values_uploaded_total == 16 * 4608 + 1155


def test_fixed_scheduler() -> None:
    s = FixedRankScheduler(16, values_at_rank=minilm)
    d = s.decide(round_index=0, clients=_reports({"a": None, "b": 1.0}))
    assert d.ranks == {"a": 16, "b": 16} and d.phase == "fixed" and d.reduce_to is None
    assert d.planned_values == 2 * minilm(16)
    _assert_reasons(d)
    with pytest.raises(RankError, match="never asks"):
        s.on_reduced(d, 4)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"r_max": 0}, "r_max must be"),
        ({"initial_ranks": ((10, 8),)}, "start with a"),
        ({"initial_ranks": ((0, 4), (0, 8))}, "ascending"),
        ({"initial_ranks": ((0, 32),)}, "outside 1..r_max"),
        ({"promoted_rank": 32}, "promoted_rank"),
        ({"budget_fraction": 0.0}, "budget_fraction"),
        ({"plateau_tol": 0.0}, "plateau_tol"),
        ({"reduced_rank": 16}, "reduced_rank"),
        ({"reduce_energy": 1.2}, "reduce_energy"),
        ({"initial_ranks": ((0, 12),)}, "max_cumulative_fraction"),
    ],
)
def test_config_validation(options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DynamicRankScheduler(DynamicRankConfig(**options), values_at_rank=minilm)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": -1}, "num_samples"),
        ({"num_samples": 10, "grad_snr": float("nan")}, "grad_snr"),
        ({"num_samples": 10, "val_loss_improvement": float("inf")}, "val_loss_improvement"),
    ],
)
def test_client_report_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(RankError, match=match):
        ClientReport(**kwargs)


def _adapter_with_spectrum(n_strong: int, r_max: int = 16) -> dict:
    """A global adapter whose ΔW has n_strong large singular values and r_max - n_strong tiny."""
    import numpy as np

    rng = np.random.default_rng(5)
    scales = np.array([10.0] * n_strong + [1e-3] * (r_max - n_strong))
    state = {}
    for name in ("query", "value"):
        key = f"base_model.model.bert.encoder.layer.0.attention.self.{name}"
        q_b, _ = np.linalg.qr(rng.normal(size=(40, r_max)))
        state[f"{key}.lora_B.weight"] = q_b * scales
        q_a, _ = np.linalg.qr(rng.normal(size=(40, r_max)))
        state[f"{key}.lora_A.weight"] = q_a.T
    return state


def _plateau_run(global_state: dict | None) -> list[RankDecision]:
    s = DynamicRankScheduler(DynamicRankConfig(reduce_energy=0.9), values_at_rank=minilm)
    out = []
    losses = [1.0, 0.6, 0.6, 0.6, 0.6, 0.6]  # flat for 2 rounds as of round 4
    for r in range(6):
        snrs = {"a": 2.0, "b": 1.0, "c": 0.5}
        clients = _reports(dict.fromkeys(snrs) if r == 0 else snrs)
        out.append(
            s.decide(
                round_index=r, clients=clients, loss_history=losses[:r], global_state=global_state
            )
        )
    return out


def test_reduction_uses_global_spectrum_when_given() -> None:
    from ffa_lora.rank.svd import reduce_adapter_state

    state = _adapter_with_spectrum(6)
    decisions = _plateau_run(state)
    red = decisions[4]
    # 90% energy needs the 6 strong directions: reduce_to is 6, not the configured floor 4,
    # and it is exactly the rank the SVD gives.
    assert red.phase == "reduce" and red.reduce_to == 6 and set(red.ranks.values()) == {6}
    _, new_r, _ = reduce_adapter_state(
        state, energy=red.reduce_energy, target_rank=red.reduce_to, alpha=16, r_max=16
    )
    assert new_r == 6
    assert decisions[5].phase == "reduced"
    assert set(decisions[5].ranks.values()) == {6}


def test_reduction_skipped_when_it_would_not_lower_the_upload() -> None:
    decisions = _plateau_run(_adapter_with_spectrum(12))  # 90% energy needs rank 12 > 8
    for d in decisions[4:]:
        assert d.reduce_to is None and d.phase == "promote"
        assert all("would not lower the upload" in why for why in d.reasons.values())
    assert decisions[5].ranks == decisions[3].ranks == {"a": 16, "b": 8, "c": 8}  # kept


def test_required_rank_matches_spectrum() -> None:
    from ffa_lora.rank.svd import required_rank

    assert required_rank(_adapter_with_spectrum(3), energy=0.9) == 3
    assert required_rank(_adapter_with_spectrum(3), energy=1.0) == 16
    with pytest.raises(RankError, match="energy"):
        required_rank(_adapter_with_spectrum(3), energy=0.0)

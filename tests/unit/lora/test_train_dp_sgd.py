"""DP-SGD inside train_local on the tiny BERT: frozen factors, rank masks, ε that accumulates
across rounds, hooks removed between rounds, and noise that actually changes the update."""

from __future__ import annotations

import numpy as np
import pytest

from ffa_lora.data import Dataset
from ffa_lora.lora import DPSGDOptions, LoRASpec, build_model, train_local
from ffa_lora.lora.state import is_lora_a, is_lora_b

DELTA = 1e-5


def _opts(**kw):  # type: ignore[no-untyped-def]
    base = {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "delta": DELTA, "seed": 11}
    base.update(kw)
    return DPSGDOptions(**base)


def test_dp_sgd_trains_b_only_and_reports_epsilon(tiny_spec: LoRASpec, tiny_data: Dataset) -> None:
    model = build_model(tiny_spec)
    before = model.adapter_state()
    res = train_local(model, tiny_data, epochs=1, lr=1e-2, batch_size=8, phase="B", seed=1,
                      dp_sgd=_opts())
    after = model.adapter_state()
    for k in before:
        if is_lora_a(k):
            np.testing.assert_array_equal(after[k], before[k])
        elif is_lora_b(k):
            assert after[k].any()
    eps = res.extra["dpsgd_epsilon"]
    assert 0 < eps < float("inf")
    assert res.extra["dpsgd_sample_rate"] == pytest.approx(8 / len(tiny_data))
    hist = res.extra["dpsgd_accountant_state"]["history"]
    assert sum(n for _, _, n in hist) == res.steps == 12  # ceil(96 / 8) steps, as without DP
    assert not any(hasattr(p, "grad_sample") and p.grad_sample is not None
                   for p in model.peft.parameters())
    assert res.grad_snr >= 0
    assert res.optimizer_state is None  # Opacus' optimizer state is not carried between rounds


def test_epsilon_accumulates_across_rounds_and_hooks_do_not_stack(
    tiny_spec: LoRASpec, tiny_data: Dataset
) -> None:
    model = build_model(tiny_spec)
    r1 = train_local(model, tiny_data, epochs=0.5, lr=1e-2, batch_size=8, seed=1, dp_sgd=_opts())
    hooks_after_one = sum(len(m._forward_hooks) for m in model.peft.modules())
    r2 = train_local(model, tiny_data, epochs=0.5, lr=1e-2, batch_size=8, seed=2,
                     dp_sgd=_opts(accountant_state=r1.extra["dpsgd_accountant_state"]))
    assert sum(len(m._forward_hooks) for m in model.peft.modules()) == hooks_after_one
    fresh = train_local(build_model(tiny_spec), tiny_data, epochs=0.5, lr=1e-2, batch_size=8, seed=2,
                        dp_sgd=_opts())
    assert r2.extra["dpsgd_epsilon"] > r1.extra["dpsgd_epsilon"]
    assert r2.extra["dpsgd_epsilon"] > fresh.extra["dpsgd_epsilon"]


def test_more_noise_means_less_epsilon_and_a_noisier_update(
    tiny_spec: LoRASpec, tiny_data: Dataset
) -> None:
    low = train_local(build_model(tiny_spec), tiny_data, epochs=1, lr=1e-2, batch_size=8, seed=1,
                      dp_sgd=_opts(noise_multiplier=0.5))
    high = train_local(build_model(tiny_spec), tiny_data, epochs=1, lr=1e-2, batch_size=8, seed=1,
                       dp_sgd=_opts(noise_multiplier=4.0))
    assert high.extra["dpsgd_epsilon"] < low.extra["dpsgd_epsilon"]
    # Same seeds, same Poisson batches: only the noise differs, and it changes the update.
    assert not np.allclose(high.delta, low.delta)


def test_rank_mask_holds_under_dp_sgd(tiny_spec: LoRASpec, tiny_data: Dataset) -> None:
    model = build_model(tiny_spec)
    res = train_local(model, tiny_data, epochs=1, lr=1e-2, batch_size=8, phase="B", rank=2, seed=3,
                      dp_sgd=_opts())
    assert len(res.delta) == res.layout.prefix_len(2)
    for k, v in res.delta_state.items():
        if is_lora_b(k):
            np.testing.assert_array_equal(v[:, 2:], 0.0)  # what travels stops at the rank


def test_empty_poisson_batches_still_count(tiny_spec: LoRASpec) -> None:
    from tests.unit.lora.conftest import make_tiny_dataset

    data = make_tiny_dataset(n=6, seed=2)
    # sample rate 1/6 over 6 records: P(empty batch) = (5/6)^6 ≈ 0.33 per step
    res = train_local(build_model(tiny_spec), data, epochs=4, lr=1e-2, batch_size=1, seed=1,
                      dp_sgd=_opts(seed=5))
    hist = res.extra["dpsgd_accountant_state"]["history"]
    assert sum(n for _, _, n in hist) == res.steps == 24
    assert res.examples_seen != 24  # some batches were empty or larger than one


def test_sgd_optimizer_and_its_own_learning_rate(tiny_spec: LoRASpec, tiny_data: Dataset) -> None:
    from ffa_lora.errors import ConfigError

    a = train_local(build_model(tiny_spec), tiny_data, epochs=1, lr=1e-2, batch_size=8, seed=1,
                    dp_sgd=_opts(optimizer="sgd", learning_rate=0.5))
    b = train_local(build_model(tiny_spec), tiny_data, epochs=1, lr=1e-2, batch_size=8, seed=1,
                    dp_sgd=_opts(optimizer="sgd", learning_rate=0.05))
    assert np.abs(a.delta).sum() > 5 * np.abs(b.delta).sum() > 0  # plain SGD: steps scale with lr
    with pytest.raises(ConfigError, match="optimizer"):
        train_local(build_model(tiny_spec), tiny_data, epochs=1, dp_sgd=_opts(optimizer="lion"))


def test_head_learning_rate_moves_only_the_head(tiny_spec: LoRASpec, tiny_data: Dataset) -> None:
    from ffa_lora.lora.state import is_head

    def moved(head_lr: float | None) -> tuple[float, float]:
        model = build_model(tiny_spec)
        before = model.adapter_state()
        train_local(model, tiny_data, epochs=1, lr=1e-2, batch_size=8, seed=1,
                    dp_sgd=_opts(optimizer="sgd", learning_rate=0.05, head_learning_rate=head_lr))
        after = model.adapter_state()
        head = sum(float(np.abs(after[k] - before[k]).sum()) for k in before if is_head(k))
        lora_b = sum(float(np.abs(after[k] - before[k]).sum()) for k in before if is_lora_b(k))
        return head, lora_b

    head_same, b_same = moved(None)
    head_fast, b_fast = moved(0.5)
    assert head_fast > 5 * head_same > 0  # plain SGD: the head's steps scale with its own rate
    assert b_fast == pytest.approx(b_same, rel=0.5)  # the factors keep theirs (same seed and noise)


def test_tiny_noise_falls_back_to_rdp_accounting(tiny_spec: LoRASpec, tiny_data: Dataset) -> None:
    # Opacus' PRV accountant kills the process for noise this small; RDP still bounds it.
    res = train_local(build_model(tiny_spec), tiny_data, epochs=0.5, lr=1e-2, batch_size=8, seed=1,
                      dp_sgd=_opts(noise_multiplier=0.05))
    assert res.extra["dpsgd_accountant_state"]["accountant"] == "rdp"
    assert res.extra["dpsgd_epsilon"] > 100

"""DP-SGD inside train_local on the tiny BERT: frozen factors, rank masks, ε that accumulates
across rounds, hooks removed between rounds, physical batches that change nothing, per-group
clipping and rates, and noise that actually changes the update."""

from __future__ import annotations

import numpy as np
import pytest

from ffa_lora.data import Dataset
from ffa_lora.errors import ConfigError
from ffa_lora.lora import DPSGDOptions, LoRASpec, TrainOptions, build_model, train_local
from ffa_lora.lora.state import is_head, is_lora_a, is_lora_b

DELTA = 1e-5

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")


def _opts(**kw):  # type: ignore[no-untyped-def]
    base = {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "delta": DELTA, "seed": 11}
    base.update(kw)
    return DPSGDOptions(**base)


def _train(spec: LoRASpec, data: Dataset, dp: DPSGDOptions, **kw):  # type: ignore[no-untyped-def]
    opts = {"epochs": 1, "lr": 1e-2, "batch_size": 8, "seed": 1, **kw}
    model = build_model(spec)
    before = model.adapter_state()
    res = train_local(model, data, TrainOptions(**opts), dp_sgd=dp)
    return res, before, model.adapter_state()


def _moved(before: dict, after: dict, which) -> float:  # type: ignore[no-untyped-def,type-arg]
    return sum(float(np.abs(after[k] - before[k]).sum()) for k in before if which(k))


def _steps(res) -> int:  # type: ignore[no-untyped-def]
    return sum(e["count"] for e in res.extra["dpsgd_accountant_state"]["events"])


def test_dp_sgd_trains_b_only_and_reports_epsilon(tiny_spec: LoRASpec, tiny_data: Dataset) -> None:
    res, before, after = _train(tiny_spec, tiny_data, _opts(), phase="B")
    model_keys = list(before)
    for k in model_keys:
        if is_lora_a(k):
            np.testing.assert_array_equal(after[k], before[k])
        elif is_lora_b(k):
            assert after[k].any()
    assert 0 < res.extra["dpsgd_epsilon"] < float("inf")
    assert res.extra["dpsgd_sample_rate"] == pytest.approx(8 / len(tiny_data))
    assert _steps(res) == res.steps == 12  # round(96 / 8) Poisson batches
    assert res.grad_snr >= 0
    assert res.optimizer_state is None  # DP-SGD's optimizer state is not carried between rounds


def test_epsilon_accumulates_across_rounds_and_hooks_do_not_stack(
    tiny_spec: LoRASpec, tiny_data: Dataset
) -> None:
    model = build_model(tiny_spec)
    hooks_before = sum(len(m._forward_hooks) for m in model.peft.modules())
    opts = TrainOptions(epochs=0.5, lr=1e-2, batch_size=8, seed=1)
    r1 = train_local(model, tiny_data, opts, dp_sgd=_opts())
    assert sum(len(m._forward_hooks) for m in model.peft.modules()) == hooks_before
    assert not any(getattr(p, "grad_sample", None) is not None for p in model.peft.parameters())
    r2 = train_local(model, tiny_data, opts,
                     dp_sgd=_opts(accountant_state=r1.extra["dpsgd_accountant_state"]))
    fresh = train_local(build_model(tiny_spec), tiny_data, opts, dp_sgd=_opts())
    assert r2.extra["dpsgd_epsilon"] > r1.extra["dpsgd_epsilon"]
    assert r2.extra["dpsgd_epsilon"] > fresh.extra["dpsgd_epsilon"]
    assert _steps(r2) == r1.steps + r2.steps


def test_more_noise_means_less_epsilon_and_a_noisier_update(
    tiny_spec: LoRASpec, tiny_data: Dataset
) -> None:
    low, _, _ = _train(tiny_spec, tiny_data, _opts(noise_multiplier=0.5))
    high, _, _ = _train(tiny_spec, tiny_data, _opts(noise_multiplier=4.0))
    assert high.extra["dpsgd_epsilon"] < low.extra["dpsgd_epsilon"]
    # Same seeds, same Poisson batches: only the noise differs, and it changes the update.
    assert not np.allclose(high.delta, low.delta)


def test_physical_batch_size_does_not_change_the_update(
    tiny_spec: LoRASpec, tiny_data: Dataset
) -> None:
    dp = {"expected_batch_size": 32, "head_max_grad_norm": 0.5, "optimizer": "sgd",
          "learning_rate": 0.5}
    one, _, _ = _train(tiny_spec, tiny_data, _opts(physical_batch_size=96, **dp), dropout=False)
    many, _, _ = _train(tiny_spec, tiny_data, _opts(physical_batch_size=3, **dp), dropout=False)
    assert one.steps == many.steps == 3
    np.testing.assert_allclose(one.delta, many.delta, rtol=1e-4, atol=1e-6)
    assert one.extra["dpsgd_epsilon"] == pytest.approx(many.extra["dpsgd_epsilon"])


def test_expected_batch_sets_the_sample_rate_and_the_steps(
    tiny_spec: LoRASpec, tiny_data: Dataset
) -> None:
    res, _, _ = _train(tiny_spec, tiny_data, _opts(expected_batch_size=48), epochs=3)
    assert res.extra["dpsgd_sample_rate"] == pytest.approx(0.5)
    assert res.steps == 6
    assert 0 < res.examples_seen < 96 * 3 * 2


def test_rank_mask_holds_under_dp_sgd(tiny_spec: LoRASpec, tiny_data: Dataset) -> None:
    res, before, after = _train(tiny_spec, tiny_data, _opts(), phase="B", rank=2, seed=3)
    assert len(res.delta) == res.layout.prefix_len(2)
    for k in before:
        if is_lora_b(k):
            np.testing.assert_array_equal(after[k][:, 2:], 0.0)  # noise never reaches them
            assert after[k][:, :2].any()


def test_empty_poisson_batches_still_count(tiny_spec: LoRASpec) -> None:
    from tests.unit.lora.conftest import make_tiny_dataset

    data = make_tiny_dataset(n=6, seed=2)
    # sample rate 1/6 over 6 records: P(empty batch) = (5/6)^6 ≈ 0.33 per step
    res, _, _ = _train(tiny_spec, data, _opts(seed=5), epochs=4, batch_size=1)
    assert _steps(res) == res.steps == 24
    assert res.examples_seen != 24  # some batches were empty or larger than one


def test_sgd_steps_scale_with_the_rate_and_bad_optimizers_fail(
    tiny_spec: LoRASpec, tiny_data: Dataset
) -> None:
    a, _, _ = _train(tiny_spec, tiny_data, _opts(optimizer="sgd", learning_rate=0.5))
    b, _, _ = _train(tiny_spec, tiny_data, _opts(optimizer="sgd", learning_rate=0.05))
    assert np.abs(a.delta).sum() > 5 * np.abs(b.delta).sum() > 0
    with pytest.raises(ConfigError, match="optimizer"):
        _opts(optimizer="lion")
    with pytest.raises(ConfigError, match="head_max_grad_norm"):
        _opts(head_max_grad_norm=0.0)


def test_head_learning_rate_moves_only_the_head(tiny_spec: LoRASpec, tiny_data: Dataset) -> None:
    def moved(head_lr: float | None) -> tuple[float, float]:
        _, before, after = _train(tiny_spec, tiny_data, _opts(
            optimizer="sgd", learning_rate=0.05, head_learning_rate=head_lr))
        return _moved(before, after, is_head), _moved(before, after, is_lora_b)

    head_same, b_same = moved(None)
    head_fast, b_fast = moved(0.5)
    assert head_fast > 5 * head_same > 0  # plain SGD: the head's steps scale with its own rate
    assert b_fast == pytest.approx(b_same, rel=0.5)  # the factors keep theirs


def test_per_group_clipping_bounds_each_group(tiny_spec: LoRASpec, tiny_data: Dataset) -> None:
    # No noise, one step over every record (q = 1): each group's update is at most
    # lr × its clip bound (the mean of vectors of norm ≤ C has norm ≤ C).
    dp = _opts(noise_multiplier=0.0, expected_batch_size=96, head_max_grad_norm=0.3,
               max_grad_norm=0.01, optimizer="sgd", learning_rate=1.0)
    res, before, after = _train(tiny_spec, tiny_data, dp, epochs=1, phase="AB")
    assert res.steps == 1
    head = np.sqrt(sum(float(np.square(after[k] - before[k]).sum()) for k in before if is_head(k)))
    adapter = np.sqrt(sum(float(np.square(after[k] - before[k]).sum())
                          for k in before if not is_head(k)))
    assert 0 < head <= 0.3 + 1e-5
    assert 0 < adapter <= 0.01 + 1e-6
    assert res.extra["dpsgd_clipped"]["adapter"] > 0


def test_head_epochs_probe_on_cached_features_then_train_jointly(
    tiny_spec: LoRASpec, tiny_data: Dataset
) -> None:
    import dataclasses

    spec = dataclasses.replace(tiny_spec, head="mean_linear")
    dp = _opts(head_epochs=2.0, head_max_grad_norm=1.0, optimizer="sgd", learning_rate=0.5,
               head_learning_rate=2.0)
    # dropout off: only the modules that own trainable values are in train mode, and the
    # feature pass in between must leave them so (Opacus records activations only there)
    res, before, after = _train(spec, tiny_data, dp, epochs=1, dropout=False)
    assert res.steps == _steps(res) == 24 + 12  # head-only steps are charged like the others
    assert _moved(before, after, is_head) > 0 and _moved(before, after, is_lora_b) > 0
    only_head, _, _ = _train(spec, tiny_data, dp, epochs=0.01)  # one joint step at the end
    assert only_head.steps == 25
    with pytest.raises(ConfigError, match="mean_linear"):
        _train(tiny_spec, tiny_data, dp)  # the pooler head has no cached-feature form


def test_adapter_only_steps_leave_the_head_to_the_head_steps(
    tiny_spec: LoRASpec, tiny_data: Dataset
) -> None:
    import dataclasses

    spec = dataclasses.replace(tiny_spec, head="mean_linear")

    def run(epochs: float, adapter_only: bool):  # type: ignore[no-untyped-def]
        dp = _opts(head_epochs=1.0, adapter_only=adapter_only, head_max_grad_norm=1.0,
                   max_grad_norm=0.05, optimizer="sgd", learning_rate=0.5, head_learning_rate=2.0)
        res, before, after = _train(spec, tiny_data, dp, epochs=epochs, dropout=False)
        head = {k: after[k] - before[k] for k in before if is_head(k)}
        return res, head, _moved(before, after, is_lora_b)

    short, head_short, b_short = run(0.1, adapter_only=True)
    long, head_long, b_long = run(1.0, adapter_only=True)
    assert long.steps == 12 + 12 and short.steps == 12 + 1
    for k in head_short:  # same seed, same head steps first; the adapter steps leave the head
        np.testing.assert_array_equal(head_short[k], head_long[k])
    assert b_long > b_short > 0
    _, head_joint, _ = run(1.0, adapter_only=False)
    assert any(not np.array_equal(head_joint[k], head_long[k]) for k in head_long)
    with pytest.raises(ConfigError, match="head_epochs"):
        _opts(adapter_only=True)


def test_a_head_only_round_trains_the_head_from_one_feature_pass(
    tiny_spec: LoRASpec, tiny_data: Dataset
) -> None:
    import dataclasses

    spec = dataclasses.replace(tiny_spec, head="mean_linear")
    dp = _opts(head_epochs=1.0, adapter_only=True, optimizer="sgd", head_learning_rate=2.0)
    res, before, after = _train(spec, tiny_data, dp, epochs=0, dropout=False)
    assert res.steps == _steps(res) == 12
    assert _moved(before, after, is_head) > 0 and _moved(before, after, is_lora_b) == 0
    with pytest.raises(ConfigError, match="head-only round"):
        _train(spec, tiny_data, _opts(), epochs=0)

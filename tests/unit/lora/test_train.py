"""Local training on the tiny BERT: rank masks, frozen factors, the update, exactness."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ffa_lora.data import Dataset
from ffa_lora.errors import ConfigError, DataError
from ffa_lora.lora import (
    DataCursor,
    LoRASpec,
    RunOptions,
    TrainOptions,
    UpdateLayout,
    aggregation_discrepancy,
    apply_mean_update,
    build_model,
    evaluate,
    initial_adapter_state,
    train_centralized,
    train_local,
)
from ffa_lora.lora.exactness import delta_w
from ffa_lora.lora.state import is_head, is_lora_a, is_lora_b


def test_rank_r_client_trains_only_its_columns(tiny_spec: LoRASpec, tiny_data: Dataset) -> None:
    model = build_model(tiny_spec)
    before = model.adapter_state()
    res = train_local(model, tiny_data, TrainOptions(epochs=1, lr=1e-2, batch_size=8, phase="AB", rank=2, seed=3, weight_decay=0.01))
    after = model.adapter_state()
    r = 2
    for k in before:
        if is_lora_b(k):
            np.testing.assert_array_equal(after[k][:, r:], 0.0)  # never leaves zero
            assert after[k][:, :r].any()
        elif is_lora_a(k):
            np.testing.assert_array_equal(after[k][r:], before[k][r:])
            assert not np.array_equal(after[k][:r], before[k][:r])
    assert res.rank == 2 and res.phase == "AB"
    assert len(res.delta) == res.layout.prefix_len(2)
    assert res.steps == res.examples_seen // 8 == len(tiny_data) // 8


def test_ffa_phase_freezes_a_and_delta_is_the_change(
    tiny_spec: LoRASpec, tiny_data: Dataset
) -> None:
    model = build_model(tiny_spec)
    before = model.adapter_state()
    res = train_local(model, tiny_data, TrainOptions(epochs=0.5, lr=1e-2, batch_size=8, phase="B", seed=1))
    after = model.adapter_state()
    for k in before:
        if is_lora_a(k):
            np.testing.assert_array_equal(after[k], before[k])
            assert k not in res.delta_state
        else:
            np.testing.assert_allclose(res.delta_state[k], after[k] - before[k], atol=1e-7)
    assert res.steps == 6  # half of ceil(96 / 8) batches
    np.testing.assert_array_equal(res.delta, res.layout.flatten(res.delta_state))
    # global + delta reproduces the client's model exactly enough
    rebuilt = apply_mean_update(before, res.delta, res.layout)
    for k in after:
        np.testing.assert_allclose(rebuilt[k], after[k], atol=1e-6)


def test_alternating_a_phase_freezes_b(tiny_spec: LoRASpec, tiny_data: Dataset) -> None:
    model = build_model(tiny_spec)
    rng = np.random.default_rng(0)
    state = {k: (v + (0.05 * rng.normal(size=v.shape) if is_lora_b(k) else 0)).astype(np.float32)
             for k, v in model.adapter_state().items()}  # B non-zero so A gets gradients
    model.load_adapter_state(state)
    res = train_local(model, tiny_data, TrainOptions(epochs=0.5, lr=1e-2, batch_size=8, phase="A", seed=1))
    after = model.adapter_state()
    for k, v in state.items():
        if is_lora_b(k):
            np.testing.assert_array_equal(after[k], v)
        if is_lora_a(k):
            assert not np.array_equal(after[k], v)
    assert res.layout.phase == "A"


def test_training_reduces_loss_and_is_reproducible(
    tiny_spec: LoRASpec, tiny_data: Dataset
) -> None:
    runs = []
    for _ in range(2):
        model = build_model(tiny_spec)
        runs.append(train_local(model, tiny_data, TrainOptions(epochs=3, lr=1e-2, batch_size=8, phase="B", seed=11)))
    a, b = runs
    np.testing.assert_array_equal(a.delta, b.delta)
    assert a.loss_after < a.loss_before
    assert a.grad_snr > 0 and np.isfinite(a.train_loss) and a.seconds > 0
    metrics = a.metrics()
    assert set(metrics) >= {"samples", "loss_before", "loss_after", "grad_snr", "steps"}
    other = train_local(build_model(tiny_spec), tiny_data, TrainOptions(epochs=3, lr=1e-2, batch_size=8, phase="B", seed=12))
    assert not np.array_equal(other.delta, a.delta)


def test_optimizer_state_continues_across_calls(tiny_spec: LoRASpec, tiny_data: Dataset) -> None:
    """A client's next round continues its AdamW (moments and step count) instead of restarting
    it; a state saved for other trainable keys, shapes or another rank is not used."""
    model = build_model(tiny_spec)
    glob = model.adapter_state()
    first = train_local(model, tiny_data, TrainOptions(epochs=0.5, lr=1e-2, batch_size=8, phase="B", seed=1), run=RunOptions(loss_samples=0))
    kept = first.optimizer_state
    assert kept is not None and kept.rank == tiny_spec.r_max
    assert set(kept.keys) == set(first.delta_state)
    assert all(int(s["step"]) == first.steps for s in kept.state.values())

    def second(state, *, phase="B", rank=None):  # type: ignore[no-untyped-def]
        m = build_model(tiny_spec, state=glob)  # the next round starts from a global adapter
        return train_local(m, tiny_data, TrainOptions(epochs=0.5, lr=1e-2, batch_size=8, phase=phase, rank=rank, seed=2), run=RunOptions(loss_samples=0), optimizer_state=state)

    fresh, cont = second(None), second(kept)
    assert cont.optimizer_state is not None
    assert all(int(s["step"]) == first.steps + cont.steps for s in cont.optimizer_state.state.values())
    assert not np.allclose(cont.delta, fresh.delta)
    # A fresh AdamW's first step moves every value with a gradient by ~lr whatever the gradient's
    # size; continued moments scale the steps: they no longer all sit at the learning rate.
    one_fresh = train_local(build_model(tiny_spec, state=glob), tiny_data.subset(range(8)), TrainOptions(epochs=1, lr=1e-2, batch_size=8, phase="B", seed=2), run=RunOptions(loss_samples=0))
    one_cont = train_local(build_model(tiny_spec, state=glob), tiny_data.subset(range(8)), TrainOptions(epochs=1, lr=1e-2, batch_size=8, phase="B", seed=2), run=RunOptions(loss_samples=0), optimizer_state=kept)
    moved = np.abs(one_fresh.delta[one_fresh.delta != 0])
    np.testing.assert_allclose(moved, 1e-2, rtol=1e-2)
    assert np.abs(one_cont.delta).std() > 10 * moved.std()
    # Saved for other keys (phase AB) or another rank: ignored, the run equals a fresh one.
    np.testing.assert_array_equal(second(dataclasses.replace(kept, rank=2)).delta, fresh.delta)
    np.testing.assert_array_equal(second(dataclasses.replace(kept, keys=kept.keys[:-1])).delta, fresh.delta)
    smaller = tuple((s[0], s[1] - 1) if len(s) == 2 else s for s in kept.shapes)  # after an SVD rank cut
    np.testing.assert_array_equal(second(dataclasses.replace(kept, shapes=smaller)).delta, fresh.delta)
    ab = second(kept, phase="AB")
    assert ab.optimizer_state is not None and len(ab.optimizer_state.keys) > len(kept.keys)


def test_evaluate_metrics(tiny_spec: LoRASpec, tiny_data: Dataset) -> None:
    m = evaluate(build_model(tiny_spec), tiny_data, batch_size=32)
    assert set(m) >= {"accuracy", "macro_f1", "loss", "roc_auc", "roc_auc_classes"}
    assert 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1 and m["loss"] > 0
    assert 0 <= m["roc_auc"] <= 1 and m["roc_auc_classes"] == 3
    assert {k for k in m if k.startswith("roc_auc/")} == {f"roc_auc/{n}" for n in tiny_data.label_names}
    model = build_model(tiny_spec)
    train_local(model, tiny_data, TrainOptions(epochs=4, lr=2e-2, batch_size=8), run=RunOptions(loss_samples=0))
    trained = evaluate(model, tiny_data, batch_size=32)
    assert trained["roc_auc"] > m["roc_auc"] + 0.1  # learning shows in the AUC
    only_two = tiny_data.subset([i for i, y in enumerate(tiny_data.labels) if y != 1])
    m2 = evaluate(model, only_two)
    assert m2["roc_auc_classes"] == 2 and "roc_auc/neutral" not in m2


def test_bad_arguments(tiny_spec: LoRASpec, tiny_data: Dataset) -> None:
    model = build_model(tiny_spec)
    with pytest.raises(ConfigError):
        train_local(model, tiny_data, TrainOptions(rank=tiny_spec.r_max + 1))
    with pytest.raises(ConfigError):
        train_local(model, tiny_data, TrainOptions(phase="C"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        train_local(model, tiny_data, TrainOptions(epochs=0))
    with pytest.raises(DataError):
        train_local(model, tiny_data.subset([]))
    two = Dataset(texts=["a", "b"], labels=[0, 1], label_names=("x", "y"))
    with pytest.raises(DataError):
        evaluate(model, two)


def _three_clients(spec: LoRASpec, data: Dataset, phase: str):  # type: ignore[no-untyped-def]
    """Three clients train from the same global adapter on different data."""
    glob = initial_adapter_state(spec)
    states, results = [], []
    for i in range(3):
        model = build_model(spec, state=glob)
        part = data.subset(range(i, len(data), 3))
        res = train_local(model, part, TrainOptions(epochs=2, lr=2e-2, batch_size=8, phase=phase, seed=100 + i), run=RunOptions(loss_samples=0))
        states.append(model.adapter_state())
        results.append(res)
    return glob, states, results


def test_ffa_aggregate_is_exact(tiny_spec: LoRASpec, tiny_data: Dataset) -> None:
    """With FFA, mean(B_i)·A = mean(B_i·A); the averaged update gives it."""
    glob, states, results = _three_clients(tiny_spec, tiny_data, "B")
    weights = [float(r.samples) for r in results]
    assert aggregation_discrepancy(states, weights) < 1e-6
    layout = results[0].layout
    total = sum(w * r.delta.astype(np.float64) for w, r in zip(weights, results))
    mean = layout.mean_from_sum(total, {tiny_spec.r_max: sum(weights)})
    new = apply_mean_update(glob, mean, layout)
    s = tiny_spec.scaling
    dw_new = delta_w(new, scaling=s)
    per_client = [delta_w(st, scaling=s) for st in states]
    for m, got in dw_new.items():
        want = sum(w * pc[m] for w, pc in zip(weights, per_client)) / sum(weights)
        np.testing.assert_allclose(got, want, atol=1e-6)
    for k in new:
        if is_head(k):
            want = sum(w * st[k].astype(np.float64) for w, st in zip(weights, states)) / sum(weights)
            np.testing.assert_allclose(new[k], want, atol=1e-6)


def test_fedavg_aggregate_has_discrepancy(tiny_spec: LoRASpec, tiny_data: Dataset) -> None:
    spec = dataclasses.replace(tiny_spec, strategy="fedavg")
    _, states, results = _three_clients(spec, tiny_data, "AB")
    disc = aggregation_discrepancy(states, [float(r.samples) for r in results])
    norm = np.sqrt(sum(np.square(v).sum() for v in delta_w(states[0]).values()))
    assert disc > 1e-3 * norm > 0


def test_heterogeneous_ranks_aggregate_per_column(
    tiny_spec: LoRASpec, tiny_data: Dataset
) -> None:
    glob = initial_adapter_state(tiny_spec)
    layout = UpdateLayout.build(glob, phase="B")
    total = np.zeros(layout.total_len)
    by_rank: dict[int, float] = {}
    results = []
    for i, rank in enumerate([1, 2, 4]):
        model = build_model(tiny_spec, state=glob)
        res = train_local(model, tiny_data.subset(range(i, 96, 3)), TrainOptions(epochs=1, lr=2e-2, batch_size=8, rank=rank, seed=i), run=RunOptions(loss_samples=0))
        assert len(res.delta) == layout.prefix_len(rank)
        total += layout.pad(res.samples * res.delta.astype(np.float64))
        by_rank[rank] = by_rank.get(rank, 0.0) + res.samples
        results.append(res)
    mean = layout.unflatten(layout.mean_from_sum(total, by_rank))
    key = next(k for k in glob if is_lora_b(k))
    for j in range(tiny_spec.r_max):
        have = [r for r in results if r.rank > j]
        want = (sum(r.samples * r.delta_state[key][:, j] for r in have)
                / sum(r.samples for r in have)) if have else 0.0
        np.testing.assert_allclose(mean[key][:, j], want, atol=1e-7)


def test_train_centralized(tiny_spec: LoRASpec, tiny_data: Dataset) -> None:
    res = train_centralized(tiny_spec, tiny_data, tiny_data, epochs=1, lr=1e-2, batch_size=16)
    assert {"accuracy", "macro_f1", "loss", "train_seconds", "steps"} <= set(res.metrics)
    assert res.train.phase == "B" and res.metrics["steps"] == 6
    lora = train_centralized(dataclasses.replace(tiny_spec, strategy="fedavg"), tiny_data,
                             tiny_data, epochs=0.5, lr=1e-2, batch_size=16)
    assert lora.train.phase == "AB"


def test_a_data_cursor_sees_every_example_once_per_epoch_across_calls() -> None:
    from ffa_lora.lora.batching import cursor_batches, shuffled_batches

    n, bs = 37, 8  # 5 batches per epoch, the last one of 5 examples
    cursor = DataCursor(seed=11, n=n)
    seen: list[int] = []
    for _ in range(4):  # four half-epoch calls = two epochs
        batches, after = cursor_batches(n, bs, 0.5, cursor)
        assert len(batches) == 3  # ceil(0.5 * 5)
        assert after == DataCursor(seed=cursor.seed, n=n, step=cursor.step + len(batches))
        seen += [int(i) for b in batches for i in b]
        cursor = after
    # 12 batches: two full epochs (10 batches) and two more of the third.
    assert sorted(seen[:n]) == list(range(n)) and sorted(seen[n : 2 * n]) == list(range(n))
    # Fresh permutations per call (the old way) miss some examples and repeat others.
    fresh = [int(i) for s in range(4) for b in shuffled_batches(n, bs, 0.5, np.random.default_rng(s)) for i in b]
    assert len(set(fresh[:n])) < n
    # A cursor made for other data restarts at its first batch.
    other, after = cursor_batches(40, bs, 0.5, cursor)
    first, _ = cursor_batches(40, bs, 0.5, DataCursor(seed=11, n=40))
    assert [b.tolist() for b in other] == [b.tolist() for b in first]
    assert after == DataCursor(seed=11, n=40, step=3)


def test_train_local_advances_the_cursor(tiny_spec: LoRASpec, tiny_data: Dataset) -> None:
    model = build_model(tiny_spec)
    res = train_local(model, tiny_data, TrainOptions(epochs=0.5, lr=1e-2, batch_size=16), run=RunOptions(loss_samples=0), cursor=DataCursor(seed=3, n=len(tiny_data)))
    assert res.cursor == DataCursor(seed=3, n=len(tiny_data), step=res.steps)
    again = train_local(model, tiny_data, TrainOptions(epochs=0.5, lr=1e-2, batch_size=16), run=RunOptions(loss_samples=0), cursor=res.cursor)
    assert again.cursor is not None and again.cursor.step == res.steps + again.steps
    assert train_local(model, tiny_data, TrainOptions(epochs=0.5, lr=1e-2, batch_size=16), run=RunOptions(loss_samples=0)).cursor is None


def test_train_centralized_curve_evaluates_each_piece_with_one_optimizer(
        tiny_spec: LoRASpec, tiny_data: Dataset) -> None:
    res = train_centralized(tiny_spec, tiny_data, tiny_data, epochs=1, lr=1e-2, batch_size=16, eval_every=0.4)
    assert [p["epochs"] for p in res.curve] == pytest.approx([0.4, 0.8, 1.0])
    last = res.curve[-1]
    assert (res.metrics["accuracy"], res.metrics["loss"]) == (last["accuracy"], last["loss"])
    state = res.train.optimizer_state
    assert state is not None
    steps = {int(s["step"]) for s in state.state.values()}
    assert steps == {int(res.metrics["steps"])}  # the last piece's AdamW counted every piece's steps
    assert res.metrics["steps"] > res.train.steps
    # the pieces walk one pass over the data, unless asked to resample each piece
    assert res.train.cursor is not None and res.train.cursor.step == res.metrics["steps"]
    resampled = train_centralized(tiny_spec, tiny_data, tiny_data, epochs=1, lr=1e-2, batch_size=16,
                                  eval_every=0.5, resample_pieces=True)
    assert resampled.train.cursor is None and len(resampled.curve) == 2
    with pytest.raises(ConfigError, match="eval_every"):
        train_centralized(tiny_spec, tiny_data, tiny_data, epochs=1, eval_every=2.0)

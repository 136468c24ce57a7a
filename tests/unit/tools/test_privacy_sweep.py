"""`ffa-lora privacy sweep`: DP-SGD noise calibration per budget, the configs each run gets, and
the table (demo runs replaced by a recorder: the demo itself is tested elsewhere)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from ffa_lora_tools import privacy_cli
from ffa_lora_tools.demo import STRATEGY_LR


@pytest.mark.slow  # calibrates the noise of three budgets
def test_calibrated_noise_spends_each_sites_budget() -> None:
    from ffa_lora.privacy.dp_sgd import epsilon_after_steps

    cal = privacy_cli.dpsgd_noise_for_budget(epsilon=4.0, delta=1e-5, sites={"small": 500, "big": 5000},
                                             batch_size=16, local_epochs=0.5, rounds=6)
    sigma = cal["noise_multipliers"]
    assert sigma["big"] < sigma["small"] == cal["noise_multiplier"]  # more data, less noise for the same ε
    for site, n in (("small", 450), ("big", 4500)):  # less the validation share
        steps = 6 * round(0.5 * n / 16)
        eps = epsilon_after_steps(noise_multiplier=sigma[site], sample_rate=16 / n, steps=steps,
                                  delta=1e-5)  # the clients' accountant (RDP)
        assert 3.96 < eps <= 4.0  # every site calibrated: none grossly over-noised
    stricter = privacy_cli.dpsgd_noise_for_budget(epsilon=1.0, delta=1e-5, sites={"small": 500}, batch_size=16,
                                                  local_epochs=0.5, rounds=6)
    assert stricter["noise_multiplier"] > cal["noise_multiplier"]


@pytest.mark.slow  # calibrates the noise of each budget
def test_sweep_configures_each_run_and_writes_table_and_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[Any] = []

    def fake_run_demo(settings: Any) -> dict[str, Any]:
        seen.append(settings)
        dp = settings.privacy.get("dpsgd", {})
        return {"final_accuracy": 0.8 if not dp else 0.7, "final_macro_f1": 0.6, "rounds": settings.rounds,
                "final_roc_auc": 0.9 if not dp else 0.85,
                "epsilon_spent": 0.0, "dpsgd_epsilon_max": 3.9 if dp else 0.0}

    probes: list[tuple[float, dict[str, Any]]] = []

    def fake_probe(eps: float, **kw: Any) -> dict[str, float]:
        probes.append((eps, kw))
        return {"accuracy": 0.75 if math.isinf(eps) else 0.65, "macro_f1": 0.5,
                "epsilon_spent": eps}

    audits: list[tuple[Path, dict[str, Any]]] = []

    def fake_audit(adapter: Path, **kw: Any) -> dict[str, float]:
        audits.append((adapter, kw))
        dp = "eps4" in str(adapter)
        return {"mia_auc": 0.51 if dp else 0.6, "mia_tpr_at_1pct_fpr": 0.01 if dp else 0.05}

    monkeypatch.setattr(privacy_cli, "run_demo", fake_run_demo)
    monkeypatch.setattr(privacy_cli, "probe_reference", fake_probe)
    monkeypatch.setattr(privacy_cli, "audit_builtin_run", fake_audit)
    rc = privacy_cli.main(["sweep", "--budgets", "inf,4", "--strategies", "ffa,fedavg", "--rounds", "2",
                           "--max-train-per-site", "200", "--max-test", "50", "--out-dir", str(tmp_path),
                           "--audit-site", "united"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out, parse_constant=pytest.fail)  # strict JSON: no bare Infinity
    assert [(r["strategy"], r["epsilon"]) for r in out["rows"]] == [
        ("ffa", "inf"), ("ffa", 4.0), ("fedavg", "inf"), ("fedavg", 4.0), ("probe", "inf"), ("probe", 4.0)]
    assert [s.strategy for s in seen] == ["ffa", "ffa", "fedavg", "fedavg"]
    assert seen[0].privacy == {"mode": "off"}
    dp = seen[1].privacy["dpsgd"]
    assert dp["enabled"] and dp["noise_multiplier"] > 0 and math.isfinite(dp["noise_multiplier"])
    # each demo client its own noise, calibrated on its own records; the smallest site's the largest
    sigmas = dp["noise_multipliers"]
    assert sorted(sigmas) == ["site-americanair", "site-united", "site-usairways"]
    assert max(sigmas.values()) == dp["noise_multiplier"]
    # the secure sum's range holds the noised updates; 16 bits keep its rounding fine
    assert seen[1].bits == 16 and seen[1].clip > 0.5 and (seen[0].bits, seen[0].clip) == (8, 0.5)
    # the recipe's defaults reach the run: expected batch 512, no override left as None
    assert dp["expected_batch_size"] == 512 and None not in dp.values()
    assert "optimizer" not in dp and "learning_rate" not in dp
    # DP rows train the recipe's small adapter; the no-DP rows keep the demo's
    assert (seen[1].rank, seen[1].alpha, seen[1].target_modules, seen[1].local_epochs) == (
        1, 2.0, ("value",), 1.0)
    assert (seen[0].rank, seen[0].alpha, seen[0].target_modules) == (8, None, None)
    # the probe reference: one run per budget, with the sweep's data limits, on every row
    assert [e for e, _ in probes] == [math.inf, 4.0]
    assert probes[1][1]["rounds"] == 2 and probes[1][1]["max_train_per_site"] == 200
    assert [r["probe_accuracy"] for r in out["rows"]] == [0.75, 0.65] * 3
    # every federated run's adapter is audited on the records that run trained on
    assert [a.name for a, _ in audits] == ["adapter"] * 4
    assert [a.parent.name for a, _ in audits] == [s.name for s in seen]
    assert all(kw["site"] == "united" and kw["max_train_per_site"] == 200 and kw["max_test"] == 50
               for _, kw in audits)
    assert [kw["strategy"] for _, kw in audits] == ["ffa", "ffa", "fedavg", "fedavg"]
    # a DP row's adapter has the DP-SGD recipe's head; scoring it with the pooler's is another model
    assert [kw["head"] for _, kw in audits] == ["pooler", "mean_linear"] * 2
    # one row per budget with the fields; the audit is ffa's adapter's
    assert out["budgets"] == [
        {"epsilon_budget": "inf", "epsilon_spent": "inf", "ffa_accuracy": 0.8, "fedavg_accuracy": 0.8,
         "alternating_accuracy": None, "probe_accuracy": 0.75, "mia_auc": 0.6,
         "mia_tpr_at_1pct_fpr": 0.05, "mia_strategy": "ffa"},
        {"epsilon_budget": 4.0, "epsilon_spent": 4.0, "ffa_accuracy": 0.7, "fedavg_accuracy": 0.7,
         "alternating_accuracy": None, "probe_accuracy": 0.65, "mia_auc": 0.51,
         "mia_tpr_at_1pct_fpr": 0.01, "mia_strategy": "ffa"},
    ]
    assert (seen[1].learning_rate, seen[3].learning_rate) == (STRATEGY_LR["ffa"], STRATEGY_LR["fedavg"])
    table = (tmp_path / "privacy_sweep.md").read_text()
    assert "| 4 | 0.7000 | 0.6000 | 0.8500 | 3.900 | 0.7000 | 0.6000 | 0.8500 | 3.900 | 0.6500 | 0.5000 | - | 4.000 |" in table
    assert (tmp_path / "privacy_sweep.png").stat().st_size > 1000


def test_loose_budgets_stay_within_budget() -> None:
    from ffa_lora.privacy.dp_sgd import epsilon_after_steps

    cal = privacy_cli.dpsgd_noise_for_budget(epsilon=64.0, delta=1e-5, sites={"a": 900}, batch_size=16,
                                             local_epochs=0.5, rounds=6)
    assert cal["noise_multiplier"] < 0.6
    assert epsilon_after_steps(noise_multiplier=cal["noise_multiplier"], sample_rate=cal["sample_rate"],
                               steps=int(cal["steps"]), delta=1e-5) <= 64.0


@pytest.mark.parametrize("strategies", ["lora", "ffa,lora", ","])
def test_sweep_refuses_an_unknown_strategy_before_any_run(strategies: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        privacy_cli.main(["sweep", "--strategies", strategies])
    assert exc.value.code == 2
    assert "--strategies: give some of ffa, alternating, fedavg" in capsys.readouterr().err

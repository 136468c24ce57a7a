"""``ffa-lora audit`` end to end on a tiny exported adapter (the tiny test BERT)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ffa_lora.data import Dataset
from ffa_lora.data.canaries import make_canaries, plant_canaries, save_canaries
from ffa_lora.lora import LoRASpec, export_peft_adapter
from ffa_lora.privacy.audit_model import round_trainer
from ffa_lora_tools.cli import main
from ffa_lora_tools.demo import write_csv
from ffa_lora_tools.harness.tiny_model import tiny_bert
from tests.unit.lora.conftest import make_tiny_dataset


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny adapter trained on members with canaries planted, and the files the audit reads."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("audit-run")
    model_dir = tiny_bert(root / "tiny-bert")
    spec = LoRASpec(model=str(model_dir), num_labels=3, r_max=4, alpha=8.0, dropout=0.0,
                    max_length=16, seed=7, strategy="fedavg")
    members, nonmembers, public = (make_tiny_dataset(n, seed=s) for n, s in ((45, 1), (45, 2), (90, 3)))
    canaries = make_canaries(n_planted=6, n_unseen=24, label_names=members.label_names, copies=4,
                             seed=0, words=2, word_length=(3, 5))
    trained = plant_canaries(members, canaries, seed=0)
    state = round_trainer(spec, rounds=4, local_epochs=1.0, lr=1e-2)(trained, 0)
    export_peft_adapter(state, spec, root / "adapter")
    for name, data in (("members", members), ("nonmembers", nonmembers), ("public", public)):
        write_csv(root / f"{name}.csv", data)
    save_canaries(canaries, root / "canaries.json")
    return root


def _argv(root: Path, *extra: str) -> list[str]:
    return ["audit", str(root / "adapter"), "--members", str(root / "members.csv"),
            "--nonmembers", str(root / "nonmembers.csv"), "--labels", "negative,neutral,positive",
            "--max-length", "16", "--seed", "7", "--strategy", "fedavg", "--rounds", "2",
            "--local-epochs", "1", "--lr", "0.01", "--bootstrap", "50", "--quiet", *extra]


def test_audit_command_reports_both_attacks_and_canaries(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(_argv(run_dir, "--reference-data", str(run_dir / "public.csv"), "--reference-models", "2",
                      "--canaries", str(run_dir / "canaries.json"), "--plot", str(run_dir / "roc.png"), "--json"))
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"members": 45, "nonmembers": 45, "reference_models": 2,
                                "reference_train_size": 45}
    assert set(report["attacks"]) == {"loss", "lira_offline"}
    for key in ("mia_auc", "mia_tpr_at_1pct_fpr"):
        lo, hi = report[key + "_ci"]
        assert 0.0 <= lo <= report[key] <= hi <= 1.0
    c = report["canaries"]
    assert (c["planted"], c["unseen"], c["copies"]) == (6, 24, 4)
    assert c["exposure_max_possible"] == pytest.approx(4.64, abs=0.01)
    assert report["reference_training"]["strategy"] == "fedavg"
    assert (run_dir / "roc.png").read_bytes()[:4] == b"\x89PNG"


def test_audit_command_loss_attack_only_prints_a_summary(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(_argv(run_dir, "--reference-models", "0"))
    out = capsys.readouterr().out
    assert code == 0
    assert "loss: AUC" in out and "lira" not in out
    assert (run_dir / "audit-roc.png").is_file()  # default: next to the adapter


def test_audit_command_refuses_a_missing_adapter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_csv(tmp_path / "m.csv", Dataset(texts=["a"], labels=[0], label_names=("x", "y")))
    code = main(["audit", str(tmp_path / "nope"), "--members", str(tmp_path / "m.csv"),
                 "--nonmembers", str(tmp_path / "m.csv"), "--reference-models", "0", "--quiet"])
    assert code == 2
    assert "adapter_config.json" in capsys.readouterr().err


@pytest.mark.parametrize("extra, match", [
    ([], "--data and --site"),
    (["--data", "bank"], "--data needs --site"),
    (["--members", "m.csv", "--nonmembers", "n.csv"], "--reference-data"),
    (["--data", "bank", "--site", "united", "--reference-models", "1"], "at least 2"),
    (["--data", "bank", "--site", "united", "--epsilon", "0"], "--epsilon: the DP budget must be > 0"),
    (["--data", "bank", "--site", "united", "--epsilon", "-3"], "--epsilon: the DP budget must be > 0"),
    (["--data", "bank", "--site", "united", "--epsilon", "8", "--delta", "1"], "--delta must be in (0, 1)"),
])
def test_audit_command_argument_errors(extra: list[str], match: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["audit", "adapter", *extra])
    assert exc.value.code == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize("scope", ["site", "all"])
def test_builtin_records_members_site_nonmembers_held_out_references_other_sites(scope: str) -> None:
    from ffa_lora.data.builtin import load_builtin
    from ffa_lora_tools.audit_cli import _records, build_parser

    a = build_parser().parse_args(["adapter", "--data", "bank", "--site", "americanair", "--nonmember-scope", scope])
    members, nonmembers, pool = _records(a, None)
    demo = load_builtin("bank", seed=a.data_seed)
    assert members == demo.train_parts["americanair"]
    assert pool is not None and set(pool.groups or []) == {"united", "usairways"}
    assert len(pool) == len(demo.train) - len(members)
    assert not set(nonmembers.texts) & (set(members.texts) | set(pool.texts))
    if scope == "site":
        assert set(nonmembers.groups or []) == {"americanair"} and len(nonmembers) > 400
    else:
        assert nonmembers == demo.test


def test_builtin_records_follow_the_run_s_caps() -> None:
    """A sweep that trained on capped sites is audited on the records it actually used."""
    from ffa_lora.data.builtin import load_builtin
    from ffa_lora_tools.audit_cli import _records, build_parser

    a = build_parser().parse_args(["adapter", "--data", "bank", "--site", "united",
                                   "--max-train-per-site", "60", "--max-test", "90"])
    members, nonmembers, _ = _records(a, None)
    demo = load_builtin("bank", seed=a.data_seed, max_train_per_site=60, max_test=90)
    assert members == demo.train_parts["united"] and len(members) == 60
    assert set(nonmembers.texts) <= set(demo.test.texts) and len(nonmembers) < 90


def test_audit_of_a_builtin_run_passes_the_run_s_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ffa_lora_tools import audit_cli

    seen = {}
    monkeypatch.setattr(audit_cli, "run", lambda a: seen.setdefault("a", a) and {"mia_auc": 0.5})
    audit_cli.audit_builtin_run(tmp_path / "adapter", data="bank", site="united", data_seed=3, strategy="ffa",
                                max_train_per_site=60, max_test=None)
    a = seen["a"]
    assert (a.data, a.site, a.data_seed, a.strategy, a.max_train_per_site, a.max_test) == (
        "bank", "united", 3, "ffa", 60, None)
    assert a.reference_models == 0 and a.quiet and a.threads == 1 and a.head == "pooler"
    seen.clear()
    audit_cli.audit_builtin_run(tmp_path / "adapter", data="bank", site="united", data_seed=3, strategy="ffa",
                                head="mean_linear")
    assert seen["a"].head == "mean_linear"  # a DP-SGD run's head (the export does not record it)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_audit_of_a_dp_adapter_trains_dp_reference_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A DP-SGD target (the recipe of privacy.dpsgd's defaults, test-only seed) audited with
    --epsilon: the mean_linear head is loaded and each reference model spends the budget."""
    import torch

    from ffa_lora.privacy.audit_model import train_dpsgd
    from ffa_lora_tools.audit_cli import recipe_dp_training

    torch.set_num_threads(1)
    spec = LoRASpec(model=str(tiny_bert(tmp_path / "tiny-bert")), num_labels=3, r_max=1, alpha=2.0,
                    dropout=0.0, max_length=16, seed=7, strategy="ffa", target_modules=("value",),
                    head="mean_linear")
    members, nonmembers, public = (make_tiny_dataset(n, seed=s) for n, s in ((45, 1), (45, 2), (90, 3)))
    dp = recipe_dp_training(8.0, delta=1e-5, rounds=3, adapter_rounds=2, seed=3)
    target = train_dpsgd(spec, members, dp, rounds=3, local_epochs=1.0, lr=1e-2)
    assert 0 < target.epsilon_spent <= 8.0 and target.noise_multiplier > 0
    export_peft_adapter(target.state, spec, tmp_path / "adapter")
    for name, data in (("members", members), ("nonmembers", nonmembers), ("public", public)):
        write_csv(tmp_path / f"{name}.csv", data)
    code = main(["audit", str(tmp_path / "adapter"), "--members", str(tmp_path / "members.csv"),
                 "--nonmembers", str(tmp_path / "nonmembers.csv"), "--labels", "negative,neutral,positive",
                 "--reference-data", str(tmp_path / "public.csv"), "--reference-models", "2",
                 "--max-length", "16", "--seed", "7", "--strategy", "ffa", "--rounds", "3",
                 "--local-epochs", "1", "--epsilon", "8", "--adapter-rounds", "2", "--bootstrap", "20",
                 "--quiet", "--json"])
    assert code == 0
    ref = json.loads(capsys.readouterr().out)["reference_training"]
    assert ref["head"] == "mean_linear"
    assert ref["dpsgd"]["epsilon_budget"] == 8.0 and ref["dpsgd"]["probe_rounds"] == 1
    # the recipe's default: the one head-only round comes after the adapter rounds
    assert ref["dpsgd"]["final_head_rounds"] == 1 and dp.final_head_rounds == 1
    assert len(ref["dpsgd"]["models"]) == 2
    for m in ref["dpsgd"]["models"]:
        assert m["noise_multiplier"] > 0 and 7.5 < m["epsilon_spent"] <= 8.0
        assert m["steps"] == m["planned_steps"]


def test_audit_target_refuses_a_budget_that_is_not_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ffa_lora_tools import audit_target

    for bad in ("0", "-8"):
        with pytest.raises(SystemExit) as exc:
            audit_target.main(["--site", "americanair", "--out", str(tmp_path), "--epsilon", bad])
        assert exc.value.code == 2
        assert "--epsilon: the DP budget must be > 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing trained or written

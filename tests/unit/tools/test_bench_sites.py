"""``ffa-lora bench sites``: the in-process federation averages like the coordinator, the report
computes the gains from the per-seed runs, undefined scores become null, and the command runs
end to end on a small slice of the drug reviews with the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ffa_lora.errors import ConfigError
from ffa_lora.lora import LoRASpec, apply_mean_update
from ffa_lora.lora.model import build_model, get_adapter_state, load_adapter_state
from ffa_lora.lora.train import DataCursor, RunOptions, TrainOptions, train_local
from ffa_lora_tools.bench import sites
from ffa_lora_tools.bench.sites_report import combine_runs, plot_title, summarize
from ffa_lora_tools.harness.tiny_model import tiny_bert
from ffa_lora_tools.jsonsafe import dumps, finite_or_none
from ffa_lora_tools.simulate import (
    SimulationSettings,
    integer_weights,
    round_seed,
    simulate_federation,
)
from tests.unit.lora.conftest import make_tiny_dataset


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny"))


def strict(text: str) -> Any:
    """Parse JSON, refusing the bare NaN / Infinity Python would accept."""
    def refuse(name: str) -> None:
        raise ValueError(f"bare {name} in JSON")
    return json.loads(text, parse_constant=refuse)


def test_json_output_has_no_bare_nan() -> None:
    doc = {"a": math.nan, "b": [1.0, math.inf, np.float32("nan")], "c": {"d": -math.inf, "e": np.float64(0.5)},
           "f": (np.int64(3), "x")}
    assert finite_or_none(doc) == {"a": None, "b": [1.0, None, None], "c": {"d": None, "e": 0.5}, "f": [3, "x"]}
    assert strict(dumps(doc)) == finite_or_none(doc)
    assert json.dumps(doc, default=str) != dumps(doc)  # plain json writes NaN: the helper matters


def test_integer_weights_follow_the_coordinators_policy() -> None:
    assert integer_weights({"a": 100, "b": 50, "c": 1}, 16) == {"a": 16, "b": 8, "c": 1}


def test_one_round_is_the_weighted_mean_of_the_sites_updates(model_dir: Path) -> None:
    spec = LoRASpec(model=str(model_dir), num_labels=3, r_max=4, max_length=16, seed=3)
    parts = {"x": make_tiny_dataset(n=24, seed=1), "y": make_tiny_dataset(n=12, seed=2)}
    settings = SimulationSettings(rounds=1, local_epochs=1.0, learning_rate=1e-2, batch_size=8, bits=None,
                                  server_learning_rate=2.0, seed=5)
    model = build_model(spec)
    start = get_adapter_state(model)
    res = simulate_federation(model, parts, settings)

    # The same two local trainings by hand, averaged with the integer weights 16 : 8.
    deltas, layout = {}, None
    for site, data in parts.items():
        load_adapter_state(model, start)
        seed = round_seed(5, 1, site)
        r = train_local(model, data, TrainOptions(epochs=1.0, lr=1e-2, batch_size=8, phase="B", seed=seed),
                        run=RunOptions(loss_samples=0), cursor=DataCursor(seed=seed, n=len(data)))
        deltas[site], layout = r.delta.astype(np.float64), r.layout
    assert res.weights == {"x": 16, "y": 8}
    mean = ((16 * deltas["x"] + 8 * deltas["y"]) / 24).astype(np.float32)
    expected = apply_mean_update(start, mean, layout, server_lr=2.0)
    assert set(res.state) == set(expected)
    for k in expected:
        np.testing.assert_allclose(res.state[k], expected[k], atol=1e-6)
    assert any(not np.allclose(res.state[k], start[k]) for k in start)
    assert res.rounds[0]["phase"] == "B" and res.rounds[0]["round"] == 1


def _metrics(auc: float, acc: float) -> dict[str, float]:
    return {"accuracy": acc, "macro_f1": acc, "roc_auc": auc, "roc_auc_classes": 3.0, "n": 10.0}


def _run(seed: int, alone: dict[str, float], fed: dict[str, float], pers: dict[str, float],
         fed_acc: float, central_acc: float) -> dict[str, Any]:
    names = sorted(alone)
    own = {s: _metrics(fed[s], 0.6) for s in names}
    return {
        "seed": seed, "sizes": {s: 10 for s in names}, "test_sizes": {s: 5 for s in names},
        "alone": {s: {"final": {"own": {s: _metrics(alone[s], 0.5)}, "global": _metrics(0.7, 0.4)},
                      "curve": [], "train_seconds": 1.0} for s in names},
        "federated": {"final": {"own": own, "global": _metrics(0.9, fed_acc)},
                      "curve": [{"epochs": 1.0, "global": _metrics(0.9, fed_acc), "own": own}], "train_seconds": 2.0},
        "personalized": {"final": {"own": {s: _metrics(pers[s], 0.7) for s in names},
                                   "global_by_site": {s: _metrics(0.8, 0.5) for s in names}}},
        "centralized": {"final": {"own": own, "global": _metrics(0.95, central_acc)},
                        "curve": [{"epochs": 1.0, "global": _metrics(0.95, central_acc), "own": own}],
                        "train_seconds": 3.0},
    }


def test_report_gains_counts_and_gaps_from_the_seeds() -> None:
    runs = [_run(1, {"a": 0.60, "b": 0.80}, {"a": 0.70, "b": 0.78}, {"a": 0.71, "b": math.nan}, 0.80, 0.85),
            _run(2, {"a": 0.62, "b": 0.80}, {"a": 0.66, "b": 0.76}, {"a": 0.69, "b": 0.77}, 0.82, 0.83)]
    r = summarize(runs, settings={"data": "x", "partition": "natural"}, wall_seconds=1.0)
    a, b = r["per_site"]["a"], r["per_site"]["b"]
    assert a["auc_gain_points"] == pytest.approx(100 * (0.68 - 0.61))
    assert b["auc_gain_points"] == pytest.approx(100 * (0.77 - 0.80))
    assert a["auc_gain_points_per_seed"] == pytest.approx([10.0, 4.0])
    assert r["mean_auc_gain_points"] == pytest.approx((7.0 - 3.0) / 2)
    assert r["mean_auc_gain_points_per_seed"] == pytest.approx([(10 - 2) / 2, (4 - 4) / 2])
    assert r["sites_better"] == 1 and r["sites"] == 2
    # An undefined AUC leaves that seed out of the mean, never turns it into NaN.
    assert b["personalized"]["own"]["roc_auc"] == pytest.approx(0.77)
    assert b["personalized_auc_gain_points"] == pytest.approx(0.0)
    assert r["personalized_sites_at_least_global"] == 2
    assert r["federated_vs_centralized_accuracy_gap_points"] == pytest.approx(100 * (0.84 - 0.81))
    assert r["federated_vs_centralized_accuracy_gap_points_per_seed"] == pytest.approx([5.0, 1.0])
    assert r["min_alone_below_federated_global_accuracy_points"] == pytest.approx(100 * (0.81 - 0.4))
    assert r["plateau"]["centralized"]["best_accuracy"] == pytest.approx(0.84)
    assert strict(dumps(r))["per_seed"][0]["personalized"]["final"]["own"]["b"]["roc_auc"] is None


def test_reports_of_separate_methods_combine_into_the_whole(tmp_path: Path) -> None:
    runs = [_run(1, {"a": 0.60, "b": 0.80}, {"a": 0.70, "b": 0.78}, {"a": 0.71, "b": 0.75}, 0.80, 0.85)]
    common = {k: runs[0][k] for k in ("seed", "sizes", "test_sizes")}
    fed = {**common, **{k: runs[0][k] for k in ("federated", "personalized")}}
    central = {**common, "centralized": runs[0]["centralized"]}
    alone_a = {**common, "alone": {"a": runs[0]["alone"]["a"]}}
    alone_b = {**common, "alone": {"b": runs[0]["alone"]["b"]}}
    reports = [{"per_seed": [r]} for r in (fed, central, alone_a, alone_b)]
    merged = combine_runs(reports)
    assert merged == runs
    with pytest.raises(ValueError, match="centralized appears in two reports"):
        combine_runs([{"per_seed": [central]}, {"per_seed": [central]}])
    with pytest.raises(ValueError, match="disagree on 'sizes'"):
        combine_runs([{"per_seed": [fed]}, {"per_seed": [{**central, "sizes": {"a": 1, "b": 2}}]}])
    settings = {"data": "x", "partition": "natural"}
    paths = []
    for i, rep in enumerate(reports):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(dumps(summarize(rep["per_seed"], settings=settings, wall_seconds=1.0)))
    out = tmp_path / "all.json"
    assert sites.main(["--combine", *map(str, paths), "--out", str(out)]) == 0
    combined = strict(out.read_text())
    whole = strict(dumps(summarize(runs, settings=settings, wall_seconds=4.0)))
    assert combined["mean_auc_gain_points"] == pytest.approx(whole["mean_auc_gain_points"])
    assert combined["per_site"] == whole["per_site"] and combined["wall_seconds"] == 4.0
    assert combined["federated_vs_centralized_at_equal_epochs"] == [
        {"epochs": 1.0, "federated_accuracy": 0.8, "centralized_accuracy": 0.85, "gap_points": pytest.approx(5.0)}]


def test_plot_title_names_the_methods_run_and_the_gain_only_when_the_sites_alone_ran() -> None:
    runs = [_run(1, {"a": 0.60, "b": 0.80}, {"a": 0.70, "b": 0.78}, {"a": 0.71, "b": 0.75}, 0.80, 0.85)]
    settings = {"data": "x", "partition": "natural"}
    whole = summarize(runs, settings=settings, wall_seconds=1.0)
    assert plot_title(whole) == ("x: each site alone, federated, personalized heads, centralized "
                                 "(1 seed; mean AUC gain of joining +4.0 points)")
    fed_only = [{k: v for k, v in runs[0].items() if k not in ("alone", "centralized")}]
    assert plot_title(summarize(fed_only, settings=settings, wall_seconds=1.0)) == (
        "x: federated, personalized heads (1 seed)")


@pytest.mark.slow  # trains the tiny model for every method and two seeds
def test_bench_sites_runs_end_to_end_on_a_slice(model_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sites.json"
    rc = sites.main(["--data", "hospital", "--model", str(model_dir), "--max-train-per-site", "12",
                     "--max-test", "60", "--epochs", "1", "--local-epochs", "0.5", "--seeds", "1,2",
                     "--eval-every", "1", "--head-epochs", "3", "--out", str(out)])
    assert rc == 0
    report = strict(capsys.readouterr().out)
    assert report == strict(out.read_text())
    assert Path(report["plot"]).stat().st_size > 0
    assert report["seeds"] == [1, 2] and report["sites"] == 5
    for row in report["per_site"].values():
        assert {"alone", "federated", "personalized", "centralized"} <= set(row)
        assert len(row["alone"]["own"]["roc_auc_per_seed"]) == 2
    gains = [row["auc_gain_points"] for row in report["per_site"].values()]
    assert report["mean_auc_gain_points"] == pytest.approx(sum(gains) / len(gains))
    assert report["sites_better"] == sum(g >= 0 for g in gains)
    run = report["per_seed"][0]
    assert [p["round"] for p in run["federated"]["curve"]] == [1, 2]
    assert set(run["federated"]["weights"]) == set(report["per_site"])


def test_head_choice_resolves_like_the_federation_config(model_dir: Path) -> None:
    base = ["--data", "hospital", "--model", str(model_dir)]
    assert sites.parse_args(base).head == "pooler"  # auto without DP-SGD
    assert sites.parse_args([*base, "--head", "mean_linear"]).head == "mean_linear"
    with pytest.raises(SystemExit):
        sites.parse_args([*base, "--head", "cls"])
    with pytest.raises(ConfigError, match="choose from auto, pooler, mean_linear"):
        sites.resolved_head("cls")


@pytest.mark.slow  # trains the tiny model for every method
def test_bench_sites_trains_every_method_with_the_chosen_head(model_dir: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    built: list[Any] = []
    real_build = sites.build_model

    def recording_build(spec: LoRASpec) -> Any:
        model = real_build(spec)
        built.append(model)
        return model

    monkeypatch.setattr(sites, "build_model", recording_build)
    rc = sites.main(["--data", "hospital", "--model", str(model_dir), "--max-train-per-site", "12",
                     "--max-test", "60", "--epochs", "1", "--local-epochs", "0.5", "--seeds", "3",
                     "--head", "mean_linear", "--head-epochs", "2", "--probe-rounds", "1",
                     "--out", str(tmp_path / "s.json")])
    assert rc == 0
    report = strict(capsys.readouterr().out)
    assert report["settings"]["head"] == "mean_linear"
    for method in ("federated", "centralized"):  # every method starts with the linear probe
        first = report["per_seed"][0][method]["curve"][0]
        assert first["probe"] and first["round"] == 0
    assert len(built) == 1 + 1 + 5  # federated, centralized, five sites alone
    for model in built:
        assert model.spec.head == "mean_linear"
        assert type(model.peft.base_model.model).__name__ == "MeanPoolClassifier"
    for row in report["per_site"].values():
        assert row["federated"]["own"]["roc_auc"] is not None
        assert row["personalized"]["own"]["roc_auc"] is not None


def test_probe_first_averages_the_sites_head_fits_by_records(model_dir: Path) -> None:
    from ffa_lora.lora.personalize import finetune_head, head_features, head_state

    spec = LoRASpec(model=str(model_dir), num_labels=3, r_max=4, max_length=16, seed=3, head="mean_linear")
    parts = {"x": make_tiny_dataset(n=24, seed=1), "y": make_tiny_dataset(n=12, seed=2)}
    probe = sites.ProbeFirst(rounds=1, epochs=2, lr=5e-2, batch_size=8)
    model = build_model(spec)
    start = get_adapter_state(model)
    # the same two fits by hand from the zero head, averaged 24 : 12
    fits = {s: finetune_head(model, parts[s], epochs=2, lr=5e-2, batch_size=8, seed=7 * 1000 + i,
                             features=head_features(model, parts[s])).head for i, s in enumerate(["x", "y"])}
    info = sites.probe_first(model, parts, probe, seed=7)
    head = head_state(model)
    assert info["rounds"] == 1 and set(head) == set(fits["x"])
    for k in head:
        np.testing.assert_allclose(head[k], (24 * fits["x"][k] + 12 * fits["y"][k]) / 36, atol=1e-6)
        assert not np.allclose(head[k], start[k])  # the zero-initialised head moved
    after = get_adapter_state(model)
    assert all(np.array_equal(after[k], start[k]) for k in start if k not in head)  # adapter untouched
    with pytest.raises(SystemExit):
        sites.parse_args(["--data", "hospital", "--model", str(model_dir), "--probe-epochs", "0"])

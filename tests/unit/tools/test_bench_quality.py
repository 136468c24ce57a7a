"""``ffa-lora bench quality --seeds``: means, spreads and the per-seed runs."""

from __future__ import annotations

import pytest

from ffa_lora_tools.bench.quality import main, summarize


def _run(seed: int, fed: float, cen: float) -> dict:
    return {"federated_accuracy": fed, "centralized_accuracy": cen, "accuracy_gap_points": 100 * (cen - fed),
            "rounds": 6, "clients": 3, "bytes_uploaded": 100, "key_bits": 2048, "partition": "iid", "seed": seed}


def _fake_sides(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Replace the federation and the baseline by stand-ins that record how they were asked to run."""
    import ffa_lora_tools.bench.quality as q

    seen: dict[str, object] = {}

    def fake_demo(settings: object) -> dict:
        seen["settings"] = settings
        return {"final_accuracy": 0.85, "final_macro_f1": 0.7, "rounds": 2, "bytes_uploaded": 1,
                "wall_seconds": 1.0, "clients": 3, "per_round": []}

    def fake_baseline(**kw: object) -> dict:
        seen["baseline"] = kw
        return {"final_accuracy": 0.86, "final_macro_f1": 0.8, "train_seconds": 1.0}

    monkeypatch.setattr(q, "run_demo", fake_demo)
    monkeypatch.setattr(q, "run_baseline", fake_baseline)
    return seen


def test_summary_reports_means_spreads_and_each_seed() -> None:
    runs = [_run(1, 0.84, 0.86), _run(2, 0.85, 0.85), _run(3, 0.86, 0.87)]
    out = summarize(runs, [1, 2, 3])
    assert out["federated_accuracy"] == pytest.approx(0.85)
    assert out["centralized_accuracy"] == pytest.approx(0.86)
    assert out["accuracy_gap_points"] == pytest.approx(1.0)
    assert out["federated_accuracy_std"] == pytest.approx(0.01)
    assert out["accuracy_gap_points_std"] == pytest.approx(1.0)
    assert out["seeds"] == [1, 2, 3] and out["per_seed"] == runs
    assert out["rounds"] == 6 and out["clients"] == 3 and "seed" not in out
    # values every seed shares are reported as they are, not averaged into floats (or dropped)
    assert isinstance(out["key_bits"], int) and out["key_bits"] == 2048 and out["partition"] == "iid"


@pytest.mark.parametrize("seeds", ["1,x", "1,1", ""])
def test_bad_seed_lists_are_refused(seeds: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--seeds", seeds])
    assert exc.value.code == 2
    assert "--seeds" in capsys.readouterr().err


def test_both_sides_train_on_the_same_examples(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The federation holds out no validation share and keeps the raw text (unless --deid), so
    its clients train on exactly the pooled split the baseline trains on."""
    seen = _fake_sides(monkeypatch)
    assert main(["--rounds", "2", "--local-epochs", "0.5"]) == 0
    s = seen["settings"]
    assert s.validation_fraction == 0.0 and s.deid is False  # type: ignore[attr-defined]
    assert seen["baseline"]["epochs"] == 1.0  # type: ignore[index]
    assert '"deid": false' in capsys.readouterr().out
    assert main(["--rounds", "2", "--deid"]) == 0
    assert seen["settings"].deid is True  # type: ignore[attr-defined]


def test_demo_refuses_a_validation_share_outside_its_range(capsys: pytest.CaptureFixture[str]) -> None:
    from ffa_lora_tools.demo import parse_args

    assert parse_args(["--validation-fraction", "0"]).validation_fraction == 0.0
    with pytest.raises(SystemExit) as exc:
        parse_args(["--validation-fraction", "0.6"])
    assert exc.value.code == 2
    assert "--validation-fraction must be in [0, 0.5)" in capsys.readouterr().err


def test_partition_and_sites_reach_both_sides(monkeypatch: pytest.MonkeyPatch) -> None:
    """The accuracy target is stated for 5 IID sites: the bench runs the federation so, and the
    baseline draws its (per-site capped) pool from the same partition."""
    seen = _fake_sides(monkeypatch)
    assert main(["--rounds", "2", "--partition", "iid", "--sites", "5"]) == 0
    s = seen["settings"]
    assert (s.partition, s.sites) == ("iid", 5)  # type: ignore[attr-defined]
    kw = seen["baseline"]
    assert (kw["partition"], kw["sites"]) == ("iid", 5)  # type: ignore[index]


@pytest.mark.parametrize(("args", "strategy", "lr"), [
    ([], "alternating", 2e-3),  # the demo's method: each factor trains every other round
    (["--strategy", "ffa"], "ffa", 5e-3),  # FFA-LoRA, at the larger rate a frozen A needs
    (["--strategy", "fedavg"], "fedavg", 1e-3),  # classic FedAvg-LoRA at the baseline's rate
    (["--strategy", "fedavg", "--lr", "2e-3"], "fedavg", 2e-3),
])
def test_strategy_and_its_learning_rate_reach_the_federation(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        args: list[str], strategy: str, lr: float) -> None:
    seen = _fake_sides(monkeypatch)
    assert main(["--rounds", "2", *args]) == 0
    s = seen["settings"]
    assert (s.strategy, s.learning_rate) == (strategy, lr)  # type: ignore[attr-defined]
    assert seen["baseline"]["strategy"] == "fedavg" and seen["baseline"]["lr"] == 1e-3  # type: ignore[index]
    out = capsys.readouterr().out
    assert f'"strategy": "{strategy}"' in out and f'"learning_rate": {lr}' in out


def test_an_unknown_strategy_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--strategy", "lora"])
    assert exc.value.code == 2
    assert "--strategy" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--sites", "5"], "--sites needs --partition iid or dirichlet"),
    (["--partition", "iid", "--sites", "0"], "--sites must be at least 1"),
])
def test_a_site_count_the_partition_cannot_make_is_refused(
        args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from ffa_lora_tools.demo import parse_args

    for parse in (parse_args, main):
        with pytest.raises(SystemExit) as exc:
            parse(args)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_iid_sites_split_the_pool_the_baseline_trains_on() -> None:
    """Five IID sites cover the same training examples as the natural three, disjointly, and
    score on the same test split."""
    from ffa_lora.data.builtin import load_builtin

    natural = load_builtin("bank", seed=1)
    iid = load_builtin("bank", seed=1, method="iid", n_sites=5)
    assert len(iid.train_parts) == 5
    sizes = [len(d) for d in iid.train_parts.values()]
    assert max(sizes) - min(sizes) <= 1
    pooled = sorted(t for d in iid.train_parts.values() for t in d.texts)
    assert pooled == sorted(natural.train.texts)
    assert iid.test.texts == natural.test.texts


@pytest.mark.parametrize("strategy", ["ffa", "alternating", "fedavg"])
def test_demo_settings_take_the_strategys_rate_unless_given(strategy: str) -> None:
    from ffa_lora.errors import ConfigError
    from ffa_lora.lora.spec import STRATEGIES
    from ffa_lora_tools.demo import STRATEGY_LR, DemoSettings, parse_args

    assert set(STRATEGY_LR) == set(STRATEGIES)  # a rate for every strategy, none for an unknown one
    own = STRATEGY_LR[strategy]
    other = own * 3
    assert DemoSettings(strategy=strategy).learning_rate == own
    assert DemoSettings(strategy=strategy, learning_rate=other).learning_rate == other
    assert parse_args(["--strategy", strategy]).learning_rate == own
    assert parse_args(["--strategy", strategy, "--lr", str(other)]).learning_rate == other
    assert DemoSettings().learning_rate == STRATEGY_LR[DemoSettings().strategy]
    with pytest.raises(ConfigError, match="unknown training strategy 'lora'"):
        DemoSettings(strategy="lora")

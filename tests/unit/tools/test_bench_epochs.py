"""``ffa-lora bench epochs`` on a tiny model and a few pooled demo tweets: both methods'
curves, their best points, a plot, and the summary.json each baseline run leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ffa_lora_tools.bench.epochs import main
from ffa_lora_tools.harness.tiny_model import tiny_bert


@pytest.mark.slow  # trains two models over several epochs
def test_curves_for_both_methods_and_a_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_bert(tmp_path / "tiny-bert")
    out_dir = tmp_path / "runs"
    assert main(["--model", str(model), "--epochs", "1", "--eval-every", "0.5", "--seeds", "3", "--jobs", "2",
                 "--max-train-per-site", "16", "--max-test", "24", "--out-dir", str(out_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["strategy"], r["seed"]) for r in out["runs"]] == [("ffa", 3), ("fedavg", 3)]
    for r in out["runs"]:
        assert [p["epochs"] for p in r["curve"]] == [0.5, 1.0]
        assert r["best_accuracy"] == max(p["accuracy"] for p in r["curve"])
        saved = json.loads((out_dir / f"epochs-{r['strategy']}-s3" / "summary.json").read_text())
        assert saved["curve"] == r["curve"] and saved["final_accuracy"] == r["curve"][-1]["accuracy"]
    assert out["runs"][0]["lr"] == 5e-3 and out["runs"][1]["lr"] == 1e-3
    png = Path(out["plot"])
    assert png == out_dir / "epochs.png" and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(("args", "message"), [
    (["--epochs", "1", "--eval-every", "2"], "--eval-every must be in (0, --epochs=1]"),
    (["--seeds", "x"], "--seeds: give integers"),
    (["--seeds", "1,1"], "no seed twice"),
])
def test_bad_arguments_are_refused(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_baseline_refuses_an_evaluation_interval_longer_than_its_training(
        capsys: pytest.CaptureFixture[str]) -> None:
    from ffa_lora_tools.baseline import main as baseline_main

    with pytest.raises(SystemExit) as exc:
        baseline_main(["--epochs", "3", "--eval-every", "0"])
    assert exc.value.code == 2
    assert "--eval-every must be in (0, --epochs=3]" in capsys.readouterr().err

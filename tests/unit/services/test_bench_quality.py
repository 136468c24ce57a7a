"""``ffa-lora bench quality --seeds``: means, spreads and the per-seed runs."""

from __future__ import annotations

import pytest

from services.bench.quality import main, summarize


def _run(seed: int, fed: float, cen: float) -> dict:
    return {"federated_accuracy": fed, "centralized_accuracy": cen, "accuracy_gap_points": 100 * (cen - fed),
            "rounds": 6, "clients": 3, "bytes_uploaded": 100, "seed": seed}


def test_summary_reports_means_spreads_and_each_seed() -> None:
    runs = [_run(1, 0.84, 0.86), _run(2, 0.85, 0.85), _run(3, 0.86, 0.87)]
    out = summarize(runs, [1, 2, 3])
    assert out["federated_accuracy"] == pytest.approx(0.85)
    assert out["centralized_accuracy"] == pytest.approx(0.86)
    assert out["accuracy_gap_points"] == pytest.approx(1.0)
    assert out["federated_accuracy_std"] == pytest.approx(0.01)
    assert out["accuracy_gap_points_std"] == pytest.approx(1.0)
    assert out["seeds"] == [1, 2, 3] and out["per_seed"] == runs
    assert out["rounds"] == 6 and "seed" not in out


@pytest.mark.parametrize("seeds", ["1,x", "1,1", ""])
def test_bad_seed_lists_are_refused(seeds: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--seeds", seeds])
    assert exc.value.code == 2
    assert "--seeds" in capsys.readouterr().err

"""`ffa-lora bench reliability` and `ffa-lora bench load` print the JSON the README quotes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)


@pytest.mark.slow
@pytest.mark.e2e
def test_reliability_bench_reports_fuzz_and_a_scenario(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from ffa_lora_tools.bench.reliability import main

    rc = main(["--only", "fuzz,garbage_ciphertext", "--fuzz-examples", "20", "--work-dir", str(tmp_path)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    for key in ("faults_injected", "rounds_completed", "updates_lost", "updates_double_counted", "crashes",
                "fuzz_cases_run"):
        assert key in out
    assert out["updates_lost"] == out["updates_double_counted"] == out["crashes"] == 0
    assert out["fuzz_cases_run"] >= 40 and out["faults_injected"]["garbage_ciphertext"] == 1
    assert out["rounds_completed"] == 1 and out["passed"]


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("session", [["--session", "persistent"], ["--session", "check_in", "--check-in-s", "1"]],
                         ids=["persistent", "check_in"])
def test_load_bench_small(capsys: pytest.CaptureFixture[str], tmp_path: Path, session: list[str]) -> None:
    from ffa_lora_tools.bench.load import main

    rc = main(["--clients", "40", "--stages", "20,40", "--edges", "2", "--key-bits", "512", "--rounds", "2",
               "--generators", "1", "--work-dir", str(tmp_path), *session])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    assert out["all_rounds_completed"] and out["rejected_updates"] == 0
    assert [s["clients"] for s in out["stages"]] == [20, 40]
    for s in out["stages"]:
        assert s["rounds_completed"] == 2 and s["clients_per_round"] == [s["clients"]] * 2
        assert s["updates_accepted"] == 2 * s["clients"]
        assert 0 < s["edge_metrics_last_scrape"]["accepted"] <= s["updates_accepted"]
        assert s["edge_metrics_last_scrape"]["rejected"] == 0
        assert s["round_seconds"]["n"] == 2 and s["update_latency_seconds"]["n"] == 2 * s["clients"]
        assert len(s["edge_rss_mb_peak"]) == 2 and s["crashes"] == 0
    assert "ratio_of_max_peak" in out["edge_memory"]
    assert out["session"] == session[1]

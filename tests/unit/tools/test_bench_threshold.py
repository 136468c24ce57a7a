"""Smoke test of the threshold benchmark command (tiny, TEST-ONLY 512-bit keys)."""

from __future__ import annotations

import json

from ffa_lora_tools.bench import threshold


def test_bench_prints_one_json_object(capsys) -> None:
    rc = threshold.main(["--key-bits", "512", "--params", "300", "--thresholds", "2",
                         "--workers", "0"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["crt_exact"] is True and out["crt_values_per_s_per_worker"] > 0
    (row,) = out["threshold"]
    assert row["t"] == 2 and row["holders"] == 3
    assert row["exact"] is True and row["proofs_valid"] is True
    for key in ("ceremony_s", "holder_share_s", "holder_proof_s", "verify_all_proofs_s",
                "combine_unpack_s", "slowdown_vs_crt_per_holder"):
        assert row[key] >= 0, key

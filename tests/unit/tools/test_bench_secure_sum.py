"""Smoke test of the secure-sum benchmark command (tiny, TEST-ONLY 512-bit key)."""

from __future__ import annotations

import json

from ffa_lora_tools.bench import secure_sum

FIELDS = ["bytes_per_value", "naive_bytes_per_value", "encrypt_values_per_s_fresh",
          "encrypt_values_per_s_pooled_online", "naive_encrypt_values_per_s", "add_values_per_s",
          "decrypt_values_per_s", "naive_decrypt_values_per_s", "speedup_encrypt_fresh",
          "speedup_decrypt", "max_abs_error", "exact_integer_sum"]


def test_bench_prints_one_json_object(capsys) -> None:
    rc = secure_sum.main(["--params", "400", "--clients", "3", "--key-bits", "512", "--json",
                          "--naive-sample", "3", "--workers", "0", "--repeats", "1"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    for f in FIELDS:
        assert f in out, f
    assert out["exact_integer_sum"] is True
    assert out["naive"]["extrapolated"] is True
    assert out["max_abs_error"] <= out["quantization_step"]
    # threshold decryption, as the services run it, next to the whole-key figures
    th = out["threshold"]
    assert th["t"] == 2 and th["holders"] == 3 and th["exact"] is True and th["proofs_valid"] is True
    assert out["threshold_decrypt_values_per_s"] == th["decrypt_values_per_s"] > 0
    assert th["vs_crt_decrypt"] > 1  # a share costs more than a CRT decryption

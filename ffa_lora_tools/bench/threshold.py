"""Threshold decryption cost against whole-key CRT decryption, in one run; prints JSON.

For each threshold t (default 2 and 3, with t + 1 holders) it runs the key ceremony at
``--key-bits``, encrypts one packed vector of ``--params`` values, and times: each holder's
decryption share, its proof, the combiner's proof check, the combination plus unpacking,
and — on a whole key of the same size — CRT decryption plus unpacking. Every decryption is
checked against the exact integer sum. Rates are values per second per worker process
(``--workers`` processes each; 0 = in this process, the cleanest per-core figure).

    ffa-lora bench threshold --key-bits 2048 --params 20000 --workers 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial
from typing import Any

import numpy as np

from ffa_lora.crypto.keys import generate_keypair
from ffa_lora.crypto.packing import PackingLayout
from ffa_lora.crypto.paillier import Decryptor, Encryptor
from ffa_lora.crypto.threshold import Combiner, ShareDecryptor, deal
from ffa_lora.crypto.vector import RunningSum
from ffa_lora_tools.jsonsafe import dumps

__all__ = ["main", "measure_round", "run"]

_CTX = b"bench|round=1|phase=B"


def _log(msg: str) -> None:
    print(f"[threshold] {msg}", file=sys.stderr, flush=True)


def _timed(fn: Any, repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _sum_vector(pub: Any, layout: PackingLayout, params: int, clients: int,
                workers: int) -> tuple[Any, np.ndarray]:
    rng = np.random.default_rng(1)
    codes = [rng.integers(0, layout.levels + 1, params) for _ in range(clients)]
    acc = RunningSum(pub, layout, params)
    with Encryptor(pub, layout, workers=workers) as enc:
        for c in codes:
            acc.add_vector(enc.encrypt_codes(c))
    return acc.result(), np.sum(np.stack(codes).astype(np.int64), axis=0)


def _holder(ks: Any, vec: Any, workers: int | None, repeats: int) -> tuple[float, float, Any]:
    """(share seconds, proof seconds, proven share) for one holder."""
    with ShareDecryptor(ks, workers=workers) as sd:
        sd.warm_up()
        plain, bare = _timed(partial(sd.decryption_share, vec, context=_CTX, prove=False),
                             repeats)
        proof_s, share = _timed(partial(sd.add_proof, vec, bare), repeats)
    return plain, proof_s, share


def _combiner(cer: Any, layout: PackingLayout, vec: Any, shares: list[Any], workers: int | None,
              repeats: int) -> tuple[float, list[bool], float, np.ndarray]:
    """(verify seconds, proof results, combine + unpack seconds, sums)."""
    with Combiner(cer.params, layout, workers=workers) as comb:
        comb.worker_pool.warm_up()
        verify_s, ok = _timed(lambda: [comb.proof_holds(vec, s, context=_CTX) for s in shares],
                              repeats)
        combine_s, sums = _timed(partial(comb.decrypt_code_sums, vec, shares, context=_CTX,
                                         verify=False), repeats)
    return verify_s, ok, combine_s, sums


def measure_round(*, key_bits: int, layout: PackingLayout, params: int, clients: int, t: int,
                  workers: int | None, repeats: int) -> dict[str, Any]:
    """One round's threshold decryption as the services run it, on a sum of ``clients``
    updates of ``params`` values: t-of-(t+1) key; a holder's share with its proof (holders run
    in parallel, each on its own machine), the coordinator's check of the t proofs, the
    combination and unpacking. Rates are wall-clock values/s with ``workers`` processes per
    party (None: all cores)."""
    holders = ["coordinator"] + [f"holder-{i}" for i in range(1, t + 1)]
    cer = deal(holders=holders, threshold=t, bits=key_bits, test_only=key_bits < 2048)
    vec, expected = _sum_vector(cer.public_key, layout, params, clients, workers or 0)
    timed = [_holder(ks, vec, workers, repeats) for ks in cer.shares[:t]]
    share_s = max(s + p for s, p, _ in timed)
    verify_s, ok, combine_s, sums = _combiner(cer, layout, vec, [x[2] for x in timed], workers, repeats)
    wall = share_s + verify_s + combine_s
    return {"t": t, "holders": len(holders), "ceremony_s": round(cer.seconds, 2),
            "holder_share_with_proof_s": round(share_s, 4),
            "holder_values_per_s": round(params / share_s),
            "verify_proofs_s": round(verify_s, 4), "combine_unpack_s": round(combine_s, 4),
            "decrypt_wall_s": round(wall, 4), "decrypt_values_per_s": round(params / wall),
            "proofs_valid": all(ok), "exact": bool(np.array_equal(sums, expected))}


def run(*, key_bits: int, params: int, thresholds: list[int], workers: int, clients: int,
        repeats: int) -> dict[str, Any]:
    """Run the comparison; returns the JSON-ready result."""
    test_only = key_bits < 2048
    per = max(1, workers)
    layout = PackingLayout.derive(key_bits=key_bits, bits=8)
    out: dict[str, Any] = {"key_bits": key_bits, "params": params, "workers": workers,
                           "ciphertexts": layout.num_ciphertexts(params),
                           "load_average_1m": os.getloadavg()[0], "threshold": []}
    _log(f"whole key {key_bits} bits, CRT baseline")
    pub, priv = generate_keypair(bits=key_bits, test_only=test_only)
    vec, expected = _sum_vector(pub, layout, params, clients, workers)
    with Decryptor(priv, layout, workers=workers) as dec:
        dec.warm_up()
        secs, sums = _timed(partial(dec.decrypt_code_sums, vec), repeats)
    out["crt_decrypt_unpack_s"] = round(secs, 4)
    out["crt_values_per_s_per_worker"] = round(params / secs / per)
    out["crt_exact"] = bool(np.array_equal(sums, expected))
    for t in thresholds:
        holders = ["coordinator"] + [f"holder-{i}" for i in range(1, t + 1)]
        _log(f"t={t} of {len(holders)}: ceremony")
        cer = deal(holders=holders, threshold=t, bits=key_bits, test_only=test_only)
        vec, expected = _sum_vector(cer.public_key, layout, params, clients, workers)
        row: dict[str, Any] = {"t": t, "holders": len(holders),
                               "ceremony_s": round(cer.seconds, 2)}
        timed = [_holder(ks, vec, workers, repeats) for ks in cer.shares[:t]]
        share_s, prove_s = [x[0] for x in timed], [x[1] for x in timed]
        shares = [x[2] for x in timed]
        verify_s, ok, combine_s, sums = _combiner(cer, layout, vec, shares, workers, repeats)
        share_mean = sum(share_s) / len(share_s)
        row.update({
            "holder_share_s": round(share_mean, 4),
            "holder_values_per_s_per_worker": round(params / share_mean / per),
            "holder_proof_s": round(sum(prove_s) / len(prove_s), 4),
            "proof_cost_vs_share": round(sum(prove_s) / sum(share_s), 4),
            "verify_all_proofs_s": round(verify_s, 4),
            "combine_unpack_s": round(combine_s, 4),
            "combine_values_per_s_per_worker": round(params / combine_s / per),
            # holders work in parallel on their own machines: wall time of one decryption
            "wall_parallel_holders_s": round(max(s + p for s, p in zip(share_s, prove_s))
                                             + verify_s + combine_s, 4),
            "slowdown_vs_crt_per_holder": round(share_mean / out["crt_decrypt_unpack_s"], 2),
            "proofs_valid": all(ok), "exact": bool(np.array_equal(sums, expected)),
        })
        out["threshold"].append(row)
        _log(json.dumps(row))
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: prints one JSON object."""
    ap = argparse.ArgumentParser(prog="ffa-lora bench threshold", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--params", type=int, default=20_000, help="values in the vector")
    ap.add_argument("--thresholds", default="2,3", help="comma-separated t values")
    ap.add_argument("--workers", type=int, default=0, help="processes per party (0: inline)")
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args(argv)
    res = run(key_bits=a.key_bits, params=a.params, workers=a.workers, clients=a.clients,
              thresholds=[int(x) for x in a.thresholds.split(",")], repeats=a.repeats)
    print(dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

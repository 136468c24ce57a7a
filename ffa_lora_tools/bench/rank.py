"""``ffa-lora bench rank``: the bank demo twice — dynamic rank (r_max 16) and fixed rank 16 —
with the same data, split, rounds, seed and key size, side by side as one JSON object.

Dynamic rank gives every real site rank 8 at first, promotes the site with the best gradient
SNR (whose validation loss still improves) to rank 16 within the per-round budget and the
cumulative cap of 65% of fixed rank 16, and reduces everyone to one lower rank by truncated
SVD when the loss plateaus (see ``ffa_lora.rank.dynamic``). Both runs use the same number of
rounds (no early stop) and FFA-LoRA, so ``savings_fraction = 1 − dynamic / fixed`` values
uploaded compares like with like. The target: at least 35% fewer values, accuracy at most 1
point lower.

Progress (the demo's round table) goes to stderr; the JSON result to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ffa_lora_tools.demo import STRATEGY_LR, DemoSettings, run_demo
from ffa_lora_tools.jsonsafe import dumps

R_MAX = 16
RANK_STRATEGY = "ffa"  # B only in every round: each rank's upload cost is the same every round


def _side(summary: dict[str, Any]) -> dict[str, Any]:
    rounds = summary["per_round"]
    return {
        "params_uploaded": int(summary["values_uploaded"]),
        "accuracy": summary["final_accuracy"],
        "macro_f1": summary["final_macro_f1"],
        "roc_auc": summary.get("final_roc_auc"),
        "bytes_uploaded": int(summary["bytes_uploaded"]),
        "values_per_round": [int(r.get("values_uploaded", 0)) for r in rounds],
        "ranks_per_round": [r.get("ranks", {}) for r in rounds],
        "r_max_per_round": [r.get("r_max") for r in rounds],
        "accuracy_per_round": [r.get("accuracy") for r in rounds],
        "roc_auc_per_round": [r.get("roc_auc") for r in rounds],
        "loss_per_round": [r.get("loss") for r in rounds],
        "rank_reductions": [{"round": r["round"], **r["rank_reduction"]} for r in rounds if r.get("rank_reduction")],
        "adapter_values": summary.get("adapter_values"),
        "adapter_bytes": summary.get("adapter_bytes"),
        "rounds": summary["rounds"],
        "wall_seconds": summary["wall_seconds"],
    }


def compare(dynamic: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """The bench's JSON from the two demo summaries."""
    dyn, fix = _side(dynamic), _side(fixed)
    out: dict[str, Any] = {
        "dynamic_params_uploaded": dyn["params_uploaded"],
        "fixed_params_uploaded": fix["params_uploaded"],
        "savings_fraction": 1 - dyn["params_uploaded"] / fix["params_uploaded"] if fix["params_uploaded"] else None,
        "dynamic_accuracy": dyn["accuracy"],
        "fixed_accuracy": fix["accuracy"],
        "accuracy_drop_points": (100 * (fix["accuracy"] - dyn["accuracy"])
                                 if dyn["accuracy"] is not None and fix["accuracy"] is not None else None),
    }
    for name, side in (("dynamic", dyn), ("fixed", fix)):
        out.update({f"{name}_{k}": v for k, v in side.items() if k not in ("params_uploaded", "accuracy")})
    return out


def main(argv: list[str] | None = None) -> int:
    d = DemoSettings()
    p = argparse.ArgumentParser(prog="ffa-lora bench rank", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--local-epochs", type=float, default=d.local_epochs)
    p.add_argument("--lr", type=float, default=STRATEGY_LR[RANK_STRATEGY])
    p.add_argument("--key-bits", type=int, default=2048, choices=[512, 1024, 2048, 3072],
                   help="Paillier key size (512/1024 are test-only; fine for quick runs)")
    p.add_argument("--max-train-per-site", type=int, default=None, help="cap each site's training data")
    p.add_argument("--max-test", type=int, default=None, help="cap the held-out test set")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--rank-options", type=json.loads, default={},
                   help='dynamic scheduler settings as JSON, e.g. \'{"reduced_rank": 8}\' (DynamicRankConfig fields)')
    p.add_argument("--out-dir", type=Path, default=Path("runs"))
    p.add_argument("--json", action="store_true", help="(always JSON; accepted for symmetry)")
    a = p.parse_args(argv)
    common: dict[str, Any] = {
        "rounds": a.rounds, "local_epochs": a.local_epochs, "strategy": RANK_STRATEGY, "learning_rate": a.lr,
        "key_bits": a.key_bits,
        "max_train_per_site": a.max_train_per_site, "max_test": a.max_test, "seed": a.seed,
        "out_dir": a.out_dir, "rank": R_MAX,
        "patience": a.rounds,  # same number of rounds for both: no early stop
    }
    print(f"dynamic rank (r_max {R_MAX}), {a.rounds} rounds", file=sys.stderr, flush=True)
    dynamic = run_demo(DemoSettings(name="rank-dynamic", rank_scheduler="dynamic",
                                    rank_options={"r_max": R_MAX, **a.rank_options}, **common))
    print(f"fixed rank {R_MAX}, {a.rounds} rounds", file=sys.stderr, flush=True)
    fixed = run_demo(DemoSettings(name="rank-fixed", rank_scheduler="fixed", **common))
    out = compare(dynamic, fixed) | {"key_bits": a.key_bits, "rounds_configured": a.rounds,
                                     "max_train_per_site": a.max_train_per_site, "max_test": a.max_test}
    print(dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``ffa-lora bench quality``: the demo federation and the centralized baseline on the same
split and the same number of epochs, side by side, as one JSON object.

Overhead: per round the clients train in parallel, so the federation's cost is compared with
the slowest client's training time. ``crypto_seconds`` sums, per round, the slowest client's
clip+quantize+pack+encrypt time and the coordinator's decryption; ``transport_seconds`` is the
rest of the round's wall time that is neither training, local validation nor the
coordinator's held-out evaluation (streaming, waiting, aggregation)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from services.baseline import run_baseline
from services.demo import DemoSettings, run_demo


def overhead(per_round: list[dict[str, Any]]) -> dict[str, float]:
    train = sum(r.get("max_client_train_seconds", 0.0) for r in per_round)
    crypto = sum(r.get("max_client_crypto_seconds", 0.0) + r.get("decrypt_seconds", 0.0) for r in per_round)
    return {"train_seconds": train, "crypto_seconds": crypto,
            "crypto_fraction_of_training": crypto / train if train else float("nan")}


def main(argv: list[str] | None = None) -> int:
    d = DemoSettings()
    p = argparse.ArgumentParser(prog="ffa-lora bench quality", description=__doc__)
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--local-epochs", type=float, default=d.local_epochs)
    p.add_argument("--lr", type=float, default=d.learning_rate)
    p.add_argument("--server-lr", type=float, default=d.server_learning_rate)
    p.add_argument("--lr-schedule", default=d.lr_schedule, choices=["constant", "cosine"],
                   help="client learning rate over the rounds (cosine: decays to 10%%)")
    p.add_argument("--baseline-lr", type=float, default=1e-3, help="centralized LoRA learning rate (DESIGN §7)")
    p.add_argument("--key-bits", type=int, default=2048)
    p.add_argument("--max-train-per-site", type=int, default=None)
    p.add_argument("--max-test", type=int, default=None)
    p.add_argument("--out-dir", type=Path, default=Path("runs"))
    p.add_argument("--json", action="store_true", help="(always JSON; accepted for symmetry)")
    a = p.parse_args(argv)
    settings = DemoSettings(name="quality-federated", rounds=a.rounds, local_epochs=a.local_epochs,
                            learning_rate=a.lr, server_learning_rate=a.server_lr, lr_schedule=a.lr_schedule,
                            key_bits=a.key_bits,
                            max_train_per_site=a.max_train_per_site, max_test=a.max_test, out_dir=a.out_dir,
                            patience=a.rounds)  # same epochs as the baseline: no early stop
    fed = run_demo(settings)
    epochs = fed["rounds"] * a.local_epochs
    print(f"centralized baseline: LoRA, {epochs:g} epochs", file=sys.stderr, flush=True)
    base = run_baseline(epochs=epochs, lr=a.baseline_lr, strategy="fedavg", max_train_per_site=a.max_train_per_site,
                        max_test=a.max_test, out_dir=a.out_dir, name="quality-centralized")
    ov = overhead(fed["per_round"])
    out = {
        "federated_accuracy": fed["final_accuracy"],
        "centralized_accuracy": base["final_accuracy"],
        "federated_macro_f1": fed["final_macro_f1"],
        "centralized_macro_f1": base["final_macro_f1"],
        "accuracy_gap_points": 100 * (base["final_accuracy"] - fed["final_accuracy"]),
        "rounds": fed["rounds"],
        "epochs": epochs,
        "bytes_uploaded": fed["bytes_uploaded"],
        "crypto_seconds": ov["crypto_seconds"],
        "train_seconds": ov["train_seconds"],
        "crypto_fraction_of_training": ov["crypto_fraction_of_training"],
        "federated_wall_seconds": fed["wall_seconds"],
        "centralized_train_seconds": base["train_seconds"],
        "clients": fed["clients"],
        "key_bits": a.key_bits,
    }
    print(json.dumps(out, indent=2))
    return 0

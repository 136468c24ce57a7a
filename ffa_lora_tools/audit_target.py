"""A target for ``ffa-lora audit``: one site's adapter, trained alone with canaries planted.

    python -m ffa_lora_tools.audit_target --data bank --site americanair --out runs/audit-bank
    ffa-lora audit runs/audit-bank/adapter --data bank --site americanair \\
        --canaries runs/audit-bank/canaries.json --json

Draws canaries (``--canaries`` planted ``--copies`` times each, ``--unseen`` never trained on),
plants them into the site's training records, trains the adapter the way a demo client trains
(``--strategy``, ``--rounds`` × ``--local-epochs``, the strategy's demo learning rate) on that
site alone, exports it, writes ``canaries.json`` next to it and prints a JSON summary with
the test accuracy and the audit command to run next.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ffa_lora.data.builtin import load_builtin
from ffa_lora.data.canaries import make_canaries, plant_canaries, save_canaries
from ffa_lora.errors import ConfigError
from ffa_lora.lora import LoRASpec, build_model, evaluate, export_peft_adapter
from ffa_lora.privacy.audit_model import round_trainer
from ffa_lora_tools.demo import STRATEGY_LR, DemoSettings
from services.common.config import ModelConfig


def build_parser() -> argparse.ArgumentParser:
    d = DemoSettings()
    p = argparse.ArgumentParser(prog="python -m ffa_lora_tools.audit_target", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="bank", help="built-in data set (bank, hospital)")
    p.add_argument("--site", required=True, help="the site whose records train the adapter")
    p.add_argument("--out", type=Path, required=True, help="run folder: adapter/, canaries.json, target.json")
    p.add_argument("--canaries", type=int, default=50, help="canaries planted (default 50)")
    p.add_argument("--unseen", type=int, default=200, help="canaries of the same form never trained on")
    p.add_argument("--copies", type=int, default=4, help="copies of each planted canary (default 4)")
    p.add_argument("--strategy", default=d.strategy, choices=sorted(STRATEGY_LR))
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--local-epochs", type=float, default=d.local_epochs)
    p.add_argument("--lr", type=float, default=None, help="default: the strategy's demo rate")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--seed", type=int, default=d.seed, help="federation seed (initial adapter, partition)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is fastest on a busy machine)")
    return p


def main(argv: list[str] | None = None) -> int:

    a = build_parser().parse_args(argv)
    if a.threads is not None:
        torch.set_num_threads(max(1, a.threads))
    demo = load_builtin(a.data, seed=a.seed)
    if a.site not in demo.train_parts:
        raise ConfigError(f"--site: {a.site!r} is not a site of {a.data}; choose one of {sorted(demo.train_parts)}")
    m = ModelConfig()
    spec = LoRASpec(model=m.name_or_path, num_labels=len(demo.label_names), target_modules=tuple(m.target_modules),
                    r_max=m.rank, alpha=m.alpha, dropout=m.dropout, max_length=m.max_length,
                    strategy=a.strategy, seed=a.seed)
    canaries = make_canaries(n_planted=a.canaries, n_unseen=a.unseen, label_names=demo.label_names,
                             copies=a.copies, seed=a.seed)
    site = demo.train_parts[a.site]
    train = plant_canaries(site, canaries, seed=a.seed)
    lr = a.lr if a.lr is not None else STRATEGY_LR[a.strategy]
    print(f"training on {len(site)} {a.site} records + {a.canaries}x{a.copies} canaries", file=sys.stderr)
    t0 = time.perf_counter()
    state = round_trainer(spec, rounds=a.rounds, local_epochs=a.local_epochs, lr=lr,
                          batch_size=a.batch_size, device=a.device)(train, a.seed)
    seconds = time.perf_counter() - t0
    export_peft_adapter(state, spec, a.out / "adapter")
    save_canaries(canaries, a.out / "canaries.json")
    metrics = evaluate(build_model(spec, device=a.device, state=state), demo.test)
    out: dict[str, Any] = {
        "data": a.data, "site": a.site, "site_records": len(site), "trained_records": len(train),
        "canaries": a.canaries, "unseen": a.unseen, "copies": a.copies, "strategy": a.strategy,
        "rounds": a.rounds, "local_epochs": a.local_epochs, "lr": lr, "batch_size": a.batch_size,
        "seed": a.seed, "train_seconds": seconds, "test_accuracy": metrics["accuracy"],
        "test_macro_f1": metrics["macro_f1"], "adapter": str(a.out / "adapter"),
        "audit_command": (f"ffa-lora audit {a.out / 'adapter'} --data {a.data} --site {a.site} "
                          f"--canaries {a.out / 'canaries.json'} --strategy {a.strategy} --rounds {a.rounds} "
                          f"--local-epochs {a.local_epochs:g} --lr {lr:g} --seed {a.seed} --json"),
    }
    (a.out / "target.json").write_text(json.dumps(out, indent=2), encoding="utf-8")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

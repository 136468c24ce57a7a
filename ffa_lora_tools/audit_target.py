"""A target for ``ffa-lora audit``: one site's adapter, trained alone with canaries planted.

    python -m ffa_lora_tools.audit_target --data bank --site americanair --out runs/audit-bank
    ffa-lora audit runs/audit-bank/adapter --data bank --site americanair \\
        --canaries runs/audit-bank/canaries.json --json

Draws canaries (``--canaries`` planted ``--copies`` times each, ``--unseen`` never trained on),
plants them into the site's training records, trains the adapter the way a demo client trains
(``--strategy``, ``--rounds`` × ``--local-epochs``, the strategy's demo learning rate) on that
site alone, exports it, writes ``canaries.json`` next to it and prints a JSON summary with
the test accuracy and the audit command to run next.

``--epsilon E`` trains it under sample-level DP-SGD instead, as a client does under
``privacy.dpsgd`` (the recipe of its defaults: ``mean_linear`` head, Poisson batches, SGD,
head-only rounds first, then ``--adapter-rounds`` rounds through the model) with the sweep's
DP adapter (rank 1 on the value projections, 1 local epoch) and ``--strategy ffa``; σ is
calibrated so that the site spends E at ``--delta`` over all its steps, and target.json
records σ, the steps and the ε the accountant reports.

    python -m ffa_lora_tools.audit_target --data bank --site americanair --epsilon 8 --out runs/audit-dp8
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ffa_lora.data.builtin import load_builtin
from ffa_lora.data.canaries import make_canaries, plant_canaries, save_canaries
from ffa_lora.errors import ConfigError
from ffa_lora.lora import LoRASpec, build_model, evaluate, export_peft_adapter
from ffa_lora.privacy.audit_model import DPTrainResult, round_trainer
from ffa_lora_tools.audit_cli import ADAPTER_ROUNDS_HELP, dp_args_problem, recipe_dp_training
from ffa_lora_tools.demo import STRATEGY_LR, DemoSettings
from ffa_lora_tools.privacy_cli import DP_ALPHA, DP_LOCAL_EPOCHS, DP_RANK, DP_TARGETS
from services.common.config import DPSGDConfig, ModelConfig


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
    p.add_argument("--strategy", default=None, choices=sorted(STRATEGY_LR),
                   help=f"default: ffa with --epsilon, else the demo's ({d.strategy})")
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--local-epochs", type=float, default=None,
                   help=f"epochs through the model per round (default {DP_LOCAL_EPOCHS:g} with "
                        f"--epsilon, else the demo's {d.local_epochs:g})")
    p.add_argument("--lr", type=float, default=None, help="default: the strategy's demo rate")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--seed", type=int, default=d.seed, help="federation seed (initial adapter, partition)")
    dp = p.add_argument_group("DP-SGD")
    dp.add_argument("--epsilon", type=float, default=None,
                    help="train under DP-SGD so that the site spends this epsilon (default: no DP)")
    dp.add_argument("--delta", type=float, default=1e-5, help="with --epsilon: delta (default 1e-5)")
    dp.add_argument("--adapter-rounds", type=int, default=DPSGDConfig().adapter_rounds,
                    help=ADAPTER_ROUNDS_HELP)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is fastest on a busy machine)")
    return p


def _check(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    problem = dp_args_problem(a.epsilon, delta=a.delta, adapter_rounds=a.adapter_rounds)
    if problem is not None:
        p.error(problem)
    if a.rounds < 1 or a.batch_size < 1:
        p.error("--rounds and --batch-size must be at least 1")


def _spec(a: argparse.Namespace, num_labels: int) -> LoRASpec:
    """The demo client's adapter, or under DP the sweep's DP adapter with the recipe's head."""
    m = ModelConfig()
    if a.epsilon is None:
        return LoRASpec(model=m.name_or_path, num_labels=num_labels, target_modules=tuple(m.target_modules),
                        r_max=m.rank, alpha=m.alpha, dropout=m.dropout, max_length=m.max_length,
                        strategy=a.strategy, seed=a.seed)
    return LoRASpec(model=m.name_or_path, num_labels=num_labels, target_modules=DP_TARGETS,
                    r_max=DP_RANK, alpha=DP_ALPHA, dropout=m.dropout, max_length=m.max_length,
                    strategy=a.strategy, seed=a.seed, head="mean_linear")


def _audit_command(a: argparse.Namespace, lr: float) -> str:
    cmd = (f"ffa-lora audit {a.out / 'adapter'} --data {a.data} --site {a.site} "
           f"--canaries {a.out / 'canaries.json'} --strategy {a.strategy} --rounds {a.rounds} "
           f"--local-epochs {a.local_epochs:g} --lr {lr:g} --batch-size {a.batch_size} --seed {a.seed}")
    if a.epsilon is not None:
        cmd += f" --epsilon {a.epsilon:g} --delta {a.delta:g}"
        cmd += f" --adapter-rounds {a.adapter_rounds}" if a.adapter_rounds is not None else ""
    return cmd + " --json"


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    _check(p, a)
    dp_on = a.epsilon is not None
    a.strategy = a.strategy or ("ffa" if dp_on else DemoSettings().strategy)
    if a.local_epochs is None:
        a.local_epochs = DP_LOCAL_EPOCHS if dp_on else DemoSettings().local_epochs
    if a.threads is not None:
        torch.set_num_threads(max(1, a.threads))
    demo = load_builtin(a.data, seed=a.seed)
    if a.site not in demo.train_parts:
        raise ConfigError(f"--site: {a.site!r} is not a site of {a.data}; choose one of {sorted(demo.train_parts)}")
    spec = _spec(a, len(demo.label_names))
    dp = (recipe_dp_training(a.epsilon, delta=a.delta, rounds=a.rounds, adapter_rounds=a.adapter_rounds)
          if dp_on else None)
    canaries = make_canaries(n_planted=a.canaries, n_unseen=a.unseen, label_names=demo.label_names,
                             copies=a.copies, seed=a.seed)
    site = demo.train_parts[a.site]
    train = plant_canaries(site, canaries, seed=a.seed)
    lr = a.lr if a.lr is not None else STRATEGY_LR[a.strategy]
    print(f"training on {len(site)} {a.site} records + {a.canaries}x{a.copies} canaries"
          + (f" under DP-SGD at epsilon {a.epsilon:g}" if dp_on else ""), file=sys.stderr)
    spent: list[DPTrainResult] = []
    t0 = time.perf_counter()
    state = round_trainer(spec, rounds=a.rounds, local_epochs=a.local_epochs, lr=lr,
                          batch_size=a.batch_size, device=a.device, dp=dp,
                          on_dp_result=spent.append)(train, a.seed)
    seconds = time.perf_counter() - t0
    export_peft_adapter(state, spec, a.out / "adapter")
    save_canaries(canaries, a.out / "canaries.json")
    metrics = evaluate(build_model(spec, device=a.device, state=state), demo.test)
    out: dict[str, Any] = {
        "data": a.data, "site": a.site, "site_records": len(site), "trained_records": len(train),
        "canaries": a.canaries, "unseen": a.unseen, "copies": a.copies, "strategy": a.strategy,
        "rounds": a.rounds, "local_epochs": a.local_epochs, "lr": lr, "batch_size": a.batch_size,
        "seed": a.seed, "head": spec.head, "rank": spec.r_max, "alpha": spec.alpha,
        "target_modules": list(spec.target_modules), "train_seconds": seconds,
        "test_accuracy": metrics["accuracy"], "test_macro_f1": metrics["macro_f1"],
        "adapter": str(a.out / "adapter"), "dpsgd": None, "audit_command": _audit_command(a, lr),
    }
    if dp is not None:
        o = dp.options
        out["dpsgd"] = {"epsilon_budget": a.epsilon, **spent[0].summary(),
                        "probe_rounds": dp.probe_rounds, "final_head_rounds": dp.final_head_rounds,
                        "adapter_rounds": a.rounds - dp.probe_rounds,
                        "expected_batch_size": o.expected_batch_size, "max_grad_norm": o.max_grad_norm,
                        "head_max_grad_norm": o.head_max_grad_norm, "head_epochs": o.head_epochs,
                        "learning_rate": o.learning_rate, "head_learning_rate": o.head_learning_rate,
                        "momentum": o.momentum, "optimizer": o.optimizer, "adapter_only": o.adapter_only}
        if math.isfinite(spent[0].epsilon_spent) and spent[0].epsilon_spent > a.epsilon * (1 + 1e-6):
            raise ConfigError(f"the accountant reports epsilon {spent[0].epsilon_spent:.4f} spent, above "
                              f"the budget {a.epsilon:g}: the steps taken differ from the plan's")
    (a.out / "target.json").write_text(json.dumps(out, indent=2), encoding="utf-8")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

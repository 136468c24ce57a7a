"""``ffa-lora privacy plan CONFIG`` and ``ffa-lora privacy sweep``.

``plan`` computes, before any training, the per-round epsilon, the noise per round and the
total for a coordinator (or federation) YAML file. ``sweep`` runs the demo federation at
several budgets for ``ffa`` and ``fedavg`` and writes a utility-versus-epsilon table and plot.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from ffa_lora.errors import ConfigError


def plan_from_file(path: Path) -> dict[str, Any]:
    from services.cloud_coordinator.privacy import AggregatePrivacy
    from services.common.config import parse_config, parse_federation

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if isinstance(doc, dict) and "service" in doc:
        cfg = parse_config(doc, source=str(path))
        if cfg.coordinator is None:
            raise ConfigError(f"{path} is a {cfg.service} config; give the coordinator's file")
        fed = cfg.coordinator.federation
    else:
        fed = parse_federation(doc, source=str(path))
    if fed.privacy.mode == "off":
        raise ConfigError(f"{path}: federation.privacy.mode is off; set central or distributed to plan a budget")
    engine = AggregatePrivacy(fed)
    plan = engine.plan.to_dict()
    plan["mode"] = fed.privacy.mode
    plan["norm_clip"] = fed.privacy.norm_clip
    plan["max_weight"] = fed.secure_sum.max_weight
    plan["note"] = ("noise_scale is on the weighted sum (sensitivity = max_weight x norm_clip); the coordinator "
                    "divides the noised sum by the planned participants' weight")
    return plan


def print_plan(plan: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{plan['mechanism']} {plan['mode']} DP: budget eps={plan['epsilon_budget']:g}, "
                    f"delta={plan['delta']:g}, {plan['schedule']} schedule")
    for col in ("round", "epsilon_t", "noise multiplier", "noise scale (sum)", "cumulative eps"):
        t.add_column(col, justify="right")
    for r in plan["rounds"]:
        t.add_row(str(r["round"] + 1), f"{r['epsilon']:.4f}", f"{r['noise_multiplier']:.4f}",
                  f"{r['noise_scale']:.4g}" if r["noise_scale"] is not None else "-", f"{r['cumulative_epsilon']:.4f}")
    Console(stderr=False).print(t)
    print(f"total epsilon {plan['epsilon_total']:.4f} (cross-check {plan['cross_check']})")


def sweep(*, budgets: list[float], strategies: list[str], rounds: int, max_train_per_site: int | None,
          max_test: int | None, key_bits: int, mechanism: str, norm_clip: float, out_dir: Path) -> dict[str, Any]:
    from services.demo import DemoSettings, run_demo

    rows = []
    for strategy in strategies:
        for eps in budgets:
            privacy = ({"mode": "off"} if math.isinf(eps) else
                       {"mode": "central", "mechanism": mechanism, "epsilon": eps, "norm_clip": norm_clip})
            lr = 5e-3 if strategy == "ffa" else 1e-3
            settings = DemoSettings(name=f"sweep-{strategy}-eps{eps:g}", out_dir=out_dir, rounds=rounds, strategy=strategy,
                             learning_rate=lr, privacy=privacy, max_train_per_site=max_train_per_site,
                             max_test=max_test, key_bits=key_bits, patience=rounds, quiet=True)
            print(f"sweep: {strategy} at epsilon={eps:g} ...", file=sys.stderr, flush=True)
            summ = run_demo(settings)
            rows.append({"strategy": strategy, "epsilon": eps, "accuracy": summ["final_accuracy"],
                         "macro_f1": summ["final_macro_f1"], "epsilon_spent": summ["epsilon_spent"],
                         "rounds": summ["rounds"]})
    out_dir.mkdir(parents=True, exist_ok=True)
    table = ["| epsilon | " + " | ".join(f"{s} accuracy | {s} macro-F1" for s in strategies) + " |",
             "|---|" + "---|---|" * len(strategies)]
    for eps in budgets:
        cells = []
        for s in strategies:
            r = next(x for x in rows if x["strategy"] == s and x["epsilon"] == eps)
            cells.append(f"{r['accuracy']:.4f} | {r['macro_f1']:.4f}")
        table.append(f"| {'inf' if math.isinf(eps) else f'{eps:g}'} | " + " | ".join(cells) + " |")
    (out_dir / "privacy_sweep.md").write_text("\n".join(table) + "\n")
    _plot(rows, budgets, strategies, out_dir / "privacy_sweep.png")
    return {"rows": rows, "table": str(out_dir / "privacy_sweep.md"), "plot": str(out_dir / "privacy_sweep.png")}


def _plot(rows: list[dict[str, Any]], budgets: list[float], strategies: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = [b for b in budgets if not math.isinf(b)]
    xs_inf = max(finite) * 2 if finite else 1.0
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in strategies:
        pts = sorted((xs_inf if math.isinf(r["epsilon"]) else r["epsilon"], r["accuracy"])
                      for r in rows if r["strategy"] == s)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=s)
    ax.set_xscale("log")
    ax.set_xlabel("total epsilon (rightmost point: no DP)")
    ax.set_ylabel("test accuracy")
    ax.set_title("utility vs privacy budget (client-level DP on the aggregate)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ffa-lora privacy", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    pl = sub.add_parser("plan", help="per-round and total epsilon of a config")
    pl.add_argument("config", type=Path)
    pl.add_argument("--json", action="store_true")
    sw = sub.add_parser("sweep", help="accuracy at several budgets for ffa and fedavg")
    sw.add_argument("--budgets", default="inf,8,4,1")
    sw.add_argument("--strategies", default="ffa,fedavg")
    sw.add_argument("--rounds", type=int, default=6)
    sw.add_argument("--max-train-per-site", type=int, default=None)
    sw.add_argument("--max-test", type=int, default=None)
    sw.add_argument("--key-bits", type=int, default=2048)
    sw.add_argument("--mechanism", default="gaussian", choices=["gaussian", "laplace"])
    sw.add_argument("--norm-clip", type=float, default=1.0)
    sw.add_argument("--out-dir", type=Path, default=Path("runs/privacy-sweep"))
    sw.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if a.cmd == "plan":
        plan = plan_from_file(a.config)
        if a.json:
            print(json.dumps(plan, indent=2))
        else:
            print_plan(plan)
        return 0
    budgets = [math.inf if b.strip() in ("inf", "∞") else float(b) for b in a.budgets.split(",")]
    res = sweep(budgets=budgets, strategies=[s.strip() for s in a.strategies.split(",")], rounds=a.rounds,
                max_train_per_site=a.max_train_per_site, max_test=a.max_test, key_bits=a.key_bits,
                mechanism=a.mechanism, norm_clip=a.norm_clip, out_dir=a.out_dir)
    print(json.dumps(res, indent=2, default=lambda x: "inf" if isinstance(x, float) and math.isinf(x) else x))
    return 0

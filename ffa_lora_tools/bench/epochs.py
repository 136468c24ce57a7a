"""``ffa-lora bench epochs``: held-out accuracy and loss over the epochs of centralized
FFA-LoRA and centralized LoRA on the pooled demo data, as JSON and a plot.

Each run is ``ffa-lora baseline --eval-every E``: one AdamW and one pass over the data continued
over pieces of E epochs, as a federation's rounds are, tested after every piece
(``--resample-pieces``: each piece draws its batches afresh, as clients once did). It answers
whether training longer or shorter than the demo's 3 epochs would change the comparison
``bench quality`` makes: where each method peaks, and where its held-out loss turns up again."""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ffa_lora_tools.baseline import check_eval_every, run_baseline
from ffa_lora_tools.bench.quality import parse_seeds
from ffa_lora_tools.demo import LORA_LR, STRATEGY_LR
from ffa_lora_tools.jsonsafe import dumps

#: (label, strategy) of the two methods compared.
METHODS = (("FFA-LoRA", "ffa"), ("LoRA", "fedavg"))


def run_curves(*, epochs: float, eval_every: float, seeds: list[int], lrs: dict[str, float],
               model: str = "demo", max_train_per_site: int | None = None, max_test: int | None = None,
               out_dir: Path = Path("runs"), jobs: int = 1, resample_pieces: bool = False) -> dict[str, Any]:
    """Train each method with each seed, testing every ``eval_every`` epochs; ``jobs`` runs
    train at once, each in its own process on one thread."""
    tasks = [(label, strategy, seed) for seed in seeds for label, strategy in METHODS]
    kwargs = [{"model": model, "epochs": epochs, "lr": lrs[strategy], "strategy": strategy, "seed": seed,
               "max_train_per_site": max_train_per_site, "max_test": max_test, "out_dir": out_dir,
               "name": f"epochs-{strategy}-s{seed}", "eval_every": eval_every,
               "resample_pieces": resample_pieces} for _, strategy, seed in tasks]
    for i, (label, strategy, seed) in enumerate(tasks):
        print(f"run {i + 1}/{len(tasks)}: {label}, lr {lrs[strategy]:g}, {epochs:g} epochs, seed {seed}"
              f" ({min(jobs, len(tasks))} at once)", file=sys.stderr, flush=True)
    if jobs > 1:
        ctx = multiprocessing.get_context("spawn")  # torch and fork do not mix
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            summaries = list(pool.map(_run_one, kwargs))
    else:
        summaries = [_run_one(kw) for kw in kwargs]
    runs = []
    for (label, strategy, seed), s in zip(tasks, summaries):
        best = max(s["curve"], key=lambda p: p["accuracy"])
        runs.append({"method": label, "strategy": strategy, "lr": lrs[strategy], "seed": seed,
                     "curve": s["curve"], "best_accuracy": best["accuracy"], "best_epochs": best["epochs"],
                     "lowest_loss_epochs": min(s["curve"], key=lambda p: p["loss"])["epochs"]})
    return {"epochs": epochs, "eval_every": eval_every, "seeds": seeds, "resample_pieces": resample_pieces,
            "runs": runs}


def _run_one(kwargs: dict[str, Any]) -> dict[str, Any]:
    return run_baseline(**kwargs)


def plot_curves(runs: list[dict[str, Any]], path: Path, *, eval_every: float, resample_pieces: bool = False) -> None:
    """Accuracy and held-out loss against epochs, one line per method and seed."""
    colors = {"ffa": "tab:orange", "fedavg": "tab:blue"}
    styles = ["o-", "s--", "^:", "d-."]
    seeds = sorted({r["seed"] for r in runs})
    fig = Figure(figsize=(10, 3.8))
    a1, a2 = fig.subplots(1, 2)
    for r in runs:
        xs = [p["epochs"] for p in r["curve"]]
        style = styles[seeds.index(r["seed"]) % len(styles)]
        label = f"{r['method']} (lr {r['lr']:g}), seed {r['seed']}"
        a1.plot(xs, [p["accuracy"] for p in r["curve"]], style, color=colors[r["strategy"]], label=label)
        a2.plot(xs, [p["loss"] for p in r["curve"]], style, color=colors[r["strategy"]], label=label)
    a1.set_ylabel("held-out accuracy")
    a2.set_ylabel("held-out loss")
    for ax in (a1, a2):
        ax.set_xlabel("epochs")
        ax.grid(alpha=0.3)
    a1.legend(fontsize=8)
    order = f"each {eval_every:g}-epoch piece resampled" if resample_pieces else "one pass per epoch"
    fig.suptitle(f"Centralized FFA-LoRA and LoRA over the epochs (pooled bank demo data; {order})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ffa-lora bench epochs", description=__doc__)
    p.add_argument("--epochs", type=float, default=4.0)
    p.add_argument("--eval-every", type=float, default=0.5)
    p.add_argument("--seeds", default="1", help="comma-separated seeds; each runs both methods")
    p.add_argument("--ffa-lr", type=float, default=STRATEGY_LR["ffa"], help="FFA-LoRA's rate")
    p.add_argument("--lora-lr", type=float, default=LORA_LR, help="LoRA's rate (bench quality's baseline)")
    p.add_argument("--model", default="demo")
    p.add_argument("--max-train-per-site", type=int, default=None)
    p.add_argument("--max-test", type=int, default=None)
    p.add_argument("--out-dir", type=Path, default=Path("runs"))
    p.add_argument("--plot", type=Path, default=None, help="PNG path (default: OUT_DIR/epochs.png)")
    p.add_argument("--jobs", type=int, default=1, help="runs training at once (one core each)")
    p.add_argument("--resample-pieces", action="store_true",
                   help="draw each piece's batches from a fresh permutation (sampling with replacement "
                        "across pieces, as clients did before they kept a data cursor)")
    a = p.parse_args(argv)
    if a.jobs < 1:
        p.error(f"--jobs must be at least 1, got {a.jobs}")
    check_eval_every(p, a.eval_every, a.epochs)
    seeds = parse_seeds(p, a.seeds)
    out = run_curves(epochs=a.epochs, eval_every=a.eval_every, seeds=seeds,
                     lrs={"ffa": a.ffa_lr, "fedavg": a.lora_lr}, model=a.model,
                     max_train_per_site=a.max_train_per_site, max_test=a.max_test, out_dir=a.out_dir, jobs=a.jobs,
                     resample_pieces=a.resample_pieces)
    path = a.plot or a.out_dir / "epochs.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_curves(out["runs"], path, eval_every=a.eval_every, resample_pieces=a.resample_pieces)
    out["plot"] = str(path)
    print(dumps(out, indent=2))
    return 0

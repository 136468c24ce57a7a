"""``ffa-lora baseline``: centralized LoRA on the pooled training data of the demo sites,
same model, data split and number of epochs as the federation, same summary format."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ffa_lora.data.builtin import BUILTIN_NAMES, load_builtin
from ffa_lora.lora import LoRASpec, export_peft_adapter
from ffa_lora.lora.train import train_centralized
from ffa_lora_tools.jsonsafe import dumps
from services.common.config import ModelConfig

#: Caps that keep a run on a built-in data set to minutes on a CPU, for the baseline and the demo;
#: a cap given explicitly wins. The ICD-10 set has about 40k training records: a 6,000-record
#: stratified sample and a 2,000-record test split (sampled the same way for every run).
DATA_DEFAULTS: dict[str, dict[str, int]] = {"icd10": {"max_train": 6000, "max_test": 2000}}


def run_baseline(*, data: str = "bank", model: str = "demo", epochs: float = 3.0, lr: float = 1e-3,
                 batch_size: int = 16, rank: int = 8, strategy: str = "fedavg", seed: int = 1234,
                 target_modules: tuple[str, ...] | None = None,
                 partition: str = "natural", sites: int | None = None, max_train: int | None = None,
                 max_train_per_site: int | None = None, max_test: int | None = None,
                 out_dir: Path = Path("runs"), name: str = "baseline", num_threads: int = 1,
                 eval_every: float | None = None, resample_pieces: bool = False) -> dict[str, Any]:
    """Train centrally and write runs/<name>/summary.json. ``strategy='fedavg'`` trains A and B
    (classic LoRA); ``'ffa'`` trains B only. The adapter's shape (target modules, alpha, dropout,
    max length) is the federation config's (``model:`` defaults), so both sides train the same.
    ``partition``/``sites`` only matter with ``max_train_per_site``: the cap applies per site, so
    the pooled data is the union of the federation's capped sites. ``eval_every`` (epochs) adds
    the test metrics after every such piece of training as ``curve`` (``resample_pieces``: see
    :func:`~ffa_lora.lora.train_centralized`)."""
    caps = DATA_DEFAULTS.get(data, {})
    max_train = caps.get("max_train") if max_train is None else max_train
    max_test = caps.get("max_test") if max_test is None else max_test
    demo = load_builtin(data, seed=seed, method=partition, n_sites=sites,  # type: ignore[arg-type]
                        max_train=max_train, max_train_per_site=max_train_per_site, max_test=max_test)
    m = ModelConfig(name_or_path=model, num_labels=len(demo.label_names), rank=rank)
    if target_modules:
        m = m.model_copy(update={"target_modules": list(target_modules)})
    spec = LoRASpec(model=m.name_or_path, num_labels=m.num_labels, target_modules=tuple(m.target_modules),
                    r_max=m.rank, alpha=m.alpha, dropout=m.dropout, max_length=m.max_length,
                    strategy=strategy, seed=seed)  # type: ignore[arg-type]
    t0 = time.time()

    def progress(step: int, total: int, loss: float) -> None:
        if step % 50 == 0 or step == total:
            print(f"  step {step}/{total} loss {loss:.4f}", file=sys.stderr, flush=True)

    res = train_centralized(spec, demo.train, demo.test, epochs=epochs, lr=lr, batch_size=batch_size,
                            seed=seed, num_threads=num_threads, progress=progress, eval_every=eval_every,
                            resample_pieces=resample_pieces)
    run = out_dir / name
    run.mkdir(parents=True, exist_ok=True)
    export_peft_adapter(res.state, spec, run / "adapter")
    summary = {
        "name": name, "strategy": f"centralized-{strategy}", "target_modules": list(spec.target_modules),
        "final_accuracy": res.metrics["accuracy"],
        "final_macro_f1": res.metrics["macro_f1"], "final_roc_auc": res.metrics.get("roc_auc"),
        "epochs": epochs, "learning_rate": lr,
        "train_seconds": res.metrics["train_seconds"], "wall_seconds": time.time() - t0, "data": demo.summary(),
        "adapter_dir": str(run / "adapter"),
    }
    if res.curve:
        summary["curve"] = res.curve
    (run / "summary.json").write_text(dumps(summary, indent=2))
    return summary


def module_list(arg: str | None) -> tuple[str, ...] | None:
    """``--target-modules q,k`` -> ("q", "k"); None or empty -> None (the config default)."""
    mods = tuple(x.strip() for x in (arg or "").split(",") if x.strip())
    return mods or None


def check_eval_every(p: argparse.ArgumentParser, eval_every: float, epochs: float) -> None:
    """``--eval-every`` is a positive share of the training, at most all of it."""
    if not 0 < eval_every <= epochs:
        p.error(f"--eval-every must be in (0, --epochs={epochs:g}], got {eval_every}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ffa-lora baseline", description=__doc__)
    p.add_argument("--data", default="bank", choices=list(BUILTIN_NAMES),
                   help="built-in data set (icd10 is capped at "
                        + ", ".join(f"{k} {v}" for k, v in DATA_DEFAULTS["icd10"].items()) + " unless given)")
    p.add_argument("--model", default="demo")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--strategy", default="fedavg", choices=["fedavg", "ffa"],
                   help="fedavg = classic LoRA (A and B train); ffa = B only")
    p.add_argument("--target-modules", default=None,
                   help="comma-separated module names that get LoRA (default: the federation config's, query,value)")
    p.add_argument("--max-train", type=int, default=None, help="keep at most this many training records")
    p.add_argument("--max-train-per-site", type=int, default=None)
    p.add_argument("--max-test", type=int, default=None)
    p.add_argument("--out-dir", type=Path, default=Path("runs"))
    p.add_argument("--name", default="baseline")
    p.add_argument("--eval-every", type=float, default=None,
                   help="also test after every this many epochs (summary.json's curve)")
    a = p.parse_args(argv)
    if a.eval_every is not None:
        check_eval_every(p, a.eval_every, a.epochs)
    s = run_baseline(data=a.data, model=a.model, epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, rank=a.rank,
                     strategy=a.strategy, target_modules=module_list(a.target_modules),
                     max_train=a.max_train, max_train_per_site=a.max_train_per_site, max_test=a.max_test,
                     out_dir=a.out_dir, name=a.name,
                     eval_every=a.eval_every)
    print(dumps(s, indent=2))
    return 0

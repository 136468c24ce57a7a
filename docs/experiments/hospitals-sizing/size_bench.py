"""Sizing runs for ``ffa-lora bench sites`` (throwaway until that bench exists): centralized
and site-alone training of the demo model on a built-in data set, scored on the global test
split and on each site's own test split. Prints one JSON object per finished run (and a
final one with all of them).

    PYTHONPATH=$PWD:$PWD/protos HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \\
      nice -n 5 .venv/bin/python docs/experiments/hospitals-sizing/size_bench.py tokens
    ... size_bench.py run --data icd10 --max-train 8000 --max-test 3000 --epochs 2 \\
      --runs central,oncology
    ... size_bench.py run --data hospital --epochs 3 --runs central,all-sites --seeds 1234,1,2 \
      --personalize
    ... size_bench.py fedsim --data icd10 --max-train 6000 --max-test 2000 --rounds 8 \
      --local-epochs 0.25
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def tokens(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from ffa_lora.data import load_builtin
    from ffa_lora.lora import LoRASpec
    from ffa_lora.lora.model import load_tokenizer

    out: dict[str, Any] = {}
    tok = load_tokenizer(LoRASpec())
    for name in ("icd10", "hospital"):
        demo = load_builtin(name)
        texts = demo.train.texts + demo.test.texts
        n = np.array([len(x) for x in tok(texts, truncation=False)["input_ids"]])
        out[name] = {"records": len(texts), "mean_tokens": float(n.mean()),
                     "median_tokens": float(np.median(n)), "p95_tokens": float(np.percentile(n, 95)),
                     "share_over_64": float((n > 64).mean())}
    return out


def _short(m: dict[str, float]) -> dict[str, float]:
    return {k: round(m[k], 4) for k in ("accuracy", "macro_f1", "roc_auc", "roc_auc_classes", "loss")}


def _personalize(model: Any, demo: Any, seed: int) -> dict[str, Any]:
    """Each site fits its own head on its training part (from the trained model's head) and
    scores its own test split with the global and with its personal head."""
    from ffa_lora.lora.personalize import evaluate_heads, finetune_head

    out: dict[str, Any] = {}
    for site, part in demo.train_parts.items():
        row: dict[str, Any] = {}
        for prox in (0.0, 1.0):
            res = finetune_head(model, part, epochs=20, lr=1e-2, prox=prox, seed=seed)
            scores = evaluate_heads(model, demo.test_parts[site], {"global": None, "personal": res.head})
            row |= {"global": _short(scores["global"]), f"personal_prox{prox:g}": _short(scores["personal"]),
                    "seconds": round(res.seconds + res.feature_seconds, 1)}
        out[site] = row
        print(json.dumps({"personalize": site, **row}), file=sys.stderr, flush=True)
    return out


def _train_eval(spec: Any, train: Any, tests: dict[str, Any], *, epochs: int, lr: float, seed: int,
                threads: int, demo: Any = None) -> dict[str, Any]:
    from ffa_lora.lora import build_model, evaluate, train_local
    from ffa_lora.lora.train import DataCursor

    model = build_model(spec)
    state, cursor = None, DataCursor(seed=seed, n=len(train))
    curve, seconds = [], 0.0
    for epoch in range(1, epochs + 1):
        c0 = time.process_time()

        def progress(step: int, total: int, loss: float, c0: float = c0) -> None:
            if step % 25 == 0:
                print(f"step {step}/{total} loss {loss:.3f} cpu {time.process_time() - c0:.1f}",
                      file=sys.stderr, flush=True)

        res = train_local(model, train, epochs=1.0, lr=lr, batch_size=16, phase="B", seed=seed,
                          num_threads=threads, loss_samples=0, optimizer_state=state, cursor=cursor,
                          progress=progress)
        cpu = time.process_time() - c0
        state, cursor = res.optimizer_state, res.cursor or cursor
        seconds += res.seconds
        t0 = time.perf_counter()
        scores = {name: _short(evaluate(model, data)) for name, data in tests.items()}
        curve.append({"epoch": epoch, "train_seconds": round(res.seconds, 1), "train_cpu_seconds": round(cpu, 1),
                      "steps": res.steps,
                      "train_loss": round(res.train_loss, 4),
                      "eval_seconds": round(time.perf_counter() - t0, 1), **scores})
        print(json.dumps({"n": len(train), **curve[-1]}), file=sys.stderr, flush=True)
    out = {"train_records": len(train), "train_seconds": round(seconds, 1), "curve": curve}
    if demo is not None:
        out["personalized"] = _personalize(model, demo, seed)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ffa_lora.data import load_builtin
    from ffa_lora.lora import LoRASpec

    results: dict[str, Any] = {"args": vars(args) | {"func": None}, "runs": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        demo = load_builtin(args.data, seed=seed, max_train=args.max_train, max_test=args.max_test,
                            home_share=args.home_share)
        spec = LoRASpec(num_labels=len(demo.label_names), dropout=0.0, seed=seed)
        wanted = args.runs.split(",")
        names = ["central"] if "central" in wanted else []
        names += [s for s in demo.train_parts if s in wanted or "all-sites" in wanted]
        for name in names:
            train = demo.train if name == "central" else demo.train_parts[name]
            tests = {"global": demo.test}
            if args.site_tests:
                tests |= {f"site:{s}": d for s, d in demo.test_parts.items()
                          if name == "central" or s == name}
            r = _train_eval(spec, train, tests, epochs=args.epochs, lr=args.lr, seed=seed,
                            threads=args.threads,
                            demo=demo if name == "central" and args.personalize else None)
            r |= {"data": args.data, "run": name, "seed": seed, "sizes": demo.summary()["sites"],
                  "test_sizes": demo.summary()["site_tests"], "global_test": len(demo.test)}
            results["runs"].append(r)
            print(json.dumps(r), flush=True)
    return results


def fedsim(args: argparse.Namespace) -> dict[str, Any]:
    """In-process FFA-LoRA federation without the crypto (plaintext weighted FedAvg of each
    round's B + head update, times the server learning rate), as the client agents train:
    AdamW state and data cursor kept per site across rounds. Scores the global model on the global test
    split and each site's own split, then each site's personalized head."""
    import numpy as np

    from ffa_lora.data import load_builtin
    from ffa_lora.lora import (
        LoRASpec,
        build_model,
        evaluate,
        get_adapter_state,
        load_adapter_state,
        train_local,
    )
    from ffa_lora.lora.train import DataCursor

    seed = int(args.seeds.split(",")[0])
    demo = load_builtin(args.data, seed=seed, max_train=args.max_train, max_test=args.max_test,
                        home_share=args.home_share)
    spec = LoRASpec(num_labels=len(demo.label_names), dropout=0.0, seed=seed)
    model = build_model(spec)
    glob = get_adapter_state(model)
    opt: dict[str, Any] = {}
    cursors = {s: DataCursor(seed=seed + i, n=len(d)) for i, (s, d) in enumerate(demo.train_parts.items())}
    curve = []
    cpu = 0.0
    for rnd in range(1, args.rounds + 1):
        total: dict[str, np.ndarray] = {}
        weight = 0.0
        for i, (site, data) in enumerate(demo.train_parts.items()):
            load_adapter_state(model, glob)
            c0 = time.process_time()
            res = train_local(model, data, epochs=args.local_epochs, lr=args.lr, batch_size=16, phase="B",
                              seed=seed * 100 + i, num_threads=args.threads, loss_samples=0,
                              optimizer_state=opt.get(site), cursor=cursors[site])
            cpu += time.process_time() - c0
            opt[site], cursors[site] = res.optimizer_state, res.cursor or cursors[site]
            for k, v in res.delta_state.items():
                total[k] = total.get(k, 0.0) + len(data) * v.astype(np.float64)
            weight += len(data)
        glob = {k: (v + args.server_lr * total[k] / weight).astype(np.float32) if k in total else v
                for k, v in glob.items()}
        row: dict[str, Any] = {"round": rnd, "train_cpu_seconds": round(cpu, 1)}
        if rnd % args.eval_every == 0 or rnd == args.rounds:
            load_adapter_state(model, glob)
            row["global"] = _short(evaluate(model, demo.test))
            if rnd == args.rounds:
                row |= {f"site:{s}": _short(evaluate(model, d)) for s, d in demo.test_parts.items()}
        curve.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    load_adapter_state(model, glob)
    return {"data": args.data, "seed": seed, "rounds": args.rounds, "local_epochs": args.local_epochs,
            "server_lr": args.server_lr,
            "sizes": demo.summary()["sites"], "curve": curve,
            "personalized": _personalize(model, demo, seed)}


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(required=True)
    t = sub.add_parser("tokens")
    t.set_defaults(func=tokens)
    r = sub.add_parser("run")
    r.add_argument("--data", default="icd10")
    r.add_argument("--max-train", type=int, default=None)
    r.add_argument("--max-test", type=int, default=None)
    r.add_argument("--home-share", type=float, default=0.8)
    r.add_argument("--epochs", type=int, default=2)
    r.add_argument("--lr", type=float, default=5e-3)
    r.add_argument("--runs", default="central")
    r.add_argument("--seeds", default="1234")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--site-tests", action=argparse.BooleanOptionalAction, default=True)
    r.add_argument("--personalize", action="store_true",
                   help="after the centralized run: each site's personal head vs the global one")
    r.set_defaults(func=run)
    f = sub.add_parser("fedsim")
    f.add_argument("--data", default="icd10")
    f.add_argument("--max-train", type=int, default=None)
    f.add_argument("--max-test", type=int, default=None)
    f.add_argument("--home-share", type=float, default=0.8)
    f.add_argument("--rounds", type=int, default=8)
    f.add_argument("--local-epochs", type=float, default=0.25)
    f.add_argument("--eval-every", type=int, default=4)
    f.add_argument("--lr", type=float, default=5e-3)
    f.add_argument("--server-lr", type=float, default=1.0)
    f.add_argument("--seeds", default="1234")
    f.add_argument("--threads", type=int, default=1)
    f.set_defaults(func=fedsim)
    args = p.parse_args()
    print(json.dumps(args.func(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

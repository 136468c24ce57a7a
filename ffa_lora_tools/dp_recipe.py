"""``python -m ffa_lora_tools.dp_recipe probe|adapter``: the bank demo's federation under
sample-level DP, simulated in one process (no crypto, no servers), to choose and measure the
DP-SGD recipe.

The same three sites, splits and test set as ``ffa-lora demo`` (``load_builtin(data,
seed=1234)``; each site's texts de-identified with the pseudonym operator, then a stratified 10 %
validation hold-out seeded 1234, as the client agent does); the server takes the record-weighted
mean of the sites' updates (what the secure sum computes exactly for FFA-LoRA); every site runs
DP-SGD with its own accountant and the noise multiplier :func:`ffa_lora.privacy.dp_sgd.plan_dp_sgd`
gives it, so that every site spends at most ε at δ over all its steps of all rounds.

``probe``: the DP linear probe (:mod:`ffa_lora.lora.probe`) on the frozen encoder's features.
``adapter``: FFA-LoRA (or another strategy) with :func:`ffa_lora.lora.train_local` and
:class:`ffa_lora.lora.steps.DPSGDOptions`; the first ``--probe-rounds`` rounds train the head
alone (with ``B = 0`` the features are the frozen encoder's, so the probe code computes exactly
what ``train_local(epochs=0, head_epochs=...)`` would). Each run prints one JSON object (and
appends it to ``--log``). Benchmark code: the seeds fix sampling and noise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ffa_lora.data.builtin import load_builtin
from ffa_lora.data.dataset import Dataset, stratified_split
from ffa_lora.lora import LoRASpec, build_model, evaluate, load_adapter_state
from ffa_lora.lora.probe import ProbeOptions, ProbeSite, pooled_features, train_federated_probe
from ffa_lora.lora.steps import DPSGDOptions
from ffa_lora.lora.train import RunOptions, TrainOptions, train_local
from ffa_lora.privacy.dp_sgd import DPSGDPlan, load_accountant, plan_dp_sgd, step_event

SEED = 1234
DELTA = 1e-5
HEAD_W, HEAD_B = "base_model.model.classifier.weight", "base_model.model.classifier.bias"


def demo_sites(*, data: str = "bank", cache: Path | None = None, max_train_per_site: int | None = None
               ) -> tuple[dict[str, Dataset], Dataset]:
    """``({site: training records}, test set)`` as the demo's clients and coordinator see them."""
    from ffa_lora.deid import DeidConfig, Deidentifier

    demo = load_builtin(data, seed=SEED)
    path = cache / f"deid_{data}.json" if cache else None
    if path is not None and path.exists():
        texts = json.loads(path.read_text())
    else:
        texts = {}
        for name, part in demo.train_parts.items():
            secret = hashlib.sha256(f"site-secret-{name}".encode()).hexdigest().encode()
            engine = Deidentifier(DeidConfig(operator="pseudonym", languages=("en", "zh")),
                                  site_secret=secret)
            texts[name] = [engine.scrub_with_counts(t)[0] for t in part.texts]
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(texts))
    sites = {}
    for name, part in sorted(demo.train_parts.items()):
        whole = Dataset(texts=texts[name], labels=list(part.labels), label_names=part.label_names)
        train, _ = stratified_split(whole, test_fraction=0.1, seed=SEED)
        if max_train_per_site is not None and len(train) > max_train_per_site:
            keep = np.random.default_rng(SEED).permutation(len(train))[:max_train_per_site]
            train = train.subset(np.sort(keep))
        sites[name] = train
    return sites, demo.test


def recipe_spec(strategy: str = "ffa", *, rank: int = 8,
                target_modules: tuple[str, ...] = ("query", "value")) -> LoRASpec:
    """The demo's adapter (scaling alpha / rank = 2) with the ``mean_linear`` head."""
    return LoRASpec(model="demo", num_labels=3, r_max=rank, alpha=2.0 * rank, dropout=0.0,
                    max_length=64, strategy=strategy,  # type: ignore[arg-type]
                    seed=SEED, target_modules=target_modules, head="mean_linear")


def features(sites: dict[str, Dataset], test: Dataset, cache: Path | None
             ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The frozen encoder's unit-norm mean-pooled features of every site's records and the test set."""
    path = cache / "features.npz" if cache else None
    if path is not None and path.exists():
        z = np.load(path)
        if all(len(z[f"site_{s}"]) == len(d) for s, d in sites.items()):
            return {s: z[f"site_{s}"] for s in sites}, z["test"]
    model = build_model(recipe_spec())
    out = {s: pooled_features(model, d.texts) for s, d in sites.items()}
    test_features = pooled_features(model, test.texts)
    if path is not None:
        arrays: dict[str, Any] = {f"site_{s}": v for s, v in out.items()}
        np.savez(path, test=test_features, **arrays)
    return out, test_features


def plan(sites: dict[str, Dataset], a: argparse.Namespace, *, local_epochs: float,
         head_epochs: float = 0.0, probe_rounds: int = 0) -> DPSGDPlan | None:
    """Every site's σ for ``a.eps`` (``None`` at ε = ∞: clipped, not noised)."""
    if math.isinf(a.eps):
        return None
    return plan_dp_sgd({s: len(d) for s, d in sites.items()}, epsilon=a.eps, delta=DELTA,
                       expected_batch_size=a.batch, local_epochs=local_epochs, rounds=a.rounds,
                       head_epochs=head_epochs, probe_rounds=probe_rounds)


def _sigmas(p: DPSGDPlan | None) -> dict[str, float] | None:
    return None if p is None else {s.site: s.noise_multiplier for s in p.sites}


def run_probe(a: argparse.Namespace) -> dict[str, Any]:
    """The DP linear probe: ``rounds × head_epochs`` of head-only steps."""
    sites, test = demo_sites(cache=a.cache, max_train_per_site=a.max_train_per_site)
    feats, test_features = features(sites, test, a.cache)
    p = plan(sites, a, local_epochs=a.head_epochs)
    res = train_federated_probe(
        {s: ProbeSite(feats[s], np.asarray(d.labels)) for s, d in sites.items()}, num_labels=3,
        seed=a.seed, options=ProbeOptions(
            rounds=a.rounds, local_epochs=a.head_epochs, expected_batch_size=a.batch,
            learning_rate=a.head_lr, momentum=a.momentum, max_grad_norm=a.head_clip,
            noise_multipliers=_sigmas(p), delta=DELTA))
    return {**res.metrics(test_features, np.asarray(test.labels)), "sigma": _sigmas(p),
            "steps": res.steps, "eps_spent": res.epsilon}


def probe_reference(epsilon: float, *, delta: float = DELTA, rounds: int = 6,
                    expected_batch_size: int = 512, head_epochs: float = 3.0,
                    head_learning_rate: float = 8.0, momentum: float = 0.5,
                    max_grad_norm: float = 1.0, max_train_per_site: int | None = None,
                    max_test: int | None = None, cache: Path | None = None) -> dict[str, float]:
    """The DP linear probe on the bank demo at ``epsilon`` (``inf``: clipped, not noised):
    ``rounds × head_epochs`` of head-only DP-SGD steps per site, each site calibrated to
    ``epsilon`` at ``delta``; accuracy and macro-F1 on the demo's test set and the largest ε a
    site spent. Noise from the OS CSPRNG (a sweep's row, not a seeded benchmark)."""
    sites, test = demo_sites(cache=cache, max_train_per_site=max_train_per_site)
    if max_test is not None and max_test < len(test):
        _, test = stratified_split(test, test_fraction=max_test / len(test), seed=SEED)
    feats, test_features = features(sites, test, None)
    sigma = None
    if not math.isinf(epsilon):
        p = plan_dp_sgd({s: len(d) for s, d in sites.items()}, epsilon=epsilon, delta=delta,
                        expected_batch_size=expected_batch_size, local_epochs=head_epochs,
                        rounds=rounds)
        sigma = _sigmas(p)
    res = train_federated_probe(
        {s: ProbeSite(feats[s], np.asarray(d.labels)) for s, d in sites.items()}, num_labels=3,
        options=ProbeOptions(rounds=rounds, local_epochs=head_epochs,
                             expected_batch_size=expected_batch_size,
                             learning_rate=head_learning_rate, momentum=momentum,
                             max_grad_norm=max_grad_norm, noise_multipliers=sigma, delta=delta))
    return {**res.metrics(test_features, np.asarray(test.labels)),
            "epsilon_spent": max(res.epsilon.values())}


def run_adapter(a: argparse.Namespace) -> dict[str, Any]:
    """Probe rounds (head only), then rounds of head steps and adapter steps."""
    import torch

    torch.set_num_threads(a.threads)
    sites, test = demo_sites(cache=a.cache, max_train_per_site=a.max_train_per_site)
    spec = recipe_spec(a.strategy, rank=a.rank, target_modules=tuple(a.targets.split(",")))
    model = build_model(spec)
    state = model.adapter_state()
    p = plan(sites, a, local_epochs=a.epochs, head_epochs=a.head_epochs,
             probe_rounds=a.probe_rounds)
    accountants: dict[str, Any] = dict.fromkeys(sites)
    steps = dict.fromkeys(sites, 0)
    eps_spent: dict[str, float] = {}
    curve: list[dict[str, Any]] = []
    total = sum(len(d) for d in sites.values())
    if a.probe_rounds:
        feats, test_features = features(sites, test, a.cache)
        pr = train_federated_probe(
            {s: ProbeSite(feats[s], np.asarray(d.labels)) for s, d in sites.items()},
            num_labels=3, seed=a.seed, options=ProbeOptions(
                rounds=a.probe_rounds, local_epochs=a.head_epochs, expected_batch_size=a.batch,
                learning_rate=a.head_lr, momentum=a.momentum, max_grad_norm=a.head_clip,
                noise_multipliers=_sigmas(p), delta=DELTA))
        state[HEAD_W], state[HEAD_B] = pr.weight.astype(np.float32), pr.bias.astype(np.float32)
        for s, d in sites.items():
            steps[s] += pr.steps[s]
            if p is not None:
                acc = load_accountant(None)
                acc.add_event(step_event(noise_multiplier=p.site(s).noise_multiplier,
                                         sample_rate=min(1.0, a.batch / len(d)), steps=pr.steps[s]))
                accountants[s] = acc.state_dict()
        curve.append({"round": a.probe_rounds, "probe": True,
                      **pr.metrics(test_features, np.asarray(test.labels))})
        print(f"probe rounds: {curve[-1]}", file=sys.stderr, flush=True)
    for r in range(a.probe_rounds, a.rounds):
        new = {k: v.astype(np.float64) for k, v in state.items()}
        for i, (s, data) in enumerate(sites.items()):
            load_adapter_state(model, state)
            dp = DPSGDOptions(
                noise_multiplier=0.0 if p is None else p.site(s).noise_multiplier,
                max_grad_norm=a.clip, delta=DELTA, head_max_grad_norm=a.head_clip,
                expected_batch_size=a.batch, physical_batch_size=a.physical,
                head_epochs=a.head_epochs, adapter_only=a.adapter_only and a.head_epochs > 0,
                optimizer="sgd", learning_rate=a.lr, head_learning_rate=a.head_lr,
                momentum=a.momentum, accountant_state=accountants[s],
                seed=a.seed * 1000 + r * 10 + i)
            res = train_local(model, data, TrainOptions(
                epochs=a.epochs, lr=a.lr, batch_size=a.physical, phase=spec.phase(r),
                seed=r * 100 + i, dropout=False), run=RunOptions(loss_samples=0), dp_sgd=dp)
            accountants[s] = res.extra.get("dpsgd_accountant_state")
            eps_spent[s] = float(res.extra.get("dpsgd_epsilon", math.inf))
            steps[s] += res.steps
            for k, v in res.delta_state.items():
                new[k] += len(data) / total * v.astype(np.float64)
            print(f"round {r} site {s}: {res.steps} steps, eps {eps_spent[s]:.3f}",
                  file=sys.stderr, flush=True)
        state = {k: v.astype(np.float32) for k, v in new.items()}
        if a.eval_every_round or r == a.rounds - 1:
            load_adapter_state(model, state)
            m = evaluate(model, test, batch_size=128)
            curve.append({"round": r + 1, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]})
            print(f"round {r + 1}: {curve[-1]}", file=sys.stderr, flush=True)
    return {"accuracy": curve[-1]["accuracy"], "macro_f1": curve[-1]["macro_f1"], "curve": curve,
            "sigma": _sigmas(p), "steps": steps, "eps_spent": eps_spent}


def _finite(value: Any) -> Any:
    """``value`` with every infinite float as the string ``"inf"`` (strict JSON)."""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ffa_lora_tools.dp_recipe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["probe", "adapter"])
    ap.add_argument("--eps", type=float, default=8.0, help="per-site budget at delta 1e-5 (inf: no noise)")
    ap.add_argument("--seed", type=int, default=0, help="sampling and noise (benchmarks only)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--batch", type=int, default=512, help="expected Poisson batch")
    ap.add_argument("--physical", type=int, default=64, help="records per forward/backward pass")
    ap.add_argument("--head-epochs", type=float, default=3.0, help="head-only epochs per round")
    ap.add_argument("--head-lr", type=float, default=8.0)
    ap.add_argument("--head-clip", type=float, default=1.0)
    ap.add_argument("--momentum", type=float, default=0.5)
    ap.add_argument("--epochs", type=float, default=1.0, help="adapter: epochs through the model per round")
    ap.add_argument("--lr", type=float, default=1.0, help="adapter: its learning rate")
    ap.add_argument("--clip", type=float, default=1.0, help="adapter: its per-sample clip")
    ap.add_argument("--adapter-only", action=argparse.BooleanOptionalAction, default=True,
                    help="adapter: the steps through the model leave the head alone")
    ap.add_argument("--probe-rounds", type=int, default=4, help="adapter: head-only rounds first")
    ap.add_argument("--strategy", default="ffa")
    ap.add_argument("--rank", type=int, default=1, help="adapter: r_max")
    ap.add_argument("--targets", default="value", help="adapter: target modules")
    ap.add_argument("--max-train-per-site", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every-round", action="store_true")
    ap.add_argument("--cache", type=Path, default=None, help="folder for de-identified texts and features")
    ap.add_argument("--log", type=Path, default=None, help="append the JSON result to this file")
    return ap


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    t0 = time.perf_counter()
    out = (run_probe if a.kind == "probe" else run_adapter)(a)
    row = {"kind": a.kind, **{k: v for k, v in vars(a).items() if k not in ("log", "cache", "kind")},
           **out, "wall_s": round(time.perf_counter() - t0, 1)}
    text = json.dumps(_finite(row), default=str)
    print(text)
    if a.log is not None:
        with a.log.open("a") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

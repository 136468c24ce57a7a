"""``ffa-lora bench sites``: what joining the federation is worth to each site.

For one built-in data set and partition, with the same model, method and training budget:

(a) **alone**: each site trains on its own data only;
(b) **federated**: the sites train together (FFA-LoRA rounds, weighted mean of the updates);
(c) **centralized**: one model on the pooled data of all sites;
(d) **personalized**: the federation of (b), after which each site fits its own task head on
    its own data (the shared adapter frozen, a proximal term towards the global head;
    :func:`~ffa_lora.lora.personalize.finetune_head`), as ``training.personalization: head``
    does in the services.

Every model is scored on each site's own test split (drawn from that site's distribution) and
on the global test split, with ROC-AUC (macro one-vs-rest), accuracy and macro-F1. The runs
repeat for each seed (the seed draws the adapter's start, the data order and, for random
partitions, the split of the sites); the report gives the means, their spreads and every
seed's values, headed by ``mean_auc_gain_points`` — the federation's own-split AUC minus the
site alone's, in points, averaged over the sites — and a plot of the per-site AUCs.

The federation runs in process (:mod:`ffa_lora_tools.simulate`): the clients' training, the
clipping, 8-bit stochastic quantization, integer weights and the coordinator's averaging, but
no encryption and no network (the encrypted sum decrypts to the same integers). The sites
alone and the centralized model train with the same engine as a one-site federation, so all
methods share the data order, optimizer handling and learning-rate schedule. ``ffa-lora demo``
runs the same federation through the real services.

Budget: the sites alone and the centralized model train ``--epochs`` epochs of their data in
pieces of ``--local-epochs``; the federation ``--rounds`` rounds of ``--local-epochs`` epochs
per site (default: the same number of epochs). ``--eval-every`` adds the scores after every
that many pieces/rounds as curves, which show where each method levels off. ``--combine``
merges reports of methods run separately (long runs) into one report. ``--probe-rounds``
starts every method with a linear probe of its data on the frozen encoder's features (for the
federation, rounds of head fits averaged across the sites), then fine-tunes as above.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ffa_lora.data.builtin import BUILTIN_NAMES, DemoData, load_builtin
from ffa_lora.data.dataset import Dataset, stratified_split
from ffa_lora.errors import ConfigError
from ffa_lora.lora import LoRASpec
from ffa_lora.lora.model import LoRAModel, build_model, get_adapter_state, load_adapter_state
from ffa_lora.lora.personalize import (
    adapter_with_head,
    evaluate_heads,
    finetune_head,
    head_features,
)
from ffa_lora.lora.spec import HEADS, STRATEGIES, Head
from ffa_lora_tools.bench.quality import parse_seeds
from ffa_lora_tools.bench.sites_report import combine_runs, plot_sites, summarize
from ffa_lora_tools.demo import STRATEGY_LR, add_partition_arguments, check_sites
from ffa_lora_tools.jsonsafe import dumps
from ffa_lora_tools.simulate import SimulationSettings, simulate_federation
from services.common.config import ModelConfig

#: the scores kept per model and split
KEPT = ("accuracy", "macro_f1", "roc_auc", "roc_auc_classes", "loss", "n")
METHODS = ("alone", "federated", "centralized")
DEFAULT_SEEDS = "1234,1,2"
#: ``--head``: the choices of the federation config's ``model.head``
HEAD_CHOICES = ("auto", *HEADS)


class Scorer:
    """Scores a model on the global test split and on each site's own test split.

    The sites' splits partition the global one, so one forward pass over the global split
    gives the head's inputs for all of them (:func:`~ffa_lora.lora.personalize.head_features`),
    and any number of heads is scored from those features.
    """

    def __init__(self, demo: DemoData) -> None:
        position = {t: i for i, t in enumerate(demo.test.texts)}
        self.test = demo.test
        self.parts = demo.test_parts
        self.index = {s: np.array([position[t] for t in d.texts], dtype=np.int64) for s, d in demo.test_parts.items()}

    def features(self, model: LoRAModel) -> torch.Tensor:
        """The head's inputs for the global test split under the model's current adapter."""
        return head_features(model, self.test)

    def score(self, model: LoRAModel, feats: torch.Tensor, *, head: Mapping[str, np.ndarray] | None = None,
              sites: list[str] | None = None) -> dict[str, Any]:
        """``{"global": metrics, "own": {site: metrics}}`` of ``head`` (None: the model's own)."""
        out: dict[str, Any] = {"global": _kept(evaluate_heads(model, self.test, {"h": head}, features=feats)["h"])}
        own = {}
        for s in sites if sites is not None else list(self.parts):
            idx = torch.from_numpy(self.index[s]).to(feats.device)
            own[s] = _kept(evaluate_heads(model, self.parts[s], {"h": head}, features=feats[idx])["h"])
        out["own"] = own
        return out


def _kept(m: Mapping[str, float]) -> dict[str, float]:
    return {k: float(m[k]) for k in KEPT if k in m}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_spec(a: argparse.Namespace, num_labels: int, seed: int) -> LoRASpec:
    """The federation config's adapter (``model:`` defaults, the task head ``--head``) for this
    data and seed; every method builds its model from it."""
    m = ModelConfig(name_or_path=a.model, num_labels=num_labels, rank=a.rank, head=a.head)
    return LoRASpec(model=m.name_or_path, num_labels=num_labels, target_modules=tuple(m.target_modules),
                    r_max=m.rank, alpha=m.alpha, dropout=m.dropout, max_length=m.max_length,
                    strategy=a.strategy, seed=seed, head=resolved_head(m.head))


def resolved_head(head: str) -> Head:
    """``model.head`` with ``auto`` resolved as the federation config does without DP-SGD (the
    bench trains without it): the checkpoint's ``pooler`` classifier."""
    if head == "auto":
        return "pooler"
    if head not in HEADS:
        raise ConfigError(f"head: choose from auto, {', '.join(HEADS)} (got {head!r})")
    return cast(Head, head)


@dataclasses.dataclass(frozen=True)
class ProbeFirst:
    """Linear probing before fine-tuning: ``rounds`` rounds of ``epochs`` head-only epochs on
    the frozen encoder's features (AdamW at ``lr``), the parts' heads averaged by records."""

    rounds: int = 0
    epochs: int = 1
    lr: float = 1e-2
    batch_size: int = 32


def probe_first(model: LoRAModel, parts: Mapping[str, Dataset], probe: ProbeFirst, *, seed: int) -> dict[str, Any]:
    """Set ``model``'s head to a federated linear probe of ``parts``: every round each part fits
    the head from the current global one on its own features, and the global head becomes the
    mean of theirs weighted by their records (exactly; the federation's rounds use the
    coordinator's integer weights). One part: a probe of that
    part alone with the same number of epochs. The adapter is untouched, so each part's features
    are computed once."""
    t0 = time.perf_counter()
    names = sorted(parts)
    feats = {s: head_features(model, parts[s]) for s in names}
    total = sum(len(parts[s]) for s in names)
    for r in range(probe.rounds):
        fitted = [finetune_head(model, parts[s], epochs=probe.epochs, lr=probe.lr, batch_size=probe.batch_size,
                                seed=seed * 1000 + r * len(names) + i, features=feats[s]).head
                  for i, s in enumerate(names)]
        mean = {k: np.sum([len(parts[s]) * h[k].astype(np.float64) for s, h in zip(names, fitted)], axis=0) / total
                for k in fitted[0]}
        load_adapter_state(model, adapter_with_head(get_adapter_state(model), mean))
    return {"rounds": probe.rounds, "epochs": probe.epochs, "seconds": time.perf_counter() - t0}


def run_method(spec: LoRASpec, parts: Mapping[str, Dataset], settings: SimulationSettings, scorer: Scorer, *,
               eval_every: int | None, sites: list[str] | None, threads: int, label: str,
               probe: ProbeFirst | None = None) -> tuple[LoRAModel, dict]:
    """Train a fresh model as a federation of ``parts`` (one part: a site alone or the pooled
    data), after a linear probe of the same parts if ``probe`` has rounds; score it after the
    probe, after every ``eval_every`` rounds and at the end."""
    model = build_model(spec)
    curve: list[dict[str, Any]] = []
    probed: dict[str, Any] | None = None
    if probe is not None and probe.rounds:
        probed = probe_first(model, parts, probe, seed=settings.seed)
        scores = scorer.score(model, scorer.features(model), sites=sites)
        curve.append({"round": 0, "epochs": 0.0, "probe": True, **scores})
        _say(f"  {label}: linear probe ({probe.rounds} x {probe.epochs} head epochs): global accuracy "
             f"{scores['global']['accuracy']:.4f}, AUC {scores['global']['roc_auc']:.4f}")

    def on_round(number: int, m: LoRAModel) -> None:
        if number == settings.rounds or (eval_every and number % eval_every == 0):
            scores = scorer.score(m, scorer.features(m), sites=sites)
            curve.append({"round": number, "epochs": number * settings.local_epochs, **scores})
            _say(f"  {label}: round {number}/{settings.rounds}: global accuracy {scores['global']['accuracy']:.4f}, "
                 f"AUC {scores['global']['roc_auc']:.4f}")

    t0 = time.perf_counter()
    res = simulate_federation(model, parts, settings, on_round=on_round, num_threads=threads)
    return model, {"curve": curve, "final": {k: curve[-1][k] for k in ("global", "own")},
                   "train_seconds": res.train_seconds, "train_cpu_seconds": res.train_cpu_seconds,
                   "wall_seconds": time.perf_counter() - t0,
                   "weights": res.weights, "rounds": res.rounds, "probe_first": probed}


def personalize(model: LoRAModel, demo: DemoData, scorer: Scorer, a: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Each site's own head on the federation's adapter: own split and global split."""
    t0 = time.perf_counter()
    feats = scorer.features(model)
    own, glob, heads = {}, {}, {}
    for i, (site, part) in enumerate(sorted(demo.train_parts.items())):
        heads[site] = finetune_head(model, part, epochs=a.head_epochs, lr=a.head_lr, prox=a.prox,
                                    batch_size=a.head_batch_size, seed=seed * 100 + i).head
        scores = scorer.score(model, feats, head=heads[site], sites=[site])
        own[site], glob[site] = scores["own"][site], scores["global"]
    return {"final": {"own": own, "global_by_site": glob}, "seconds": time.perf_counter() - t0}


def held_out(demo: DemoData, fraction: float, seed: int) -> DemoData:
    """The sites' training parts without the validation share a client agent holds out
    (``client.data.validation_fraction``, split as :class:`~services.client_agent.trainer.LocalTrainer`
    splits the site's file), so that the in-process federation trains on the examples the
    services' clients train on."""
    if fraction <= 0:
        return demo
    parts = {}
    for site, part in demo.train_parts.items():
        plain = Dataset(texts=part.texts, labels=part.labels, label_names=part.label_names)  # a site file has no groups
        parts[site] = stratified_split(plain, test_fraction=fraction, seed=seed)[0] if len(plain) >= 20 else plain
    return dataclasses.replace(demo, train_parts=parts, train=Dataset.concat(list(parts.values())))


def run_seed(a: argparse.Namespace, seed: int) -> dict[str, Any]:
    """All methods for one seed."""
    demo = load_builtin(a.data, seed=seed, method=a.partition, n_sites=a.sites, max_train=a.max_train,
                        max_train_per_site=a.max_train_per_site, max_test=a.max_test, home_share=a.home_share,
                        concentration=a.concentration)
    demo = held_out(demo, a.validation_fraction, seed)
    spec = build_spec(a, len(demo.label_names), seed)
    scorer = Scorer(demo)
    sites = sorted(demo.train_parts)
    summary = demo.summary()
    out: dict[str, Any] = {"seed": seed, "sizes": summary["sites"], "test_sizes": summary["site_tests"],
                           "global_test": len(demo.test), "label_names": list(demo.label_names)}
    common = {"local_epochs": a.local_epochs, "learning_rate": a.lr, "lr_schedule": a.lr_schedule,
              "batch_size": a.batch_size, "seed": seed}
    pieces = max(1, round(a.epochs / a.local_epochs))
    single = SimulationSettings(rounds=pieces, bits=None, **common)
    probe = ProbeFirst(rounds=a.probe_rounds, epochs=a.probe_epochs, lr=a.probe_lr, batch_size=a.head_batch_size)
    if "federated" in a.runs:
        _say(f"seed {seed}: federation of {len(sites)} sites, {a.rounds} rounds x {a.local_epochs:g} epochs")
        fed = SimulationSettings(rounds=a.rounds, server_learning_rate=a.server_lr, clip=a.clip, bits=a.bits or None,
                                 **common)
        model, out["federated"] = run_method(spec, {s: demo.train_parts[s] for s in sites}, fed, scorer,
                                             eval_every=a.eval_every, sites=None, threads=a.threads, label="federated",
                                             probe=probe)
        out["personalized"] = personalize(model, demo, scorer, a, seed)
        del model
    if "centralized" in a.runs:
        _say(f"seed {seed}: centralized, {len(demo.train)} records, {pieces * a.local_epochs:g} epochs")
        _, out["centralized"] = run_method(spec, {"pooled": demo.train}, single, scorer, eval_every=a.eval_every,
                                           sites=None, threads=a.threads, label="centralized", probe=probe)
    if "alone" in a.runs:
        out["alone"] = {}
        for site in sites:
            _say(f"seed {seed}: {site} alone, {len(demo.train_parts[site])} records")
            _, out["alone"][site] = run_method(spec, {site: demo.train_parts[site]}, single, scorer,
                                               eval_every=a.eval_every, sites=[site], threads=a.threads,
                                               label=f"{site} alone", probe=probe)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ffa-lora bench sites", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="hospital", choices=list(BUILTIN_NAMES))
    add_partition_arguments(p)
    p.add_argument("--home-share", type=float, default=0.8, help="icd10 specialty partition: the home site's share")
    p.add_argument("--concentration", type=float, default=None, help="icd10 specialty partition: Dirichlet spread")
    p.add_argument("--max-train", type=int, default=None, help="keep at most this many training records (stratified)")
    p.add_argument("--max-train-per-site", type=int, default=None)
    p.add_argument("--max-test", type=int, default=None)
    p.add_argument("--validation-fraction", type=float, default=0.0,
                   help="each site leaves out this share of its data, as the demo's clients do for their "
                        "validation split (to compare with `ffa-lora demo`; default 0: all data trains)")
    p.add_argument("--model", default="demo", help="HF id or local path (default: the shipped MiniLM-L6)")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--strategy", default="ffa", choices=STRATEGIES)
    p.add_argument("--head", default="auto", choices=HEAD_CHOICES,
                   help="task head of every method (model.head): pooler (the checkpoint's [CLS] classifier), "
                        "mean_linear (zero-initialised linear layer on the L2-normalised mean-pooled features) "
                        "or auto (pooler: the bench trains without DP-SGD)")
    p.add_argument("--epochs", type=float, default=6.0, help="epochs of the sites alone and the centralized model")
    p.add_argument("--local-epochs", type=float, default=0.5, help="epochs per round (and per training piece)")
    p.add_argument("--rounds", type=int, default=None, help="federation rounds (default: epochs / local epochs)")
    p.add_argument("--lr", type=float, default=None, help="AdamW rate of every method (default: the strategy's)")
    p.add_argument("--server-lr", type=float, default=1.0)
    p.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--clip", type=float, default=0.5, help="the secure sum's per-coordinate range")
    p.add_argument("--bits", type=int, default=8, choices=[0, 8, 16], help="quantization bits (0: none)")
    p.add_argument("--probe-rounds", type=int, default=0,
                   help="linear probing first: rounds of head-only training on the frozen encoder's features "
                        "before the fine-tuning, for every method (a federation averages the sites' heads; "
                        "default 0: none)")
    p.add_argument("--probe-epochs", type=int, default=1, help="linear probing first: head epochs per round")
    p.add_argument("--probe-lr", type=float, default=1e-2, help="linear probing first: AdamW rate of the head")
    p.add_argument("--head-epochs", type=int, default=20, help="personalized heads: epochs on cached features")
    p.add_argument("--head-lr", type=float, default=1e-2)
    p.add_argument("--head-batch-size", type=int, default=32)
    p.add_argument("--prox", type=float, default=1.0, help="personalized heads: weight of the pull to the global head")
    p.add_argument("--runs", default=",".join(METHODS),
                   help="comma-separated methods to run (personalized comes with federated)")
    p.add_argument("--eval-every", type=int, default=None, help="score after every this many rounds/pieces")
    p.add_argument("--seeds", default=DEFAULT_SEEDS, help=f"comma-separated seeds (default {DEFAULT_SEEDS})")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    p.add_argument("--plot", type=Path, default=None, help="PNG of the per-site AUCs (default: next to --out)")
    p.add_argument("--combine", type=Path, nargs="+", default=None, metavar="REPORT",
                   help="train nothing: merge the per-seed runs of earlier --out reports (e.g. methods run "
                        "separately) into one report")
    p.add_argument("--json", action="store_true", help="(always JSON; accepted for symmetry)")
    a = p.parse_args(argv)
    check_sites(p, a.partition, a.sites)
    a.seeds = parse_seeds(p, a.seeds)
    a.runs = [r.strip() for r in a.runs.split(",") if r.strip()]
    if not a.runs or set(a.runs) - set(METHODS):
        p.error(f"--runs: choose from {','.join(METHODS)} (got {','.join(a.runs)})")
    if not a.local_epochs > 0 or not a.epochs > 0:
        p.error("--epochs and --local-epochs must be positive")
    if a.rounds is None:
        a.rounds = max(1, round(a.epochs / a.local_epochs))
    if a.lr is None:
        a.lr = STRATEGY_LR[a.strategy]
    a.head = resolved_head(a.head)
    if a.probe_rounds < 0 or a.probe_epochs < 1 or not a.probe_lr > 0:
        p.error(f"--probe-rounds must be >= 0, --probe-epochs >= 1 and --probe-lr > 0 "
                f"(got {a.probe_rounds}, {a.probe_epochs}, {a.probe_lr})")
    if a.eval_every is not None and a.eval_every < 1:
        p.error(f"--eval-every must be at least 1, got {a.eval_every}")
    return a


def combined(paths: list[Path]) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    """Runs, settings and wall time of earlier reports (``--combine``)."""
    reports = [json.loads(p.read_text()) for p in paths]
    first = reports[0]["settings"]
    for p, rep in zip(paths, reports):
        if (rep["data"], rep["partition"]) != (reports[0]["data"], reports[0]["partition"]):
            raise ConfigError(f"{p}: another data set or partition than {paths[0]}; combine like with like")
    settings = {"data": first["data"], "partition": first["partition"], "combined_from": [str(p) for p in paths],
                "sources": [rep["settings"] for rep in reports]}
    try:
        runs = combine_runs(reports)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return runs, settings, float(sum(rep.get("wall_seconds") or 0.0 for rep in reports))


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    t0 = time.time()
    torch.set_num_threads(a.threads)
    try:
        if a.combine:
            runs, settings, wall = combined(a.combine)
        else:
            runs = [run_seed(a, seed) for seed in a.seeds]
            settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()
                        if k not in ("json", "combine")}
            wall = time.time() - t0
    except ConfigError as exc:
        print(f"ffa-lora bench sites: {exc}", file=sys.stderr)
        return 2
    report = summarize(runs, settings=settings, wall_seconds=wall)
    plot = a.plot or (a.out.with_suffix(".png") if a.out is not None else None)
    if plot is not None:
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot_sites(report, plot)
        report["plot"] = str(plot)
    text = dumps(report, indent=2)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    print(text)
    return 0

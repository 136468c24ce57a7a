"""``ffa-lora privacy plan CONFIG`` and ``ffa-lora privacy sweep``.

``plan`` computes, before any training, for a coordinator (or federation) YAML file: with
client-level DP the per-round epsilon, the noise per round, its sensitivity and the total; with
sample-level DP-SGD the noise multiplier, the steps and the epsilon of every site over the whole
federation. ``sweep`` runs the demo federation at
several budgets for ``ffa`` and ``fedavg`` and writes a utility-versus-epsilon table and plot.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from ffa_lora.crypto.weights import STALENESS_SCALE
from ffa_lora.data.builtin import load_builtin
from ffa_lora.errors import ConfigError, FFALoraError
from ffa_lora.lora.spec import DPSGD_OPTIMIZERS, STRATEGIES
from ffa_lora.privacy.dp_sgd import epsilon_after_steps, plan_dp_sgd
from ffa_lora_tools.audit_cli import audit_builtin_run
from ffa_lora_tools.demo import STRATEGY_LR, DemoSettings, demo_client_id, run_demo, settings_dict
from ffa_lora_tools.dp_recipe import probe_reference
from ffa_lora_tools.jsonsafe import dumps
from services.cloud_coordinator.adapter_ops import LoraAdapterOps, lora_spec
from services.cloud_coordinator.privacy import AggregatePrivacy
from services.common import domain as d
from services.common.config import DPSGDConfig, FederationConfig, parse_config, parse_federation

#: records per forward/backward pass of the sweep's DP-SGD rows (memory, not the result)
SWEEP_PHYSICAL_BATCH = 64
#: the DP recipe's adapter (docs/experiments/dp-recipe.md): rank, alpha (scaling 2), target
#: modules and epochs through the model per adapter round; the sweep's DP rows use them
DP_RANK, DP_ALPHA, DP_TARGETS, DP_LOCAL_EPOCHS = 1, 2.0, ("value",), 1.0


def federation_from_file(path: Path) -> FederationConfig:
    """The federation block of a coordinator (or bare federation) YAML file."""
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
        return cfg.coordinator.federation
    return parse_federation(doc, source=str(path))


def plan_from_file(
    path: Path, *, sites: dict[str, int] | None = None, validation_fraction: float = 0.1
) -> dict[str, Any]:
    """The privacy plan of a federation before training: client-level DP on the aggregate
    (per-round ε and noise) and/or sample-level DP-SGD (σ, steps and ε of every site over all
    rounds; ``sites`` maps a site to its number of records)."""
    fed = federation_from_file(path)
    if fed.privacy.mode == "off" and not fed.privacy.dpsgd.enabled:
        raise ConfigError(
            f"{path}: federation.privacy.mode is off and privacy.dpsgd is not enabled; set a mode "
            "(central or distributed) or enable dpsgd to plan a budget"
        )
    plan: dict[str, Any] = {"mode": fed.privacy.mode, "delta": fed.privacy.delta}
    if fed.privacy.mode != "off":
        plan["client_level"] = client_level_plan(fed)
    if fed.privacy.dpsgd.enabled:
        plan["dpsgd"] = dpsgd_plan(fed, sites, validation_fraction=validation_fraction)
    return plan


def client_level_plan(fed: FederationConfig) -> dict[str, Any]:
    """Per-round ε and noise multiplier of the aggregate's noise, and its sensitivity."""
    engine = AggregatePrivacy(fed)
    plan = engine.plan.to_dict()
    plan.update(mode=fed.privacy.mode, norm_clip=fed.privacy.norm_clip)
    weight = STALENESS_SCALE if fed.rounds.mode == "async" else 1
    plan["max_applied_weight"] = weight
    try:
        ops = LoraAdapterOps(lora_spec(fed), labels=fed.labels)
        dimension = max(
            ops.num_values(ops.phase(i), ops.spec.r_max) for i in range(fed.rounds.max_rounds)
        )
        noise = engine.plan_round(
            0,
            [
                d.Assignment(f"c{i}", ops.spec.r_max, 1, dimension)
                for i in range(fed.rounds.min_clients)
            ],
            dimension=dimension,
            adapter_version=0,
        )
        plan.update(
            values_per_update=dimension,
            rounding_slack=noise.rounding_slack,
            sensitivity=noise.sensitivity,
            quantization_range=noise.quant_range,
        )
        for r in plan["rounds"]:
            r["noise_scale"] = r["noise_multiplier"] * noise.sensitivity
    except FFALoraError as exc:  # the model cannot be read here: the table without absolute scales
        plan["note_model"] = f"model not available ({exc}); noise scales not computed"
    plan["note"] = (
        "noise is on the weighted sum, sensitivity = max applied weight x (norm_clip + rounding "
        "slack); every client weighs 1 under client-level DP and async edges scale a fresh update "
        f"by {STALENESS_SCALE}; the noised sum is divided by a public reference weight"
    )
    return plan


def dpsgd_plan(
    fed: FederationConfig, sites: dict[str, int] | None, *, validation_fraction: float = 0.1
) -> dict[str, Any]:
    """σ, steps and ε of every site after all rounds of sample-level DP-SGD.

    A site trains on its records less the validation share, with Poisson batches of expected
    size ``dpsgd.expected_batch_size`` (sample rate batch / records): every round
    ``head_epochs`` of head-only steps, then (after the ``probe_rounds``) ``local_epochs`` of
    steps through the model, :func:`ffa_lora.privacy.dp_sgd.steps_per_round` each, composed
    with RDP at ``privacy.delta`` as the clients' accountants do. Each site row gives the ε the
    configured noise multiplier spends, and the noise multiplier
    :func:`ffa_lora.privacy.dp_sgd.plan_dp_sgd` calibrates for the budget ``privacy.epsilon``.
    """
    dp, tr = fed.privacy.dpsgd, fed.training
    batch = dp.expected_batch_size or tr.batch_size
    head_epochs = dp.head_epochs if fed.head() == "mean_linear" else 0.0
    out: dict[str, Any] = {
        "noise_multiplier": dp.noise_multiplier,
        "max_grad_norm": dp.max_grad_norm,
        "head_max_grad_norm": dp.head_max_grad_norm,
        "expected_batch_size": batch,
        "local_epochs": tr.local_epochs,
        "head_epochs": head_epochs,
        "probe_rounds": fed.dpsgd_probe_rounds(),
        "final_head_rounds": fed.dpsgd_final_head_rounds(),
        "rounds": fed.rounds.max_rounds,
        "delta": fed.privacy.delta,
        "epsilon_budget": fed.privacy.epsilon,
        "accountant": "rdp",
        "sites": [],
    }
    if not sites:
        out["note"] = (
            "give --sites NAME=RECORDS,... (or --sites demo) for steps and epsilon per site"
        )
        return out
    records = training_records(sites, validation_fraction=validation_fraction)
    calibrated = plan_dp_sgd(
        records, epsilon=fed.privacy.epsilon, delta=fed.privacy.delta,
        expected_batch_size=batch, local_epochs=tr.local_epochs,
        rounds=fed.rounds.max_rounds, head_epochs=head_epochs,
        probe_rounds=fed.dpsgd_probe_rounds(),
    )
    for name, n in records.items():
        site = calibrated.site(name)
        sigma = dp.noise_multipliers.get(name, dp.noise_multiplier)
        out["sites"].append(
            {
                "site": name,
                "records": sites[name],
                "training_records": n,
                "sample_rate": site.sample_rate,
                "steps_per_round": site.steps_per_round,
                "head_steps_per_round": site.head_steps_per_round,
                "steps": site.steps,
                "noise_multiplier": sigma,
                "epsilon": epsilon_after_steps(
                    noise_multiplier=sigma, sample_rate=site.sample_rate,
                    steps=site.steps, delta=fed.privacy.delta,
                ),
                "noise_multiplier_for_budget": site.noise_multiplier,
            }
        )
    configured = {s["site"]: s["noise_multiplier"] for s in out["sites"]}
    out["secure_sum_clip"] = fed.secure_sum.clip
    if dp.optimizer == "sgd":  # adamw rescales every coordinate, noise included: no such bound
        std = calibrated.update_noise_std(**_recipe_rates(dp, training_lr=tr.learning_rate),
                                          noise_multipliers=configured)
        out["update_noise_std"] = std
        out["quantization_range_needed"] = QUANT_MARGIN * std
    if "update_noise_std" in out and fed.secure_sum.clip < QUANT_MARGIN * std:
        out["warning"] = (
            f"secure_sum.clip {fed.secure_sum.clip:g} is below {QUANT_MARGIN:g} x the DP noise a "
            f"round adds to each value of an update (std up to {std:.3g}): the quantizer clips the "
            f"noised updates and their signal with them; set secure_sum.clip >= "
            f"{clip_for_noise(std):g} (and bits: 16 to keep the rounding fine)")
    out["epsilon_max"] = max(s["epsilon"] for s in out["sites"])
    out["noise_multiplier_for_budget"] = max(s["noise_multiplier_for_budget"] for s in out["sites"])
    out["noise_multipliers_for_budget"] = {s["site"]: s["noise_multiplier_for_budget"] for s in out["sites"]}
    return out


#: the secure sum's quantization range holds this many standard deviations of the DP noise
QUANT_MARGIN = 4.0


def _recipe_rates(dp: DPSGDConfig, *, training_lr: float) -> dict[str, float]:
    """The DP-SGD rates, clips and momentum the clients train with (defaults resolved;
    ``training_lr``: the rate without a DP-SGD one)."""
    lr = dp.learning_rate or training_lr
    return {"learning_rate": lr, "head_learning_rate": dp.head_learning_rate or lr,
            "max_grad_norm": dp.max_grad_norm,
            "head_max_grad_norm": dp.head_max_grad_norm or dp.max_grad_norm,
            "momentum": dp.momentum}


def clip_for_noise(std: float) -> float:
    """The quantization range (``secure_sum.clip``, rounded up to 0.1) that holds
    :data:`QUANT_MARGIN` standard deviations of a round's DP noise."""
    return math.ceil(QUANT_MARGIN * std * 10) / 10


def training_records(sites: Mapping[str, int], *, validation_fraction: float) -> dict[str, int]:
    """The records a site trains on: its records less the validation share the clients hold
    out (a site under 20 records holds none out)."""
    return {name: max(1, int(n * (1 - validation_fraction))) if n >= 20 else n
            for name, n in sites.items()}


def parse_sites(text: str | None) -> dict[str, int] | None:
    """``NAME=RECORDS,...`` or ``demo`` (the built-in demo's sites)."""
    if not text:
        return None
    if text.strip() == "demo":
        base = DemoSettings()
        demo = load_builtin(base.data, seed=base.seed,
                            method=base.partition)  # type: ignore[arg-type]
        return {demo_client_id(name): len(part) for name, part in demo.train_parts.items()}
    sites: dict[str, int] = {}
    for item in text.split(","):
        name, sep, count = item.partition("=")
        if not sep or not name.strip() or not count.strip().isdigit() or int(count) < 1:
            raise ConfigError(f"--sites: expected NAME=RECORDS,... with RECORDS >= 1, got {item!r}")
        sites[name.strip()] = int(count)
    return sites


def print_plan(plan: dict[str, Any]) -> None:
    console = Console(stderr=False, width=None if sys.stdout.isatty() else 120)  # no wrapping in logs
    cl = plan.get("client_level")
    if cl is not None:
        t = Table(
            title=f"{cl['mechanism']} {cl['mode']} DP on the aggregate: budget "
            f"eps={cl['epsilon_budget']:g}, delta={cl['delta']:g}, {cl['schedule']} schedule"
        )
        for col in (
            "round",
            "epsilon_t",
            "noise multiplier",
            "noise scale (sum)",
            "cumulative eps",
        ):
            t.add_column(col, justify="right")
        for r in cl["rounds"]:
            t.add_row(
                str(r["round"] + 1),
                f"{r['epsilon']:.4f}",
                f"{r['noise_multiplier']:.4f}",
                f"{r['noise_scale']:.4g}" if r.get("noise_scale") is not None else "-",
                f"{r['cumulative_epsilon']:.4f}",
            )
        console.print(t)
        print(f"total epsilon {cl['epsilon_total']:.4f} (cross-check {cl['cross_check']})")
        if "sensitivity" in cl:
            print(
                f"sensitivity {cl['sensitivity']:.4g} = weight {cl['max_applied_weight']} x "
                f"(norm_clip {cl['norm_clip']:g} + rounding slack {cl['rounding_slack']:.4g} over "
                f"{cl['values_per_update']} values, quantization range "
                f"+-{cl['quantization_range']:.4g})"
            )
    dp = plan.get("dpsgd")
    if dp is not None:
        t = Table(
            title=f"sample-level DP-SGD: noise multiplier {dp['noise_multiplier']:.4g}, clip "
            f"{dp['max_grad_norm']:g}, expected batch {dp['expected_batch_size']}, "
            f"{dp['rounds']} rounds ({dp['probe_rounds']} head-only, the last {dp['final_head_rounds']} "
            f"of them after the adapter rounds) x {dp['head_epochs']:g} "
            f"head + {dp['local_epochs']:g} model epochs, delta={dp['delta']:g}"
        )
        t.add_column("site", no_wrap=True)
        for col in ("records", "sample rate", "steps/round", "steps", "sigma", "epsilon",
                    f"sigma for eps={dp['epsilon_budget']:g}"):
            t.add_column(col, justify="right")
        for s in dp["sites"]:
            t.add_row(
                s["site"],
                str(s["records"]),
                f"{s['sample_rate']:.4f}",
                str(s["steps_per_round"]),
                str(s["steps"]),
                f"{s['noise_multiplier']:.4f}",
                f"{s['epsilon']:.4f}",
                f"{s['noise_multiplier_for_budget']:.4f}",
            )
        console.print(t)
        if dp["sites"]:
            print(f"accountant {dp['accountant']}; noise multiplier "
                  f"{dp['noise_multiplier_for_budget']:.4f} keeps every site within "
                  f"privacy.epsilon = {dp['epsilon_budget']:g}; each site spends exactly that with "
                  "its own (the sites are named by client id):")
            mapping = ", ".join(f"{k}: {v:.4f}" for k, v in dp["noise_multipliers_for_budget"].items())
            print(f"  privacy.dpsgd.noise_multipliers: {{{mapping}}}")
        if "warning" in dp:
            print(f"warning: {dp['warning']}")
        if "note" in dp:
            print(dp["note"])


def dpsgd_noise_for_budget(*, epsilon: float, delta: float, sites: Mapping[str, int], batch_size: int,
                           local_epochs: float, rounds: int, validation_fraction: float = 0.1,
                           head_epochs: float = 0.0, probe_rounds: int = 0,
                           rates: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The DP-SGD noise multiplier of every site (``{client id: records}``) that spends
    exactly ``epsilon`` after all rounds.

    A larger site samples a smaller share of its records per step and reaches the budget with
    less noise: ``noise_multipliers`` gives each its own σ (the config's
    ``privacy.dpsgd.noise_multipliers``); ``noise_multiplier`` is the largest, the smallest
    site's, which keeps any site within budget. Steps and accountant are the clients'
    (:func:`ffa_lora.privacy.dp_sgd.plan_dp_sgd`). With the clients' SGD ``rates``
    (:func:`_recipe_rates`), also ``quantization_range``: the ``secure_sum.clip`` that holds
    the noise of a round's update (:meth:`~ffa_lora.privacy.dp_sgd.DPSGDPlan.update_noise_std`).
    """
    plan = plan_dp_sgd(training_records(sites, validation_fraction=validation_fraction),
                       epsilon=epsilon, delta=delta, expected_batch_size=batch_size,
                       local_epochs=local_epochs, rounds=rounds, head_epochs=head_epochs,
                       probe_rounds=probe_rounds)
    per_site = {s.site: s for s in plan.sites}
    smallest = max(per_site.values(), key=lambda s: s.noise_multiplier)
    out = {"noise_multiplier": smallest.noise_multiplier,
           "noise_multipliers": {name: s.noise_multiplier for name, s in per_site.items()},
           "sample_rate": smallest.sample_rate, "steps": float(smallest.steps)}
    if rates is not None:
        std = plan.update_noise_std(**rates)
        out["quantization_range"] = max(DemoSettings().clip, clip_for_noise(std))
    return out


def sweep(*, budgets: list[float], strategies: list[str], rounds: int, max_train_per_site: int | None,
          max_test: int | None, key_bits: int, mechanism: str, norm_clip: float, out_dir: Path,
          level: str = "sample", max_grad_norm: float = 1.0, delta: float = 1e-5,
          local_epochs: float | None = None, resume: bool = False, dp_batch_size: int | None = None,
          dp_optimizer: str | None = None, dp_lr: float | None = None,
          dp_head_lr: float | None = None, dp_final_head_rounds: int | None = None, probe: bool = False,
          audit_site: str | None = None) -> dict[str, Any]:
    """Run the demo at each budget for each strategy.

    ``level="sample"``: Opacus DP-SGD at every client, noise calibrated so that the most exposed
    site reaches ``epsilon`` after all rounds (the FFA-LoRA paper's setting); the row records the
    largest ε any client reported. ``level="client"``: client-level DP on the aggregate
    (central Gaussian/Laplace noise on the decrypted sum, ``norm_clip`` per client update).
    ``resume``: reuse a run whose ``summary.json`` in ``out_dir`` was made with identical settings.
    DP rows run the DP-SGD recipe of ``privacy.dpsgd``'s defaults (``mean_linear`` head, head
    steps every round, SGD); ``dp_*`` override its expected batch, optimizer, adapter rate,
    head rate and head-only rounds placed after the adapter rounds. ``probe``: also a ``probe``
    row per budget, the DP linear probe on the frozen encoder with the same recipe on the head
    alone (:func:`ffa_lora_tools.dp_recipe.probe_reference`),
    so every sweep shows what the adapter adds under DP. ``audit_site``: after each run, a
    membership-inference audit (loss attack) of its exported adapter with that site's training
    records as members (:func:`ffa_lora_tools.audit_cli.audit_builtin_run`); its AUC and TPR at
    1 % FPR go on the run's row. The result's ``budgets`` has one row per budget (see
    :func:`budget_rows`).
    """
    base = DemoSettings()
    recipe = DPSGDConfig()
    epochs = base.local_epochs if local_epochs is None else local_epochs
    dp_epochs = DP_LOCAL_EPOCHS if local_epochs is None else local_epochs
    dp_batch = dp_batch_size or recipe.expected_batch_size or base.batch_size
    probe_rounds = 0 if recipe.adapter_rounds is None else max(0, rounds - recipe.adapter_rounds)
    site_records: dict[str, int] = {}
    if level == "sample":
        demo = load_builtin(base.data, seed=base.seed, method=base.partition,  # type: ignore[arg-type]
                            max_train_per_site=max_train_per_site, max_test=max_test)
        site_records = {demo_client_id(name): len(p) for name, p in demo.train_parts.items()}
    rows = []
    for strategy in strategies:
        for eps in budgets:
            calib: dict[str, Any] = {}
            if math.isinf(eps):
                privacy: dict[str, Any] = {"mode": "off"}
            elif level == "client":
                privacy = {"mode": "central", "mechanism": mechanism, "epsilon": eps, "norm_clip": norm_clip}
            else:
                overrides = {k: v for k, v in {"optimizer": dp_optimizer, "learning_rate": dp_lr,
                                               "head_learning_rate": dp_head_lr,
                                               "final_head_rounds": dp_final_head_rounds}.items()
                             if v is not None}
                run_dp = DPSGDConfig.model_validate({"max_grad_norm": max_grad_norm, **overrides})
                rates = _recipe_rates(run_dp, training_lr=STRATEGY_LR[strategy])
                calib = dpsgd_noise_for_budget(epsilon=eps, delta=delta, sites=site_records,
                                               batch_size=dp_batch, local_epochs=dp_epochs, rounds=rounds,
                                               head_epochs=recipe.head_epochs, probe_rounds=probe_rounds,
                                               rates=rates if run_dp.optimizer == "sgd" else None)
                privacy = {"mode": "off", "delta": delta,
                           "dpsgd": {"enabled": True, "noise_multiplier": calib["noise_multiplier"],
                                     "noise_multipliers": calib["noise_multipliers"],
                                     "max_grad_norm": max_grad_norm, "expected_batch_size": dp_batch,
                                     "physical_batch_size": SWEEP_PHYSICAL_BATCH, **overrides}}
            lr = STRATEGY_LR[strategy]
            batch = base.batch_size
            # DP rows: the recipe's small adapter, and a quantization range that holds the noise
            adapter = ({"rank": DP_RANK, "alpha": DP_ALPHA, "target_modules": DP_TARGETS,
                        "local_epochs": dp_epochs, "bits": 16,
                        "clip": calib.get("quantization_range", base.clip)}
                       if calib else {"local_epochs": epochs})
            settings = DemoSettings(name=f"sweep-{level}-{strategy}-eps{eps:g}", out_dir=out_dir, rounds=rounds,
                                    batch_size=batch, **adapter,  # type: ignore[arg-type]
                                    strategy=strategy, learning_rate=lr, privacy=privacy,
                                    max_train_per_site=max_train_per_site, max_test=max_test, key_bits=key_bits,
                                    patience=rounds, quiet=True)
            extra = (" (DP-SGD noise multipliers "
                     + ", ".join(f"{c} {z:.3f}" for c, z in calib["noise_multipliers"].items()) + ")"
                     if calib else "")
            summ = _finished_run(settings) if resume else None
            if summ is None:
                print(f"sweep: {strategy} at epsilon={eps:g}{extra} ...", file=sys.stderr, flush=True)
                summ = run_demo(settings)
            spent = summ["dpsgd_epsilon_max"] if level == "sample" else summ["epsilon_spent"]
            rows.append({"strategy": strategy, "epsilon": eps, "level": level, "accuracy": summ["final_accuracy"],
                         "macro_f1": summ["final_macro_f1"], "roc_auc": summ.get("final_roc_auc"),
                         "epsilon_spent": spent, "rounds": summ["rounds"],
                         "batch_size": batch,
                         **({"dpsgd_noise_multipliers": calib["noise_multipliers"]} if calib else {}),
                         **_audit(settings, site=audit_site, base=base,
                                  max_train_per_site=max_train_per_site, max_test=max_test)})
            print(f"sweep: {strategy} at epsilon={eps:g}: accuracy {summ['final_accuracy']:.4f}, "
                  f"epsilon spent {spent:.3f}", file=sys.stderr, flush=True)
    if probe and level == "sample":
        strategies = [*strategies, "probe"]
        for eps in budgets:
            ref = probe_reference(eps, delta=delta, rounds=rounds, expected_batch_size=dp_batch,
                                  head_epochs=recipe.head_epochs,
                                  head_learning_rate=recipe.head_learning_rate or 8.0,
                                  momentum=recipe.momentum,
                                  max_grad_norm=recipe.head_max_grad_norm or max_grad_norm,
                                  max_train_per_site=max_train_per_site, max_test=max_test,
                                  cache=out_dir / "probe-cache")
            rows.append({"strategy": "probe", "epsilon": eps, "level": level,
                         "accuracy": ref["accuracy"], "macro_f1": ref["macro_f1"],
                         "epsilon_spent": ref["epsilon_spent"], "rounds": rounds,
                         "batch_size": dp_batch})
            print(f"sweep: DP linear probe at epsilon={eps:g}: accuracy {ref['accuracy']:.4f}",
                  file=sys.stderr, flush=True)
        for row in rows:
            row["probe_accuracy"] = next(r["accuracy"] for r in rows
                                         if r["strategy"] == "probe" and r["epsilon"] == row["epsilon"])
    out_dir.mkdir(parents=True, exist_ok=True)
    table = ["| epsilon | " + " | ".join(f"{s} accuracy | {s} macro-F1 | {s} ROC-AUC | {s} ε spent"
                                         for s in strategies) + " |",
             "|---|" + "---|---|---|---|" * len(strategies)]
    for eps in budgets:
        cells = []
        for s in strategies:
            r = next(x for x in rows if x["strategy"] == s and x["epsilon"] == eps)
            auc = "-" if r.get("roc_auc") is None else f"{r['roc_auc']:.4f}"
            cells.append(f"{r['accuracy']:.4f} | {r['macro_f1']:.4f} | {auc} | {r['epsilon_spent']:.3f}")
        table.append(f"| {'inf' if math.isinf(eps) else f'{eps:g}'} | " + " | ".join(cells) + " |")
    (out_dir / "privacy_sweep.md").write_text("\n".join(table) + "\n")
    _plot(rows, budgets, strategies, out_dir / "privacy_sweep.png")
    return {"rows": rows, "budgets": budget_rows(rows, budgets),
            "table": str(out_dir / "privacy_sweep.md"), "plot": str(out_dir / "privacy_sweep.png")}


def _audit(settings: Any, *, site: str | None, base: DemoSettings, max_train_per_site: int | None,
           max_test: int | None) -> dict[str, Any]:
    """The membership-inference fields of one run's row (empty without ``site``)."""
    if site is None:
        return {}
    adapter = Path(settings.out_dir) / settings.name / "adapter"
    print(f"sweep: auditing {adapter} (members: {site}'s training records)", file=sys.stderr, flush=True)
    # The run's head (model.head auto: mean_linear under DP-SGD), for exports made before they
    # recorded it; a newer export records the same.
    head = "mean_linear" if settings.privacy.get("dpsgd", {}).get("enabled") else "pooler"
    report = audit_builtin_run(adapter, data=base.data, site=site, data_seed=base.seed, strategy=settings.strategy,
                               max_train_per_site=max_train_per_site, max_test=max_test, head=head)
    return {"mia_auc": report["mia_auc"], "mia_tpr_at_1pct_fpr": report["mia_tpr_at_1pct_fpr"],
            "mia_attack": "loss", "mia_site": site}


def budget_rows(rows: list[dict[str, Any]], budgets: list[float]) -> list[dict[str, Any]]:
    """One row per budget: ``epsilon_budget``, the largest ``epsilon_spent`` of its runs, each
    method's accuracy (``ffa_accuracy``, ``fedavg_accuracy``, ``alternating_accuracy``,
    ``probe_accuracy``; null where not run) and the audit of the recommended exact strategy's
    adapter (``mia_auc``, ``mia_tpr_at_1pct_fpr``; ffa's, else the first strategy's; null where
    not audited)."""
    out = []
    for eps in budgets:
        here = {r["strategy"]: r for r in rows if r["epsilon"] == eps}
        audited = here.get("ffa") or next((r for s, r in here.items() if s != "probe"), {})
        spent = [r["epsilon_spent"] for r in here.values() if r.get("epsilon_spent") is not None]
        out.append({
            "epsilon_budget": eps,
            "epsilon_spent": max(spent) if spent else None,
            **{f"{s}_accuracy": (here[s]["accuracy"] if s in here else None)
               for s in ("ffa", "fedavg", "alternating", "probe")},
            "mia_auc": audited.get("mia_auc"),
            "mia_tpr_at_1pct_fpr": audited.get("mia_tpr_at_1pct_fpr"),
            "mia_strategy": audited.get("strategy") if "mia_auc" in audited else None,
        })
    return out


def _finished_run(settings: Any) -> dict[str, Any] | None:
    """The summary of an earlier run with exactly these settings, if one finished."""
    path = Path(settings.out_dir) / settings.name / "summary.json"
    try:
        summ: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if summ.get("settings") != json.loads(json.dumps(settings_dict(settings))):
        return None
    print(f"sweep: reusing {path}", file=sys.stderr, flush=True)
    summ.setdefault("dpsgd_epsilon_max", max((r.get("dpsgd_epsilon_max", 0.0) for r in summ.get("per_round", [])),
                                             default=0.0))
    return summ


def _plot(rows: list[dict[str, Any]], budgets: list[float], strategies: list[str], path: Path) -> None:
    finite = [b for b in budgets if not math.isinf(b)]
    xs_inf = max(finite) * 2 if finite else 1.0
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for s in strategies:
        pts = sorted((xs_inf if math.isinf(r["epsilon"]) else r["epsilon"], r["accuracy"])
                      for r in rows if r["strategy"] == s)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=s)
    ax.set_xscale("log")
    ax.set_xlabel("total epsilon (rightmost point: no DP)")
    ax.set_ylabel("test accuracy")
    level = rows[0].get("level", "client") if rows else "client"
    ax.set_title("utility vs privacy budget (" + ("sample-level DP-SGD at each client)" if level == "sample"
                                                  else "client-level DP on the aggregate)"))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ffa-lora privacy", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    pl = sub.add_parser("plan", help="per-round and total epsilon of a config")
    pl.add_argument("config", type=Path)
    pl.add_argument(
        "--sites",
        default=None,
        help="DP-SGD: records per site, NAME=RECORDS,... or 'demo' (the built-in demo's sites)",
    )
    pl.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        help="DP-SGD: share of each site's records its client holds out "
        "(client.data.validation_fraction)",
    )
    pl.add_argument("--json", action="store_true")
    sw = sub.add_parser("sweep", help="accuracy at several budgets for ffa and fedavg")
    sw.add_argument("--budgets", default="inf,8,4,1")
    sw.add_argument("--strategies", default="ffa,fedavg")
    sw.add_argument("--rounds", type=int, default=6)
    sw.add_argument("--max-train-per-site", type=int, default=None)
    sw.add_argument("--max-test", type=int, default=None)
    sw.add_argument("--key-bits", type=int, default=2048)
    sw.add_argument("--mechanism", default="gaussian", choices=["gaussian", "laplace"])
    sw.add_argument("--level", default="sample", choices=["sample", "client"],
                    help="sample: DP-SGD at each client (FFA-LoRA paper); client: noise on the aggregate")
    sw.add_argument("--norm-clip", type=float, default=1.0, help="client level: per-client update bound")
    sw.add_argument("--max-grad-norm", type=float, default=1.0, help="sample level: per-sample gradient clip")
    sw.add_argument("--delta", type=float, default=1e-5)
    sw.add_argument("--local-epochs", type=float, default=None)
    sw.add_argument("--dp-batch-size", type=int, default=None,
                    help="sample level: DP-SGD's expected batch (default: the demo's); larger = less noise per step")
    sw.add_argument("--dp-optimizer", default=None, choices=list(DPSGD_OPTIMIZERS),
                    help="DP-SGD optimizer (default: privacy.dpsgd.optimizer's)")
    sw.add_argument("--dp-lr", type=float, default=None,
                    help="DP-SGD rate of the adapter (default: privacy.dpsgd.learning_rate's)")
    sw.add_argument("--dp-head-lr", type=float, default=None,
                    help="DP-SGD rate of the task head (default: privacy.dpsgd.head_learning_rate's)")
    sw.add_argument("--dp-final-head-rounds", type=int, default=None,
                    help="DP-SGD head-only rounds after the adapter rounds instead of before "
                         "(default: privacy.dpsgd.final_head_rounds')")
    sw.add_argument("--probe", action=argparse.BooleanOptionalAction, default=True,
                    help="sample level: add the DP linear probe's row at every budget")
    sw.add_argument("--audit-site", default=None,
                    help="after each run, a membership-inference audit (loss attack) of its adapter with "
                         "this site's training records as members, e.g. americanair; its AUC and TPR at "
                         "1%% FPR go on the rows (default: no audit)")
    sw.add_argument("--resume", action="store_true", help="reuse finished runs with identical settings in --out-dir")
    sw.add_argument("--out-dir", type=Path, default=Path("runs/privacy-sweep"))
    sw.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if a.cmd == "plan":
        plan = plan_from_file(a.config, sites=parse_sites(a.sites),
                              validation_fraction=a.validation_fraction)
        if a.json:
            print(dumps(plan, indent=2))
        else:
            print_plan(plan)
        return 0
    budgets = [math.inf if b.strip() in ("inf", "∞") else float(b) for b in a.budgets.split(",")]
    strategies = [s.strip() for s in a.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if not strategies or unknown:
        p.error(f"--strategies: give some of {', '.join(STRATEGIES)} separated by commas (got {a.strategies!r})")
    res = sweep(budgets=budgets, strategies=strategies, rounds=a.rounds,
                max_train_per_site=a.max_train_per_site, max_test=a.max_test, key_bits=a.key_bits,
                mechanism=a.mechanism, norm_clip=a.norm_clip, out_dir=a.out_dir, level=a.level,
                max_grad_norm=a.max_grad_norm, delta=a.delta, local_epochs=a.local_epochs, resume=a.resume,
                dp_batch_size=a.dp_batch_size, dp_optimizer=a.dp_optimizer, dp_lr=a.dp_lr, dp_head_lr=a.dp_head_lr,
                dp_final_head_rounds=a.dp_final_head_rounds, probe=a.probe, audit_site=a.audit_site)
    for row in [*res["rows"], *res["budgets"]]:  # strict JSON has no Infinity: "no DP" is written as "inf"
        for key in ("epsilon", "epsilon_spent", "epsilon_budget"):
            if isinstance(row.get(key), float) and math.isinf(row[key]):
                row[key] = "inf"
    print(dumps(res, indent=2))
    return 0

"""``ffa-lora audit ADAPTER_DIR``: membership-inference audit of an exported adapter.

    ffa-lora audit runs/bank-demo/adapter --data bank --site americanair --json
    ffa-lora audit DIR --members site.csv --nonmembers heldout.csv --reference-data public.csv

Members are the records one site trained on; non-members held-out records of the same
distribution (with ``--data``: the site's records in the fixed test split); reference models (LiRA, offline) train
on the other sites' records (or ``--reference-data``) the way the site trained: ``--strategy``,
``--rounds``, ``--local-epochs``, ``--lr`` default to the demo's. An adapter trained under
DP-SGD (``privacy.dpsgd``; ``python -m ffa_lora_tools.audit_target --epsilon E``) is audited
with ``--epsilon E``: its ``mean_linear`` head is loaded and the reference models train with
the same DP-SGD recipe, each calibrated to spend E at ``--delta``. ``--canaries FILE`` (written
when the canaries were planted) adds their exposure. Prints a summary, or the report as JSON
with ``--json``; writes a ROC plot next to the adapter unless ``--plot`` says elsewhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from ffa_lora.data.builtin import load_builtin
from ffa_lora.data.canaries import load_canaries
from ffa_lora.data.dataset import Dataset
from ffa_lora.data.loaders import load_table
from ffa_lora.errors import ConfigError, DataError
from ffa_lora.lora.state import peft_adapter_head
from ffa_lora.lora.steps import DPSGDOptions
from ffa_lora.privacy.audit_model import (
    DPTraining,
    DPTrainResult,
    load_adapter_model,
    round_trainer,
)
from ffa_lora.privacy.audit_report import run_audit
from ffa_lora_tools.demo import STRATEGY_LR, DemoSettings
from services.common.config import DPSGDConfig

#: The head each mode trains (``model.head: auto``): the DP-SGD recipe's, or the checkpoint's.
HEADS = ("pooler", "mean_linear")
#: ``--adapter-rounds``'s help, shared with ``audit_target``
ADAPTER_ROUNDS_HELP = ("with --epsilon: rounds that train the adapter; the others train the head alone, "
                       "before them and (privacy.dpsgd.final_head_rounds) after them "
                       "(default: privacy.dpsgd.adapter_rounds')")


def dp_args_problem(epsilon: float | None, *, delta: float, adapter_rounds: int | None) -> str | None:
    """What is wrong with the DP-SGD options ``--epsilon`` (None: no DP), ``--delta`` and
    ``--adapter-rounds`` (checked only with ``--epsilon``), or None when nothing is."""
    if epsilon is not None and (not isinstance(epsilon, (int, float)) or not epsilon > 0):
        return f"--epsilon: the DP budget must be > 0 (e.g. 8), got {epsilon!r}"
    if not 0 < delta < 1:
        return f"--delta must be in (0, 1), e.g. 1e-5, got {delta!r}"
    if epsilon is not None and adapter_rounds is not None and adapter_rounds < 1:
        return f"--adapter-rounds must be at least 1, got {adapter_rounds!r}"
    return None


def recipe_dp_training(epsilon: float, *, delta: float, rounds: int, adapter_rounds: int | None,
                       seed: int | None = None, final_head_rounds: int | None = None) -> DPTraining:
    """The DP-SGD recipe of ``privacy.dpsgd``'s defaults (what a client runs under
    ``privacy.dpsgd.enabled``) for one model trained alone: every model spends ``epsilon`` at
    ``delta``; ``adapter_rounds`` of ``rounds`` train the adapter (``None``: all), followed by
    ``final_head_rounds`` head-only rounds (default: the config's). ``seed``: tests only (fixes
    noise and sampling)."""
    problem = dp_args_problem(epsilon, delta=delta, adapter_rounds=adapter_rounds)
    if problem is not None:
        raise ConfigError(problem)
    c = DPSGDConfig()
    options = DPSGDOptions(noise_multiplier=0.0, max_grad_norm=c.max_grad_norm, delta=delta,
                           head_max_grad_norm=c.head_max_grad_norm, head_epochs=c.head_epochs,
                           adapter_only=c.adapter_only, expected_batch_size=c.expected_batch_size,
                           physical_batch_size=c.physical_batch_size, optimizer=c.optimizer,
                           learning_rate=c.learning_rate, head_learning_rate=c.head_learning_rate,
                           momentum=c.momentum)
    probe_rounds = 0 if adapter_rounds is None else max(0, rounds - adapter_rounds)
    final = c.final_head_rounds if final_head_rounds is None else final_head_rounds
    return DPTraining(epsilon=epsilon, options=options, probe_rounds=probe_rounds, seed=seed,
                      final_head_rounds=min(final, probe_rounds))


def build_parser() -> argparse.ArgumentParser:
    d = DemoSettings()
    p = argparse.ArgumentParser(prog="ffa-lora audit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("adapter", type=Path, help="directory of an exported PEFT adapter")
    src = p.add_argument_group("records")
    src.add_argument("--data", default=None, help="built-in data set (bank, hospital) the adapter was trained on")
    src.add_argument("--site", default=None, help="with --data: the site whose training records are the members")
    src.add_argument("--data-seed", type=int, default=d.seed,
                     help="with --data: the partition seed the training run used (default: the demo's)")
    src.add_argument("--max-train-per-site", type=int, default=None,
                     help="with --data: the cap on each site's training records the run used (default: none)")
    src.add_argument("--max-test", type=int, default=None,
                     help="with --data: the cap on the test records the run used (default: none)")
    src.add_argument("--nonmember-scope", choices=("site", "all"), default="site",
                     help="with --data: non-members are the site's held-out test records (default) or every "
                          "site's (more records, but a different distribution from the members)")
    src.add_argument("--members", type=Path, default=None, help="own data: CSV/TSV/JSONL of the trained-on records")
    src.add_argument("--nonmembers", type=Path, default=None, help="own data: held-out records, same distribution")
    src.add_argument("--reference-data", type=Path, default=None,
                     help="records the reference models train on (default with --data: the other sites' records)")
    src.add_argument("--labels", default=None,
                     help="own data: the class names in the head's order, comma-separated (default: sorted labels)")
    src.add_argument("--canaries", type=Path, default=None, help="canary JSON written when they were planted")
    src.add_argument("--max-records", type=int, default=None, help="at most this many members and non-members each")
    ref = p.add_argument_group("reference models (train like the audited site did)")
    ref.add_argument("--reference-models", type=int, default=4, help="0: the loss attack only (default 4)")
    ref.add_argument("--reference-size", type=int, default=None,
                     help="records per reference model (default: as many as the site's members)")
    ref.add_argument("--strategy", default=d.strategy, choices=sorted(STRATEGY_LR))
    ref.add_argument("--rounds", type=int, default=d.rounds)
    ref.add_argument("--local-epochs", type=float, default=d.local_epochs)
    ref.add_argument("--lr", type=float, default=None, help="default: the strategy's demo rate")
    ref.add_argument("--batch-size", type=int, default=d.batch_size)
    ref.add_argument("--seed", type=int, default=d.seed,
                     help="the federation seed (the initial adapter every model starts from)")
    dp = p.add_argument_group("DP-SGD (when the adapter was trained under privacy.dpsgd)")
    dp.add_argument("--epsilon", type=float, default=None,
                    help="the adapter's DP-SGD budget: reference models train with the DP-SGD "
                         "recipe (privacy.dpsgd's defaults), each spending it at --delta "
                         "(default: no DP)")
    dp.add_argument("--delta", type=float, default=1e-5, help="with --epsilon: delta (default 1e-5)")
    dp.add_argument("--adapter-rounds", type=int, default=DPSGDConfig().adapter_rounds,
                    help=ADAPTER_ROUNDS_HELP)
    mdl = p.add_argument_group("model and report")
    mdl.add_argument("--model", default=None, help="base model, when not where the adapter config says")
    mdl.add_argument("--max-length", type=int, default=64)
    mdl.add_argument("--head", choices=HEADS, default=None,
                     help="the task head the adapter was trained with (default: the one its "
                          "export recorded; for older exports mean_linear with --epsilon, as "
                          "model.head: auto, else pooler)")
    mdl.add_argument("--device", default="cpu")
    mdl.add_argument("--threads", type=int, default=None,
                     help="torch CPU threads (1 is fastest on a busy machine)")
    mdl.add_argument("--fpr", type=float, default=0.01, help="false-positive level of the reported TPR")
    mdl.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the 95 %% intervals")
    mdl.add_argument("--plot", type=Path, default=None, help="ROC plot (default: ADAPTER/../audit-roc.png)")
    mdl.add_argument("--json", action="store_true", help="print the report as JSON")
    mdl.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def _records(a: argparse.Namespace, label_names: tuple[str, ...] | None
             ) -> tuple[Dataset, Dataset, Dataset | None]:
    """(members, non-members, reference pool) from a built-in data set or files."""

    def table(path: Path, names: tuple[str, ...] | None) -> Dataset:
        return load_table(path, label_names=list(names) if names else None)

    if a.data is not None:
        demo = load_builtin(a.data, seed=a.data_seed, max_train_per_site=a.max_train_per_site,
                            max_test=a.max_test)
        if a.site not in demo.train_parts:
            raise ConfigError(f"--site: {a.site!r} is not a site of {a.data}; choose one of {sorted(demo.train_parts)}")
        members, nonmembers = demo.train_parts[a.site], demo.test
        if a.nonmember_scope == "site" and demo.test.groups is not None:
            # The site's own held-out records: the same distribution as its members, so the
            # attack measures membership, not which site a record comes from.
            nonmembers = demo.test.subset([i for i, g in enumerate(demo.test.groups) if g == a.site])
        others = [d for s, d in sorted(demo.train_parts.items()) if s != a.site]
        pool = (table(a.reference_data, demo.label_names) if a.reference_data
                else Dataset.concat(others) if others else None)
        return members, nonmembers, pool
    members = table(a.members, label_names)
    names = members.label_names
    nonmembers = table(a.nonmembers, names)
    pool = table(a.reference_data, names) if a.reference_data else None
    return members, nonmembers, pool


def _check(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if a.data is None and (a.members is None or a.nonmembers is None):
        p.error("give --data and --site (a built-in data set), or --members and --nonmembers (files)")
    if a.data is not None and (a.site is None or a.members is not None or a.nonmembers is not None):
        p.error("--data needs --site and takes no --members/--nonmembers")
    if a.reference_models == 1 or a.reference_models < 0:
        p.error("--reference-models: 0 (loss attack only) or at least 2 (LiRA fits a variance)")
    if a.data is None and a.reference_models > 0 and a.reference_data is None:
        p.error("with --members/--nonmembers, LiRA needs --reference-data (or --reference-models 0)")
    for name in ("rounds", "batch_size", "max_length", "bootstrap"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < a.fpr < 1:
        p.error(f"--fpr must be in (0, 1), e.g. 0.01, got {a.fpr}")
    problem = dp_args_problem(a.epsilon, delta=a.delta, adapter_rounds=a.adapter_rounds)
    if problem is not None:
        p.error(problem)


def run(a: argparse.Namespace) -> dict[str, Any]:
    """The audit the parsed arguments describe; returns the report."""

    def say(msg: str) -> None:
        if not a.quiet:
            print(f"audit: {msg}", file=sys.stderr, flush=True)

    if a.threads is not None:
        torch.set_num_threads(max(1, a.threads))
    say(f"loading the adapter {a.adapter}")
    head = a.head or peft_adapter_head(a.adapter) or ("mean_linear" if a.epsilon is not None else "pooler")
    model = load_adapter_model(a.adapter, model=a.model, max_length=a.max_length, seed=a.seed,
                               strategy=a.strategy, head=head, device=a.device)
    names = tuple(n.strip() for n in a.labels.split(",")) if a.labels else None
    members, nonmembers, pool = _records(a, names)
    if members.num_labels != model.spec.num_labels:
        raise DataError(f"the records have {members.num_labels} classes, the adapter {model.spec.num_labels}")
    canaries = load_canaries(a.canaries) if a.canaries is not None else None
    if canaries is not None and canaries.planted.label_names != members.label_names:
        raise DataError("the canary file's classes differ from the records'; was it written for this data?")
    lr = a.lr if a.lr is not None else STRATEGY_LR[a.strategy]
    dp = (recipe_dp_training(a.epsilon, delta=a.delta, rounds=a.rounds, adapter_rounds=a.adapter_rounds)
          if a.epsilon is not None else None)
    spent: list[DPTrainResult] = []
    trainer = round_trainer(model.spec, rounds=a.rounds, local_epochs=a.local_epochs, lr=lr,
                            batch_size=a.batch_size, device=a.device, dp=dp, on_dp_result=spent.append)
    plot = a.plot if a.plot is not None else a.adapter.resolve().parent / "audit-roc.png"
    report = run_audit(
        model, members=members, nonmembers=nonmembers, reference_pool=pool,
        reference_models=a.reference_models if pool is not None else 0, reference_size=a.reference_size,
        trainer=trainer, canaries=canaries, max_records=a.max_records, fpr=a.fpr, n_boot=a.bootstrap,
        seed=a.seed, plot_path=plot, progress=say,
    )
    report["adapter"] = str(a.adapter)
    report["reference_training"] = {"strategy": a.strategy, "rounds": a.rounds, "local_epochs": a.local_epochs,
                                    "lr": lr, "batch_size": a.batch_size, "seed": a.seed, "head": head}
    if dp is not None:
        report["reference_training"]["dpsgd"] = {
            "epsilon_budget": a.epsilon, "delta": a.delta, "probe_rounds": dp.probe_rounds,
            "final_head_rounds": dp.final_head_rounds,
            "models": [r.summary() for r in spent]}
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report in a few lines for a terminal."""
    pct = next(k for k in report if k.startswith("mia_tpr_at_") and k.endswith("_fpr"))
    level = pct[len("mia_tpr_at_"):-len("_fpr")].replace("pct", " %")
    counts = report["counts"]
    lines = [f"members {counts['members']}, non-members {counts['nonmembers']}, "
             + f"reference models {counts['reference_models']}"]
    for name, r in report["attacks"].items():
        tpr_key = next(k for k in r if k.startswith("tpr_at_") and not k.endswith("_ci"))
        lines.append(f"{name:>13}: AUC {r['auc']:.3f} [{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}], "
                     f"TPR at {level} FPR {r[tpr_key]:.3%} [{r[tpr_key + '_ci'][0]:.2%}, {r[tpr_key + '_ci'][1]:.2%}]")
    c = report.get("canaries")
    if c:
        lines.append(f"     canaries: {c['planted']} planted x{c.get('copies', '?')} vs {c['unseen']} unseen: "
                     f"exposure mean {c['exposure_mean']:.2f}, max {c['exposure_max']:.2f} "
                     f"(at most {c['exposure_max_possible']:.2f}; ~1.44 by chance), AUC {c['auc']:.3f}")
    if report.get("plot"):
        lines.append(f"ROC plot: {report['plot']}")
    return lines


def audit_builtin_run(adapter: Path, *, data: str, site: str, data_seed: int, strategy: str,
                      max_train_per_site: int | None = None, max_test: int | None = None,
                      reference_models: int = 0, bootstrap: int = 200, threads: int | None = 1,
                      plot: Path | None = None, head: str = "pooler") -> dict[str, Any]:
    """The audit of an adapter a demo or sweep run exported from built-in data: members are
    ``site``'s training records of the same partition, non-members its held-out test records.
    ``reference_models`` 0 runs the loss attack only (seconds instead of minutes); ``head`` the
    task head the run trained (``mean_linear`` under DP-SGD)."""
    argv = [str(adapter), "--data", data, "--site", site, "--data-seed", str(data_seed),
            "--strategy", strategy, "--reference-models", str(reference_models), "--head", head,
            "--bootstrap", str(bootstrap), "--quiet", "--json"]
    argv += ["--max-train-per-site", str(max_train_per_site)] if max_train_per_site is not None else []
    argv += ["--max-test", str(max_test)] if max_test is not None else []
    argv += ["--threads", str(threads)] if threads is not None else []
    argv += ["--plot", str(plot)] if plot is not None else []
    p = build_parser()
    a = p.parse_args(argv)
    _check(p, a)
    return run(a)


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    _check(p, a)
    report = run(a)
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(summary_lines(report)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The report of ``ffa-lora bench sites``: per-seed runs → means over the seeds, the gains of
joining, where each method levels off, and the plot of the per-site AUCs.

Gains are in points (100 × a difference of AUCs or accuracies). A site's gain is computed from
its means over the seeds; ``..._per_seed`` lists give each seed's own value, and the spread of
those is the seed-to-seed noise to read a gain against. A metric that is undefined in a run (an
AUC on a split with one class) is left out of that mean; ``None`` when no run defines it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

#: the methods of the bench, in the plot's order, with their bar colours and their names in the title
PLOTTED = (("alone", "tab:gray", "each site alone"), ("federated", "tab:blue", "federated"),
           ("personalized", "tab:green", "personalized heads"), ("centralized", "tab:orange", "centralized"))
SUMMARIZED = ("accuracy", "macro_f1", "roc_auc", "roc_auc_classes")

METHOD_NOTE = ("federation simulated in process (ffa_lora_tools.simulate): local training, clipping, 8-bit "
               "stochastic quantization, integer weights and the coordinator's averaging, no encryption or "
               "network; sites alone and centralized trained by the same engine as one-site federations")


def _mean(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.fmean(vals) if vals else None


def _std(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.stdev(vals) if len(vals) > 1 else None


def _points(a: float | None, b: float | None) -> float | None:
    """``100 · (a − b)``, or None when either is undefined."""
    return None if a is None or b is None else 100.0 * (a - b)


def _stats(metrics: list[dict[str, float]]) -> dict[str, Any]:
    """Means, spreads and per-seed values of one model on one split."""
    out: dict[str, Any] = {}
    for k in SUMMARIZED:
        xs = [m.get(k) for m in metrics]
        out[k] = _mean(xs)
        if k != "roc_auc_classes":
            out[f"{k}_std"] = _std(xs)
            out[f"{k}_per_seed"] = xs
    out["n"] = metrics[0].get("n") if metrics else None
    return out


def _site_metrics(run: dict[str, Any], method: str, site: str, split: str) -> dict[str, float] | None:
    """One run's metrics of ``method`` for ``site`` on its own split or the global one."""
    if method not in run:
        return None
    if method == "alone":
        final = run["alone"].get(site, {}).get("final")
        return None if final is None else (final["own"][site] if split == "own" else final["global"])
    final = run[method]["final"]
    if method == "personalized":
        return final["own"][site] if split == "own" else final["global_by_site"][site]
    return final["own"][site] if split == "own" else final["global"]


def _per_site(runs: list[dict[str, Any]], site: str) -> dict[str, Any]:
    row: dict[str, Any] = {"train": runs[0]["sizes"].get(site), "test": runs[0]["test_sizes"].get(site)}
    for method, _, _ in PLOTTED:
        found = {split: [m for r in runs if (m := _site_metrics(r, method, site, split)) is not None]
                 for split in ("own", "global")}
        if found["own"]:
            row[method] = {split: _stats(ms) for split, ms in found.items()}

    def gain(a: str, b: str, split: str, key: str) -> tuple[float | None, list[float | None]]:
        if a not in row or b not in row:
            return None, []
        per_seed = [_points(x, y) for x, y in zip(row[a][split][f"{key}_per_seed"], row[b][split][f"{key}_per_seed"])]
        return _points(row[a][split][key], row[b][split][key]), per_seed

    row["auc_gain_points"], row["auc_gain_points_per_seed"] = gain("federated", "alone", "own", "roc_auc")
    row["personalized_auc_gain_points"], row["personalized_auc_gain_points_per_seed"] = gain(
        "personalized", "federated", "own", "roc_auc")
    row["alone_below_federated_global_accuracy_points"], _ = gain("federated", "alone", "global", "accuracy")
    row["centralized_auc_gain_points"], _ = gain("centralized", "alone", "own", "roc_auc")
    return row


def _mean_curve(runs: list[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    """The global-split accuracy and AUC after each scored round, averaged over the seeds."""
    curves = [r[method]["curve"] for r in runs if method in r]
    if not curves:
        return []
    points = []
    for i, p in enumerate(curves[0]):
        same = [c[i] for c in curves if len(c) > i]
        points.append({"epochs": p["epochs"], "accuracy": _mean(q["global"]["accuracy"] for q in same),
                       "roc_auc": _mean(q["global"]["roc_auc"] for q in same)})
    return points


def _plateau(curve: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the mean curve peaks (picked on the test split: optimistic) and where it ends."""
    if not curve:
        return {}
    best = max(curve, key=lambda p: p["accuracy"] if p["accuracy"] is not None else -1.0)
    return {"best_accuracy": best["accuracy"], "best_at_epochs": best["epochs"],
            "final_accuracy": curve[-1]["accuracy"], "final_epochs": curve[-1]["epochs"],
            "final_roc_auc": curve[-1]["roc_auc"]}


def _count(values: Iterable[float | None]) -> int:
    return sum(1 for v in values if v is not None and v >= 0)


def summarize(runs: list[dict[str, Any]], *, settings: dict[str, Any], wall_seconds: float) -> dict[str, Any]:
    """The bench's JSON: headline fields, per-site table, global split, plateaus, per-seed runs."""
    sites = sorted(runs[0]["sizes"])
    per_site = {s: _per_site(runs, s) for s in sites}
    gains = [per_site[s]["auc_gain_points"] for s in sites]
    pers = [per_site[s]["personalized_auc_gain_points"] for s in sites]
    below = [per_site[s]["alone_below_federated_global_accuracy_points"] for s in sites]
    per_seed_gain = [_mean(row["auc_gain_points_per_seed"][i] for row in per_site.values()
                           if len(row["auc_gain_points_per_seed"]) > i) for i in range(len(runs))]
    glob = {m: _stats([r[m]["final"]["global"] for r in runs]) for m in ("federated", "centralized")
            if all(m in r for r in runs)}
    gap = _points(glob["centralized"]["accuracy"], glob["federated"]["accuracy"]) if len(glob) == 2 else None
    gap_per_seed = ([_points(c, f) for c, f in zip(glob["centralized"]["accuracy_per_seed"],
                                                   glob["federated"]["accuracy_per_seed"])] if len(glob) == 2 else [])
    curves = {m: _mean_curve(runs, m) for m in ("federated", "centralized")}
    central_at = {p["epochs"]: p for p in curves["centralized"]}
    equal_epochs = [{"epochs": p["epochs"], "federated_accuracy": p["accuracy"],
                     "centralized_accuracy": central_at[p["epochs"]]["accuracy"],
                     "gap_points": _points(central_at[p["epochs"]]["accuracy"], p["accuracy"])}
                    for p in curves["federated"] if p["epochs"] in central_at]
    return {
        "data": settings.get("data"), "partition": settings.get("partition"), "seeds": [r["seed"] for r in runs],
        "method": METHOD_NOTE,
        "mean_auc_gain_points": _mean(gains),
        "mean_auc_gain_points_per_seed": per_seed_gain,
        "mean_auc_gain_points_std": _std(per_seed_gain),
        "sites_better": _count(gains) if any(g is not None for g in gains) else None,
        "sites": len(sites),
        "mean_personalized_auc_gain_points": _mean(pers),
        "personalized_sites_at_least_global": _count(pers) if any(p is not None for p in pers) else None,
        "federated_vs_centralized_accuracy_gap_points": gap,
        "federated_vs_centralized_accuracy_gap_points_per_seed": gap_per_seed,
        "federated_vs_centralized_auc_gap_points": (
            _points(glob["centralized"]["roc_auc"], glob["federated"]["roc_auc"]) if len(glob) == 2 else None),
        "min_alone_below_federated_global_accuracy_points": (
            min(b for b in below if b is not None) if any(b is not None for b in below) else None),
        "global": glob,
        "per_site": per_site,
        "curves": curves,
        "plateau": {m: _plateau(c) for m, c in curves.items() if c},
        "federated_vs_centralized_at_equal_epochs": equal_epochs,
        "train_seconds": {m: _mean(_train_seconds(r, m) for r in runs) for m in ("alone", "federated", "centralized")},
        "train_cpu_seconds": {m: _mean(_train_seconds(r, m, "train_cpu_seconds") for r in runs)
                              for m in ("alone", "federated", "centralized")},
        "wall_seconds": wall_seconds,
        "settings": settings,
        "per_seed": runs,
    }


def _train_seconds(run: dict[str, Any], method: str, key: str = "train_seconds") -> float | None:
    """A method's training seconds in one run (the sites alone: all of them together)."""
    if method not in run:
        return None
    parts = list(run["alone"].values()) if method == "alone" else [run[method]]
    if any(p.get(key) is None for p in parts):
        return None
    return float(sum(p[key] for p in parts))


def plot_title(report: dict[str, Any]) -> str:
    """The methods the report holds, its seeds and, when the sites alone ran, the mean gain."""
    methods = [title for m, _, title in PLOTTED if any(m in row for row in report["per_site"].values())]
    seeds = len(report.get("seeds", []))
    gain = report.get("mean_auc_gain_points")
    tail = "" if gain is None else f"; mean AUC gain of joining {gain:+.1f} points"
    return f"{report.get('data')}: {', '.join(methods)} ({seeds} seed{'s' if seeds != 1 else ''}{tail})"


def plot_sites(report: dict[str, Any], path: Path) -> None:
    """Grouped bars per site: ROC-AUC on the site's own test split (left) and accuracy on the
    global test split (right) for each method, means over the seeds with their spread."""
    sites = sorted(report["per_site"])
    fig = Figure(figsize=(12, 4.4))
    axes = fig.subplots(1, 2)
    width = 0.8 / len(PLOTTED)
    for ax, split, key, ylabel in ((axes[0], "own", "roc_auc", "ROC-AUC, site's own test split"),
                                   (axes[1], "global", "accuracy", "accuracy, global test split")):
        low = 1.0
        for j, (method, color, _) in enumerate(PLOTTED):
            rows = [report["per_site"][s].get(method, {}).get(split, {}) for s in sites]
            ys = [r.get(key) for r in rows]
            if all(y is None for y in ys):
                continue
            errs = [r.get(f"{key}_std") or 0.0 for r in rows]
            xs = [i + (j - (len(PLOTTED) - 1) / 2) * width for i in range(len(sites))]
            ax.bar(xs, [y if y is not None else 0.0 for y in ys], width, yerr=errs, color=color, label=method,
                   capsize=2)
            low = min([low] + [y for y in ys if y is not None])
        ax.set_xticks(range(len(sites)))
        ax.set_xticklabels([s.replace("_", "\n", 1) for s in sites], fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_ylim(max(0.0, low - 0.1), 1.0)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(plot_title(report))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def combine_runs(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-seed runs of several reports of the same data and partition (e.g. the sites alone
    in one invocation, the federation in another) merged by seed. A method may come from one
    report only per seed and site."""
    by_seed: dict[int, dict[str, Any]] = {}
    for rep in reports:
        for run in rep["per_seed"]:
            into = by_seed.setdefault(run["seed"], {})
            for key, value in run.items():
                if key == "alone" and key in into:
                    clash = set(into["alone"]) & set(value)
                    if clash:
                        raise ValueError(f"seed {run['seed']}: sites {sorted(clash)} alone appear in two reports")
                    into["alone"] = {**into["alone"], **value}
                elif key in ("federated", "personalized", "centralized") and key in into:
                    raise ValueError(f"seed {run['seed']}: {key} appears in two reports")
                elif key not in into:
                    into[key] = value
                elif into[key] != value:
                    raise ValueError(f"seed {run['seed']}: the reports disagree on {key!r}; "
                                     "combine runs of the same data, partition and caps only")
    return [by_seed[s] for s in sorted(by_seed)]

"""The local federation, end to end: ``ffa-lora demo``.

``--data`` names a built-in data set or a folder of your own CSV files, one per site plus a
``test.csv`` (:mod:`ffa_lora_tools.own_data` says how columns and labels are found).

Prepares a run folder (per-site data files, a federation CA and certificates, the threshold key
ceremony, one YAML file per service), starts the coordinator, two key holders, two edges (two
regions) and one client agent per site as separate OS processes over mutual TLS on loopback,
shows one row per committed round, and writes ``summary.json``, a plot of the training curves
and the exported PEFT adapter.

No process holds the whole private key: the ceremony deals 2-of-3 shares (coordinator,
keyholder-1, keyholder-2) and keeps none; each round's sum is decrypted with the coordinator's
share and one key holder's, after both checked the clients' and edges' signed claims. Clients
accept only the coordinator-signed key with the pinned fingerprint.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml
from matplotlib.figure import Figure

from ffa_lora.crypto import new_fernet_key
from ffa_lora.data.builtin import BUILTIN_NAMES, DemoData, load_builtin
from ffa_lora.data.dataset import Dataset
from ffa_lora.data.partition import PartitionMethod
from ffa_lora.errors import ConfigError, FFALoraError
from ffa_lora.lora.spec import STRATEGIES
from ffa_lora_tools.baseline import DATA_DEFAULTS, module_list
from ffa_lora_tools.containers import BuildahLauncher
from ffa_lora_tools.jsonsafe import dumps
from ffa_lora_tools.keys import PARAMS_NAME, run_ceremony
from ffa_lora_tools.own_data import is_data_folder, load_own_data
from services.common.certs import init_ca, issue_certificate
from services.common.config import MAX_VALIDATION_FRACTION, MIN_CLIENTS, MIN_KEY_BITS

# The clients' learning rate per strategy on the demo model, tuned with `ffa-lora bench quality`
# (README, "Quality against centralized LoRA"): with A frozen at its random start, FFA-LoRA needs
# a larger step than LoRA; alternating freeze trains each factor only every other round, so it
# sits between them; FedAvg-LoRA trains both factors like the centralized LoRA baseline.
LORA_LR = 1e-3  # LoRA with A trained: the centralized baseline's rate
STRATEGY_LR: dict[str, float] = {"ffa": 5e-3, "alternating": 2e-3, "fedavg": LORA_LR}
STRATEGY_HELP = ("alternating (B and A in turn, each round exact; the demo's default), ffa (A frozen "
                 "throughout: FFA-LoRA) or fedavg (classic FedAvg-LoRA, A and B averaged: not exact "
                 "under the secure sum)")
LR_HELP = ("the clients' learning rate (default: the strategy's, "
           + ", ".join(f"{k} {v:g}" for k, v in STRATEGY_LR.items()) + ")")


@dataclass
class DemoSettings:
    name: str = "bank-demo"
    data: str = "bank"  # a built-in name, or a folder of CSV files (ffa_lora_tools.own_data)
    # With a data folder: the columns and classes (None: detected from the files) and the encoding.
    text_column: str | None = None
    label_column: str | None = None
    labels: tuple[str, ...] | None = None
    encoding: str = "utf-8"
    partition: str = "natural"
    sites: int | None = None  # iid/dirichlet: number of sites (None: the data's natural number)
    out_dir: Path = Path("runs")
    model: str = "demo"
    rounds: int = 6
    local_epochs: float = 0.5
    learning_rate: float | None = None  # None: STRATEGY_LR[strategy]
    server_learning_rate: float = 1.0
    lr_schedule: str = "constant"
    batch_size: int = 16
    key_bits: int = 2048
    bits: int = 8
    clip: float = 0.5
    # Alternating freeze: FFA-LoRA rounds (B trains, the seeded A frozen) take turns with rounds
    # that train A with B frozen, so every round's aggregate stays exact while both factors learn
    # (how close each strategy gets to centralized LoRA: README, "Quality against centralized LoRA").
    strategy: str = "alternating"
    warmup_rounds: int = 0
    rank: int = 8
    alpha: float | None = None  # None: the federation config's default
    target_modules: tuple[str, ...] | None = None  # None: the federation config's default
    rank_scheduler: str = "fixed"
    rank_options: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, Any] = field(default_factory=dict)
    edges: int = 2
    # Threshold decryption: key-holder processes beside the coordinator, and the shares needed.
    keyholders: int = 2
    threshold: int = 2
    max_train: int | None = None  # None: the data's default (DATA_DEFAULTS), else all of it
    max_train_per_site: int | None = None
    max_test: int | None = None
    seed: int = 1234
    deid: bool = True
    validation_fraction: float = 0.1  # each client's local hold-out (validation loss, rank signals)
    timeout_s: float = 5400.0  # the whole run; generous, for a shared machine
    patience: int = 2
    tolerance: float = 1e-3
    threads_per_client: int = 1
    quiet: bool = False
    containers: str | None = None  # "buildah": the services run from the built images
    image_tag: str = "0.1.0"
    # Personalized heads ("head"): each client also fits and keeps its own task head (see the
    # coordinator config's training.personalization); evaluated every personalize_every rounds.
    personalization: str = "off"
    personalize_every: int = 0
    head_epochs: int = 20
    head_learning_rate: float = 1e-2
    head_prox: float = 1.0

    def __post_init__(self) -> None:
        if not 2 <= self.threshold <= self.keyholders + 1:
            raise ConfigError(f"--threshold {self.threshold} must be between 2 and the number of share holders "
                              f"({self.keyholders + 1}: the coordinator and {self.keyholders} key holders)")
        for key, value in DATA_DEFAULTS.get(self.data, {}).items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.learning_rate is None:
            if self.strategy not in STRATEGY_LR:
                raise ConfigError(f"unknown training strategy {self.strategy!r}; choose one of {tuple(STRATEGY_LR)}")
            self.learning_rate = STRATEGY_LR[self.strategy]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_csv(path: Path, data: Dataset) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for t, y in zip(data.texts, data.labels):
            w.writerow([t, data.label_names[y]])


def _say(settings: DemoSettings, msg: str) -> None:
    if not settings.quiet:
        print(msg, file=sys.stderr, flush=True)


def load_data(settings: DemoSettings) -> tuple[DemoData, dict[str, Any]]:
    """The demo's data and its summary: a built-in set, or the folder ``settings.data``."""
    if not is_data_folder(settings.data):
        demo = load_builtin(settings.data, seed=settings.seed, method=settings.partition,  # type: ignore[arg-type]
                            n_sites=settings.sites, max_train=settings.max_train,
                            max_train_per_site=settings.max_train_per_site, max_test=settings.max_test)
        return demo, demo.summary()
    own = load_own_data(Path(settings.data), text_column=settings.text_column,
                        label_column=settings.label_column, labels=settings.labels,
                        encoding=settings.encoding, seed=settings.seed,
                        max_train_per_site=settings.max_train_per_site, max_test=settings.max_test)
    c = own.columns
    _say(settings, f"data folder {settings.data}: {len(own.data.train_parts)} sites; text column {c.text!r} "
                   f"({c.text_reason}), label column {c.label!r} ({c.label_reason}); labels "
                   f"{', '.join(own.data.label_names)}")
    for note in own.notes:
        _say(settings, f"note: {note}")
    return own.data, own.summary()


def demo_client_id(site: str) -> str:
    """The client id (certificate name) the demo gives the client of ``site``."""
    return f"site-{site}"


def prepare(settings: DemoSettings) -> dict[str, Any]:
    """Create the run folder: data, certificates, keys and configs. Returns the layout."""
    demo, data_summary = load_data(settings)  # first: a bad data folder leaves no run folder
    run = (settings.out_dir / settings.name).resolve()
    if run.exists():
        shutil.rmtree(run)
    (run / "logs").mkdir(parents=True)
    sites = sorted(demo.train_parts)
    for s in sites:
        write_csv(run / "data" / f"{s}.csv", demo.train_parts[s])
    write_csv(run / "data" / "test.csv", demo.test)
    certs = run / "certs"
    init_ca(certs, federation="ffa-lora")
    issue_certificate(certs, certs, role="coordinator", id="coordinator")
    edges = [f"edge-{i + 1}" for i in range(min(settings.edges, len(sites)))]
    for e in edges:
        issue_certificate(certs, certs, role="edge", id=e)
    clients = [demo_client_id(s) for s in sites]
    for c in clients:
        issue_certificate(certs, certs, role="client", id=c)
    (run / "secrets").mkdir(mode=0o700)
    fernet = run / "secrets" / "fernet.key"
    fernet.write_bytes(new_fernet_key())
    os.chmod(fernet, 0o600)
    keyholders = [f"keyholder-{i + 1}" for i in range(settings.keyholders)]
    for k in keyholders:
        issue_certificate(certs, certs, role="keyholder", id=k)
    ceremony = run_ceremony(run / "keys", holders=["coordinator/coordinator", *(f"keyholder/{k}" for k in keyholders)],
                            threshold=settings.threshold, bits=settings.key_bits,
                            test_only=settings.key_bits < 2048,
                            fernet_keys={"coordinator/coordinator": fernet})
    _say(settings, f"key ceremony: {settings.threshold} of {len(keyholders) + 1} shares (coordinator, "
                   f"{', '.join(keyholders)}), {settings.key_bits} bits, {ceremony.seconds:.1f}s; clients pin "
                   f"{ceremony.public_key_fingerprint[:16]}…")

    def tls(role: str, ident: str) -> dict[str, str]:
        return {"ca": str(certs / "ca.crt"), "cert": str(certs / f"{role}-{ident}.crt"),
                "key": str(certs / f"{role}-{ident}.key")}

    coord_port = free_port()
    metrics_ports: dict[str, int] = {}
    configs: dict[str, Path] = {}
    metrics_ports["coordinator"] = free_port()
    fed = {
        "name": "bank-demo" if settings.data == "bank" else "demo",
        "seed": settings.seed,
        "labels": list(demo.label_names),
        "model": {"name_or_path": settings.model, "num_labels": len(demo.label_names), "rank": settings.rank,
                  **({"target_modules": list(settings.target_modules)} if settings.target_modules else {}),
                  **({"alpha": settings.alpha} if settings.alpha is not None else {})},
        "training": {"strategy": settings.strategy, "warmup_rounds": settings.warmup_rounds,
                     "local_epochs": settings.local_epochs, "learning_rate": settings.learning_rate,
                     "batch_size": settings.batch_size, "server_learning_rate": settings.server_learning_rate,
                     "lr_schedule": settings.lr_schedule, "personalization": settings.personalization,
                     "personalize_every": settings.personalize_every, "head_epochs": settings.head_epochs,
                     "head_learning_rate": settings.head_learning_rate, "head_prox": settings.head_prox},
        "rounds": {"max_rounds": settings.rounds, "min_clients": len(clients), "patience": settings.patience,
                   "tolerance": settings.tolerance, "wait_for_clients_s": 600,
                   # the fewest sites any edge serves: no edge may withhold a whole round's partial
                   "min_per_partial": max(1, min(len(clients[i::len(edges)]) for i in range(len(edges))))},
        "secure_sum": {"key_bits": settings.key_bits, "bits": settings.bits, "clip": settings.clip},
        # the operators know each site's size: sample-weighted averaging without trusting the clients
        "weights": {"sizes": {c: len(demo.train_parts[s]) for s, c in zip(sites, clients)}},
        # small keys or a single site are for trying things out only
        "test_mode": settings.key_bits < MIN_KEY_BITS or len(clients) < MIN_CLIENTS,
        "privacy": settings.privacy or {"mode": "off"},
        "rank": {"scheduler": settings.rank_scheduler, "options": settings.rank_options},
        "evaluation": {"path": str(run / "data" / "test.csv")},
    }
    docs: dict[str, dict[str, Any]] = {
        "coordinator": {
            "service": "coordinator", "tls": tls("coordinator", "coordinator"),
            "metrics": {"host": "127.0.0.1", "port": metrics_ports["coordinator"]},
            "coordinator": {"listen": f"127.0.0.1:{coord_port}", "state_dir": str(run / "state" / "coordinator"),
                            "fernet_key_file": str(fernet), "federation": fed,
                            "export_dir": str(run / "adapter"),
                            "threshold": {"params_file": str(run / "keys" / PARAMS_NAME),
                                          "share_file": str(ceremony.shares["coordinator/coordinator"]),
                                          "holders": ["coordinator/coordinator", *(f"keyholder/{k}" for k in keyholders)],
                                          "t": settings.threshold}},
        }
    }
    for k in keyholders:
        metrics_ports[k] = free_port()
        holder = f"keyholder/{k}"
        docs[k] = {"service": "keyholder", "tls": tls("keyholder", k),
                   "metrics": {"host": "127.0.0.1", "port": metrics_ports[k]},
                   "keyholder": {"federation": fed["name"], "coordinator_address": f"127.0.0.1:{coord_port}",
                                 "share_file": str(ceremony.shares[holder]),
                                 "fernet_key_file": str(ceremony.fernet_keys[holder]),
                                 "state_dir": str(run / "state" / k), "min_clients": len(clients),
                                 "workers": 1}}
    edge_ports = {}
    for i, e in enumerate(edges):
        edge_ports[e] = free_port()
        metrics_ports[e] = free_port()
        docs[e] = {"service": "edge", "tls": tls("edge", e),
                   "metrics": {"host": "127.0.0.1", "port": metrics_ports[e]},
                   "edge": {"listen": f"127.0.0.1:{edge_ports[e]}", "region": f"region-{i + 1}",
                            "coordinator_address": f"127.0.0.1:{coord_port}"}}
    for i, (s, c) in enumerate(zip(sites, clients)):
        metrics_ports[c] = free_port()
        home = edges[i % len(edges)]
        order = [home] + [e for e in edges if e != home]
        docs[c] = {"service": "client", "tls": tls("client", c),
                   "metrics": {"host": "127.0.0.1", "port": metrics_ports[c]},
                   "client": {"edges": [f"127.0.0.1:{edge_ports[e]}" for e in order],
                              "data": {"path": str(run / "data" / f"{s}.csv"), "labels": list(demo.label_names),
                                       "validation_fraction": settings.validation_fraction},
                              "model": settings.model,
                              "device": "auto", "num_threads": settings.threads_per_client,
                              "deid": {"enabled": settings.deid}, "state_dir": str(run / "state" / c),
                              "seed": settings.seed, "key_fingerprint": ceremony.public_key_fingerprint}}
    for name, doc in docs.items():
        p = run / "config" / f"{name}.yaml"
        p.parent.mkdir(exist_ok=True)
        p.write_text(yaml.safe_dump(doc, sort_keys=False))
        configs[name] = p
    site_files = {c: run / "data" / f"{s}.csv" for s, c in zip(sites, clients)}
    return {"run": run, "configs": configs, "edges": edges, "clients": clients, "data": data_summary,
            "keyholders": keyholders, "key_fingerprint": ceremony.public_key_fingerprint,
            "ceremony_seconds": ceremony.seconds,
            "site_files": site_files,
            "metrics_ports": metrics_ports, "coordinator_port": coord_port}


def _rounds(db: Path) -> list[dict[str, Any]]:
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
        try:
            rows = con.execute("SELECT round, metrics FROM rounds ORDER BY round").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return []
    return [json.loads(m) for _, m in rows]


def _score(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _row(m: dict[str, Any]) -> str:
    return (f"{m['round']:>5} {m['clients']:>7} {m['loss']:>8.4f} {_score(m.get('accuracy')):>8} "
            f"{_score(m.get('macro_f1')):>8} {_score(m.get('roc_auc')):>8} "
            f"{m['bytes_uploaded'] / 1e6:>9.2f} {m.get('values_uploaded', 0) / 1e3:>8.1f} {m['crypto_seconds']:>9.2f} "
            f"{m['train_seconds']:>9.1f} {m['round_seconds']:>8.1f}")


HEADER = (f"{'round':>5} {'clients':>7} {'loss':>8} {'acc':>8} {'macroF1':>8} {'rocAUC':>8} {'upMB':>9} {'upKval':>8} "
          f"{'crypto_s':>9} {'train_s':>9} {'wall_s':>8}")


def _site_rows(sites: dict[str, dict[str, float]]) -> list[str]:
    """Per-site validation scores of the global and the personal head (personalized heads)."""
    rows = [f"      {'site':<28} {'AUC global':>10} {'personal':>9} {'acc global':>10} {'personal':>9}"]
    for cid, e in sorted(sites.items()):
        rows.append(f"      {cid:<28} {e['global_roc_auc']:>10.4f} {e['personal_roc_auc']:>9.4f} "
                    f"{e['global_accuracy']:>10.4f} {e['personal_accuracy']:>9.4f}")
    return rows


def run_demo(settings: DemoSettings, *, layout: dict[str, Any] | None = None,
             on_prepared: Callable[[dict[str, Any]], None] | None = None,
             on_started: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the whole federation; return the summary (also written to summary.json).

    ``layout``: the result of an earlier :func:`prepare` (default: prepare now).
    ``on_prepared(layout)``, when given, runs after :func:`prepare` and before any service
    starts: it sees the run folder, configs and ``metrics_ports`` (e.g. to point a Prometheus
    at them) and may edit the config files. ``on_started(layout)`` runs once every service
    process has been started. ``settings.containers == "buildah"`` runs each service from its
    container image (:class:`ffa_lora_tools.containers.BuildahLauncher`) instead of the host's Python.
    """
    t_start = time.time()
    if layout is None:
        layout = prepare(settings)
    if on_prepared is not None:
        on_prepared(layout)
    services = _ServiceProcesses(settings, layout)
    _say(settings, f"run folder {layout['run']}; data {layout['data']['sites']} train, "
                   f"{layout['data']['test']} test")
    try:  # from the first start: a service that fails to start stops those already running
        services.start_all()
        if on_started is not None:
            on_started(layout)
        failed = services.follow()
        services.wait_for_exit(timeout=30.0)
    finally:
        services.stop()
    return _report(settings, layout, failed, wall=time.time() - t_start)


class _ServiceProcesses:
    """The demo's services as OS processes (or containers), with their progress on the console."""

    def __init__(self, settings: DemoSettings, layout: dict[str, Any]) -> None:
        self.settings, self.layout = settings, layout
        self.run: Path = layout["run"]
        self.db = self.run / "state" / "coordinator" / "coordinator.db"
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                        TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(settings.threads_per_client))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.launcher = BuildahLauncher(tag=settings.image_tag) if settings.containers == "buildah" else None

    def start(self, name: str, role: str) -> None:
        """Start one service with its config from the run folder, logging to logs/<name>.log."""
        log = open(self.run / "logs" / f"{name}.log", "wb")  # noqa: SIM115 - the child process owns it
        config = self.layout["configs"][name]
        argv = ([sys.executable, "-m", "ffa_lora_tools.cli", "serve", role, "--config", str(config)]
                if self.launcher is None else self.launcher.command(name, role, config, self.run, self.env))
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            cwd=str(Path(__file__).resolve().parents[1]))

    def start_all(self) -> None:
        """The coordinator, then the key holders and the edges, then the clients."""
        if self.launcher is not None:
            self.launcher.prepare_run_folder(self.run)
            images = self.launcher.image("coordinator").rsplit("/", 1)[0]
            _say(self.settings, f"services run as containers of {images}/*:{self.launcher.tag}")
        self.start("coordinator", "coordinator")
        for k in self.layout.get("keyholders", []):
            self.start(k, "keyholder")
        for e in self.layout["edges"]:
            self.start(e, "edge")
        for c in self.layout["clients"]:
            self.start(c, "client")
        _say(self.settings, f"started coordinator, {len(self.layout.get('keyholders', []))} key holders, "
                            f"{len(self.layout['edges'])} edges, {len(self.layout['clients'])} clients "
                            f"(logs in {self.run / 'logs'})")

    def follow(self) -> str:
        """Print each committed round until the coordinator exits; returns what failed ("" if
        nothing did): the time limit, a service that exited with an error, or the coordinator."""
        _say(self.settings, HEADER)
        deadline = time.time() + self.settings.timeout_s
        shown, failed = 0, ""
        coordinator = self.procs["coordinator"]
        while coordinator.poll() is None:
            if time.time() > deadline:
                failed = f"timed out after {self.settings.timeout_s:.0f}s"
                break
            failed = self._crashed()
            if failed:
                break
            shown = self._show_rounds(shown)
            time.sleep(1.0)
        self._show_rounds(shown)
        if not failed and coordinator.returncode not in (0, None):
            failed = (f"coordinator exited with code {coordinator.returncode}; "
                      f"see {self.run / 'logs' / 'coordinator.log'}")
        return failed

    def _crashed(self) -> str:
        for name, p in self.procs.items():
            if name != "coordinator" and p.poll() not in (None, 0):
                return f"{name} exited with code {p.returncode}; see {self.run / 'logs' / (name + '.log')}"
        return ""

    def _show_rounds(self, shown: int) -> int:
        rows = _rounds(self.db)
        for m in rows[shown:]:
            _say(self.settings, _row(m))
            for line in _site_rows(m.get("sites") or {}) if m.get("sites") else []:
                _say(self.settings, line)
        return len(rows)

    def wait_for_exit(self, *, timeout: float) -> None:
        """Give every service ``timeout`` seconds in all to finish; terminate the rest."""
        end = time.time() + timeout
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                p.terminate()

    def stop(self) -> None:
        """Terminate what still runs (kill after 10 s) and release the container launcher."""
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.launcher is not None:
            self.launcher.close()


def _report(settings: DemoSettings, layout: dict[str, Any], failed: str, *, wall: float) -> dict[str, Any]:
    """summary.json and training.png of a finished run; FFALoraError when it failed."""
    run: Path = layout["run"]
    rounds = _rounds(run / "state" / "coordinator" / "coordinator.db")
    if failed or not rounds:
        raise FFALoraError(f"demo failed: {failed or 'no round was committed'}")
    summary = summarize(rounds, settings, layout, wall=wall)
    (run / "summary.json").write_text(dumps(summary, indent=2))
    plot(rounds, run / "training.png", title=f"{settings.name}: {settings.strategy}, {len(layout['clients'])} sites")
    _say(settings, f"final accuracy {_score(summary['final_accuracy'])}, macro-F1 {_score(summary['final_macro_f1'])}, "
                   f"ROC-AUC {_score(summary['final_roc_auc'])} after {summary['rounds']} rounds; "
                   f"summary {run / 'summary.json'}, plot {run / 'training.png'}, adapter {run / 'adapter'}")
    return summary


def settings_dict(settings: DemoSettings) -> dict[str, Any]:
    """``settings`` as ``summary.json`` records them (paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(settings).items()}


def summarize(rounds: list[dict[str, Any]], settings: DemoSettings, layout: dict[str, Any], *, wall: float) -> dict[str, Any]:
    last = rounds[-1]
    train_s = sum(r["train_seconds"] for r in rounds)
    crypto_s = sum(r["crypto_seconds"] for r in rounds)
    clients = len(layout["clients"])
    return {
        "name": settings.name,
        "strategy": settings.strategy,
        "final_accuracy": last.get("accuracy"),
        "final_macro_f1": last.get("macro_f1"),
        "final_roc_auc": last.get("roc_auc"),
        "final_roc_auc_per_class": last.get("roc_auc_per_class"),
        # Personalized heads: each site's validation scores, global vs own head, from the last
        # round that reported them (they score the adapter that round started from).
        "sites": next((r["sites"] for r in reversed(rounds) if r.get("sites")), None),
        "rounds": len(rounds),
        "bytes_uploaded": sum(r["bytes_uploaded"] for r in rounds),
        "values_uploaded": sum(r.get("values_uploaded", 0) for r in rounds),
        "values_uploaded_per_round": [r.get("values_uploaded", 0) for r in rounds],
        "adapter_values": last.get("adapter_values"),  # size of the final global adapter
        "adapter_bytes": last.get("adapter_bytes"),
        "crypto_seconds": crypto_s,
        "train_seconds": train_s,
        # Clients train in parallel: compare crypto per client with training per client.
        "crypto_fraction_of_training": crypto_s / train_s if train_s else None,
        # Threshold decryption: t of the coordinator's and the key holders' shares per round.
        "threshold": {"t": settings.threshold, "holders": ["coordinator", *layout.get("keyholders", [])],
                      "key_fingerprint": layout.get("key_fingerprint"),
                      "ceremony_seconds": layout.get("ceremony_seconds")},
        "decrypt_seconds_per_round": [r.get("decrypt_seconds") for r in rounds],
        "epsilon_spent": last.get("epsilon", 0.0),
        # Sample-level DP-SGD: the largest epsilon any client reports (0 when off).
        "dpsgd_epsilon_max": max((r.get("dpsgd_epsilon_max", 0.0) for r in rounds), default=0.0),
        "wall_seconds": wall,
        "clients": clients,
        "data": layout["data"],
        "settings": settings_dict(settings),
        "per_round": rounds,
        "adapter_dir": str(layout["run"] / "adapter"),
    }


def plot(rounds: list[dict[str, Any]], path: Path, *, title: str) -> None:
    xs = [r["round"] for r in rounds]
    fig = Figure(figsize=(10, 3.8))
    a1, a2 = fig.subplots(1, 2)
    a1.plot(xs, [r["loss"] for r in rounds], "o-", label="weighted train loss")
    if any(r.get("eval_loss") is not None for r in rounds):
        a1.plot(xs, [r.get("eval_loss") for r in rounds], "s--", label="held-out loss")
    a1.set_xlabel("round")
    a1.set_ylabel("loss")
    a1.legend()
    a2.plot(xs, [r.get("accuracy") for r in rounds], "o-", label="accuracy")
    a2.plot(xs, [r.get("macro_f1") for r in rounds], "s--", label="macro-F1")
    if any(r.get("roc_auc") is not None for r in rounds):
        a2.plot(xs, [r.get("roc_auc") for r in rounds], "^:", label="macro ROC-AUC")
    a2.set_xlabel("round")
    a2.set_ylim(0, 1)
    a2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def add_partition_arguments(p: argparse.ArgumentParser) -> None:
    """``--partition`` and ``--sites``: how the federation's sites split the training data."""
    p.add_argument("--partition", default=DemoSettings.partition, choices=list(get_args(PartitionMethod)),
                   help="how the sites split the training data (a centralized baseline pools it either way)")
    p.add_argument("--sites", type=int, default=None,
                   help="with --partition iid or dirichlet: how many client sites (default: the data's natural number)")


def check_sites(p: argparse.ArgumentParser, partition: str, sites: int | None) -> None:
    """``--sites`` needs a partition that can make that many sites, and at least one."""
    if sites is None:
        return
    if partition == "natural":
        p.error("--sites needs --partition iid or dirichlet (the natural partition has one site per company/group)")
    if sites < 1:
        p.error(f"--sites must be at least 1, got {sites}")


def _data_argument(value: str) -> str:
    if value in BUILTIN_NAMES:
        return value
    if Path(value).is_dir():
        return str(Path(value).resolve())
    raise argparse.ArgumentTypeError(f"{value!r} is neither a built-in data set ({', '.join(BUILTIN_NAMES)}) "
                                     "nor an existing folder of CSV files")


def _run_name(data: str) -> str:
    if not is_data_folder(data):
        return DemoSettings.name
    slug = "-".join(re.findall(r"[a-z0-9]+", Path(data).name.lower()))
    return f"{slug or 'own'}-demo"


def add_own_data_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that say how to read a data folder (``--data DIR``)."""
    g = p.add_argument_group("own data (--data DIR)")
    g.add_argument("--text-column", default=None, help="the column with the text (default: detected)")
    g.add_argument("--label-column", default=None, help="the column with the label (default: detected)")
    g.add_argument("--labels", default=None,
                   help="the classes in order, comma-separated (default: the sorted values of the files)")
    g.add_argument("--encoding", default="utf-8", help="the files' text encoding (default utf-8)")


def check_own_data_arguments(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """The data-folder flags need a folder; a folder brings its own sites."""
    own = is_data_folder(a.data)
    given = [f for f, v in (("--text-column", a.text_column), ("--label-column", a.label_column),
                            ("--labels", a.labels), ("--encoding", a.encoding != "utf-8")) if v]
    if given and not own:
        p.error(f"{', '.join(given)} apply to --data DIR (a folder of CSV files), not to the built-in {a.data!r}")
    if own and (a.partition != "natural" or a.sites is not None):
        p.error("with --data DIR the sites are the folder's files; drop --partition and --sites")


def parse_args(argv: list[str] | None) -> DemoSettings:
    d = DemoSettings()
    p = argparse.ArgumentParser(prog="ffa-lora demo", description=__doc__)
    p.add_argument("--name", default=None,
                   help=f"run folder under --out-dir (default: {d.name}, or <folder>-demo with --data DIR)")
    p.add_argument("--data", default=d.data, type=_data_argument, metavar="NAME|DIR",
                   help=f"a built-in data set ({', '.join(BUILTIN_NAMES)}) or a folder with one CSV per "
                        "site plus test.csv (see ffa_lora_tools/own_data.py)")
    add_own_data_arguments(p)
    add_partition_arguments(p)
    p.add_argument("--out-dir", type=Path, default=d.out_dir)
    p.add_argument("--model", default=d.model, help="HF id or local path (default: the shipped MiniLM-L6)")
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--local-epochs", type=float, default=d.local_epochs)
    p.add_argument("--lr", type=float, default=None, help=LR_HELP)
    p.add_argument("--server-lr", type=float, default=d.server_learning_rate)
    p.add_argument("--lr-schedule", default=d.lr_schedule, choices=["constant", "cosine"])
    p.add_argument("--key-bits", type=int, default=d.key_bits, choices=[512, 1024, 2048, 3072])
    p.add_argument("--bits", type=int, default=d.bits, choices=[8, 16])
    p.add_argument("--clip", type=float, default=d.clip)
    p.add_argument("--strategy", default=d.strategy, choices=STRATEGIES, help=STRATEGY_HELP)
    p.add_argument("--rank", type=int, default=d.rank)
    p.add_argument("--target-modules", default=None,
                   help="comma-separated module names that get LoRA (default: query,value)")
    p.add_argument("--rank-scheduler", default=d.rank_scheduler, choices=["fixed", "dynamic"])
    p.add_argument("--edges", type=int, default=d.edges)
    p.add_argument("--keyholders", type=int, default=d.keyholders,
                   help="key-holder processes beside the coordinator, each with one share of the key")
    p.add_argument("--threshold", type=int, default=d.threshold,
                   help="shares needed to decrypt a round (t >= 2, at most key holders + 1)")
    p.add_argument("--max-train", type=int, default=None, help="keep at most this many training records (stratified)")
    p.add_argument("--max-train-per-site", type=int, default=None)
    p.add_argument("--max-test", type=int, default=None)
    p.add_argument("--personalize", action="store_true",
                   help="personalized heads: each site also fits and keeps its own task head (never uploaded) and "
                        "reports global vs personal validation scores")
    p.add_argument("--personalize-every", type=int, default=0,
                   help="with --personalize: also every this many rounds (default: the last round only)")
    p.add_argument("--head-prox", type=float, default=d.head_prox,
                   help="with --personalize: pull of the personal head towards the global one")
    p.add_argument("--no-deid", action="store_true")
    p.add_argument("--validation-fraction", type=float, default=d.validation_fraction,
                   help="share of each site's data it holds out for its validation loss (0: train on all of it)")
    p.add_argument("--timeout", type=float, default=d.timeout_s,
                   help="seconds the whole run may take before the services are stopped (default %(default)g)")
    p.add_argument("--containers", choices=["buildah"], default=None,
                   help="run the services from the images `make images` built (see ffa_lora_tools/containers.py)")
    p.add_argument("--image-tag", default="0.1.0", help="with --containers: the images' tag")
    a = p.parse_args(argv)
    check_sites(p, a.partition, a.sites)
    check_own_data_arguments(p, a)
    if not 0 <= a.validation_fraction < MAX_VALIDATION_FRACTION:
        p.error(f"--validation-fraction must be in [0, {MAX_VALIDATION_FRACTION:g}), got {a.validation_fraction}")
    return DemoSettings(name=a.name or _run_name(a.data), data=a.data, partition=a.partition,
                        text_column=a.text_column, label_column=a.label_column,
                        labels=tuple(a.labels.split(",")) if a.labels else None, encoding=a.encoding, sites=a.sites, out_dir=a.out_dir, model=a.model,
                        rounds=a.rounds, local_epochs=a.local_epochs, learning_rate=a.lr,
                        server_learning_rate=a.server_lr, lr_schedule=a.lr_schedule, key_bits=a.key_bits, bits=a.bits, clip=a.clip,
                        strategy=a.strategy, rank=a.rank, target_modules=module_list(a.target_modules),
                        rank_scheduler=a.rank_scheduler, edges=a.edges, keyholders=a.keyholders,
                        threshold=a.threshold,
                        max_train=a.max_train, max_train_per_site=a.max_train_per_site, max_test=a.max_test,
                        deid=not a.no_deid, personalization="head" if a.personalize else "off",
                        personalize_every=a.personalize_every, head_prox=a.head_prox,
                        validation_fraction=a.validation_fraction,
                        timeout_s=a.timeout, containers=a.containers, image_tag=a.image_tag)


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    summary = run_demo(settings)
    print(dumps({k: v for k, v in summary.items() if k not in ("per_round", "settings", "data")}, indent=2))
    return 0

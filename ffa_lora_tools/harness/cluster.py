"""A federation's servers as separate OS processes on loopback, for the load and reliability
benchmarks and the fault tests: certificates, the threshold key ceremony, one YAML file per
service, start / SIGKILL / restart, readiness, and read-only views of the coordinator's state
folder. The coordinator decrypts with two key-holder processes (2 of 3 shares), started with it.

Each service runs exactly as an operator would run it (``python -m ffa_lora_tools.cli serve ROLE
--config FILE``), with its log in ``<root>/logs/<name>.log``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import ffalora
import psutil
import yaml
from prometheus_client.parser import text_string_to_metric_families

import ffa_lora_tools
import services
from ffa_lora.crypto import new_fernet_key
from ffa_lora.errors import FFALoraError
from ffa_lora_tools.keys import PARAMS_NAME, holder_file_stem, run_ceremony
from services.common.certs import init_ca, issue_certificate

#: the key holders a cluster runs beside its coordinator (2 of these 3 shares decrypt)
KEY_HOLDERS = ["keyholder-1", "keyholder-2"]
COORDINATOR_HOLDER = "coordinator/coordinator"


def import_roots() -> list[str]:
    """The folders this process imports the project's packages from (the checkout and its
    ``protos/``, or site-packages for an installed wheel): child processes put them first on
    their ``PYTHONPATH`` so that they run the same code as their parent."""
    roots: list[str] = []
    for module in (ffa_lora_tools, services, ffalora):
        root = str(Path(module.__file__ or "").resolve().parents[1])
        if root not in roots:
            roots.append(root)
    return roots


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _issue_batch(certs: str, role: str, ids: list[str]) -> int:
    for i in ids:
        issue_certificate(Path(certs), Path(certs), role=role, id=i, overwrite=True)
    return len(ids)


def make_pki(certs: Path, *, edges: list[str], clients: list[str], coordinator: str = "coordinator",
             federation: str = "ffa-lora", workers: int = 1, keyholders: list[str] = KEY_HOLDERS) -> Path:
    """Create (or extend) a federation CA with certificates for every peer; existing ones are kept.

    Client certificates are issued in ``workers`` processes (EC P-256, a few ms each)."""
    certs = Path(certs)
    if not (certs / "ca.crt").exists():
        init_ca(certs, federation=federation)
    wanted = [("coordinator", coordinator)] + [("edge", e) for e in edges] + [("keyholder", k) for k in keyholders]
    for role, ident in wanted:
        if not (certs / f"{role}-{ident}.crt").exists():
            issue_certificate(certs, certs, role=role, id=ident)
    todo = [c for c in clients if not (certs / f"client-{c}.crt").exists()]
    if workers > 1 and len(todo) > 50:
        batches = [todo[i::workers] for i in range(workers)]
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_issue_batch, [str(certs)] * workers, ["client"] * workers, batches))
    else:
        _issue_batch(str(certs), "client", todo)
    return certs


def key_ceremony(keys: Path, *, coordinator_fernet: Path, bits: int = 512, keyholders: list[str] = KEY_HOLDERS,
                 workers: int | None = 0) -> Path:
    """A 2-of-3 threshold key in ``keys`` (coordinator + ``keyholders``); the coordinator's share
    sealed with ``coordinator_fernet``. Keys below 2048 bits are TEST-ONLY."""
    run_ceremony(keys, holders=[COORDINATOR_HOLDER, *(f"keyholder/{k}" for k in keyholders)], threshold=2,
                 bits=bits, test_only=bits < 2048, workers=workers,
                 fernet_keys={COORDINATOR_HOLDER: coordinator_fernet}, overwrite=True)
    return keys


def tls_block(certs: Path, role: str, ident: str) -> dict[str, str]:
    return {"ca": str(certs / "ca.crt"), "cert": str(certs / f"{role}-{ident}.crt"),
            "key": str(certs / f"{role}-{ident}.key")}


def wait_port(port: int, *, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise FFALoraError(f"process exited with code {proc.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise FFALoraError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s") from None
            time.sleep(0.1)


@dataclass
class ServiceProcess:
    """One service process: its config file, log and Popen handle."""

    name: str
    role: str
    config: Path
    log: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    killed: int = 0  # how many times this harness killed it on purpose
    exits: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> int:
        """Resident memory in bytes (0 when not running)."""
        try:
            return int(psutil.Process(self.pid).memory_info().rss) if self.alive() else 0
        except psutil.Error:
            return 0


class Cluster:
    """Coordinator and edges of one federation as processes under ``root``.

    ``federation`` is merged into a small default federation block (512-bit test keys, a tiny
    model path); ``edge_limits`` go into every edge's ``limits``.
    """

    def __init__(self, root: Path, *, model: str, certs: Path, federation: dict[str, Any] | None = None,
                 edge_limits: dict[str, Any] | None = None, coordinator_limits: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, metrics: bool = False, log_level: str = "INFO") -> None:
        self.root = Path(root)
        self.certs = Path(certs)
        self.model = model
        self.edge_limits, self.coordinator_limits = edge_limits, coordinator_limits
        self.metrics, self.log_level = metrics, log_level
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        (self.root / "config").mkdir(exist_ok=True)
        self.fernet = self.root / "fernet.key"
        if not self.fernet.exists():
            self.fernet.write_bytes(new_fernet_key())
            os.chmod(self.fernet, 0o600)
        fed: dict[str, Any] = {
            "name": "bench", "seed": 7, "labels": ["negative", "neutral", "positive"],
            "model": {"name_or_path": model, "num_labels": 3, "rank": 4, "alpha": 8.0, "max_length": 16},
            "rounds": {"max_rounds": 2, "min_clients": 3, "deadline_s": 30, "wait_for_clients_s": 120,
                       "patience": 100},
            "secure_sum": {"key_bits": 512, "bits": 16, "clip": 0.5},
            "test_mode": True,  # 512-bit keys
        }
        for k, v in (federation or {}).items():
            fed[k] = {**fed.get(k, {}), **v} if isinstance(v, dict) else v
        self.federation = fed
        self.state_dir = self.root / "state" / "coordinator"
        self.keys = self.root / "keys"
        self.keyholders = list(KEY_HOLDERS)
        self.coordinator_port = free_port()
        self.services: dict[str, ServiceProcess] = {}
        self.metrics_ports: dict[str, int] = {}
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                        TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", **(env or {}))
        self.env["PYTHONPATH"] = os.pathsep.join([*import_roots(), self.env.get("PYTHONPATH", "")]
                                                 ).rstrip(os.pathsep)

    @property
    def coordinator_address(self) -> str:
        return f"127.0.0.1:{self.coordinator_port}"

    # -- configs -------------------------------------------------------------------------------

    def _write(self, name: str, doc: dict[str, Any]) -> Path:
        p = self.root / "config" / f"{name}.yaml"
        p.write_text(yaml.safe_dump(doc, sort_keys=False))
        return p

    def _metrics_block(self, name: str) -> dict[str, Any]:
        if not self.metrics:
            return {"port": None}
        port = self.metrics_ports.setdefault(name, free_port())
        return {"host": "127.0.0.1", "port": port}

    def coordinator_config(self) -> Path:
        doc = {"service": "coordinator", "log_level": self.log_level,
               "tls": tls_block(self.certs, "coordinator", "coordinator"),
               "metrics": self._metrics_block("coordinator"),
               "coordinator": {"listen": self.coordinator_address, "state_dir": str(self.state_dir),
                               "fernet_key_file": str(self.fernet), "federation": self.federation,
                               "decrypt_workers": 1,
                               "threshold": {"params_file": str(self.keys / PARAMS_NAME),
                                             "share_file": str(self.keys / f"{holder_file_stem(COORDINATOR_HOLDER)}.share"),
                                             "decrypt_timeout_s": 120},
                               **({"limits": self.coordinator_limits} if self.coordinator_limits else {})}}
        return self._write("coordinator", doc)

    def edge_config(self, name: str, *, identity: str, port: int, coordinator_address: str) -> Path:
        doc = {"service": "edge", "log_level": self.log_level, "tls": tls_block(self.certs, "edge", identity),
               "metrics": self._metrics_block(name),
               "edge": {"listen": f"127.0.0.1:{port}", "region": "r-" + identity.lower()[:60],
                        "coordinator_address": coordinator_address,
                        **({"limits": self.edge_limits} if self.edge_limits else {})}}
        return self._write(name, doc)

    def keyholder_config(self, ident: str) -> Path:
        stem = f"keyholder-{ident}"
        doc = {"service": "keyholder", "log_level": self.log_level, "tls": tls_block(self.certs, "keyholder", ident),
               "metrics": self._metrics_block(f"keyholder-{ident}"),
               "keyholder": {"federation": self.federation["name"], "coordinator_address": self.coordinator_address,
                             "share_file": str(self.keys / f"{stem}.share"),
                             "fernet_key_file": str(self.keys / f"{stem}.fernet"),
                             "state_dir": str(self.root / "state" / stem), "workers": 1}}
        return self._write(stem, doc)

    def ensure_keys(self) -> None:
        """The threshold key: made here (512-bit, test-only) unless :meth:`install_keys` put one."""
        if not (self.keys / PARAMS_NAME).exists():
            key_ceremony(self.keys, coordinator_fernet=self.fernet,
                         bits=int(self.federation["secure_sum"]["key_bits"]), keyholders=self.keyholders)

    def install_keys(self, keys_dir: Path) -> None:
        """Reuse a threshold key made earlier (e.g. a 2048-bit one shared by several runs, see
        :func:`key_ceremony`); its coordinator share must be sealed with this cluster's Fernet key
        (see :meth:`share_fernet`)."""
        if self.keys.exists():
            shutil.rmtree(self.keys)
        shutil.copytree(keys_dir, self.keys)

    def share_fernet(self, fernet_file: Path) -> None:
        self.fernet.write_bytes(Path(fernet_file).read_bytes())

    # -- processes -----------------------------------------------------------------------------

    def _spawn(self, svc: ServiceProcess) -> None:
        with open(svc.log, "ab") as log:  # the child keeps its own descriptor
            log.write(f"---- start {time.strftime('%H:%M:%S')} ----\n".encode())
            log.flush()
            svc.proc = subprocess.Popen(
                [sys.executable, "-m", "ffa_lora_tools.cli", "serve", svc.role, "--config", str(svc.config)],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=str(self.root))

    def start_coordinator(self, *, wait: bool = True, timeout: float = 90.0,
                          keyholders: bool = True) -> ServiceProcess:
        """Start the coordinator (and, with ``keyholders``, every key holder not running yet)."""
        self.ensure_keys()
        svc = self.services.get("coordinator")
        if svc is None:
            svc = ServiceProcess("coordinator", "coordinator", self.coordinator_config(),
                                 self.root / "logs" / "coordinator.log", self.coordinator_port)
            self.services["coordinator"] = svc
        elif svc.alive():
            raise FFALoraError("coordinator is already running")
        self._spawn(svc)
        if wait:
            wait_port(svc.port, timeout=timeout, proc=svc.proc)
        if keyholders:
            for k in self.keyholders:
                running = self.services.get(f"keyholder-{k}")
                if running is None or not running.alive():
                    self.start_keyholder(k)
        return svc

    def start_keyholder(self, ident: str) -> ServiceProcess:
        """Start key holder ``ident`` (it connects out to the coordinator and retries until it
        is there)."""
        self.ensure_keys()
        name = f"keyholder-{ident}"
        svc = self.services.get(name)
        if svc is None:
            svc = ServiceProcess(name, "keyholder", self.keyholder_config(ident), self.root / "logs" / f"{name}.log", 0)
            self.services[name] = svc
        elif svc.alive():
            raise FFALoraError(f"{name} is already running")
        self._spawn(svc)
        return svc

    def start_edge(self, name: str, *, identity: str | None = None, port: int | None = None,
                   coordinator_address: str | None = None, wait: bool = True) -> ServiceProcess:
        """Start edge ``name`` (certificate ``identity``, default ``name``: a second process with
        the same identity is a replica of that edge)."""
        svc = self.services.get(name)
        if svc is None:
            port = port or free_port()
            cfg = self.edge_config(name, identity=identity or name, port=port,
                                   coordinator_address=coordinator_address or self.coordinator_address)
            svc = ServiceProcess(name, "edge", cfg, self.root / "logs" / f"{name}.log", port)
            self.services[name] = svc
        elif svc.alive():
            raise FFALoraError(f"{name} is already running")
        self._spawn(svc)
        if wait:
            wait_port(svc.port, timeout=30, proc=svc.proc)
        return svc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (default SIGKILL) and reap the process."""
        svc = self.services[name]
        if not svc.alive():
            return
        assert svc.proc is not None
        svc.proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            svc.proc.wait(30)
            svc.killed += 1
            svc.exits.append(svc.proc.returncode)

    def wait_exit(self, name: str, timeout: float) -> int | None:
        svc = self.services[name]
        if svc.proc is None:
            return None
        try:
            rc = svc.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return rc

    def unexpected_exits(self) -> dict[str, int]:
        """Processes that ended on their own with a non-zero code (a crash)."""
        out: dict[str, int] = {}
        for name, svc in self.services.items():
            if svc.proc is not None and svc.proc.poll() not in (None, 0) and svc.proc.returncode != -signal.SIGKILL:
                out[name] = int(svc.proc.returncode)
        return out

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every running process, then SIGKILL what is left."""
        for svc in self.services.values():
            if svc.alive():
                assert svc.proc is not None
                svc.proc.terminate()
        end = time.monotonic() + timeout
        for svc in self.services.values():
            if svc.proc is None:
                continue
            try:
                svc.proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                svc.proc.kill()
                svc.proc.wait(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def scrape(self, name: str) -> dict[str, float]:
        """The Prometheus samples of a service started with ``metrics=True``
        (``name{label="v",...}`` -> value, the ``service`` label left out); {} if unreachable."""
        port = self.metrics_ports.get(name)
        if port is None:
            return {}
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(text):
            for smp in fam.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(smp.labels.items()) if k != "service")
                out[f"{smp.name}{{{labels}}}" if labels else smp.name] = smp.value
        return out

    def log_text(self, name: str) -> str:
        p = self.root / "logs" / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    # -- the coordinator's state, read-only ------------------------------------------------------

    def _db(self) -> sqlite3.Connection | None:
        db = self.state_dir / "coordinator.db"
        if not db.exists():
            return None
        return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2.0)

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        for _ in range(20):
            con = self._db()
            if con is None:
                return []
            try:
                return con.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                time.sleep(0.05)
            finally:
                con.close()
        return []

    def rounds(self) -> list[dict[str, Any]]:
        """Committed rounds: round, adapter_version, contributors, metrics."""
        rows = self._query("SELECT round, adapter_version, contributors, metrics FROM rounds ORDER BY round")
        return [{"round": r, "adapter_version": v, "contributors": json.loads(c), "metrics": json.loads(m)}
                for r, v, c, m in rows]

    def ledger(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT round, mechanism, epsilon, delta FROM privacy_ledger ORDER BY round")
        return [{"index": r, "mechanism": m, "epsilon": e, "delta": d} for r, m, e, d in rows]

    def meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0][0] if rows else None

    def adapter_blob(self, version: int) -> bytes:
        """The stored adapter file of ``version`` (0 = none stored: the initial state)."""
        rows = self._query("SELECT file FROM adapters WHERE version=?", (version,))
        if not rows:
            raise FFALoraError(f"adapter v{version} is not in the store")
        return (self.state_dir / rows[0][0]).read_bytes()


__all__ = ["KEY_HOLDERS", "Cluster", "ServiceProcess", "free_port", "import_roots", "key_ceremony", "make_pki",
           "tls_block", "wait_port"]

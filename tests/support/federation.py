"""Test-only harness: a real coordinator and real edges (grpc.aio servers on 127.0.0.1:0 with
real mutual TLS) in one event loop, and client agents whose local training is replaced by
known synthetic updates -- the encryption, upload and aggregation paths are the real ones.

Uses 512-bit Paillier keys (test-only) and a tiny random BERT so a round takes seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load

from ffa_lora.crypto import PackingLayout, PublicKey, new_fernet_key
from ffa_lora.lora import LoRASpec
from ffa_lora_tools.keys import CeremonyFiles, run_ceremony
from services.client_agent.agent import ClientAgent
from services.client_agent.update import PreparedUpdate, encrypt_update
from services.common import domain as d
from services.common.certs import TLSFiles, init_ca, issue_certificate
from services.common.config import ServiceConfig, parse_config
from services.common.metrics import create_metrics

KEY_HOLDERS = ["keyholder-1", "keyholder-2"]


def make_pki(root: Path, *, edges: list[str], clients: list[str], keyholders: list[str] = KEY_HOLDERS) -> Path:
    certs = root / "certs"
    init_ca(certs, federation="ffa-lora")
    issue_certificate(certs, certs, role="coordinator", id="coordinator")
    for e in edges:
        issue_certificate(certs, certs, role="edge", id=e)
    for c in clients:
        issue_certificate(certs, certs, role="client", id=c)
    for k in keyholders:
        issue_certificate(certs, certs, role="keyholder", id=k)
    return certs


def key_ceremony(root: Path, *, keyholders: list[str] = KEY_HOLDERS, threshold: int = 2) -> CeremonyFiles:
    """A 2-of-3 threshold key (coordinator + two key holders), 512 bits: TEST-ONLY key size.
    The coordinator's share is sealed with ``root/fernet.key``."""
    fernet = root / "fernet.key"
    if not fernet.exists():
        fernet.write_bytes(new_fernet_key())
    return run_ceremony(root / "keys", holders=["coordinator/coordinator", *(f"keyholder/{k}" for k in keyholders)],
                        threshold=threshold, bits=512, test_only=True, workers=0,
                        fernet_keys={"coordinator/coordinator": fernet}, overwrite=True)


def keyholder_config(root: Path, certs: Path, holder_id: str, coordinator_port: int, *, federation: str = "test",
                     **keyholder: Any) -> ServiceConfig:
    stem = f"keyholder-{holder_id}"
    return parse_config({
        "service": "keyholder", "tls": tls(certs, "keyholder", holder_id),
        "keyholder": {"federation": federation, "coordinator_address": f"127.0.0.1:{coordinator_port}",
                      "share_file": str(root / "keys" / f"{stem}.share"),
                      "fernet_key_file": str(root / "keys" / f"{stem}.fernet"),
                      "state_dir": str(root / stem), "workers": 0, **keyholder},
    })


def tls(certs: Path, role: str, ident: str) -> dict[str, str]:
    return {"ca": str(certs / "ca.crt"), "cert": str(certs / f"{role}-{ident}.crt"),
            "key": str(certs / f"{role}-{ident}.key")}


def tls_files(certs: Path, role: str, ident: str) -> TLSFiles:
    t = tls(certs, role, ident)
    return TLSFiles(ca=Path(t["ca"]), cert=Path(t["cert"]), key=Path(t["key"]))


def coordinator_config(root: Path, certs: Path, model_dir: Path, **federation: Any) -> ServiceConfig:
    """The coordinator's config; runs the (test-only) key ceremony into ``root/keys`` first
    unless it ran already."""
    fernet = root / "fernet.key"
    if not (root / "keys" / "threshold.params").exists():
        key_ceremony(root)
    fed: dict[str, Any] = {
        "name": "test",
        "seed": 7,
        "model": {"name_or_path": str(model_dir), "num_labels": 3, "rank": 4, "alpha": 8.0, "max_length": 16},
        "rounds": {"max_rounds": 1, "min_clients": 3, "deadline_s": 60, "wait_for_clients_s": 60},
        "secure_sum": {"key_bits": 512, "bits": 16, "clip": 0.5},
        "test_mode": True,  # 512-bit keys
    }
    for k, v in federation.items():
        fed[k] = {**fed.get(k, {}), **v} if isinstance(v, dict) else v
    return parse_config({
        "service": "coordinator", "tls": tls(certs, "coordinator", "coordinator"),
        "coordinator": {"listen": "127.0.0.1:0", "state_dir": str(root / "coordinator"),
                        "fernet_key_file": str(fernet), "federation": fed, "decrypt_workers": 0,
                        "threshold": {"params_file": str(root / "keys" / "threshold.params"),
                                      "share_file": str(root / "keys" / "coordinator-coordinator.share"),
                                      "decrypt_timeout_s": 60}},
    })


def edge_config(certs: Path, edge_id: str, coordinator_port: int, **limits: Any) -> ServiceConfig:
    return parse_config({
        "service": "edge", "tls": tls(certs, "edge", edge_id),
        "edge": {"listen": "127.0.0.1:0", "region": edge_id, "coordinator_address": f"127.0.0.1:{coordinator_port}",
                 **({"limits": limits} if limits else {})},
    })


def client_config(root: Path, certs: Path, client_id: str, edge_ports: list[int], *, model: str = "demo",
                  **client: Any) -> ServiceConfig:
    """``model``: the base model the client agrees to load (the coordinator's name_or_path)."""
    data = root / f"{client_id}.csv"
    data.write_text("text,label\nhello,negative\n")
    return parse_config({
        "service": "client", "tls": tls(certs, "client", client_id),
        "client": {"edges": [f"127.0.0.1:{p}" for p in edge_ports], "data": {"path": str(data)}, "model": model,
                   "deid": {"enabled": False}, "state_dir": str(root / client_id), "max_reconnect_s": 1.0, **client},
    })


@dataclass
class SyntheticTrainer:
    """Stands in for LocalTrainer: 'trains' by returning a known random update per round."""

    client_id: str
    num_samples: int
    scale: float = 0.05
    seed: int = 0
    version: int = 0
    state: dict[str, np.ndarray] | None = None
    spec: LoRASpec | None = None
    device: str = "cpu"
    deltas: dict[int, np.ndarray] = field(default_factory=dict)
    delay: float = 0.0  # seconds of pretend training (runs in a worker thread)
    # Called with each task before training starts, in the worker thread: a test holds a
    # client back until the federation reaches a state it names (deterministic, unlike a delay).
    wait: Callable[[d.RoundTask], None] | None = None

    def set_spec(self, spec: LoRASpec, labels: tuple[str, ...]) -> None:
        self.spec = spec

    def load_adapter(self, version: int, blob: bytes) -> None:
        self.state, self.version = dict(st_load(blob)), version

    def run_task(self, task: d.RoundTask, public_key: PublicKey) -> PreparedUpdate:
        if self.wait is not None:
            self.wait(task)
        time.sleep(self.delay)
        layout = PackingLayout.from_bytes(task.secure_sum.layout)
        rng = np.random.default_rng([self.seed, task.round])
        delta = rng.uniform(-self.scale, self.scale, size=task.assignment.num_values)
        self.deltas[task.round] = delta
        vec, crypto_s = encrypt_update(delta, task, public_key, layout)
        key = f"{self.client_id}:{task.round}:{hashlib.sha256(delta.tobytes()).hexdigest()[:16]}"
        return PreparedUpdate(round=task.round, vec=vec, idempotency_key=key, num_samples=self.num_samples,
                              rank=task.assignment.rank, quality=d.Quality(train_loss=1.0 - 0.1 * task.round),
                              base_version=self.version, train_seconds=0.01, crypto_seconds=crypto_s)


class InProcessFederation:
    """Coordinator + edges in this event loop; clients added as tasks."""

    def __init__(self, root: Path, model_dir: Path, *, edges: int = 2, clients: int = 3, **federation: Any) -> None:
        self.root, self.model_dir = root, model_dir
        self.edge_ids = [f"edge-{i + 1}" for i in range(edges)]
        self.client_ids = [f"client-{i + 1}" for i in range(clients)]
        self.certs = make_pki(root, edges=self.edge_ids, clients=self.client_ids + ["intruder"])
        self.federation = federation
        self.tasks: list[asyncio.Task[Any]] = []
        self.coordinator: Any = None
        self.edges: dict[str, Any] = {}
        self.edge_ports: dict[str, int] = {}
        self.trainers: dict[str, SyntheticTrainer] = {}
        self.agents: dict[str, ClientAgent] = {}
        self.coordinator_port = 0
        self.edge_limits: dict[str, Any] = {}  # the edges' ``limits:`` values
        self.keyholder_ids = list(KEY_HOLDERS)  # the key holders started with the servers
        self.keyholder_settings: dict[str, Any] = {}  # extra ``keyholder:`` values
        self.keyholder_tasks: dict[str, asyncio.Task[Any]] = {}

    async def start_servers(self) -> None:
        from services.cloud_coordinator.main import serve as serve_coordinator
        from services.edge_aggregator.main import serve as serve_edge

        ready: asyncio.Future[tuple[int, Any]] = asyncio.get_running_loop().create_future()
        cfg = coordinator_config(self.root, self.certs, self.model_dir, **self.federation)
        self.tasks.append(asyncio.create_task(serve_coordinator(
            cfg, ready=lambda port, c: ready.set_result((port, c)), on_round=lambda s: None)))
        self.coordinator_port, self.coordinator = await asyncio.wait_for(ready, 60)
        for k in self.keyholder_ids:
            self.start_keyholder(k)
        for e in self.edge_ids:
            fut: asyncio.Future[tuple[int, Any]] = asyncio.get_running_loop().create_future()
            self.tasks.append(asyncio.create_task(serve_edge(
                edge_config(self.certs, e, self.coordinator_port, **self.edge_limits),
                ready=lambda port, edge, f=fut: f.set_result((port, edge)))))
            self.edge_ports[e], self.edges[e] = await asyncio.wait_for(fut, 30)

    def start_keyholder(self, holder_id: str, **keyholder: Any) -> asyncio.Task[Any]:
        """Start key holder ``holder_id`` in this event loop (its share from the ceremony)."""
        from services.key_holder.main import serve as serve_keyholder

        cfg = keyholder_config(self.root, self.certs, holder_id, self.coordinator_port,
                               **{**self.keyholder_settings, **keyholder})
        task = asyncio.create_task(serve_keyholder(cfg))
        self.keyholder_tasks[holder_id] = task
        self.tasks.append(task)
        return task

    async def wait_keyholders(self, count: int | None = None, timeout: float = 30) -> None:
        """Wait until ``count`` (default: all started) key holders are connected."""
        want = len(self.keyholder_tasks) if count is None else count
        deadline = time.monotonic() + timeout
        while len(self.coordinator.decryption.connected()) < want:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.coordinator.decryption.connected())} of {want} key holders connected")
            await asyncio.sleep(0.05)

    def start_client(self, cid: str, *, edge_index: int = 0, num_samples: int = 100, seed: int = 0,
                     delay: float = 0.0, wait: Callable[[d.RoundTask], None] | None = None,
                     **client: Any) -> ClientAgent:
        """``client``: extra ``client:`` config values (e.g. ``session="check_in"``); ``wait``: see
        :attr:`SyntheticTrainer.wait`."""
        ports = [self.edge_ports[self.edge_ids[(edge_index + i) % len(self.edge_ids)]] for i in range(len(self.edge_ids))]
        cfg = client_config(self.root, self.certs, cid, ports, model=str(self.model_dir), **client)
        trainer = SyntheticTrainer(cid, num_samples, seed=seed, delay=delay, wait=wait)
        agent = ClientAgent(cfg.client, tls_files(self.certs, "client", cid), trainer,  # type: ignore[arg-type]
                            create_metrics("client"))
        # Every agent, server and test shares this process and its (large) heap: a full garbage
        # collection after each agent's session would stall them all; Python's own collector
        # frees old connections here (the agent's collection is tested on its own).
        agent.collect_after_session = False
        self.trainers[cid], self.agents[cid] = trainer, agent
        self.tasks.append(asyncio.create_task(agent.run()))
        return agent

    def start_training_client(self, cid: str, *, n: int = 60, seed: int = 0) -> Any:
        """A client agent with the REAL local trainer on ``n`` tiny labelled texts (on the first
        edge, no de-identification, one thread); returns its ``LocalTrainer``."""
        import csv

        from services.client_agent.trainer import LocalTrainer
        from tests.unit.lora.conftest import make_tiny_dataset

        data = make_tiny_dataset(n=n, seed=seed)
        path = self.root / f"{cid}.csv"
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "label"])
            w.writerows([t, data.label_names[y]] for t, y in zip(data.texts, data.labels))
        cfg = parse_config({
            "service": "client", "tls": tls(self.certs, "client", cid),
            "client": {"edges": [f"127.0.0.1:{self.edge_ports[self.edge_ids[0]]}"], "data": {"path": str(path)},
                       "model": str(self.model_dir), "deid": {"enabled": False}, "state_dir": str(self.root / cid),
                       "num_threads": 1},
        })
        assert cfg.client is not None
        trainer = LocalTrainer(cfg.client, client_id=cid)
        agent = ClientAgent(cfg.client, tls_files(self.certs, "client", cid), trainer, create_metrics("client"))
        self.agents[cid] = agent
        self.tasks.append(asyncio.create_task(agent.run()))
        return trainer

    async def wait_finished(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.coordinator.finished:
            if time.monotonic() > deadline:
                raise TimeoutError("federation did not finish")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

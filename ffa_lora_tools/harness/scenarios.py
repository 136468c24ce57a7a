"""Fault scenarios against a real federation: the coordinator and edges run as OS processes
(``python -m ffa_lora_tools.cli serve ...``, real mutual TLS on loopback, SQLite state folder), the
clients are real :class:`ClientAgent`s in this process whose training is replaced by known
synthetic updates (encrypted and streamed through the real path).

Every scenario ends with an audit of the coordinator's state folder that does not trust the
services: for each committed round it recovers the applied mean update from the stored
adapters and solves for how many times each client's known update is inside it (least
squares). ``lost`` counts updates an edge acknowledged for a committed round that are not in
that round's sum; ``double_counted`` counts extra copies of any update.

Used by ``tests/reliability/test_*.py`` (assertions) and ``ffa-lora bench reliability``
(JSON report).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load

from ffa_lora.crypto import Encryptor, PackingLayout, PublicKey, Quantizer
from ffa_lora_tools.harness.cluster import Cluster, free_port, make_pki
from ffa_lora_tools.harness.faultproxy import FaultProxy
from ffa_lora_tools.harness.raw_client import RawClient
from ffa_lora_tools.harness.tiny_model import tiny_bert
from services.client_agent.agent import ClientAgent, upload_messages
from services.client_agent.update import PreparedUpdate, privatize
from services.cloud_coordinator.adapter_ops import LoraAdapterOps, lora_spec
from services.common import domain as d
from services.common.certs import TLSFiles
from services.common.config import ClientConfig, DataConfig, DeidSettings, parse_federation
from services.common.metrics import create_metrics

log = logging.getLogger(__name__)

CLIENTS = ["client-1", "client-2", "client-3"]
EDGES = ["edge-1", "edge-2"]


@cache
def tiny_model(cache_dir: str) -> Path:
    """The tiny random BERT of the LoRA unit tests (same config and seed), saved once per directory."""
    return tiny_bert(Path(cache_dir) / "tiny-bert")


# ---------------------------------------------------------------------------------------------
# clients


class GatedTrainer:
    """A stand-in for LocalTrainer: 'trains' a known random update per (seed, round), optionally
    waiting on a gate or sleeping first, and encrypts it in-process (no worker pool)."""

    def __init__(self, client_id: str, *, seed: int, num_samples: int = 100, scale: float = 0.05) -> None:
        self.client_id, self.seed, self.num_samples, self.scale = client_id, seed, num_samples, scale
        self.version = 0
        self.state: dict[str, np.ndarray] | None = None
        self.spec: Any = None
        self.device = "cpu"
        self.gate: threading.Event | None = None
        self.delay: dict[int, float] = {}  # round -> seconds ("trains" that long)
        self.deltas: dict[int, np.ndarray] = {}
        self.started: dict[int, float] = {}
        self.tasks: list[tuple[int, int]] = []  # (round, adapter version) of every task trained

    def set_spec(self, spec: Any, labels: tuple[str, ...]) -> None:
        self.spec = spec

    def load_adapter(self, version: int, blob: bytes) -> None:
        self.state, self.version = dict(st_load(blob)), version

    def delta(self, round_: int, n: int) -> np.ndarray:
        return np.random.default_rng([self.seed, round_]).uniform(-self.scale, self.scale, size=n)

    def run_task(self, task: d.RoundTask, public_key: PublicKey) -> PreparedUpdate:
        self.started[task.round] = time.time()
        self.tasks.append((task.round, task.adapter_version))
        if self.gate is not None:
            self.gate.wait(120)
        if self.delay.get(task.round):
            time.sleep(self.delay[task.round])
        layout = PackingLayout.from_bytes(task.secure_sum.layout)
        delta, _ = privatize(self.delta(task.round, task.assignment.num_values), task)
        self.deltas[task.round] = delta
        t0 = time.perf_counter()
        codes = Quantizer(clip=task.secure_sum.clip, bits=task.secure_sum.bits).quantize(
            delta, rng=np.random.default_rng([self.seed, task.round, 1]))
        vec = Encryptor(public_key, layout, workers=0).encrypt_codes(codes)
        key = f"{self.client_id}:{task.round}:{hashlib.sha256(delta.tobytes()).hexdigest()[:16]}"
        return PreparedUpdate(round=task.round, vec=vec, idempotency_key=key, num_samples=self.num_samples,
                              rank=task.assignment.rank, quality=d.Quality(train_loss=1.0 / (1 + task.round)),
                              base_version=self.version, train_seconds=0.01, crypto_seconds=time.perf_counter() - t0)


class RecordingAgent(ClientAgent):
    """ClientAgent that records every acknowledgement it gets."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.acks: list[tuple[int, int, str]] = []  # (round, status code, reason)
        self.resends = 0  # kept updates sent again after a reconnect

    def _on_ack(self, ack: Any) -> None:
        self.acks.append((ack.round, ack.status.code, ack.status.reason))
        super()._on_ack(ack)

    def _start_task(self, task: d.RoundTask, queue: Any) -> None:
        if self.kept is not None and self.kept.round == task.round:
            self.resends += 1
        super()._start_task(task, queue)


class Fleet:
    """Client agents of one federation running as tasks in the current event loop."""

    def __init__(self, root: Path, certs: Path, *, model: str = "demo") -> None:
        self.root, self.certs, self.model = root, certs, model
        self.trainers: dict[str, GatedTrainer] = {}
        self.agents: dict[str, RecordingAgent] = {}
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.errors: list[str] = []

    def start(self, cid: str, edges: list[str], *, seed: int | None = None, max_reconnect_s: float = 2.0) -> RecordingAgent:
        trainer = self.trainers.get(cid) or GatedTrainer(cid, seed=seed if seed is not None else sum(cid.encode()))
        cfg = ClientConfig(edges=edges, data=DataConfig(path=self.root / "unused.csv"),
                           deid=DeidSettings(enabled=False), state_dir=self.root / cid, max_reconnect_s=max_reconnect_s,
                           model=self.model)
        files = TLSFiles(ca=self.certs / "ca.crt", cert=self.certs / f"client-{cid}.crt",
                         key=self.certs / f"client-{cid}.key")
        agent = RecordingAgent(cfg, files, trainer, create_metrics("client"))  # type: ignore[arg-type]
        self.trainers[cid], self.agents[cid] = trainer, agent
        task = asyncio.create_task(agent.run(), name=cid)
        task.add_done_callback(functools.partial(self._done, cid))
        self.tasks[cid] = task
        return agent

    def _done(self, cid: str, t: asyncio.Task[Any]) -> None:
        if not t.cancelled() and t.exception() is not None:
            self.errors.append(f"{cid}: {type(t.exception()).__name__}: {t.exception()}")

    async def stop(self, cid: str | None = None) -> None:
        for c in [cid] if cid else list(self.tasks):
            t = self.tasks[c]
            if not t.done():
                t.cancel()
                await asyncio.gather(t, return_exceptions=True)

    async def wait_finished(self, timeout: float) -> bool:
        pending = [t for t in self.tasks.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        return all(t.done() for t in self.tasks.values())

    def acked_ok(self) -> dict[str, set[int]]:
        """Rounds for which each client was told its update counts (accepted or duplicate)."""
        return {c: {r for r, code, reason in a.acks if code == 0 or reason == "duplicate"}
                for c, a in self.agents.items()}

    def rejected(self) -> Counter[str]:
        return Counter(reason for a in self.agents.values() for _, code, reason in a.acks
                       if code != 0 and reason != "duplicate")


async def wait_for(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(step)


# ---------------------------------------------------------------------------------------------
# the audit


@dataclass
class Audit:
    rounds_committed: int = 0
    lost: int = 0
    double_counted: int = 0
    details: list[str] = field(default_factory=list)
    multiplicities: dict[int, dict[str, int]] = field(default_factory=dict)


def audit(cluster: Cluster, deltas: dict[str, dict[int, np.ndarray]], acked: dict[str, set[int]], *,
          produced: dict[str, set[int]] | None = None, refused: dict[str, set[int]] | None = None,
          server_lr: float = 1.0) -> Audit:
    """Check every committed round against the known client updates (see the module docstring).

    ``deltas``: every known update (candidates for the sum). An update is lost when its round
    committed without it although an edge acknowledged it (``acked``), or although its client
    produced it (``produced``) and was never told it was refused (``refused``)."""
    fed = parse_federation(cluster.federation)
    ops = LoraAdapterOps(lora_spec(fed), labels=fed.labels)
    out = Audit()
    prev = ops.initial_state()
    rounds = cluster.rounds()
    out.rounds_committed = len(rounds)
    seen_rounds: set[int] = set()
    for rec in rounds:
        r = rec["round"]
        if r in seen_rounds:
            out.details.append(f"round {r} committed twice")
        seen_rounds.add(r)
        cur = ops.from_bytes(cluster.adapter_blob(rec["adapter_version"]))
        phase = rec["metrics"].get("phase", "B")
        layout = ops.layout(phase)
        mean = (layout.flatten(cur).astype(np.float64) - layout.flatten(prev).astype(np.float64)) / server_lr
        listed = list(rec["contributors"])
        if len(set(listed)) != len(listed):
            out.double_counted += len(listed) - len(set(listed))
            out.details.append(f"round {r}: a contributor is listed twice")
        weights = rec["metrics"].get("weights") or {c: 1 for c in listed}
        cands = sorted(c for c, ds in deltas.items() if r in ds)
        missing = [c for c in listed if c not in cands]
        if missing:
            out.details.append(f"round {r}: contributors {missing} have no known update")
        total_w = float(sum(weights[c] for c in listed))
        w_default = max(weights.values()) if weights else 1
        if cands:
            a = np.zeros((mean.size, len(cands)))
            for i, c in enumerate(cands):  # a lower-rank update is a prefix of the full vector
                a[: min(mean.size, deltas[c][r].size), i] = deltas[c][r][: mean.size]
            x, *_ = np.linalg.lstsq(a, mean * total_w, rcond=None)
            mult = {c: round(float(x[i]) / weights.get(c, w_default)) for i, c in enumerate(cands)}
        else:
            mult = {}
        out.multiplicities[r] = mult
        for c, m in mult.items():
            if m > 1:
                out.double_counted += m - 1
                out.details.append(f"round {r}: {c}'s update is in the sum {m} times")
            if c in listed and m == 0:
                out.lost += 1
                out.details.append(f"round {r}: {c} is listed but its update is not in the sum")
            if c not in listed and m > 0:
                out.double_counted += m
                out.details.append(f"round {r}: {c}'s update is in the sum but not listed")
        for c in set(acked) | set(produced or {}):
            if mult.get(c, 0) != 0:
                continue
            if r in acked.get(c, set()):
                out.lost += 1
                out.details.append(f"round {r}: {c} was acknowledged but its update is not in the sum")
            elif r in (produced or {}).get(c, set()) and r not in (refused or {}).get(c, set()):
                out.lost += 1
                out.details.append(f"round {r}: {c} produced an update that was neither counted nor refused")
        prev = cur
    return out


# ---------------------------------------------------------------------------------------------
# scenarios


@dataclass
class ScenarioResult:
    name: str
    faults: Counter[str] = field(default_factory=Counter)
    rounds_committed: int = 0
    lost: int = 0
    double_counted: int = 0
    crashes: int = 0
    seconds: float = 0.0
    checks: dict[str, Any] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "faults": dict(self.faults), "rounds_committed": self.rounds_committed,
                "lost": self.lost, "double_counted": self.double_counted, "crashes": self.crashes,
                "seconds": round(self.seconds, 1), "checks": self.checks, "details": self.details[:20]}


class Env:
    """PKI, tiny model and a cluster under ``root``; one per scenario."""

    def __init__(self, root: Path, *, federation: dict[str, Any] | None = None, edges: list[str] | None = None,
                 clients: list[str] | None = None, edge_limits: dict[str, Any] | None = None) -> None:
        self.root = root
        self.clients = clients or CLIENTS
        self.edges = edges or EDGES
        self.certs = make_pki(root / "certs", edges=self.edges, clients=self.clients + ["mallory"])
        model = tiny_model(str(root.parent / "model-cache"))
        self.cluster = Cluster(root, model=str(model), certs=self.certs, federation=federation,
                               edge_limits=edge_limits, metrics=True)
        self.fleet = Fleet(root, self.certs, model=str(model))
        self.result = ScenarioResult("")
        self.post_checks: list[Callable[[], None]] = []  # run after the federation finished

    async def start(self, homes: dict[str, list[str]], *, edges: list[str] | None = None,
                    extra: dict[str, int] | None = None) -> None:
        """Edges first, then the clients (``homes``: client -> edge names or addresses in
        reconnect order), then the coordinator once every client is on its edge's roster (plus
        ``extra`` sessions per edge): the first round then includes every client (the
        coordinator plans as soon as min_clients are connected)."""
        c = self.cluster
        for e in self.edges if edges is None else edges:
            c.start_edge(e)
        for cid, names in homes.items():
            self.fleet.start(cid, [self.edge_address(n) if n in c.services else n for n in names])
        want = Counter(names[0] for names in homes.values()) + Counter(extra or {})
        await wait_for(lambda: all(c.scrape(e).get("ffalora_connected_clients", -1) >= n for e, n in want.items()),
                       60, "every client connected to its edge")
        c.start_coordinator()

    def edge_address(self, name: str) -> str:
        return f"127.0.0.1:{self.cluster.services[name].port}"

    async def finish(self, timeout: float = 120.0) -> None:
        """Wait for the coordinator to end the federation, then for clients and edges."""
        loop = asyncio.get_running_loop()
        rc = await loop.run_in_executor(None, self.cluster.wait_exit, "coordinator", timeout)
        if rc is None:
            self.result.details.append("coordinator did not finish in time")
        await self.fleet.wait_finished(30)
        for name in list(self.cluster.services):
            if name != "coordinator":
                await loop.run_in_executor(None, self.cluster.wait_exit, name, 15)

    def conclude(self, *, server_lr: float = 1.0) -> ScenarioResult:
        res = self.result
        f = self.fleet
        a = audit(self.cluster, {c: t.deltas for c, t in f.trainers.items()}, f.acked_ok(),
                  produced={c: set(f.trainers[c].deltas) for c in f.agents},
                  refused={c: {r for r, code, reason in ag.acks if code != 0 and reason != "duplicate"}
                           for c, ag in f.agents.items()},
                  server_lr=server_lr)
        res.rounds_committed, res.lost, res.double_counted = a.rounds_committed, a.lost, a.double_counted
        res.details += a.details
        crashed = self.cluster.unexpected_exits()
        res.crashes += len(crashed) + len(self.fleet.errors)
        res.details += [f"{n} exited with code {c}" for n, c in crashed.items()] + self.fleet.errors
        for name in self.cluster.services:
            if "Traceback" in self.cluster.log_text(name):
                res.details.append(f"{name} logged a traceback")
        res.checks["multiplicities"] = {str(r): m for r, m in a.multiplicities.items()}
        for check in self.post_checks:
            check()
        res.checks["rejected"] = dict(self.fleet.rejected())
        return res

    async def close(self) -> None:
        await self.fleet.stop()
        self.cluster.stop()


async def run_scenario(name: str, root: Path, body: Callable[[Env], Any], **env_kw: Any) -> ScenarioResult:
    """Build an Env, run ``body`` (async), audit, always clean up."""
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    env = Env(root, **env_kw)
    env.result.name = name
    try:
        await body(env)
        await env.finish()
        res = env.conclude(server_lr=float(env.cluster.federation.get("training", {}).get("server_learning_rate", 1.0)))
    finally:
        await env.close()
    res.seconds = time.monotonic() - t0
    return res


SYNC_FAST = {"rounds": {"max_rounds": 2, "min_clients": 2, "deadline_s": 6, "wait_for_clients_s": 60}}


async def dropout_mid_upload(root: Path) -> ScenarioResult:
    """client-3 starts its upload and vanishes half-way: no trace in the sum; the round completes
    at the deadline with the other two (>= min_clients)."""

    async def body(env: Env) -> None:
        env.cluster.start_edge("edge-1")
        e1 = env.edge_address("edge-1")
        vanish = asyncio.create_task(partial_upload_and_vanish(env, "client-3", e1))
        await asyncio.sleep(0.5)
        await env.start({"client-1": ["edge-1"], "client-2": ["edge-1"]}, edges=[], extra={"edge-1": 1})
        rnd, delta = await vanish
        env.result.faults["client_dropout_mid_upload"] += 1
        env.fleet.trainers["client-3"] = ghost = GatedTrainer("client-3", seed=0)
        ghost.deltas[rnd] = delta  # a candidate for the audit: it must be found 0 times
        env.result.checks["dropout_round"] = rnd

    return await run_scenario("dropout_mid_upload", root, body, edges=["edge-1"],
                              federation={**SYNC_FAST, "rounds": {**SYNC_FAST["rounds"], "max_rounds": 1}})


async def partial_upload_and_vanish(env: Env, cid: str, address: str) -> tuple[int, np.ndarray]:
    """A raw client session: hello, wait for the task, send the header and half of the
    ciphertexts, then drop the connection. Returns (round, the plaintext update it held)."""
    files = TLSFiles(ca=env.certs / "ca.crt", cert=env.certs / f"client-{cid}.crt", key=env.certs / f"client-{cid}.key")
    async with RawClient(address, files) as raw:
        pk, task = await raw.public_key_and_task(timeout=120)
        trainer = GatedTrainer(cid, seed=999)
        up = trainer.run_task(task, pk)
        msgs = upload_messages(up, max_chunk_bytes=pk.ciphertext_bytes)
        chunks = len(msgs) - 2  # between the begin and the commit
        assert chunks >= 2, "the update must span several chunks to be cut half-way"
        for m in msgs[: 1 + chunks // 2]:
            raw.send(m)
        await asyncio.sleep(0.5)
        raw.cancel()
    return task.round, trainer.deltas[task.round]


async def late_update(root: Path) -> ScenarioResult:
    """client-3 'trains' past the round-1 deadline: its upload is refused with
    FAILED_PRECONDITION, the round completes with the others, and it joins round 2 on time."""

    async def body(env: Env) -> None:
        await env.start({cid: ["edge-1"] for cid in env.clients})
        slow = env.fleet.trainers["client-3"]
        slow.delay[1] = 9.0  # the first round (a fresh store starts at round 1); deadline_s is 6
        await wait_for(lambda: bool(slow.started), 60, "the first task")
        r1 = min(slow.started)
        assert r1 == 1
        env.result.faults["late_update"] += 1
        env.result.checks["late_round"] = r1

    return await run_scenario("late_update", root, body, edges=["edge-1"], federation=SYNC_FAST)


# -- coordinator restarts ----------------------------------------------------------------------

KILL_POINTS = ("waiting", "training", "aggregating", "ledger", "committed")

PRIVATE = {
    "rounds": {"max_rounds": 2, "min_clients": 3, "deadline_s": 20, "wait_for_clients_s": 120},
    # a kill after the charge costs one charge: the retried round needs a spare
    "privacy": {
        "mode": "central",
        "epsilon": 5000,
        "schedule": "constant",
        "norm_clip": 1.0,
        "spare_charges": 1,
    },
    "secure_sum": {"max_weight": 1},
}


async def coordinator_sigkill(root: Path, point: str) -> ScenarioResult:
    """SIGKILL the coordinator at ``point`` of a round, restart it on the same state folder:
    it resumes from the last committed round with the same adapter and privacy ledger, and the
    federation completes with nothing lost or counted twice."""
    if point not in KILL_POINTS:
        raise ValueError(f"point must be one of {KILL_POINTS}")

    async def body(env: Env) -> None:
        c, fleet = env.cluster, env.fleet
        c.start_coordinator()
        c.start_edge("edge-1")
        c.start_edge("edge-2")
        homes = {"client-1": "edge-1", "client-2": "edge-1", "client-3": "edge-2"}
        gate = threading.Event()
        if point == "waiting":
            for cid in ("client-1", "client-2"):
                fleet.start(cid, [env.edge_address(homes[cid])])
            await asyncio.sleep(2.0)
        else:
            for cid, e in homes.items():
                fleet.start(cid, [env.edge_address(e)])
                if point == "training" or (point == "aggregating" and e == "edge-2"):
                    fleet.trainers[cid].gate = gate
        before_rounds, before_ledger = c.rounds(), c.ledger()
        hit = point
        loop = asyncio.get_running_loop()
        if point == "training":
            await wait_for(lambda: all(t.started for t in fleet.trainers.values()), 60, "all clients training")
        elif point == "aggregating":
            await wait_for(lambda: all(fleet.acked_ok()[x] for x in ("client-1", "client-2")), 60, "edge-1's clients acknowledged")
            await asyncio.sleep(0.5)  # edge-1's partial sum reaches the coordinator
        elif point == "ledger":
            hit = await loop.run_in_executor(None, _stop_after_ledger_write, c, len(before_ledger))
        elif point == "committed":
            await loop.run_in_executor(None, _poll, lambda: len(c.rounds()) > len(before_rounds), 60.0, 0.002)
        before_rounds, before_ledger = c.rounds(), c.ledger()
        c.kill("coordinator")
        env.result.faults["coordinator_sigkill"] += 1
        env.result.checks["kill_point"] = hit
        last_version = before_rounds[-1]["adapter_version"] if before_rounds else 0
        blob_before = c.adapter_blob(last_version) if before_rounds else None
        gate.set()
        await asyncio.sleep(1.0)  # edges notice; uploads reach edges whose link is down
        marks = {cid: len(t.tasks) for cid, t in fleet.trainers.items()}
        c.start_coordinator()
        if point == "waiting":
            fleet.start("client-3", [env.edge_address("edge-2")])
        probe = _RestartProbe(c, fleet, marks, last_version, blob_before, before_ledger)
        env.result.checks.update(probe.as_dict())
        env.post_checks.append(lambda: check_restart(env.result, c, fleet, probe))

    return await run_scenario(f"coordinator_sigkill_{point}", root, body, federation=PRIVATE)


@dataclass
class _RestartProbe:
    cluster: Cluster
    fleet: Fleet
    marks: dict[str, int]
    last_version: int
    blob_before: bytes | None
    ledger_before: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"resumed_from_version": self.last_version, "ledger_rows_before_kill": len(self.ledger_before)}


def _poll(pred: Callable[[], bool], timeout: float, step: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(step)


def _stop_after_ledger_write(c: Cluster, rows_before: int) -> str:
    """Freeze the coordinator (SIGSTOP) the moment a new privacy-ledger row is durable; report
    whether the round's commit had already happened by then."""
    committed = len(c.rounds())
    _poll(lambda: len(c.ledger()) > rows_before, 60.0, 0.001)
    pid = c.services["coordinator"].pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    return "ledger" if len(c.rounds()) == committed else "committed"


def check_restart(env_result: ScenarioResult, cluster: Cluster, fleet: Fleet, probe: _RestartProbe) -> None:
    """Resumed with the same adapter and ledger (fills env_result.checks / details)."""
    res = env_result
    after_tasks = [v for cid, t in fleet.trainers.items() for (_, v) in t.tasks[probe.marks.get(cid, 0):]]
    res.checks["first_version_after_restart"] = min(after_tasks) if after_tasks else None
    if after_tasks and min(after_tasks) != probe.last_version:
        res.details.append(f"after the restart clients trained from v{min(after_tasks)}, expected v{probe.last_version}")
    if probe.blob_before is not None and cluster.adapter_blob(probe.last_version) != probe.blob_before:
        res.details.append("the committed adapter changed across the restart")
    ledger = cluster.ledger()
    before = {e["index"]: e for e in probe.ledger_before}
    for e in ledger:
        if e["index"] in before and before[e["index"]] != e:
            res.details.append(f"ledger row {e['index']} changed across the restart")
    if not set(before) <= {e["index"] for e in ledger}:
        res.details.append("ledger rows were lost across the restart")
    indices = sorted(e["index"] for e in ledger)
    res.checks["ledger_indices"] = indices
    # One charge per decryption: a round killed after its charge stays charged and its retry
    # is charged again, so there may be more charges than committed rounds, never fewer.
    committed = len(cluster.rounds())
    if indices != list(range(len(indices))) or len(indices) < committed:
        res.details.append(f"ledger rows {indices} do not cover {committed} committed rounds")


# -- edge restarts -----------------------------------------------------------------------------


async def edge_sigkill(root: Path, *, failover: str = "replica") -> ScenarioResult:
    """SIGKILL edge-1 after it acknowledged client-1 and while client-2 is still training.
    ``replica``: a second process with edge-1's identity takes over on another address (a
    restarted pod / standby replica): the clients reconnect there, client-1 resends its kept
    update and client-2 uploads; the round commits with all three, counted once.
    ``other_edge``: the clients fail over to edge-2 (another identity)."""

    async def body(env: Env) -> None:
        c, fleet = env.cluster, env.fleet
        replica_port = free_port()
        backup = f"127.0.0.1:{replica_port}" if failover == "replica" else "edge-2"
        gate = threading.Event()
        await env.start({"client-1": ["edge-1", backup], "client-2": ["edge-1", backup], "client-3": ["edge-2"]})
        fleet.trainers["client-2"].gate = gate
        await wait_for(lambda: bool(fleet.acked_ok()["client-1"]) and bool(fleet.trainers["client-2"].started), 60,
                       "client-1 acknowledged by edge-1")
        c.kill("edge-1")
        env.result.faults["edge_sigkill"] += 1
        if failover == "replica":
            c.start_edge("edge-1b", identity="edge-1", port=replica_port)
        await asyncio.sleep(1.0)
        gate.set()

    # min_clients = all three: the first round waits for both edges' rosters
    fed = {"rounds": {"max_rounds": 2, "min_clients": 3, "deadline_s": 15, "wait_for_clients_s": 60}}
    return await run_scenario(f"edge_sigkill_{failover}", root, body, federation=fed)


# -- network faults through the proxy -----------------------------------------------------------


async def network_faults(root: Path, kind: str) -> ScenarioResult:
    """Client<->edge and edge<->coordinator links through fault proxies.
    ``latency``: 150 ms each way on every link. ``drops``: every client connection is reset
    repeatedly during the uploads. ``partition``: the edge<->coordinator link is cut (refused)
    while the edge forwards its partial sum, then healed."""
    async def body(env: Env) -> None:
        c, fleet = env.cluster, env.fleet
        c.start_coordinator()
        up = FaultProxy("127.0.0.1", c.coordinator_port, name="edge1-coord")
        await up.start()
        c.start_edge("edge-1", coordinator_address=up.address)
        down = FaultProxy("127.0.0.1", c.services["edge-1"].port, name="clients-edge1")
        await down.start()
        proxies = [up, down]
        gate = threading.Event()
        for cid in env.clients:
            fleet.start(cid, [down.address])
            fleet.trainers[cid].gate = gate
        try:
            if kind == "latency":
                for p in proxies:
                    p.set_latency(0.15)
                gate.set()
            elif kind == "drops":
                await wait_for(lambda: all(t.started for t in fleet.trainers.values()), 60, "all clients training")
                # the uploads leave the clients but are held in the network, then every
                # connection is reset: the clients must reconnect and resend their kept updates
                await down.partition("hold")
                gate.set()
                await asyncio.sleep(1.0)
                down.drop_all()
                await down.heal()
                await wait_for(lambda: len(c.rounds()) >= 1, 60, "round 1 committed")
                for _ in range(4):  # and during round 2
                    await asyncio.sleep(0.3)
                    down.drop_all()
            elif kind == "partition":
                await wait_for(lambda: all(t.started for t in fleet.trainers.values()), 60, "all clients training")
                await up.partition("refuse")
                gate.set()
                await wait_for(lambda: all(fleet.acked_ok()[x] for x in env.clients), 60, "all uploads acknowledged")
                await asyncio.sleep(2.0)
                await up.heal()
                await wait_for(lambda: len(c.rounds()) >= 1, 60, "round 1 committed after the heal")
                await up.partition("hold")
                await asyncio.sleep(1.5)
                await up.heal()
            else:
                raise ValueError(kind)
            await env.finish()
        finally:
            for p in proxies:
                env.result.faults.update({f"proxy_{k}": v for k, v in p.faults.items()})
                await p.stop()
            log_text = c.log_text("edge-1")
            env.result.checks["uploads_cut_mid_way"] = log_text.count("left mid-upload")
            env.result.checks["resends_recognised"] = log_text.count("(duplicate)")
            env.result.checks["kept_updates_resent"] = sum(a.resends for a in fleet.agents.values())

    fed = {"rounds": {"max_rounds": 2, "min_clients": 3, "deadline_s": 30, "wait_for_clients_s": 60}}
    return await run_scenario(f"network_{kind}", root, body, edges=["edge-1"], federation=fed)


# -- a malicious client ----------------------------------------------------------------------------


async def garbage_ciphertext(root: Path) -> ScenarioResult:
    """mallory uploads in-range ciphertexts that decrypt to impossible slot sums (valid sha, valid
    header): the edge cannot tell; the coordinator refuses to publish the round (decryption check)
    and must keep running -- the next round, without mallory, commits."""
    async def body(env: Env) -> None:
        c = env.cluster
        c.start_edge("edge-1")
        e1 = env.edge_address("edge-1")
        starting = asyncio.create_task(env.start({"client-1": ["edge-1"], "client-2": ["edge-1"]}, edges=[],
                                                 extra={"edge-1": 1}))
        files = TLSFiles(ca=env.certs / "ca.crt", cert=env.certs / "client-mallory.crt", key=env.certs / "client-mallory.key")
        acks = []
        async with RawClient(e1, files) as raw:
            pk, task = await raw.public_key_and_task(timeout=120)
            up = GatedTrainer("mallory", seed=5).run_task(task, pk)
            rng = np.random.default_rng(1)
            n2 = int(pk.nsquare)
            up.vec.values = [int.from_bytes(rng.bytes(pk.ciphertext_bytes), "big") % (n2 - 1) + 1
                             for _ in up.vec.values]
            up.idempotency_key = f"mallory:{task.round}"
            up = raw.signed(up, task, federation=raw.federation)  # it signs what it sends
            for m in upload_messages(up):
                raw.send(m)
            env.result.faults["garbage_ciphertext"] += 1
            ack = await raw.next("ack", timeout=120)
            acks.append((ack.round, ack.status.code, ack.status.reason))
            await raw.close(goodbye=True)
        await starting
        env.result.checks["mallory_acks"] = acks

    fed = {"rounds": {"max_rounds": 1, "min_clients": 2, "deadline_s": 8, "wait_for_clients_s": 60}}
    return await run_scenario("garbage_ciphertext", root, body, edges=["edge-1"], federation=fed)


__all__ = [
    "KILL_POINTS",
    "Audit",
    "Env",
    "Fleet",
    "GatedTrainer",
    "RecordingAgent",
    "ScenarioResult",
    "audit",
    "check_restart",
    "coordinator_sigkill",
    "dropout_mid_upload",
    "edge_sigkill",
    "garbage_ciphertext",
    "late_update",
    "network_faults",
    "run_scenario",
    "tiny_model",
]

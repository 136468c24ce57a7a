"""Lightweight synthetic clients for ``ffa-lora bench load``.

Each simulated client is a real :class:`ClientAgent` with its own certificate and its own
mutual-TLS stream to an edge; only training is replaced: :class:`PrecomputedTrainer` encrypts
one synthetic update per process (per key, layout and length) and hands the same ciphertexts
out for every client and round, under fresh round numbers and idempotency keys. So the load is
the protocol's (TLS, streams, chunking, validation, homomorphic addition), not the clients'
encryption.

Run as a process (the load benchmark starts one or two)::

    python -m ffa_lora_tools.bench.load_clients --certs DIR --ids-file IDS --edges H:P,H:P --out OUT.json

It writes, per client, when its session was welcomed and, per round, when the task arrived and
when (and how) the upload was acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ffa_lora.crypto import CiphertextVector, Encryptor, PackingLayout, PublicKey
from services.client_agent.agent import ClientAgent
from services.client_agent.update import PreparedUpdate
from services.common import domain as d
from services.common.certs import TLSFiles
from services.common.config import ClientConfig, DataConfig, DeidSettings
from services.common.metrics import Metrics, create_metrics
from services.common.session import every

log = logging.getLogger("ffa_lora_tools.bench.load_clients")


class UpdateCache:
    """One encrypted synthetic update per (key, layout, length), shared by all clients."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._vecs: dict[tuple[str, bytes, int], CiphertextVector] = {}
        self.encrypt_seconds = 0.0

    def get(self, task: d.RoundTask, public_key: PublicKey) -> CiphertextVector:
        key = (public_key.fingerprint, task.secure_sum.layout, task.assignment.num_values)
        with self._lock:
            vec = self._vecs.get(key)
            if vec is None:
                t0 = time.perf_counter()
                layout = PackingLayout.from_bytes(task.secure_sum.layout)
                codes = np.random.default_rng(0).integers(0, layout.levels + 1, size=task.assignment.num_values)
                vec = Encryptor(public_key, layout, workers=0).encrypt_codes(codes)
                self.encrypt_seconds += time.perf_counter() - t0
                self._vecs[key] = vec
            return vec


class PrecomputedTrainer:
    """Stands in for LocalTrainer: no model, no data; returns the cached ciphertexts."""

    def __init__(self, client_id: str, cache: UpdateCache, *, num_samples: int = 100) -> None:
        self.client_id, self.cache, self.num_samples = client_id, cache, num_samples
        self.version = 0
        self.state: dict[str, Any] | None = None
        self.device = "cpu"

    def set_spec(self, spec: Any, labels: tuple[str, ...]) -> None:
        pass

    def load_adapter(self, version: int, blob: bytes) -> None:
        self.version, self.state = version, {}  # the synthetic client never reads its adapter

    def run_task(self, task: d.RoundTask, public_key: PublicKey) -> PreparedUpdate:
        vec = self.cache.get(task, public_key)
        return PreparedUpdate(round=task.round, vec=vec, idempotency_key=f"{self.client_id}:{task.round}",
                              num_samples=self.num_samples, rank=task.assignment.rank,
                              quality=d.Quality(train_loss=1.0 / (1 + task.round)), base_version=self.version,
                              train_seconds=0.0, crypto_seconds=0.0)


class LoadAgent(ClientAgent):
    """ClientAgent that timestamps its session, tasks and acknowledgements."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.collect_after_session = False  # run_clients collects for all agents at once
        self.welcomed: float | None = None
        self.events: dict[int, dict[str, Any]] = {}

    def _start_task(self, task: d.RoundTask, queue: asyncio.Queue) -> None:  # type: ignore[type-arg]
        self.events.setdefault(task.round, {"task": time.time()})
        if self.welcomed is None:
            self.welcomed = time.time()
        super()._start_task(task, queue)

    def _on_ack(self, ack: Any) -> None:
        ev = self.events.setdefault(ack.round, {})
        ev.setdefault("ack", time.time())
        ev.setdefault("code", ack.status.code)
        ev.setdefault("reason", ack.status.reason)
        super()._on_ack(ack)


async def run_clients(ids: list[str], *, certs: Path, edges: list[str], timeout: float,
                      connect_rate: float = 400.0, max_reconnect_s: float = 5.0, session: str = "persistent",
                      check_in_s: float = 5.0, model: str = "demo") -> dict[str, Any]:
    """Run every client until the federation finishes (or ``timeout``); return the record."""
    cache = UpdateCache()
    metrics: Metrics = create_metrics("client")
    agents: dict[str, LoadAgent] = {}
    tasks: list[asyncio.Task[Any]] = []
    # Each real client collects its garbage after every session (ClientAgent.run); here one
    # collector does it for all the agents of this process, over a frozen start-up heap.
    gc.freeze()
    stop_collecting = asyncio.Event()
    collector = asyncio.create_task(every(0.5, gc.collect, stop_collecting, what="garbage collection"))
    t0 = time.time()
    for i, cid in enumerate(ids):
        order = edges[i % len(edges):] + edges[: i % len(edges)]
        cfg = ClientConfig(edges=order, data=DataConfig(path=Path("unused.csv")), deid=DeidSettings(enabled=False),
                           state_dir=Path("/nonexistent"), max_reconnect_s=max_reconnect_s, model=model,
                           session=session, check_in_interval_s=check_in_s)  # type: ignore[arg-type]
        files = TLSFiles(ca=certs / "ca.crt", cert=certs / f"client-{cid}.crt", key=certs / f"client-{cid}.key")
        agent = LoadAgent(cfg, files, PrecomputedTrainer(cid, cache), metrics)  # type: ignore[arg-type]
        agents[cid] = agent
        tasks.append(asyncio.create_task(agent.run()))
        await asyncio.sleep(1.0 / connect_rate)  # no thundering herd of TLS handshakes
    started = time.time()
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    stop_collecting.set()
    await collector
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    errors = [repr(t.exception()) for t in done if not t.cancelled() and t.exception() is not None]
    return {
        "t0": t0, "spawned": started - t0, "encrypt_seconds": cache.encrypt_seconds,
        "finished": sum(a.result.finished for a in agents.values()), "timed_out": len(pending), "errors": errors[:10],
        "clients": {cid: {"welcomed": a.welcomed, "events": {str(r): e for r, e in a.events.items()},
                          "rejections": a.result.rejections, "check_ins": a.check_ins,
                          "busy_refusals": a.busy_refusals} for cid, a in agents.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ffa_lora_tools.bench.load_clients", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--certs", type=Path, required=True, help="folder with ca.crt and client-<id>.crt/.key")
    p.add_argument("--ids-file", type=Path, required=True, help="client ids, one per line")
    p.add_argument("--edges", required=True, help="comma-separated edge addresses")
    p.add_argument("--out", type=Path, required=True, help="JSON record written here at the end")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--connect-rate", type=float, default=400.0, help="new sessions per second")
    p.add_argument("--session", choices=["persistent", "check_in"], default="persistent")
    p.add_argument("--check-in-s", type=float, default=5.0)
    p.add_argument("--model", default="demo", help="the federation's base model (the clients refuse any other)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("services.client_agent.agent").setLevel(logging.ERROR)  # per-client chatter
    ids = [x.strip() for x in a.ids_file.read_text().splitlines() if x.strip()]
    record = asyncio.run(run_clients(ids, certs=a.certs, edges=a.edges.split(","), timeout=a.timeout,
                                     connect_rate=a.connect_rate, session=a.session, check_in_s=a.check_in_s,
                                     model=a.model))
    tmp = a.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(a.out)
    return 0 if not record["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

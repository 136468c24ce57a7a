"""A round whose decrypted sum fails the range check is discarded and retried under a fresh
round number; the federation goes on, the discards are counted per reason and per edge, and the
edges involved are named (never values)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ffa_lora.crypto import CiphertextVector, Encryptor
from ffa_lora.errors import CiphertextError
from ffa_lora_tools.harness import fuzzing as fz
from ffa_lora_tools.harness.threshold import LocalThreshold, local_threshold
from services.cloud_coordinator.handlers import Coordinator
from services.cloud_coordinator.reports import DiscardLog
from services.cloud_coordinator.store import MemoryStore
from services.common import domain as d
from services.common.config import parse_federation
from services.common.metrics import create_metrics

ROSTER = {"edge-a": ["c1", "c2"], "edge-b": ["c3", "c4"]}


class AnsweringOutbox:
    """Each edge answers its plan at once with a partial sum: out of range (random
    ciphertexts) from edge-b in the first ``bad_rounds`` rounds, honest otherwise."""

    def __init__(self, bad_rounds: int) -> None:
        self.bad_rounds = bad_rounds
        self.coord: Coordinator | None = None
        self.keys: LocalThreshold | None = None
        self.rounds: list[int] = []
        self.finished = ""

    def welcome(self, edge_id: str, public_key: Any, mode: str) -> None: ...
    def adapter(self, edge_id: str, version: int, blob: bytes) -> None: ...

    def shutdown(self, edge_id: str, reason: str, finished: bool) -> None:
        self.finished = reason

    def plan(self, edge_id: str, plan: d.RoundPlan) -> None:
        if plan.round not in self.rounds:
            self.rounds.append(plan.round)
        bad = edge_id == "edge-b" and len(self.rounds) <= self.bad_rounds
        asyncio.get_running_loop().call_soon(self._answer, edge_id, plan, bad)

    def _answer(self, edge_id: str, plan: d.RoundPlan, bad: bool) -> None:
        assert self.coord is not None and self.keys is not None
        cur = self.coord.current
        assert cur is not None
        pub = self.coord.public_key
        enc = Encryptor(pub, cur.layout, workers=0)
        updates = {}
        for a in plan.assignments:
            vec = enc.encrypt_codes(np.full(plan.num_values, 3, dtype=np.int64))
            if bad:  # a client's malformed plaintext: slot sums far outside weight_total x levels
                rng = np.random.default_rng([plan.round, len(updates)])
                values = [int.from_bytes(rng.bytes(pub.ciphertext_bytes), "big") % (int(pub.nsquare) - 1) + 1
                          for _ in vec.values]
                vec = CiphertextVector(public_key=vec.public_key, layout=vec.layout, num_values=vec.num_values,
                                       values=values, weight_total=vec.weight_total)
            updates[a.client_id] = (vec, a)
        total, evidence = self.keys.sign_partial(edge_id, updates, round=plan.round, phase=cur.phase,
                                                 adapter_version=plan.adapter_version)
        contributions = [d.Contribution(a.client_id, a.rank, a.weight, 1, quality=d.Quality(train_loss=0.5))
                         for a in plan.assignments]
        self.coord.receive_partial(edge_id, round=plan.round, vec=total, contributions=contributions,
                                   key=f"{edge_id}:{plan.round}", evidence=evidence)


def make(bad_rounds: int, root: Path) -> tuple[Coordinator, AnsweringOutbox]:
    keys = local_threshold(root, federation="retry", min_clients=2, max_weight=4)
    fed = parse_federation({
        "name": "retry", "model": {"rank": 4},
        "rounds": {"min_clients": 2, "deadline_s": 30, "max_rounds": 1, "wait_for_clients_s": 5},
        "secure_sum": {"key_bits": 512, "bits": fz.BITS, "max_clients": 8, "max_weight": 4, "clip": 0.5},
        "test_mode": True,
    })
    outbox = AnsweringOutbox(bad_rounds)
    coord = Coordinator(fed=fed, store=MemoryStore(), public_key=keys.ceremony.public_key,
                        decryption=keys.decryption, adapter_ops=fz.FakeOps(),
                        outbox=outbox, metrics=create_metrics("coordinator"))
    outbox.coord, outbox.keys = coord, keys
    for edge_id, clients in ROSTER.items():
        coord.edge_connected(edge_id)
        coord.edge_roster(edge_id, [d.RosterEntry(c, 1) for c in clients])
    return coord, outbox


def sample(coord: Coordinator, name: str, **labels: str) -> float:
    value = coord.metrics.registry.get_sample_value(name, {"service": "coordinator", **labels})
    return 0.0 if value is None else value


def test_out_of_range_rounds_are_retried_and_the_federation_continues(
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    coord, outbox = make(bad_rounds=4, root=tmp_path)
    with caplog.at_level(logging.WARNING):
        asyncio.run(asyncio.wait_for(coord.run(), 60))
    assert coord.committed == 1 and outbox.finished == "reached max_rounds=1"
    assert outbox.rounds == [1, 2, 3, 4, 5]  # a fresh number for every retry
    assert [r.round for r in coord.discards.history] == [1, 2, 3, 4]
    assert all(r.edges == ("edge-a", "edge-b") and r.reason == "range_check" for r in coord.discards.history)
    assert sample(coord, "ffalora_rounds_discarded_total", reason="range_check") == 4
    assert sample(coord, "ffalora_discarded_round_edges_total", edge="edge-b") == 4
    summary = coord.history[-1]
    assert summary.round == 5
    assert [r["round"] for r in summary.extra["discarded_rounds"]] == [1, 2, 3, 4]
    assert "4 rounds in a row discarded" in caplog.text and "edge-a, edge-b" in caplog.text


def test_a_discard_log_names_the_edges_in_every_failed_round() -> None:
    log = DiscardLog(create_metrics("coordinator"))
    err = CiphertextError("a decrypted slot sum exceeds weight_total x levels")
    log.discard(7, "range_check", ["edge-a", "edge-b"], err)
    log.discard(8, "range_check", ["edge-b", "edge-c"], err)
    assert log.suspects() == ["edge-b"]
    assert log.since_last_commit() == [{"round": 7, "reason": "range_check", "edges": ["edge-a", "edge-b"]},
                                       {"round": 8, "reason": "range_check", "edges": ["edge-b", "edge-c"]}]
    log.committed()
    assert log.suspects() == [] and log.since_last_commit() == [] and len(log.history) == 2

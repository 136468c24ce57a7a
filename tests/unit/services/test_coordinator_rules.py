"""Coordinator rules without a network: never decrypt below min_clients, never decrypt one
edge's partial sum alone, reject contributor lists that do not match the plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ffa_lora.crypto import Encryptor, Quantizer, generate_keypair
from ffa_lora.errors import ProtocolError
from ffa_lora_tools.harness.tiny_model import tiny_bert
from services.cloud_coordinator import handlers
from services.cloud_coordinator.adapter_ops import LoraAdapterOps, lora_spec
from services.cloud_coordinator.store import MemoryStore
from services.common import domain as d
from services.common.config import parse_config
from services.common.metrics import create_metrics
from services.common.rejections import Rejection


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def welcome(self, edge_id: str, public_key: Any, mode: str) -> None: ...
    def adapter(self, edge_id: str, version: int, blob: bytes) -> None: ...

    def plan(self, edge_id: str, plan: d.RoundPlan) -> None:
        self.sent.append((edge_id, plan))

    def shutdown(self, edge_id: str, reason: str, finished: bool) -> None: ...


@pytest.fixture(scope="module")
def keys() -> Any:
    return generate_keypair(bits=512, test_only=True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny"))


def make_coordinator(model_dir: Path, keys: Any, min_clients: int = 3) -> handlers.Coordinator:
    cfg = parse_config({"service": "coordinator", "tls": {"ca": "a", "cert": "b", "key": "c"}, "coordinator": {
        "federation": {"model": {"name_or_path": str(model_dir), "rank": 4, "max_length": 16},
                       "rounds": {"min_clients": min_clients}, "secure_sum": {"key_bits": 512}, "test_mode": True}}})
    fed = cfg.coordinator.federation  # type: ignore[union-attr]
    pub, priv = keys
    return handlers.Coordinator(fed=fed, store=MemoryStore(), public_key=pub, private_key=priv,
                                adapter_ops=LoraAdapterOps(lora_spec(fed), labels=fed.labels), outbox=Outbox(),
                                metrics=create_metrics("coordinator"))


def partial(coord: handlers.Coordinator, cur: Any, clients: list[str]) -> tuple[Any, list[d.Contribution]]:
    enc = Encryptor(coord.public_key, cur.layout, workers=0)
    q = Quantizer(clip=0.05, bits=8)
    from ffa_lora.crypto import RunningSum

    total = RunningSum(coord.public_key, cur.layout, cur.num_values)
    contribs = []
    for cid in clients:
        a = next(a for p in cur.plans.values() for a in p.assignments if a.client_id == cid)
        total.add_vector(enc.encrypt_codes(q.quantize(np.zeros(a.num_values), rng=np.random.default_rng(0))),
                         weight=a.weight)
        contribs.append(d.Contribution(cid, a.rank, a.weight, 100))
    return total.result(), contribs


def test_refuses_to_decrypt_below_min_clients(model_dir: Path, keys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    coord = make_coordinator(model_dir, keys)
    coord.edge_roster("edge-1", [d.RosterEntry(c, 100) for c in ("a", "b")])
    coord.edge_roster("edge-2", [d.RosterEntry("c", 100)])
    cur = coord.plan_round()
    coord.current = cur
    vec, contribs = partial(coord, cur, ["a", "b"])
    coord.receive_partial("edge-1", round=cur.number, vec=vec, contributions=contribs, key="k1")
    calls: list[Any] = []
    monkeypatch.setattr(handlers, "Decryptor", lambda *a, **k: calls.append(a))  # any use is recorded
    # edge-2's client dropped out: only two distinct clients, one edge's partial sum.
    with pytest.raises(ProtocolError, match="refusing to decrypt"):
        coord.finish_round(cur)
    assert calls == [] and coord.committed == 0 and coord.store.rounds() == []


def test_contributors_must_match_the_plan(model_dir: Path, keys: Any) -> None:
    coord = make_coordinator(model_dir, keys, min_clients=2)
    coord.edge_roster("edge-1", [d.RosterEntry(c, 100) for c in ("a", "b")])
    cur = coord.plan_round()
    coord.current = cur
    vec, contribs = partial(coord, cur, ["a", "b"])
    forged = [contribs[0], d.Contribution("zz", contribs[1].rank, contribs[1].weight, 100)]
    with pytest.raises(Rejection) as err:
        coord.receive_partial("edge-1", round=cur.number, vec=vec, contributions=forged, key="k")
    assert err.value.reason == "contributors"
    with pytest.raises(Rejection) as err:
        coord.receive_partial("edge-1", round=cur.number + 1, vec=vec, contributions=contribs, key="k")
    assert err.value.reason == "wrong_round"
    coord.receive_partial("edge-1", round=cur.number, vec=vec, contributions=contribs, key="k")
    summary = coord.finish_round(cur)
    assert summary.clients == 2 and coord.committed == 1

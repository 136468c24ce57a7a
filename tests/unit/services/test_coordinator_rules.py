"""Coordinator rules without a network: never decrypt below min_clients, never decrypt one
edge's partial sum alone, reject contributor lists that do not match the plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ffa_lora.crypto import Encryptor, Quantizer
from ffa_lora.errors import ProtocolError
from ffa_lora_tools.harness.threshold import LocalThreshold, local_threshold
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
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny"))


@pytest.fixture()
def keys(tmp_path: Path, ceremony: Any) -> Any:
    """The threshold key and its in-process holders (for a coordinator of federation 'demo')."""
    local = local_threshold(tmp_path, federation="demo", min_clients=2, ceremony=ceremony)
    yield local
    local.close()


def make_coordinator(model_dir: Path, keys: LocalThreshold, min_clients: int = 3, **rounds: Any) -> handlers.Coordinator:
    cfg = parse_config({"service": "coordinator", "tls": {"ca": "a", "cert": "b", "key": "c"}, "coordinator": {
        "threshold": {"params_file": "p", "share_file": "s"},
        "federation": {"model": {"name_or_path": str(model_dir), "rank": 4, "max_length": 16},
                       "rounds": {"min_clients": min_clients, **rounds}, "secure_sum": {"key_bits": 512},
                       "test_mode": True}}})
    fed = cfg.coordinator.federation  # type: ignore[union-attr]
    return handlers.Coordinator(fed=fed, store=MemoryStore(), public_key=keys.ceremony.public_key,
                                decryption=keys.decryption,
                                adapter_ops=LoraAdapterOps(lora_spec(fed), labels=fed.labels), outbox=Outbox(),
                                metrics=create_metrics("coordinator"))


def client_updates(coord: handlers.Coordinator, cur: Any, clients: list[str]) -> dict[str, Any]:
    """client -> (its encrypted zero update, its assignment)."""
    enc = Encryptor(coord.public_key, cur.layout, workers=0)
    q = Quantizer(clip=0.05, bits=8)
    out = {}
    for cid in clients:
        a = next(a for p in cur.plans.values() for a in p.assignments if a.client_id == cid)
        out[cid] = (enc.encrypt_codes(q.quantize(np.zeros(a.num_values), rng=np.random.default_rng(0))), a)
    return out


def partial(coord: handlers.Coordinator, cur: Any, clients: list[str], keys: LocalThreshold,
            edge: str = "edge-1") -> tuple[Any, list[d.Contribution], d.PartialEvidence]:
    """A partial sum of ``clients``' updates, its contributor list and its signed evidence."""
    updates = client_updates(coord, cur, clients)
    vec, evidence = keys.sign_partial(edge, updates, round=cur.number, phase=cur.phase)
    contribs = [d.Contribution(cid, a.rank, a.weight, 100) for cid, (_, a) in sorted(updates.items())]
    return vec, contribs, evidence


def test_refuses_to_decrypt_below_min_clients(model_dir: Path, keys: LocalThreshold) -> None:
    coord = make_coordinator(model_dir, keys)
    coord.edge_roster("edge-1", [d.RosterEntry(c, 100) for c in ("a", "b")])
    coord.edge_roster("edge-2", [d.RosterEntry("c", 100)])
    cur = coord.plan_round()
    coord.current = cur
    vec, contribs, ev = partial(coord, cur, ["a", "b"], keys)
    coord.receive_partial("edge-1", round=cur.number, vec=vec, contributions=contribs, key="k1", evidence=ev)
    # edge-2's client dropped out: only two distinct clients, one edge's partial sum.
    with pytest.raises(ProtocolError, match="refusing to decrypt"):
        coord.finish_round(cur)
    assert coord.committed == 0 and coord.store.rounds() == []
    assert all(link.requests == [] for link in keys.links.values())  # no key holder was asked


def test_contributors_must_match_the_plan(model_dir: Path, keys: LocalThreshold) -> None:
    coord = make_coordinator(model_dir, keys, min_clients=2)
    coord.edge_roster("edge-1", [d.RosterEntry(c, 100) for c in ("a", "b")])
    cur = coord.plan_round()
    coord.current = cur
    vec, contribs, ev = partial(coord, cur, ["a", "b"], keys)
    forged = [contribs[0], d.Contribution("zz", contribs[1].rank, contribs[1].weight, 100)]
    with pytest.raises(Rejection) as err:
        coord.receive_partial("edge-1", round=cur.number, vec=vec, contributions=forged, key="k", evidence=ev)
    assert err.value.reason == "contributors"
    with pytest.raises(Rejection) as err:
        coord.receive_partial("edge-1", round=cur.number + 1, vec=vec, contributions=contribs, key="k", evidence=ev)
    assert err.value.reason == "wrong_round"
    with pytest.raises(Rejection) as err:  # no signed evidence
        coord.receive_partial("edge-1", round=cur.number, vec=vec, contributions=contribs, key="k")
    assert err.value.reason == "unsigned"
    coord.receive_partial("edge-1", round=cur.number, vec=vec, contributions=contribs, key="k", evidence=ev)
    summary = coord.finish_round(cur)
    assert summary.clients == 2 and coord.committed == 1

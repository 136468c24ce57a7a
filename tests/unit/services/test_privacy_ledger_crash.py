"""The privacy ledger is written before a sum is decrypted: a crash after the ledger write never
under-counts epsilon (the crashed attempt stays charged, its retry is charged again), and an
exhausted budget ends training cleanly with the current adapter."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ffa_lora.crypto.threshold import deal
from ffa_lora_tools.harness.threshold import KEY_HOLDERS, LocalThreshold, local_threshold
from ffa_lora_tools.harness.tiny_model import tiny_bert
from services.cloud_coordinator import handlers
from services.cloud_coordinator.adapter_ops import LoraAdapterOps, lora_spec
from services.cloud_coordinator.policies import make_privacy_engine
from services.cloud_coordinator.store import SQLiteStore
from services.common import domain as d
from services.common.config import parse_config
from services.common.metrics import create_metrics
from tests.unit.services.test_coordinator_rules import Outbox, partial


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Any:
    ceremony = deal(holders=["coordinator/coordinator", *KEY_HOLDERS], threshold=2, bits=512, test_only=True,
                    workers=0, isolate=False)  # TEST-ONLY key size
    return tiny_bert(tmp_path_factory.mktemp("tiny")), ceremony


@pytest.fixture()
def keys(setup: Any, tmp_path: Path) -> Any:
    """The key holders of one federation: each remembers the rounds it decrypted."""
    local = local_threshold(tmp_path, federation="demo", min_clients=2, ceremony=setup[1])
    yield local
    local.close()


def coordinator(model_dir: Path, keys: LocalThreshold, state: Path, epsilon: float = 4.0) -> handlers.Coordinator:
    cfg = parse_config({"service": "coordinator", "tls": {"ca": "a", "cert": "b", "key": "c"}, "coordinator": {
        "threshold": {"params_file": "p", "share_file": "s"},
        "federation": {"model": {"name_or_path": str(model_dir), "rank": 4, "max_length": 16},
                       "rounds": {"min_clients": 2, "max_rounds": 5},
                       "secure_sum": {"key_bits": 512}, "test_mode": True,
                       "privacy": {"mode": "central", "mechanism": "gaussian", "epsilon": epsilon,
                                   "norm_clip": 1.0}}}})
    fed = cfg.coordinator.federation  # type: ignore[union-attr]
    return handlers.Coordinator(fed=fed, store=SQLiteStore(state), public_key=keys.ceremony.public_key,
                                decryption=keys.decryption,
                                adapter_ops=LoraAdapterOps(lora_spec(fed), labels=fed.labels), outbox=Outbox(),
                                metrics=create_metrics("coordinator"), privacy=make_privacy_engine(fed))


def one_round(coord: handlers.Coordinator, keys: LocalThreshold) -> Any:
    coord.edge_roster("edge-1", [d.RosterEntry(c, 100) for c in ("a", "b")])
    cur = coord.plan_round()
    coord.current = cur
    vec, contribs, ev = partial(coord, cur, ["a", "b"], keys)
    coord.receive_partial("edge-1", round=cur.number, vec=vec, contributions=contribs, key=f"k{cur.number}",
                          evidence=ev)
    return cur


def test_crash_after_ledger_write_never_undercounts(setup: Any, keys: LocalThreshold, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = setup[0]
    state = tmp_path / "state"
    coord = coordinator(model_dir, keys, state)
    coord.finish_round(one_round(coord, keys))  # round index 0 applied normally
    eps_after_first = coord.privacy.epsilon_spent()  # type: ignore[union-attr]
    assert eps_after_first > 0 and len(coord.store.ledger()) == 1

    # Round index 1: the ledger row is written, then the process dies before the commit.
    def die(*a: Any, **k: Any) -> None:
        raise Crash()

    monkeypatch.setattr(coord.store, "commit_round", die)
    with pytest.raises(Crash):
        coord.finish_round(one_round(coord, keys))
    eps_before_crash = coord.privacy.epsilon_spent()  # type: ignore[union-attr]
    coord.store.close()
    monkeypatch.undo()

    restarted = coordinator(model_dir, keys, state)
    assert restarted.committed == 1 and restarted.version == coord.version
    assert restarted.privacy.epsilon_spent() >= eps_before_crash > eps_after_first  # type: ignore[union-attr]
    # The crashed attempt stays charged (its sum was decrypted); the retry is charged again.
    restarted.finish_round(one_round(restarted, keys))
    assert [e.round_index for e in restarted.store.ledger()] == [0, 1, 2]
    assert restarted.privacy.epsilon_spent() > eps_before_crash  # type: ignore[union-attr]
    assert restarted.committed == 2
    restarted.store.close()


def test_exhausted_budget_stops_cleanly_with_the_current_adapter(setup: Any, keys: LocalThreshold,
                                                                  tmp_path: Path) -> None:
    model_dir = setup[0]
    state = tmp_path / "state"
    coord = coordinator(model_dir, keys, state, epsilon=4.0)
    coord.finish_round(one_round(coord, keys))
    coord.finish_round(one_round(coord, keys))
    version = coord.version
    coord.store.close()
    # The operator lowers the budget below what is already spent: the next round must not run.
    tight = coordinator(model_dir, keys, state, epsilon=0.5)
    asyncio.run(tight.run())
    assert tight.finished and "privacy budget" in tight.finish_reason
    assert tight.version == version and tight.committed == 2
    tight.store.close()

"""One suite for both coordinator stores (in-memory and SQLite), plus corrupt-file handling."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ffa_lora.errors import StateError
from ffa_lora.privacy import LedgerEntry, PrivacyEvent
from services.cloud_coordinator.store import CoordinatorStore, MemoryStore, RoundRecord, SQLiteStore


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> CoordinatorStore:
    return MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "state")


def test_rounds_adapters_and_state_round_trip(store: CoordinatorStore) -> None:
    assert store.last_committed() is None and store.next_round() == 1
    store.commit_round(RoundRecord(1, 1, ["a", "b", "c"], {"loss": 0.5}, 1.0), b"adapter-v1", {"rank": {"r": 8}})
    store.set_meta("last_round_started", "2")
    assert store.next_round() == 3  # a started-but-uncommitted round is never reused
    store.commit_round(RoundRecord(3, 3, ["a", "b"], {"loss": 0.4}, 2.0), b"adapter-v3", {"rank": {"r": 4}})
    assert [r.round for r in store.rounds()] == [1, 3]
    assert store.load_adapter(3) == b"adapter-v3" and store.load_state("rank") == {"r": 4}
    with pytest.raises(StateError, match="already committed"):
        store.commit_round(RoundRecord(3, 3, [], {}, 3.0), b"x", {})
    with pytest.raises(StateError):
        store.load_adapter(2)


def test_ledger_is_idempotent_per_round(store: CoordinatorStore) -> None:
    event = PrivacyEvent(mechanism="gaussian", noise_multiplier=2.0)
    e = LedgerEntry(round_index=0, event=event, epsilon_after=1.5, delta=1e-5, accountant="pld")
    store.record_privacy_spend(e)
    store.record_privacy_spend(dataclasses.replace(e, epsilon_after=9.9))
    store.record_privacy_spend(dataclasses.replace(e, round_index=1, epsilon_after=2.5))
    ledger = store.ledger()
    assert [(x.round_index, x.epsilon_after) for x in ledger] == [(0, 1.5), (1, 2.5)]
    assert ledger[0] == e  # the whole entry comes back, event included


def test_sqlite_survives_reopen_and_detects_corruption(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "st")
    s.commit_round(RoundRecord(1, 1, ["a"], {"loss": 1.0}, 1.0), b"blob", {})
    s.close()
    s2 = SQLiteStore(tmp_path / "st")
    assert s2.load_adapter(1) == b"blob"
    (tmp_path / "st" / "adapters" / "v1.safetensors").write_bytes(b"blub")
    with pytest.raises(StateError, match="corrupt"):
        s2.load_adapter(1)
    s2.close()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "coordinator.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="not a readable SQLite database"):
        SQLiteStore(tmp_path / "bad")

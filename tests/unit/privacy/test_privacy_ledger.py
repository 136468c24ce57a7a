"""Write-ahead ledger: the charge is built before release, rebuilt after a crash with every
charge counted once, and training stops cleanly at the budget."""

from __future__ import annotations

import json

import pytest

from ffa_lora.errors import BudgetExhaustedError, StateError
from ffa_lora.privacy.events import PrivacyEvent
from ffa_lora.privacy.ledger import LedgerEntry, PrivacyLedger

DELTA = 1e-5
EV = PrivacyEvent("laplace", 2.0)  # pure ε = 0.5 per round


def _run(ledger: PrivacyLedger, store: list[dict], rounds: range) -> None:
    for r in rounds:
        entry = ledger.prepare(round_index=r, event=EV)
        store.append(json.loads(json.dumps(entry.to_dict())))  # "durable" write
        ledger.commit(entry)


def test_prepare_records_nothing_until_commit() -> None:
    ledger = PrivacyLedger(epsilon_budget=5.0, delta=DELTA)
    entry = ledger.prepare(round_index=0, event=EV)
    assert ledger.epsilon_spent == 0.0 and ledger.rounds == []
    assert entry.epsilon_after == pytest.approx(0.5, abs=1e-3)
    ledger.commit(entry)
    assert ledger.epsilon_spent == pytest.approx(entry.epsilon_after)
    ledger.commit(entry)  # idempotent
    assert ledger.rounds == [0]


def test_crash_after_ledger_write_before_broadcast() -> None:
    store: list[dict] = []
    ledger = PrivacyLedger(epsilon_budget=5.0, delta=DELTA)
    _run(ledger, store, range(3))
    # slot 3: entry written durably, then the process dies after decrypting
    crash_entry = ledger.prepare(round_index=3, event=EV)
    store.append(crash_entry.to_dict())
    spent_before = ledger.epsilon_spent  # in-memory view lost with the process
    # the store may even hold a duplicate record of a round (retried write)
    store.append(store[1])

    restarted = PrivacyLedger.from_entries(store, epsilon_budget=5.0, delta=DELTA)
    assert restarted.rounds == [0, 1, 2, 3]  # each charge exactly once
    assert restarted.epsilon_spent >= spent_before
    assert restarted.epsilon_spent == pytest.approx(crash_entry.epsilon_after)
    # the crashed charge stays; its slot cannot be charged twice, the retry takes the next one
    assert restarted.entry_for(3) == crash_entry
    with pytest.raises(StateError, match="already charged"):
        restarted.prepare(round_index=3, event=EV)
    retry = restarted.prepare(round_index=4, event=EV)
    assert retry.epsilon_after > crash_entry.epsilon_after


def test_conflicting_records_rejected() -> None:
    a = LedgerEntry(round_index=0, event=EV, epsilon_after=0.5, delta=DELTA, accountant="pld")
    b = LedgerEntry(
        round_index=0,
        event=PrivacyEvent("laplace", 4.0),
        epsilon_after=0.25,
        delta=DELTA,
        accountant="pld",
    )
    with pytest.raises(StateError, match="different charge"):
        PrivacyLedger.from_entries([a, b], epsilon_budget=5.0, delta=DELTA)
    with pytest.raises(StateError, match="corrupt"):
        PrivacyLedger.from_entries([{"round_index": 0}], epsilon_budget=5.0, delta=DELTA)


def test_budget_exhaustion_stops_before_overspending() -> None:
    store: list[dict] = []
    ledger = PrivacyLedger(epsilon_budget=2.2, delta=DELTA)
    applied = 0
    with pytest.raises(BudgetExhaustedError) as exc:
        for r in range(100):
            _run(ledger, store, range(r, r + 1))
            applied += 1
    assert ledger.epsilon_spent <= 2.2
    assert applied == len(store) == len(ledger.rounds)
    assert applied >= 4  # 4 × 0.5 pure; PLD is at most basic composition
    msg = str(exc.value)
    assert f"charge {applied}" in msg and "budget" in msg and "current adapter" in msg
    summary = ledger.summary()
    assert summary["rounds_charged"] == applied
    assert summary["epsilon_remaining"] >= 0

"""The write-ahead privacy ledger: ε is recorded durably *before* a noised sum is decrypted,
applied or sent, so a crash or an abort can never under-count it (docs/architecture.md lists
where each invariant is enforced).

The coordinator's store persists the entries (``LedgerEntry.to_dict()``, JSON); this module
holds the in-memory view and the rules. Entries are numbered 0, 1, 2, ... in the order the
charges are made (``round_index`` is that slot): one per decryption of a round's sum, so a
round retried after an abort takes the next slot. Protocol for one decryption:

1. ``entry = ledger.prepare(round_index=slot, event=...)`` — raises
   :class:`~ffa_lora.errors.BudgetExhaustedError` if the release would exceed the budget
   (training then stops cleanly with the current adapter). Nothing is recorded yet.
2. The store writes ``entry.to_dict()`` durably (commit/fsync).
3. ``ledger.commit(entry)`` — ε now includes this charge.
4. Decrypt, add noise, apply the update, checkpoint the adapter, then broadcast.

Restart: ``PrivacyLedger.from_entries(store_entries, ...)`` counts every recorded slot exactly
once (a duplicated record of the same slot is ignored; a conflicting one is an error). A charge
whose round never committed (a crash or an abort after step 2) stays: the sum may have been
decrypted. ε after a restart is therefore never lower than before it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ffa_lora.errors import BudgetExhaustedError, StateError
from ffa_lora.privacy.accountant import (
    PrivacyAccountant,
    check_delta,
    check_epsilon,
    make_accountant,
)
from ffa_lora.privacy.events import PrivacyEvent


@dataclass(frozen=True)
class LedgerEntry:
    """One round's privacy charge, as persisted by the coordinator's store.

    Attributes:
        round_index: the slot of this charge (0, 1, 2, ... in the order charges are made; one
            per decryption, so a retried round takes a new slot).
        event: the mechanism and noise multiplier used for it.
        epsilon_after: cumulative ε at ``delta`` including this round.
        delta: the δ of ``epsilon_after``.
        accountant: name of the accountant that computed ``epsilon_after``.
    """

    round_index: int
    event: PrivacyEvent
    epsilon_after: float
    delta: float
    accountant: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable record."""
        return {
            "round_index": self.round_index,
            "event": self.event.to_dict(),
            "epsilon_after": self.epsilon_after,
            "delta": self.delta,
            "accountant": self.accountant,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LedgerEntry:
        """Rebuild from :meth:`to_dict`; raises StateError when the record is corrupt."""
        try:
            return cls(
                round_index=int(data["round_index"]),
                event=PrivacyEvent.from_dict(data["event"]),
                epsilon_after=float(data["epsilon_after"]),
                delta=float(data["delta"]),
                accountant=str(data["accountant"]),
            )
        except Exception as exc:
            raise StateError(f"privacy ledger record is corrupt ({type(exc).__name__})") from exc


class PrivacyLedger:
    """Budget guard over an accountant, one charge per round.

    Args:
        epsilon_budget: the total ε allowed.
        delta: the δ at which ε is measured.
        accountant: registered accountant name (``"pld"`` guards the budget by default).
    """

    def __init__(self, *, epsilon_budget: float, delta: float, accountant: str = "pld") -> None:
        self.epsilon_budget = check_epsilon(epsilon_budget, name="epsilon_budget")
        self.delta = check_delta(delta)
        self.accountant_name = accountant
        self._accountant: PrivacyAccountant = make_accountant(accountant)
        self._entries: dict[int, LedgerEntry] = {}

    @property
    def epsilon_spent(self) -> float:
        """ε spent at ``delta`` over all committed rounds."""
        return self._accountant.get_epsilon(delta=self.delta)

    @property
    def rounds(self) -> list[int]:
        """Round indices charged so far, ascending."""
        return sorted(self._entries)

    def entries(self) -> list[LedgerEntry]:
        """Committed entries in round order."""
        return [self._entries[r] for r in self.rounds]

    def entry_for(self, round_index: int) -> LedgerEntry | None:
        """The committed entry of a round, or None."""
        return self._entries.get(round_index)

    def would_exceed(self, event: PrivacyEvent) -> bool:
        """True if charging ``event`` now would exceed the budget."""
        return self._accountant.would_exceed(
            next_event=event, epsilon_budget=self.epsilon_budget, delta=self.delta
        )

    def prepare(self, *, round_index: int, event: PrivacyEvent) -> LedgerEntry:
        """Build the entry for slot ``round_index`` without recording it.

        Raises:
            BudgetExhaustedError: the release would take ε above the budget.
            StateError: the slot is already charged.
        """
        if isinstance(round_index, bool) or not isinstance(round_index, int) or round_index < 0:
            raise StateError(f"round_index must be a non-negative integer, got {round_index!r}")
        if round_index in self._entries:
            raise StateError(
                f"slot {round_index} is already charged in the privacy ledger; charge the next "
                f"slot ({max(self._entries) + 1})"
            )
        try:
            after = self._accountant.check_budget(
                next_event=event, epsilon_budget=self.epsilon_budget, delta=self.delta
            )
        except BudgetExhaustedError as exc:
            raise BudgetExhaustedError(f"charge {round_index}: {exc}") from None
        return LedgerEntry(
            round_index=round_index,
            event=event,
            epsilon_after=after,
            delta=self.delta,
            accountant=self.accountant_name,
        )

    def commit(self, entry: LedgerEntry) -> None:
        """Record a durably written entry. Re-committing the identical entry is a no-op."""
        existing = self._entries.get(entry.round_index)
        if existing is not None:
            if existing.event == entry.event:
                return
            raise StateError(
                f"privacy ledger already holds a different charge for round {entry.round_index}"
            )
        self._accountant.add_event(entry.event)
        self._entries[entry.round_index] = entry

    @classmethod
    def from_entries(
        cls,
        entries: Iterable[LedgerEntry | dict[str, Any]],
        *,
        epsilon_budget: float,
        delta: float,
        accountant: str = "pld",
    ) -> PrivacyLedger:
        """Rebuild after a restart from the store's records (each round counted once).

        The rebuilt ε may exceed the budget (e.g. the budget was lowered); the next
        :meth:`prepare` then raises BudgetExhaustedError.
        """
        ledger = cls(epsilon_budget=epsilon_budget, delta=delta, accountant=accountant)
        parsed = [e if isinstance(e, LedgerEntry) else LedgerEntry.from_dict(e) for e in entries]
        for e in sorted(parsed, key=lambda x: x.round_index):
            ledger.commit(e)
        return ledger

    def summary(self) -> dict[str, Any]:
        """Figures for ``summary.json`` and the Prometheus gauge."""
        spent = self.epsilon_spent
        return {
            "epsilon_spent": spent,
            "epsilon_budget": self.epsilon_budget,
            "epsilon_remaining": max(0.0, self.epsilon_budget - spent),
            "delta": self.delta,
            "accountant": self.accountant_name,
            "rounds_charged": len(self._entries),
        }

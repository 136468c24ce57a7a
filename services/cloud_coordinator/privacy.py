"""Client-level DP on the aggregate for the coordinator, over ffa_lora.privacy.

Neighbouring federations differ by one client. Each client clips its whole update to
``norm_clip`` (L2 for Gaussian, L1 for Laplace) before encryption and the edge multiplies it by
its integer weight w_i <= w_max, so one client moves the weighted SUM by at most
``w_max * norm_clip``: that is the sensitivity the noise is calibrated to. The noised sum is
then divided by the round's reference weight (the planned participants' total per position,
fixed before any update arrives) -- post-processing, so it costs no privacy.

Central mode: the coordinator adds the noise after decryption. Distributed mode: every client
adds a share before encryption (scaled by 1/w_i because the edge multiplies by w_i), so no one
ever sees an un-noised sum; the coordinator adds nothing. In both modes the round's charge is
written to the store BEFORE the noised model exists (write-ahead ledger).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ffa_lora.privacy import get_mechanism, plan_privacy
from ffa_lora.privacy.ledger import LedgerEntry, PrivacyLedger
from services.common import domain as d
from services.common.config import FederationConfig


class AggregatePrivacy:
    """PrivacyEngine (see handlers.PrivacyEngine) for central and distributed modes."""

    def __init__(self, fed: FederationConfig) -> None:
        p = fed.privacy
        self.cfg = p
        self.mode: str = p.mode
        self.max_weight = fed.secure_sum.max_weight
        self.plan = plan_privacy(mechanism=p.mechanism, epsilon_total=p.epsilon, delta=p.delta,
                                 rounds=fed.rounds.max_rounds, schedule=p.schedule, decay=p.decay,
                                 sensitivity=self.max_weight * p.norm_clip)
        self.ledger = PrivacyLedger(epsilon_budget=p.epsilon, delta=p.delta)
        self.mechanism = get_mechanism(p.mechanism)

    def _multiplier(self, index: int) -> float:
        return self.plan.noise_multiplier(min(index, len(self.plan.rounds) - 1))

    def sum_scale(self, index: int, w_max: int) -> float:
        """Noise scale (Laplace b or Gaussian sigma) on the weighted sum."""
        return self._multiplier(index) * w_max * self.cfg.norm_clip

    def params_for_round(self, round_index: int, assignments: list[d.Assignment]) -> d.PrivacyParams:
        w_max = max((a.weight for a in assignments), default=1)
        return d.PrivacyParams(
            mode=self.mode, mechanism=self.cfg.mechanism, norm_clip=self.cfg.norm_clip,
            noise_scale=self.sum_scale(round_index, w_max) if self.mode == "distributed" else 0.0,
            share_clients=len(assignments), tolerated_dropouts=self.cfg.tolerated_dropouts,
        )

    def _event(self, index: int) -> Any:
        return self.mechanism.event(noise_multiplier=self._multiplier(index))

    def check_budget(self, round_index: int) -> None:
        """Raise BudgetExhaustedError when the next round would exceed the budget."""
        if self.ledger.entry_for(round_index) is None:
            self.ledger.prepare(round_index=round_index, event=self._event(round_index))

    def prepare(self, round_index: int) -> LedgerEntry:
        existing = self.ledger.entry_for(round_index)
        return existing or self.ledger.prepare(round_index=round_index, event=self._event(round_index))

    def commit(self, entry: LedgerEntry) -> None:
        self.ledger.commit(entry)

    def noise_sum(self, total: np.ndarray, round_index: int, w_max: int) -> np.ndarray:
        if self.mode != "central":
            return total  # distributed: the clients' shares are already inside the sum
        return self.mechanism.add_noise(total, noise_multiplier=self._multiplier(round_index),
                                        sensitivity=w_max * self.cfg.norm_clip)

    def epsilon_spent(self) -> float:
        return float(self.ledger.epsilon_spent) if self.ledger.rounds else 0.0

    def load_ledger(self, entries: list[LedgerEntry]) -> None:
        self.ledger = PrivacyLedger.from_entries(entries, epsilon_budget=self.cfg.epsilon,
                                                 delta=self.cfg.delta)

    def state_dict(self) -> dict[str, Any]:
        return {"plan": self.plan.to_dict(), "ledger": self.ledger.summary()}

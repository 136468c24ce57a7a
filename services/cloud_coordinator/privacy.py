"""Client-level DP on the aggregate for the coordinator, over ffa_lora.privacy.

Neighbouring federations differ by one client. Each client clips its whole update to
``norm_clip`` (L2 for Gaussian, L1 for Laplace) and quantizes it so that its norm stays within
``norm_clip + β`` (:mod:`ffa_lora.privacy.rounding`); the edge multiplies it by its weight (and,
in asynchronous rounds, by a staleness factor up to ``STALENESS_SCALE``). One client therefore
moves the weighted SUM by at most ``W · (norm_clip + β)``, W the largest weight an edge can
apply: that is the sensitivity the noise is calibrated to
(:mod:`ffa_lora.privacy.round_noise`). Under client-level DP every client has weight 1: a
weight derived from the clients' own record counts would let one client's presence rescale the
others'. The noised sum is divided by a public, data-independent reference weight fixed when
the round is planned -- post-processing, so it costs no privacy.

Central mode: the coordinator adds the noise after decryption. Distributed mode: every client
adds a share before encryption, sized so that any quorum of shares carries the planned noise;
the coordinator adds nothing and refuses to decrypt a sum whose shares carry less. In both
modes the round's charge -- for the noise the sum actually carries -- is written to the store
BEFORE the sum is decrypted, one ledger row per decryption: a round that aborts after its
charge stays charged, and its retry is charged again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ffa_lora.crypto.weights import STALENESS_SCALE, staleness_weight
from ffa_lora.privacy import get_mechanism, plan_privacy
from ffa_lora.privacy.ledger import LedgerEntry, PrivacyLedger
from ffa_lora.privacy.round_noise import RoundNoisePlan, carried_noise_multiplier, plan_round_noise
from services.common import domain as d
from services.common.config import FederationConfig


class AggregatePrivacy:
    """PrivacyEngine (see handlers.PrivacyEngine) for central and distributed modes."""

    def __init__(self, fed: FederationConfig) -> None:
        p = fed.privacy
        self.fed = fed
        self.cfg = p
        self.mode: str = p.mode
        self.plan = plan_privacy(
            mechanism=p.mechanism,
            epsilon_total=p.epsilon,
            delta=p.delta,
            rounds=fed.rounds.max_rounds + p.spare_charges,
            schedule=p.schedule,
            decay=p.decay,
        )
        self.ledger = PrivacyLedger(epsilon_budget=p.epsilon, delta=p.delta)
        self.mechanism = get_mechanism(p.mechanism)
        # Share sizes the clients were told, by the adapter version their task named: an
        # asynchronous update may have been noised under an earlier round's plan (after a
        # restart, unknown versions are taken to have the current round's shares, which the
        # constant schedule that asynchronous distributed noise requires keeps equal).
        self._shares: dict[int, tuple[float, int]] = {}

    def _multiplier(self, index: int) -> float:
        return self.plan.noise_multiplier(min(index, len(self.plan.rounds) - 1))

    def check(self, *, dimension: int) -> None:
        """Raise ConfigError at start-up for settings whose noise cannot be planned (rounding
        that would exceed the clip bound), rather than at the first round."""
        probe = [
            d.Assignment(f"probe-{i}", 1, 1, dimension) for i in range(self.fed.rounds.min_clients)
        ]
        self._plan(0, probe, dimension)

    def plan_round(
        self,
        round_index: int,
        assignments: list[d.Assignment],
        *,
        dimension: int,
        adapter_version: int,
    ) -> RoundNoisePlan:
        """The round's noise plan: sensitivity, quantization range and the clients' shares."""
        plan = self._plan(round_index, assignments, dimension)
        if plan.mode == "distributed":
            known = self._shares.get(adapter_version)
            self._shares[adapter_version] = (
                min(plan.share_scale, known[0]) if known else plan.share_scale,
                max(plan.min_shares, known[1]) if known else plan.min_shares,
            )
        return plan

    def _plan(
        self, round_index: int, assignments: list[d.Assignment], dimension: int
    ) -> RoundNoisePlan:
        rounds, ss = self.fed.rounds, self.fed.secure_sum
        asynchronous = rounds.mode == "async"
        w_max = max((a.weight for a in assignments), default=1)
        return plan_round_noise(
            mode=self.mode,
            mechanism=self.cfg.mechanism,
            noise_multiplier=self._multiplier(round_index),
            norm_clip=self.cfg.norm_clip,
            bits=ss.bits,
            range_clip=ss.clip,
            dimension=dimension,
            max_applied_weight=w_max * (STALENESS_SCALE if asynchronous else 1),
            share_clients=len(assignments),
            quorum=rounds.min_clients,
            colluders=self.cfg.tolerated_dropouts,
            min_factor=staleness_weight(rounds.max_staleness, rounds.staleness_exponent)
            if asynchronous
            else 1,
        )

    def params(self, plan: RoundNoisePlan) -> d.PrivacyParams:
        """What the clients are told: the clip bound and, in distributed mode, their shares."""
        distributed = plan.mode == "distributed"
        return d.PrivacyParams(
            mode=self.mode,
            mechanism=self.cfg.mechanism,
            norm_clip=self.cfg.norm_clip,
            noise_scale=plan.share_scale if distributed else 0.0,
            share_clients=plan.share_clients if distributed else 0,
            tolerated_dropouts=plan.share_clients - plan.min_shares if distributed else 0,
        )

    def share_variance(
        self, plan: RoundNoisePlan, contribution: d.Contribution, assigned_weight: int
    ) -> float:
        """Per-coordinate variance (sum space) of one contributor's noise share (0: central)."""
        if plan.mode != "distributed":
            return 0.0
        scale, m = self._shares.get(contribution.base_version) or (
            plan.share_scale,
            plan.min_shares,
        )
        factor = contribution.weight / max(1, assigned_weight)
        return (factor * scale) ** 2 / m

    def _event(self, multiplier: float) -> Any:
        return self.mechanism.event(noise_multiplier=multiplier)

    def _next_slot(self) -> int:
        rounds = self.ledger.rounds
        return rounds[-1] + 1 if rounds else 0

    def check_budget(self, round_index: int) -> None:
        """Raise BudgetExhaustedError when the next round would exceed the budget."""
        self.ledger.prepare(
            round_index=self._next_slot(), event=self._event(self._multiplier(round_index))
        )

    def charge(
        self,
        plan: RoundNoisePlan,
        *,
        share_variance: np.ndarray,
        share_count: np.ndarray,
        factors: list[float],
    ) -> LedgerEntry:
        """The ledger entry for one decryption, for the noise the sum carries (distributed: the
        survivors' shares; central: the noise the coordinator adds). Raises PrivacyError for
        an under-noised sum and BudgetExhaustedError past the budget; records nothing."""
        multiplier = plan.noise_multiplier
        if plan.mode == "distributed":
            multiplier = carried_noise_multiplier(
                plan, share_variance=share_variance, share_count=share_count, factors=factors
            )
        return self.ledger.prepare(round_index=self._next_slot(), event=self._event(multiplier))

    def commit(self, entry: LedgerEntry) -> None:
        self.ledger.commit(entry)

    def noise_sum(self, total: np.ndarray, plan: RoundNoisePlan) -> np.ndarray:
        if plan.mode != "central":
            return total  # distributed: the clients' shares are already inside the sum
        return self.mechanism.add_noise(
            total, noise_multiplier=plan.noise_multiplier, sensitivity=plan.sensitivity
        )

    def epsilon_spent(self) -> float:
        return float(self.ledger.epsilon_spent) if self.ledger.rounds else 0.0

    def load_ledger(self, entries: list[LedgerEntry]) -> None:
        self.ledger = PrivacyLedger.from_entries(
            entries, epsilon_budget=self.cfg.epsilon, delta=self.cfg.delta
        )

    def state_dict(self) -> dict[str, Any]:
        return {"plan": self.plan.to_dict(), "ledger": self.ledger.summary()}

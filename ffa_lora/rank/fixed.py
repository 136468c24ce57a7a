"""The fixed rank scheduler: every client trains the same rank every round."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ffa_lora.errors import ConfigError, StateError
from ffa_lora.rank.base import (
    STATE_VERSION,
    ClientReport,
    RankDecision,
    RankScheduler,
    ValuesAtRank,
    check_round_and_clients,
)

__all__ = ["FixedRankScheduler"]


class FixedRankScheduler(RankScheduler):
    """Every client trains the same rank every round (the baseline). Ignores the budget."""

    name: ClassVar[str] = "fixed"

    def __init__(self, rank: int = 16, *, values_at_rank: ValuesAtRank | None = None) -> None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ConfigError("fixed rank scheduler: rank must be an integer >= 1")
        super().__init__(values_at_rank=values_at_rank)
        self.rank = rank

    @classmethod
    def from_options(
        cls, *, values_at_rank: ValuesAtRank | None = None, **options: Any
    ) -> FixedRankScheduler:
        """Registry constructor: the only option is ``rank``."""
        return cls(**options, values_at_rank=values_at_rank)

    def decide(
        self,
        *,
        round_index: int,
        clients: Mapping[str, ClientReport],
        loss_history: Sequence[float] = (),
        budget: int | None = None,
        global_state: Mapping[str, Any] | None = None,
    ) -> RankDecision:
        """Rank ``self.rank`` for everyone."""
        check_round_and_clients(round_index, clients)
        ranks = {cid: self.rank for cid in clients}
        reasons = {cid: f"fixed rank {self.rank} (scheduler 'fixed')" for cid in clients}
        planned: int | None = None
        if self._values_at_rank is not None:
            planned = len(clients) * self._cost(self.rank)
            self._spend[round_index] = (planned, planned)
        return RankDecision(
            ranks,
            None,
            reasons,
            "fixed",
            round_index=round_index,
            r_max=self.rank,
            planned_values=planned,
            budget=budget,
        )

    def state_dict(self) -> dict[str, Any]:
        """Header, rank and the per-round upload record."""
        return {
            "scheduler": self.name,
            "version": STATE_VERSION,
            "rank": self.rank,
            "spend": self._spend_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore; the configured rank must match the checkpoint's."""
        self._check_state_header(state)
        if state.get("rank") != self.rank:
            raise StateError("checkpointed fixed rank differs from the configured one")
        self._load_spend(state.get("spend", {}))

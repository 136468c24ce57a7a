"""The rank scheduler interface: which LoRA rank each client trains in the coming round, and why.

Pluggable: every scheduler implements :class:`RankScheduler` (``decide``, ``on_reduced``,
``state_dict`` / ``load_state_dict``) and is registered by name (``"fixed"``, ``"dynamic"``)
in :mod:`ffa_lora.rank.registry`; build one with
:func:`~ffa_lora.rank.registry.make_scheduler`. The coordinator calls ``decide`` once per round, before
planning it, with what it legitimately knows: each client's sample count and the quality
scalars the client computed locally (:class:`ClientReport`), the global loss history and the
communication budget. It never sees a client's update.

Implementations: :class:`ffa_lora.rank.fixed.FixedRankScheduler` (the baseline) and
:class:`ffa_lora.rank.dynamic.DynamicRankScheduler` (initial rank from data size, quality
promotions within the budget, SVD reduction at plateau — its module docstring explains the
defaults). Every decision carries a reason per client, to log and export as metrics together
with ``planned_values`` (values uploaded in the round).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, asdict, dataclass
from typing import Any, ClassVar, Literal

from ffa_lora.errors import RankError, StateError

Phase = Literal["fixed", "initial", "promote", "reduce", "reduced"]
ValuesAtRank = Callable[[int], int]

STATE_VERSION = 1
"""Version of the checkpoint format of every scheduler's ``state_dict``."""


@dataclass(frozen=True)
class ClientReport:
    """What the coordinator knows about a client when it picks ranks (never its update).

    Attributes:
        num_samples: local training examples.
        grad_snr: gradient signal-to-noise ratio over the client's minibatches last round
            (see module docstring); ``None`` before the client has trained.
        val_loss_improvement: relative local validation-loss improvement over last round;
            ``None`` before the client has trained.
    """

    num_samples: int
    grad_snr: float | None = None
    val_loss_improvement: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int):
            raise RankError("num_samples must be an integer")
        if self.num_samples < 0:
            raise RankError("num_samples must be >= 0")
        if self.grad_snr is not None and not (math.isfinite(self.grad_snr) and self.grad_snr >= 0):
            raise RankError("grad_snr must be a finite number >= 0 (or None before training)")
        if self.val_loss_improvement is not None and not math.isfinite(self.val_loss_improvement):
            raise RankError("val_loss_improvement must be finite (or None before training)")


@dataclass(frozen=True)
class RankDecision:
    """Ranks for one round, each with a human-readable reason (logged and exported).

    Attributes:
        ranks: client id → LoRA rank for the coming round.
        reduce_to: when not ``None``, reduce the global adapter to this uniform rank (truncated
            SVD, keeping ``reduce_energy``) before the round, then call ``on_reduced``.
        reasons: client id → why it got its rank.
        phase: ``"fixed"``, ``"initial"``, ``"promote"``, ``"reduce"`` or ``"reduced"``.
        round_index: the round the decision is for.
        r_max: rank of the global adapter during the round.
        reduce_energy: energy fraction for the reduction (with ``reduce_to``).
        planned_values: values all listed clients upload at these ranks (None if unknown).
        budget: the per-round budget the plan was checked against (None if none).
    """

    ranks: dict[str, int]
    reduce_to: int | None
    reasons: dict[str, str]
    phase: Phase
    _: KW_ONLY
    round_index: int = 0
    r_max: int | None = None
    reduce_energy: float | None = None
    planned_values: int | None = None
    budget: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for logs, metrics and ``summary.json``."""
        return asdict(self)


class RankScheduler(ABC):
    """Interface of rank schedulers. Keeps the planned upload per round for reporting."""

    name: ClassVar[str]

    def __init__(self, *, values_at_rank: ValuesAtRank | None) -> None:
        self._values_at_rank = values_at_rank
        self._spend: dict[int, tuple[int, int]] = {}  # round -> (planned, fixed-r_max cost)

    @classmethod
    @abstractmethod
    def from_options(
        cls, *, values_at_rank: ValuesAtRank | None = None, **options: Any
    ) -> RankScheduler:
        """Build from registry options (what :func:`make_scheduler` passes on)."""

    @abstractmethod
    def decide(
        self,
        *,
        round_index: int,
        clients: Mapping[str, ClientReport],
        loss_history: Sequence[float] = (),
        budget: int | None = None,
        global_state: Mapping[str, Any] | None = None,
    ) -> RankDecision:
        """Ranks for round ``round_index``; call once per round, before planning it.

        Deciding a round again replaces that round's upload record, but promotions and
        reductions already made stay made.

        Args:
            round_index: the coming round, from 0.
            clients: the round's participants and their reports.
            loss_history: global (weighted) loss of each finished round, oldest first.
            budget: values all participants may upload this round; ``None`` = configured.
            global_state: the current global adapter state (public; never a client's update),
                for schedulers that look at its spectrum before reducing; may be ignored.
        """

    def on_reduced(self, decision: RankDecision, new_rank: int) -> RankDecision:
        """Record the rank the SVD reduction actually produced; return the corrected decision."""
        raise RankError(f"scheduler {self.name!r} never asks for a reduction")

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, for the coordinator's checkpoint."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state from :meth:`state_dict` (raises StateError when it does not fit)."""

    @property
    def values_uploaded_total(self) -> int:
        """Values planned for upload over all recorded rounds."""
        return sum(p for p, _ in self._spend.values())

    def values_uploaded_by_round(self) -> dict[int, int]:
        """Round → values planned for upload."""
        return {r: p for r, (p, _) in sorted(self._spend.items())}

    # --- helpers shared by the implementations -------------------------------------------

    def _cost(self, rank: int) -> int:
        assert self._values_at_rank is not None
        return int(self._values_at_rank(rank))

    def _spend_state(self) -> dict[str, list[int]]:
        return {str(r): [p, f] for r, (p, f) in self._spend.items()}

    def _load_spend(self, raw: Mapping[str, Any]) -> None:
        try:
            self._spend = {int(r): (int(v[0]), int(v[1])) for r, v in raw.items()}
        except (TypeError, ValueError, IndexError) as exc:
            raise StateError("rank scheduler state has a malformed 'spend' table") from exc

    def _check_state_header(self, state: Mapping[str, Any]) -> None:
        if state.get("scheduler") != self.name or state.get("version") != STATE_VERSION:
            raise StateError(
                f"checkpoint holds rank scheduler state {state.get('scheduler')!r} "
                f"v{state.get('version')}, expected {self.name!r} v{STATE_VERSION}; "
                "configure the same scheduler as the checkpointed run"
            )


def check_round_and_clients(round_index: int, clients: Mapping[str, ClientReport]) -> None:
    """Raise :class:`RankError` unless ``round_index`` is an integer >= 0 and ``clients`` maps
    client ids to :class:`ClientReport`."""
    if isinstance(round_index, bool) or not isinstance(round_index, int) or round_index < 0:
        raise RankError("round_index must be an integer >= 0")
    if not clients:
        raise RankError("no clients to assign ranks to")
    for cid, rep in clients.items():
        if not isinstance(cid, str) or not isinstance(rep, ClientReport):
            raise RankError("clients must map client id strings to ClientReport")

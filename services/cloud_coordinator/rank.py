"""Rank in the coordinator: :class:`ScheduledRank` adapts the configured core rank scheduler
(``federation.rank.scheduler``: ``"fixed"`` or ``"dynamic"``, from
:func:`ffa_lora.rank.make_scheduler`) to the coordinator's :class:`RankPolicy`.

What the scheduler sees is what the coordinator legitimately knows: each client's sample count
(from its edge's roster) and the quality scalars the client computed locally and sent as
plaintext metadata with its last update (gradient SNR, validation loss before/after local
training), plus the weighted global loss of every committed round. Never an update.

When decisions are made:

* ``ranks`` — before each round is planned: initial ranks and quality promotions (phases 1–2).
  The plateau test is *not* made here.
* ``maybe_reduce`` — at the commit of a round, for the next one: the plateau test (phase 3 of
  the dynamic scheduler; the fixed one never reduces). A
  reduction has to happen here, because the reduced adapter (new frozen A′, B′, rank and alpha)
  must be published as the version the next round trains from. The scheduler is asked with the
  full loss history and the new global adapter; if it does not reduce, its state is rolled back
  so that ``ranks`` decides the next round as if it had not been asked (promotions included).
  Not in asynchronous mode: there, updates trained on the adapter before a reduction could
  still arrive (stale, but of a valid length) and would be added to columns of another A, so
  the reduction is skipped (logged once) and ranks stay heterogeneous within r_max.

Every decision is logged with its reason per client; the coordinator exports the ranks as
``ffalora_client_rank{client}`` and records values uploaded per round in the round metrics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ffa_lora.errors import ConfigError, RankError, StateError
from ffa_lora.rank import ClientReport, RankDecision, make_scheduler, reduce_adapter_state
from services.common import domain as d
from services.common.config import FederationConfig

log = logging.getLogger(__name__)

_STATE_VERSION = 1


@dataclass(frozen=True)
class RankReduction:
    """The global adapter reduced to a lower uniform rank (truncated SVD of B·A per module)."""

    state: dict[str, np.ndarray]
    r_max: int
    alpha: float
    report: dict[str, Any]  # JSON-ready summary for the round metrics (no tensor values)


class RankPolicy(Protocol):
    """How the coordinator picks each client's rank and when it reduces the global adapter."""

    def ranks(self, round_index: int, roster: dict[str, d.RosterEntry]) -> dict[str, int]: ...
    def observe(self, round_index: int, contributions: list[d.Contribution], loss: float) -> None: ...
    def maybe_reduce(self, round_index: int, state: dict[str, np.ndarray]) -> RankReduction | None:
        """At commit, before round ``round_index``: the reduced adapter to publish, or None."""
        ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


def scheduler_options(fed: FederationConfig) -> dict[str, Any]:
    """``fed.rank.options`` with the defaults that tie the scheduler to ``model.rank``: the
    fixed rank defaults to it; the dynamic scheduler's ``r_max`` defaults to (and must equal)
    it, and its ``promoted_rank`` defaults to ``r_max``."""
    options = dict(fed.rank.options)
    if fed.rank.scheduler == "fixed":
        options.setdefault("rank", fed.model.rank)
        return options
    r_max = options.setdefault("r_max", fed.model.rank)
    if r_max != fed.model.rank:
        raise ConfigError(
            f"rank.options.r_max ({r_max}) must equal model.rank ({fed.model.rank}): the shared A "
            "has model.rank rows; set one of them to the other (or drop rank.options.r_max)"
        )
    options.setdefault("promoted_rank", r_max)
    return options


def report_from_quality(num_samples: int, q: d.Quality) -> ClientReport:
    """The scheduler's view of one client from its last update's metadata.

    ``grad_snr`` is passed on when finite (a client with fewer than two steps reports 0);
    the validation-loss improvement is relative, ``(before − after) / before``, and unknown
    (None) when the client has no validation split (it then reports 0 for both losses).
    """
    snr = q.grad_snr if math.isfinite(q.grad_snr) and q.grad_snr >= 0 else None
    improvement = None
    if q.val_loss_before > 0 and math.isfinite(q.val_loss_before) and math.isfinite(q.val_loss_after):
        improvement = (q.val_loss_before - q.val_loss_after) / q.val_loss_before
    return ClientReport(num_samples=int(num_samples), grad_snr=snr, val_loss_improvement=improvement)


class ScheduledRank:
    """:class:`RankPolicy` over the configured core rank scheduler (see the module docstring).

    Args:
        fed: the federation config; ``fed.rank.scheduler`` names the scheduler and
            ``fed.rank.options`` are its settings (see :func:`scheduler_options`).
        ops: the coordinator's adapter ops (``spec``, ``phase(round)``,
            ``upload_cost(phase, rank)``: the upload cost of a rank in the round's phase).
    """

    def __init__(self, fed: FederationConfig, ops: Any) -> None:
        self.ops = ops
        self._asynchronous = fed.rounds.mode == "async"
        self._phase: str = ops.phase(0)
        self.scheduler = make_scheduler(fed.rank.scheduler, values_at_rank=self._values_at_rank,
                                        **scheduler_options(fed))
        if self._asynchronous and fed.rank.scheduler == "dynamic":
            log.info("asynchronous mode: the dynamic rank scheduler will not reduce the rank at a plateau")
        self._samples: dict[str, int] = {}  # last contributors -> their sample count
        self._quality: dict[str, tuple[float | None, float | None]] = {}  # client -> (snr, improvement)
        self._loss_history: list[float] = []
        self.last_decision: RankDecision | None = None

    def _values_at_rank(self, rank: int) -> int:
        return int(self.ops.upload_cost(self._phase, rank))

    def _report(self, cid: str, num_samples: int) -> ClientReport:
        snr, improvement = self._quality.get(cid, (None, None))
        return ClientReport(num_samples=int(num_samples), grad_snr=snr, val_loss_improvement=improvement)

    # -- RankPolicy ------------------------------------------------------------------------

    def ranks(self, round_index: int, roster: dict[str, d.RosterEntry]) -> dict[str, int]:
        """Ranks for round ``round_index`` (phases 1–2; reductions happen in ``maybe_reduce``)."""
        self._phase = self.ops.phase(round_index)
        clients = {cid: self._report(cid, e.num_samples) for cid, e in roster.items()}
        decision = self.scheduler.decide(round_index=round_index, clients=clients)
        self.last_decision = decision
        _log_decision(decision)
        return dict(decision.ranks)

    def observe(self, round_index: int, contributions: list[d.Contribution], loss: float) -> None:
        """Remember the contributors' quality scalars and the round's weighted loss."""
        self._samples = {}
        for c in contributions:
            r = report_from_quality(c.num_samples, c.quality)
            self._samples[c.client_id] = c.num_samples
            self._quality[c.client_id] = (r.grad_snr, r.val_loss_improvement)
        self._loss_history.append(float(loss))

    def maybe_reduce(self, round_index: int, state: dict[str, np.ndarray]) -> RankReduction | None:
        """Phase 3: at a loss plateau, the global adapter reduced by truncated SVD, else None."""
        if not self._samples or self._asynchronous:
            return None
        history = [x for x in self._loss_history if math.isfinite(x)]
        snapshot = self.scheduler.state_dict()
        self._phase = self.ops.phase(round_index)
        clients = {cid: self._report(cid, n) for cid, n in self._samples.items()}
        try:
            decision = self.scheduler.decide(round_index=round_index, clients=clients, loss_history=history,
                                             global_state=state)
        except RankError as exc:
            log.warning("rank reduction check before round index %d skipped: %s", round_index, exc)
            decision = None
        if decision is None or decision.reduce_to is None:
            self.scheduler.load_state_dict(snapshot)  # a probe only: ranks() decides the round
            return None
        spec = self.ops.spec
        energy = decision.reduce_energy if decision.reduce_energy is not None else 1.0
        new_state, new_rank, rep = reduce_adapter_state(
            state, energy=energy, target_rank=decision.reduce_to, alpha=spec.alpha, r_max=spec.r_max)
        decision = self.scheduler.on_reduced(decision, new_rank)
        self.last_decision = decision
        kept = min((m.kept_energy for m in rep.modules), default=1.0)
        log.info("rank reduction before round index %d: r_max %d -> %d by truncated SVD (lora_alpha %g -> %g, "
                 "scaling %g kept), every module keeps >= %.1f%% of its energy; adapter LoRA values %d -> %d",
                 round_index, rep.old_rank, rep.new_rank, spec.alpha, rep.lora_alpha, rep.scaling, 100 * kept,
                 rep.lora_values_before, rep.lora_values_after)
        _log_decision(decision)
        report = {
            "old_rank": rep.old_rank, "new_rank": rep.new_rank, "lora_alpha": rep.lora_alpha,
            "energy": rep.energy, "target_rank": rep.target_rank, "energy_raised_rank": rep.energy_raised_rank,
            "min_kept_energy": kept, "lora_values_before": rep.lora_values_before,
            "lora_values_after": rep.lora_values_after,
        }
        return RankReduction(state=new_state, r_max=new_rank, alpha=rep.lora_alpha, report=report)

    # -- checkpoint ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Scheduler state, last reports and loss history (JSON-serialisable)."""
        return {
            "policy": self.scheduler.name,
            "version": _STATE_VERSION,
            "scheduler": self.scheduler.state_dict(),
            "samples": dict(self._samples),
            "quality": {cid: list(v) for cid, v in self._quality.items()},
            "loss_history": list(self._loss_history),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` (StateError when it is another policy's)."""
        if state.get("policy") != self.scheduler.name or state.get("version") != _STATE_VERSION:
            raise StateError(
                f"the checkpoint's rank policy state is not the {self.scheduler.name} scheduler's; "
                "configure the rank scheduler of the checkpointed run (federation.rank.scheduler)"
            )
        try:
            samples = {str(k): int(v) for k, v in state["samples"].items()}
            quality = {str(k): (_opt_float(v[0]), _opt_float(v[1])) for k, v in state["quality"].items()}
            history = [float(x) for x in state["loss_history"]]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise StateError("rank policy state is incomplete or malformed") from exc
        self.scheduler.load_state_dict(state["scheduler"])
        self._samples, self._quality, self._loss_history = samples, quality, history

    @property
    def values_planned_by_round(self) -> dict[int, int]:
        """Round index → values the scheduler planned for upload."""
        return self.scheduler.values_uploaded_by_round()


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _log_decision(decision: RankDecision) -> None:
    log.info("rank decision for round index %d: phase %s, r_max %s, %s values planned (budget %s)",
             decision.round_index, decision.phase, decision.r_max, decision.planned_values, decision.budget)
    # a fixed rank has one reason for everyone: per-client lines only say something when ranks vary
    level = logging.DEBUG if decision.phase == "fixed" else logging.INFO
    for cid in sorted(decision.ranks):
        log.log(level, "  client %s: rank %d: %s", cid, decision.ranks[cid], decision.reasons.get(cid, ""))

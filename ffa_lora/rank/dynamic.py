"""The dynamic rank scheduler: initial rank from data size, quality-driven promotion within a
communication budget, one uniform lower rank by SVD when the loss plateaus.

Why its defaults upload ≥ 35% fewer values than fixed rank 16
-------------------------------------------------------------
A rank-r client uploads ``values_at_rank(r) = head + r·values_per_column`` values (the B
columns of every module; the head is small). For MiniLM-L6 with LoRA on query/value and a
3-class head: ``values_at_rank(16) = 74,883``, ``(8) = 38,019``, ``(4) = 19,587``.

1. **initial** (rounds before ``promote_from_round``): rank from the local sample count,
   ``initial_ranks = ((0, 4), (256, 8))`` — 8 for any real site, 4 for a tiny one (a few
   hundred examples cannot use the capacity). All clients at 8 cost ≈ 51% of fixed 16.
2. **promote**: a client whose reported gradient SNR is at least the median of the reporting
   clients' (``snr_vs_median = 1``) and whose local validation loss still improves is
   eligible for ``promoted_rank = 16``; best SNR first, at most ``max_promotions_per_round``
   per round, and only while the plan fits (a) the per-round budget (default
   ``budget_fraction = 0.7`` of "every participant at r_max") and (b) the cumulative cap:
   values planned so far ≤ ``max_cumulative_fraction = 0.65`` × what fixed rank r_max would
   have uploaded over the same rounds and participants. With 3 clients one promoted client
   costs ≈ 67% of fixed 16 per round, so (a) admits exactly one, and (b) — paid for by the
   cheaper initial round — makes the total ≥ 35% below fixed 16 **by construction**, however
   many rounds run. A promotion is sticky (the client keeps training its extra columns) until
   keeping it would break the cap; then it is withdrawn, with the reason logged.
3. **reduce**: once the global loss has plateaued (relative change < ``plateau_tol`` for
   ``plateau_patience`` consecutive rounds, not before round ``min_rounds_before_reduce``) all
   clients get one uniform rank ``max(reduced_rank = 4, required_rank(global, reduce_energy =
   0.5))``: the coordinator reduces the global adapter by truncated SVD keeping at least that
   fraction of ‖ΔW‖² in every module (:func:`ffa_lora.rank.svd.reduce_adapter_state`). Given
   the global adapter, the scheduler checks the rank first and reduces only when it lowers the
   round's upload (otherwise it says so and keeps the plan); without it, the coordinator
   reports the rank the SVD gave through :meth:`DynamicRankScheduler.on_reduced`. Rank-4
   rounds cost ≈ 26% of fixed 16 and the final adapter shrinks 4×.

Why ``reduce_energy = 0.5`` and not 0.9+: FFA-LoRA trained with Adam spreads ΔW's energy
almost evenly over the rank (Adam whitens B's columns; A is random), and the uniform rank
must satisfy the *worst* module, so a high energy bound keeps nearly the whole rank; 0.5 with a
floor of 4 keeps the accuracy while still guaranteeing the bound it names (the measurements:
``docs/experiments/rank-reduction-energy.md``).

Accuracy overall: for sentence classification LoRA's rank matters little beyond 4–8 (Hu et
al., 2021, §7.2: r = 1…8 on par with r = 64), so rank 8 everywhere and 16 where the data is
most informative should match fixed 16 within noise, and training continues after the
reduction.

Quality scalars (computed by the client over the round it just trained, sent as metadata):
``grad_snr = ‖mean_b g_b‖² / mean_b ‖g_b − mean_b g_b‖²`` over its minibatch gradients of the
trainable parameters (dimensionless; > 1 means the batches agree on a direction) and
``val_loss_improvement = (val_before − val_after) / val_before`` on its local validation split.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from ffa_lora.errors import ConfigError, RankError, StateError
from ffa_lora.rank.base import (
    STATE_VERSION,
    ClientReport,
    Phase,
    RankDecision,
    RankScheduler,
    ValuesAtRank,
    check_round_and_clients,
)
from ffa_lora.rank.svd import required_rank


@dataclass(frozen=True)
class DynamicRankConfig:
    """Settings of the dynamic rank scheduler (see the module docstring for the defaults).

    Attributes:
        r_max: rows of the global A (the largest rank any client can get).
        initial_ranks: ``(min_samples, rank)`` thresholds, ascending; a client gets the rank of
            the largest threshold its sample count reaches.
        promoted_rank: rank of clients promoted for quality.
        promote_from_round: first round whose decision may promote (needs quality reports).
        max_promotions_per_round: new promotions per round at most.
        min_grad_snr: absolute gradient-SNR floor for promotion.
        snr_vs_median: promotion needs ``grad_snr >= snr_vs_median × median`` of the reports.
        min_val_improvement: promotion needs at least this relative val-loss improvement.
        budget_values_per_round: absolute per-round budget (values); overrides the fraction.
        budget_fraction: per-round budget as a fraction of every participant at ``r_max``.
        max_cumulative_fraction: cap on total planned values relative to fixed ``r_max`` over
            the same rounds; ``None`` disables it.
        plateau_tol: relative loss change below which a round counts as flat.
        plateau_patience: consecutive flat rounds that make a plateau.
        min_rounds_before_reduce: earliest round index whose decision may reduce.
        reduced_rank: the uniform rank after the reduction (``None``: never reduce).
        reduce_energy: fraction of ‖ΔW‖² each module keeps in the reduction.
    """

    r_max: int = 16
    initial_ranks: tuple[tuple[int, int], ...] = ((0, 4), (256, 8))
    promoted_rank: int = 16
    promote_from_round: int = 1
    max_promotions_per_round: int = 1
    min_grad_snr: float = 0.0
    snr_vs_median: float = 1.0
    min_val_improvement: float = 0.0
    budget_values_per_round: int | None = None
    budget_fraction: float = 0.7
    max_cumulative_fraction: float | None = 0.65
    plateau_tol: float = 0.01
    plateau_patience: int = 2
    min_rounds_before_reduce: int = 3
    reduced_rank: int | None = 4
    reduce_energy: float = 0.5

    def __post_init__(self) -> None:
        def need_int(name: str, low: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"dynamic rank: {name} must be an integer >= {low}, got {v!r}")

        for name, low in (
            ("r_max", 1),
            ("promoted_rank", 1),
            ("promote_from_round", 0),
            ("max_promotions_per_round", 0),
            ("plateau_patience", 1),
            ("min_rounds_before_reduce", 0),
        ):
            need_int(name, low)
        object.__setattr__(self, "initial_ranks", tuple(tuple(t) for t in self.initial_ranks))
        if not self.initial_ranks or self.initial_ranks[0][0] != 0:
            raise ConfigError(
                "dynamic rank: initial_ranks must start with a (0, rank) entry "
                "so every client gets a rank, e.g. ((0, 4), (256, 8))"
            )
        prev = -1
        for entry in self.initial_ranks:
            if len(entry) != 2 or not all(isinstance(x, int) for x in entry):
                raise ConfigError("dynamic rank: initial_ranks entries are (min_samples, rank)")
            if entry[0] <= prev:
                raise ConfigError("dynamic rank: initial_ranks thresholds must be ascending")
            if not 1 <= entry[1] <= self.r_max:
                raise ConfigError(f"dynamic rank: initial rank {entry[1]} is outside 1..r_max")
            prev = entry[0]
        if self.promoted_rank > self.r_max:
            raise ConfigError("dynamic rank: promoted_rank must be <= r_max")
        for name in ("min_grad_snr", "snr_vs_median"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ConfigError(f"dynamic rank: {name} must be a finite number >= 0")
        if not math.isfinite(self.min_val_improvement):
            raise ConfigError("dynamic rank: min_val_improvement must be finite")
        if self.budget_values_per_round is not None:
            need_int("budget_values_per_round", 0)
        if not 0 < self.budget_fraction:
            raise ConfigError("dynamic rank: budget_fraction must be > 0, e.g. 0.7")
        if self.max_cumulative_fraction is not None and not 0 < self.max_cumulative_fraction:
            raise ConfigError("dynamic rank: max_cumulative_fraction must be > 0 or None")
        if not 0 < self.plateau_tol < 1:
            raise ConfigError("dynamic rank: plateau_tol must be in (0, 1), e.g. 0.01")
        if self.reduced_rank is not None and not (
            isinstance(self.reduced_rank, int) and 1 <= self.reduced_rank < self.r_max
        ):
            raise ConfigError("dynamic rank: reduced_rank must be an integer in 1..r_max-1 or None")
        if not 0 < self.reduce_energy <= 1:
            raise ConfigError("dynamic rank: reduce_energy must be in (0, 1], e.g. 0.5")

    def initial_rank(self, num_samples: int) -> tuple[int, int]:
        """``(rank, threshold)`` for a client with ``num_samples`` local examples."""
        chosen = self.initial_ranks[0]
        for threshold, rank in self.initial_ranks:
            if num_samples >= threshold:
                chosen = (threshold, rank)
        return chosen[1], chosen[0]


@dataclass
class _Headroom:
    """Values planned for a round so far, against its budget and the cumulative cap."""

    planned: int
    budget: int
    cap: float | None
    cap_fraction: float | None
    r_max: int

    def blocker(self, extra: int) -> str | None:
        """What ``extra`` more values would exceed, or None when they fit."""
        if self.planned + extra > self.budget:
            return f"the per-round budget of {self.budget} values"
        if self.cap is not None and self.planned + extra > self.cap:
            return f"the cumulative cap of {self.cap_fraction:.0%} of fixed rank {self.r_max}"
        return None


class DynamicRankScheduler(RankScheduler):
    """Initial rank from data size, quality promotions within budget, SVD reduction at plateau."""

    name: ClassVar[str] = "dynamic"

    def __init__(
        self, config: DynamicRankConfig | None = None, *, values_at_rank: ValuesAtRank
    ) -> None:
        if values_at_rank is None:
            raise ConfigError("dynamic rank: values_at_rank (upload cost of a rank) is required")
        super().__init__(values_at_rank=values_at_rank)
        self.config = config or DynamicRankConfig()
        cfg = self.config
        costs = [self._cost(r) for r in range(1, cfg.r_max + 1)]
        if any(c < 0 for c in costs) or any(b < a for a, b in itertools.pairwise(costs)):
            raise ConfigError(
                "dynamic rank: values_at_rank must be non-negative and non-decreasing in the rank"
            )
        top_initial = max(r for _, r in cfg.initial_ranks)
        if cfg.max_cumulative_fraction is not None and self._cost(
            top_initial
        ) > cfg.max_cumulative_fraction * self._cost(cfg.r_max):
            raise ConfigError(
                f"dynamic rank: initial rank {top_initial} alone uploads more than "
                f"max_cumulative_fraction={cfg.max_cumulative_fraction} of rank {cfg.r_max}; "
                "lower initial_ranks or raise max_cumulative_fraction"
            )
        self._promoted: dict[str, int] = {}  # client id -> round promoted (insertion ordered)
        self._reduced_rank: int | None = None
        self._reduce_round: int | None = None

    @classmethod
    def from_options(
        cls, *, values_at_rank: ValuesAtRank | None = None, **options: Any
    ) -> DynamicRankScheduler:
        """Registry constructor: ``options`` are :class:`DynamicRankConfig` fields."""
        if values_at_rank is None:
            raise ConfigError("dynamic rank: values_at_rank (upload cost of a rank) is required")
        return cls(DynamicRankConfig(**options), values_at_rank=values_at_rank)

    # --- decision -----------------------------------------------------------------------

    def decide(
        self,
        *,
        round_index: int,
        clients: Mapping[str, ClientReport],
        loss_history: Sequence[float] = (),
        budget: int | None = None,
        global_state: Mapping[str, Any] | None = None,
    ) -> RankDecision:
        """Ranks for the coming round; see the module docstring for the policy.

        ``global_state`` (optional) is the current *global* adapter (public to every client,
        never a client's update). When given, a plateau's reduction rank is checked first:
        the SVD needs ``required_rank(global_state, energy=reduce_energy)`` to keep the energy
        bound, and the reduction happens only if that rank lowers this round's upload; the
        decision's ``reduce_to`` is then exactly the rank ``reduce_adapter_state`` will give.
        Without it, ``reduce_to = reduced_rank`` and the coordinator reports the rank the SVD
        actually gave through :meth:`on_reduced`.
        """
        check_round_and_clients(round_index, clients)
        for loss in loss_history:
            if not math.isfinite(loss):
                raise RankError("loss_history must hold finite numbers")
        cfg = self.config
        self._spend = {r: v for r, v in self._spend.items() if r < round_index}
        fixed_cost = len(clients) * self._cost(cfg.r_max)
        budget = self._round_budget(budget, fixed_cost)
        if self._reduced_rank is not None:
            return self._after_reduction(round_index, clients, budget, fixed_cost)

        phase: Phase = "initial" if round_index < cfg.promote_from_round else "promote"
        ranks, reasons = self._initial_ranks(clients)
        self._fit_budget(ranks, reasons, clients, budget)
        promoted = dict(self._promoted)
        if phase == "promote":
            room = _Headroom(planned=sum(self._cost(r) for r in ranks.values()), budget=budget,
                             cap=self._cumulative_cap(fixed_cost), cap_fraction=cfg.max_cumulative_fraction,
                             r_max=cfg.r_max)
            self._promote(round_index, ranks, reasons, clients, room, promoted)
        if (
            cfg.reduced_rank is not None
            and round_index >= cfg.min_rounds_before_reduce
            and self._plateau(loss_history)
        ):
            reduced = self._reduce(round_index, ranks, reasons, clients, global_state, budget, fixed_cost)
            if reduced is not None:
                return reduced
        self._promoted = promoted
        return self._record(round_index, ranks, reasons, phase, None, budget, fixed_cost)

    def _round_budget(self, budget: int | None, fixed_cost: int) -> int:
        """The round's budget: given, else configured, else ``budget_fraction`` of fixed r_max."""
        cfg = self.config
        if budget is None:
            budget = cfg.budget_values_per_round
        if budget is None:
            budget = int(cfg.budget_fraction * fixed_cost)
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
            raise RankError("budget must be an integer number of values >= 0")
        return budget

    def _cumulative_cap(self, fixed_cost: int) -> float | None:
        """Values this round may plan under the cumulative cap (None: no cap)."""
        fraction = self.config.max_cumulative_fraction
        if fraction is None:
            return None
        spent = sum(p for p, _ in self._spend.values())
        fixed = sum(f for _, f in self._spend.values()) + fixed_cost
        return fraction * fixed - spent

    def _initial_ranks(self, clients: Mapping[str, ClientReport]) -> tuple[dict[str, int], dict[str, str]]:
        """Every client's rank from its local sample count, with the reason."""
        ranks, reasons = {}, {}
        for cid, rep in clients.items():
            rank, threshold = self.config.initial_rank(rep.num_samples)
            ranks[cid] = rank
            reasons[cid] = f"rank {rank} from {rep.num_samples} local samples (>= {threshold})"
        return ranks, reasons

    def _after_reduction(self, round_index: int, clients: Mapping[str, ClientReport], budget: int,
                         fixed_cost: int) -> RankDecision:
        """Once reduced, every client keeps the reduced rank (within the budget)."""
        r = self._reduced_rank
        assert r is not None
        ranks = dict.fromkeys(clients, r)
        reasons = {cid: f"uniform rank {r} since the reduction in round {self._reduce_round}"
                   for cid in clients}
        self._fit_budget(ranks, reasons, clients, budget)
        return self._record(round_index, ranks, reasons, "reduced", None, budget, fixed_cost)

    def _reduce(self, round_index: int, ranks: dict[str, int], reasons: dict[str, str],
                clients: Mapping[str, ClientReport], global_state: Mapping[str, Any] | None,
                budget: int, fixed_cost: int) -> RankDecision | None:
        """At a plateau: the reduction decision when it lowers the upload, else None (and the
        reasons say why not)."""
        cfg = self.config
        target = cfg.reduced_rank
        assert target is not None
        if global_state is not None:
            target = max(target, required_rank(global_state, energy=cfg.reduce_energy))
        plateau = (
            f"loss plateaued (relative change < {cfg.plateau_tol:g} for "
            f"{cfg.plateau_patience} rounds)"
        )
        keeping = f"keeping {cfg.reduce_energy:.0%} of the energy"
        planned = sum(self._cost(r) for r in ranks.values())
        if target < cfg.r_max and len(ranks) * self._cost(target) < planned:
            self._reduced_rank, self._reduce_round = target, round_index
            self._promoted = {}
            ranks = dict.fromkeys(clients, target)
            reasons = {cid: f"{plateau}: uniform rank {target} by truncated SVD {keeping}"
                       for cid in clients}
            self._fit_budget(ranks, reasons, clients, budget)
            return self._record(round_index, ranks, reasons, "reduce", target, budget, fixed_cost)
        for cid in reasons:
            reasons[cid] += (
                f"; {plateau}, but {keeping} needs rank {target}, which would not lower "
                "the upload: no reduction this round"
            )
        return None

    def _record(
        self,
        round_index: int,
        ranks: dict[str, int],
        reasons: dict[str, str],
        phase: Phase,
        reduce_to: int | None,
        budget: int,
        fixed_cost: int,
    ) -> RankDecision:
        planned = sum(self._cost(r) for r in ranks.values())
        self._spend[round_index] = (planned, fixed_cost)
        return RankDecision(
            ranks,
            reduce_to,
            reasons,
            phase,
            round_index=round_index,
            r_max=self._reduced_rank if self._reduced_rank is not None else self.config.r_max,
            reduce_energy=self.config.reduce_energy if reduce_to is not None else None,
            planned_values=planned,
            budget=budget,
        )

    def on_reduced(self, decision: RankDecision, new_rank: int) -> RankDecision:
        """The SVD gave ``new_rank`` (≥ the requested rank when the energy needed more).

        Updates the scheduler and the round's upload record; returns the decision with every
        client at ``new_rank``.
        """
        if decision.reduce_to is None or self._reduced_rank is None:
            raise RankError("on_reduced called for a decision that did not ask for a reduction")
        if (
            isinstance(new_rank, bool)
            or not isinstance(new_rank, int)
            or not (1 <= new_rank <= self.config.r_max)
        ):
            raise RankError(f"reduced rank must be an integer in 1..r_max={self.config.r_max}")
        self._reduced_rank = new_rank
        note = (
            ""
            if new_rank == decision.reduce_to
            else (f"; the energy bound needed rank {new_rank} instead of {decision.reduce_to}")
        )
        ranks = {cid: new_rank for cid in decision.ranks}
        reasons = {cid: f"{why}{note}" for cid, why in decision.reasons.items()}
        planned = sum(self._cost(r) for r in ranks.values())
        fixed = self._spend.get(
            decision.round_index, (0, len(ranks) * self._cost(self.config.r_max))
        )[1]
        self._spend[decision.round_index] = (planned, fixed)
        return RankDecision(
            ranks,
            new_rank,
            reasons,
            decision.phase,
            round_index=decision.round_index,
            r_max=new_rank,
            reduce_energy=decision.reduce_energy,
            planned_values=planned,
            budget=decision.budget,
        )

    def _plateau(self, history: Sequence[float]) -> bool:
        p, tol = self.config.plateau_patience, self.config.plateau_tol
        if len(history) < p + 1:
            return False
        recent = list(history)[-(p + 1) :]
        return all(
            abs(cur - prev) / max(abs(prev), 1e-12) < tol
            for prev, cur in itertools.pairwise(recent)
        )

    def _fit_budget(
        self,
        ranks: dict[str, int],
        reasons: dict[str, str],
        clients: Mapping[str, ClientReport],
        budget: int,
    ) -> None:
        """Halve the largest ranks (smallest sites first) until the plan fits the budget."""
        while sum(self._cost(r) for r in ranks.values()) > budget:
            movable = [cid for cid, r in ranks.items() if r > 1]
            if not movable:
                raise RankError(
                    f"per-round budget of {budget} values is below the cost of rank 1 for all "
                    f"{len(ranks)} clients ({len(ranks) * self._cost(1)}); raise the budget"
                )
            cid = max(movable, key=lambda c: (ranks[c], -clients[c].num_samples, c))
            ranks[cid] = max(1, ranks[cid] // 2)
            reasons[cid] += f"; lowered to {ranks[cid]} to fit the per-round budget"

    def _promote(
        self,
        round_index: int,
        ranks: dict[str, int],
        reasons: dict[str, str],
        clients: Mapping[str, ClientReport],
        room: _Headroom,
        promoted: dict[str, int],
    ) -> None:
        """Keep earlier promotions that still fit, then promote the best eligible clients."""
        withdrawn = self._keep_promotions(ranks, reasons, clients, room, promoted)
        eligible, median = self._eligible(ranks, reasons, clients, promoted, withdrawn)
        self._grant(round_index, eligible, median, ranks, reasons, clients, room, promoted)

    def _keep_promotions(self, ranks: dict[str, int], reasons: dict[str, str],
                         clients: Mapping[str, ClientReport], room: _Headroom,
                         promoted: dict[str, int]) -> set[str]:
        """Promotions are sticky while they fit; returns the clients whose promotion ends."""
        target = self.config.promoted_rank
        withdrawn: set[str] = set()
        for cid, since in list(promoted.items()):
            if cid not in clients or ranks[cid] >= target:
                continue
            extra = self._cost(target) - self._cost(ranks[cid])
            why_not = room.blocker(extra)
            if why_not is None:
                room.planned += extra
                ranks[cid] = target
                reasons[cid] = f"rank {target}: promoted in round {since} for gradient quality"
            else:
                del promoted[cid]
                withdrawn.add(cid)
                reasons[cid] += f"; promotion to {target} withdrawn: it would exceed {why_not}"
        return withdrawn

    def _eligible(self, ranks: dict[str, int], reasons: dict[str, str],
                  clients: Mapping[str, ClientReport], promoted: dict[str, int],
                  withdrawn: set[str]) -> tuple[list[str], float]:
        """Clients whose quality reports qualify for a promotion, best first, and the median
        gradient SNR they were compared with; the others' reasons say why not."""
        cfg = self.config
        reporting = [r.grad_snr for r in clients.values() if r.grad_snr is not None]
        median = statistics.median(reporting) if reporting else 0.0
        eligible: list[str] = []
        for cid, rep in clients.items():
            if cid in promoted or cid in withdrawn or ranks[cid] >= cfg.promoted_rank:
                continue
            if rep.grad_snr is None or rep.val_loss_improvement is None:
                reasons[cid] += "; no quality report yet"
            elif rep.grad_snr < cfg.min_grad_snr:
                reasons[cid] += (
                    f"; gradient SNR {rep.grad_snr:.3g} below the floor {cfg.min_grad_snr:g}"
                )
            elif rep.grad_snr < cfg.snr_vs_median * median:
                reasons[cid] += (
                    f"; gradient SNR {rep.grad_snr:.3g} below "
                    f"{cfg.snr_vs_median:g} x median {median:.3g}"
                )
            elif rep.val_loss_improvement < cfg.min_val_improvement:
                reasons[cid] += (
                    f"; validation loss improved {rep.val_loss_improvement:.2%}, "
                    f"less than {cfg.min_val_improvement:.2%}"
                )
            else:
                eligible.append(cid)
        eligible.sort(
            key=lambda c: (
                -(clients[c].grad_snr or 0.0),
                -(clients[c].val_loss_improvement or 0.0),
                c,
            )
        )
        return eligible, median

    def _grant(self, round_index: int, eligible: list[str], median: float, ranks: dict[str, int],
               reasons: dict[str, str], clients: Mapping[str, ClientReport], room: _Headroom,
               promoted: dict[str, int]) -> None:
        """Promote eligible clients in order while the per-round limit and the budget allow."""
        cfg = self.config
        target = cfg.promoted_rank
        granted = 0
        for cid in eligible:
            rep = clients[cid]
            quality = (
                f"gradient SNR {rep.grad_snr:.3g} >= {cfg.snr_vs_median:g} x median "
                f"{median:.3g}, validation loss improved {rep.val_loss_improvement:.2%}"
            )
            if granted >= cfg.max_promotions_per_round:
                reasons[cid] += (
                    f"; eligible for {target} ({quality}) but at most "
                    f"{cfg.max_promotions_per_round} promotion(s) per round"
                )
                continue
            extra = self._cost(target) - self._cost(ranks[cid])
            why_not = room.blocker(extra)
            if why_not is not None:
                reasons[cid] += f"; eligible for {target} ({quality}) but it would exceed {why_not}"
                continue
            room.planned += extra
            granted += 1
            ranks[cid] = target
            promoted[cid] = round_index
            reasons[cid] = f"promoted to rank {target}: {quality}"

    # --- state --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Promotions, reduction and per-round upload record (JSON-serialisable)."""
        return {
            "scheduler": self.name,
            "version": STATE_VERSION,
            "config": asdict(self.config),
            "promoted": [[cid, since] for cid, since in self._promoted.items()],
            "reduced_rank": self._reduced_rank,
            "reduce_round": self._reduce_round,
            "spend": self._spend_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`. The configuration stays the one given at init."""
        self._check_state_header(state)
        try:
            promoted = {str(cid): int(since) for cid, since in state["promoted"]}
            reduced = state["reduced_rank"]
            reduce_round = state["reduce_round"]
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError("dynamic rank scheduler state is incomplete or malformed") from exc
        if reduced is not None and not (
            isinstance(reduced, int) and 1 <= reduced <= self.config.r_max
        ):
            raise StateError("checkpointed reduced rank does not fit the configured r_max")
        self._load_spend(state.get("spend", {}))
        self._promoted = promoted
        self._reduced_rank = reduced
        self._reduce_round = None if reduce_round is None else int(reduce_round)

"""The per-round ε schedule and the privacy plan computed before training.

Rounds get *weights* ``w_t`` (``w_0 = 1``, non-increasing, ``w_{T-1} = 1 - decay``):

* ``constant`` — ``w_t = 1``;
* ``linear`` — ``w_t = 1 - decay · t/(T-1)``;
* ``geometric`` — ``w_t = (1 - decay)^(t/(T-1))``.

Both non-constant shapes go from the same loose first round to the same strict last round
(``decay`` is how much stricter the last round is); geometric spends more of the budget early.

A single scale ``s`` turns weights into per-round privacy parameters:

* Laplace: ``ε_t = s · w_t`` (pure DP per round), noise multiplier ``z_t = 1/ε_t``, i.e. the
  design's ``b_t = Δ1/ε_t``;
* Gaussian: ``1/z_t = s · w_t`` (the round's μ in Gaussian-DP terms). The table reports the
  round's stand-alone ε_t at the plan's δ.

``s`` is the largest value whose composition over all rounds stays within ``(ε, δ)``,
found by bisection (in log space) with the PLD accountant, then verified with the
accountant the coordinator uses at run time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ffa_lora.errors import ConfigError, PrivacyError
from ffa_lora.privacy.accountant import check_delta, check_epsilon, epsilon_of, make_accountant
from ffa_lora.privacy.events import MechanismName, PrivacyEvent, check_mechanism

ScheduleName = Literal["constant", "linear", "geometric"]
SCHEDULES: tuple[str, ...] = ("constant", "linear", "geometric")

# Grid step of the PLD accountant used inside the search. dp-accounting's PLD is pessimistic,
# so a coarser grid only over-estimates ε; the final plan is re-checked on the fine grid.
_SEARCH_DISCRETIZATION = 1e-3


def schedule_weights(*, schedule: ScheduleName, rounds: int, decay: float) -> np.ndarray:
    """Relative per-round privacy weights (first = 1, last = 1 - decay)."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be an integer >= 1, got {rounds!r}")
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown epsilon schedule {schedule!r}; choose one of {SCHEDULES}")
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
        raise ConfigError(
            f"decay must be in [0, 1) (how much stricter the last round is than the first); "
            f"got {decay!r}"
        )
    if schedule == "constant" or rounds == 1 or decay == 0:
        return np.ones(rounds)
    frac = np.arange(rounds, dtype=np.float64) / (rounds - 1)
    if schedule == "linear":
        return 1.0 - decay * frac
    return np.power(1.0 - decay, frac)


def _multipliers(scale: float, weights: np.ndarray) -> np.ndarray:
    # Laplace: ε_t = s·w_t, z_t = 1/ε_t.  Gaussian: 1/z_t = s·w_t.  Same formula for both.
    return 1.0 / (scale * weights)


def _events(mechanism: MechanismName, multipliers: np.ndarray) -> list[PrivacyEvent]:
    return [PrivacyEvent(mechanism=mechanism, noise_multiplier=float(z)) for z in multipliers]


@dataclass(frozen=True)
class RoundPlan:
    """One planned round.

    Attributes:
        round: 0-based round index.
        epsilon: the round's own ε_t (Laplace: exact pure ε; Gaussian: stand-alone ε at δ).
        noise_multiplier: noise scale / sensitivity (what the accountant records).
        noise_scale: absolute Laplace b or Gaussian σ on the mean (None without sensitivity).
        cumulative_epsilon: composed ε at δ after this round (run-time accountant).
    """

    round: int
    epsilon: float
    noise_multiplier: float
    noise_scale: float | None
    cumulative_epsilon: float

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (one table row)."""
        return {
            "round": self.round,
            "epsilon": self.epsilon,
            "noise_multiplier": self.noise_multiplier,
            "noise_scale": self.noise_scale,
            "cumulative_epsilon": self.cumulative_epsilon,
        }


@dataclass(frozen=True)
class PrivacyPlan:
    """Noise and ε per round, and the total, fixed before training starts."""

    mechanism: MechanismName
    epsilon_budget: float
    delta: float
    schedule: ScheduleName
    decay: float
    accountant: str
    sensitivity: float | None
    rounds: tuple[RoundPlan, ...]
    #: Composed ε at δ over all planned rounds (≤ epsilon_budget).
    epsilon_total: float
    #: Cross-check of epsilon_total by the other accountants (None where unsupported).
    cross_check: dict[str, float | None] = field(default_factory=dict)

    def events(self) -> list[PrivacyEvent]:
        """The accountant events of all planned rounds, in order."""
        return [
            PrivacyEvent(mechanism=self.mechanism, noise_multiplier=r.noise_multiplier)
            for r in self.rounds
        ]

    def noise_multiplier(self, round_index: int) -> float:
        """Noise multiplier of a planned round (raises PrivacyError past the plan)."""
        if not 0 <= round_index < len(self.rounds):
            raise PrivacyError(
                f"round {round_index} is outside the privacy plan of {len(self.rounds)} rounds; "
                "plan more rounds or stop training"
            )
        return self.rounds[round_index].noise_multiplier

    def to_table(self) -> list[dict[str, Any]]:
        """One dict per round: round, epsilon, noise_multiplier, noise_scale, cumulative."""
        return [r.to_dict() for r in self.rounds]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable summary and table (for ``ffa-lora privacy plan`` and the store)."""
        return {
            "mechanism": self.mechanism,
            "epsilon_budget": self.epsilon_budget,
            "delta": self.delta,
            "schedule": self.schedule,
            "decay": self.decay,
            "accountant": self.accountant,
            "sensitivity": self.sensitivity,
            "num_rounds": len(self.rounds),
            "epsilon_total": self.epsilon_total,
            "cross_check": dict(self.cross_check),
            "rounds": self.to_table(),
        }


def _solve_scale(
    *,
    mechanism: MechanismName,
    weights: np.ndarray,
    epsilon_budget: float,
    delta: float,
    rel_tol: float,
) -> float:
    """Largest s (within rel_tol) with ε(composition) ≤ budget, by bisection on log s."""

    def eps(s: float) -> float:
        return epsilon_of(
            _events(mechanism, _multipliers(s, weights)),
            delta=delta,
            accountant="pld",
            value_discretization_interval=_SEARCH_DISCRETIZATION,
        )

    # Basic composition (ε ≤ Σ ε_t) makes this a feasible start for Laplace; for Gaussian
    # it is just a guess. Expand by doubling/halving until the root is bracketed.
    s = epsilon_budget / float(np.sum(weights))
    lo, hi = s, s
    for _ in range(60):
        if eps(lo) <= epsilon_budget:
            break
        lo /= 2.0
    else:
        raise PrivacyError("could not find a feasible noise level for this budget")
    hi = lo * 2.0
    for _ in range(60):
        if eps(hi) > epsilon_budget:
            break
        lo, hi = hi, hi * 2.0
    else:
        raise PrivacyError("could not bracket the noise level for this budget")
    while math.log(hi / lo) > rel_tol:
        mid = math.sqrt(lo * hi)
        if eps(mid) <= epsilon_budget:
            lo = mid
        else:
            hi = mid
    return lo


def plan_privacy(
    *,
    mechanism: MechanismName,
    epsilon_total: float,
    delta: float,
    rounds: int,
    schedule: ScheduleName = "linear",
    decay: float = 0.5,
    sensitivity: float | None = None,
    accountant: str = "pld",
    rel_tol: float = 1e-3,
) -> PrivacyPlan:
    """Plan per-round noise so that all ``rounds`` compose to at most ``(epsilon_total, delta)``.

    Args:
        mechanism: ``"laplace"`` or ``"gaussian"``.
        epsilon_total: the total ε budget (> 0, finite).
        delta: the δ at which ε is measured (0 < δ < 1).
        rounds: the number of planned rounds (the training stops after them or earlier).
        schedule: ``"constant"``, ``"linear"`` or ``"geometric"`` (see module docstring).
        decay: how much stricter the last round is than the first, in [0, 1).
        sensitivity: Δ of the mean (:func:`~ffa_lora.privacy.sensitivity.mean_sensitivity`);
            when given, the table shows absolute noise scales.
        accountant: the run-time accountant the plan is verified with (``"pld"`` or ``"rdp"``).
        rel_tol: relative precision of the scale search.

    Raises:
        ConfigError: on invalid arguments.
        PrivacyError: if no plan fits (should not happen for valid arguments).
    """
    mech = check_mechanism(mechanism)
    budget = check_epsilon(epsilon_total, name="epsilon_total")
    delta = check_delta(delta)
    weights = schedule_weights(schedule=schedule, rounds=rounds, decay=decay)
    if sensitivity is not None and not (
        isinstance(sensitivity, (int, float)) and math.isfinite(sensitivity) and sensitivity > 0
    ):
        raise ConfigError(f"sensitivity must be a positive finite number, got {sensitivity!r}")
    if not 0 < rel_tol < 0.5:
        raise ConfigError(f"rel_tol must be in (0, 0.5), got {rel_tol!r}")

    multipliers, events, cumulative = _verified_multipliers(
        mech, weights, epsilon_budget=budget, delta=delta, rel_tol=rel_tol, accountant=accountant
    )
    per_round = _per_round_epsilon(mech, multipliers, delta=delta)
    table = tuple(
        RoundPlan(
            round=t,
            epsilon=float(per_round[t]),
            noise_multiplier=float(multipliers[t]),
            noise_scale=None if sensitivity is None else float(multipliers[t] * sensitivity),
            cumulative_epsilon=float(cumulative[t]),
        )
        for t in range(rounds)
    )
    return PrivacyPlan(
        mechanism=mech,
        epsilon_budget=budget,
        delta=delta,
        schedule=schedule,
        decay=float(decay),
        accountant=accountant,
        sensitivity=None if sensitivity is None else float(sensitivity),
        rounds=table,
        epsilon_total=float(cumulative[-1]),
        cross_check=_cross_check(events, delta=delta, accountant=accountant, epsilon=cumulative[-1]),
    )


def _verified_multipliers(
    mech: MechanismName,
    weights: np.ndarray,
    *,
    epsilon_budget: float,
    delta: float,
    rel_tol: float,
    accountant: str,
) -> tuple[list[float], list[PrivacyEvent], list[float]]:
    """Per-round noise multipliers within the budget by the run-time ``accountant``, their
    events and the cumulative ε after each round.

    The scale found by :func:`_solve_scale` is shrunk until the run-time accountant, whose grid
    is finer than the search's, agrees that the plan fits."""
    s = _solve_scale(
        mechanism=mech, weights=weights, epsilon_budget=epsilon_budget, delta=delta, rel_tol=rel_tol
    )
    for _ in range(50):
        multipliers = [float(z) for z in _multipliers(s, weights)]
        events = _events(mech, np.asarray(multipliers))
        run_time = make_accountant(accountant)
        cumulative: list[float] = []
        for e in events:
            run_time.add_event(e)
            cumulative.append(run_time.get_epsilon(delta=delta))
        if cumulative[-1] <= epsilon_budget:
            return multipliers, events, cumulative
        s *= 1.0 - rel_tol
    raise PrivacyError("the run-time accountant rejects every plan found; report a bug")


def _per_round_epsilon(mech: MechanismName, multipliers: Sequence[float], *,
                       delta: float) -> list[float]:
    """ε of each round on its own (Laplace: ``1/z``; Gaussian: at ``delta``)."""
    if mech == "laplace":
        return [1.0 / z for z in multipliers]
    cache: dict[float, float] = {}
    for z in multipliers:
        if float(z) not in cache:
            cache[float(z)] = epsilon_of([PrivacyEvent("gaussian", float(z))], delta=delta)
    return [cache[float(z)] for z in multipliers]


def _cross_check(events: Sequence[PrivacyEvent], *, delta: float, accountant: str,
                 epsilon: float) -> dict[str, float | None]:
    """The plan's total ε by each accountant (None where one cannot compute it)."""
    checks: dict[str, float | None] = {}
    for name in ("pld", "rdp"):
        if name == accountant:
            checks[name] = epsilon
            continue
        try:
            checks[name] = epsilon_of(events, delta=delta, accountant=name)
        except PrivacyError:
            checks[name] = None
    return checks

"""Which LoRA factors train in a round: warm-up, FFA, alternating freeze, FedAvg.

A small pure policy, so the coordinator, the client and the tests agree on it.

Exactness under additive encryption. The server only ever learns ``Σ_i w_i·Δ_i`` (the
encrypted sum), so aggregation is exact exactly when the global ΔW is linear in each
client's upload:

* ``"B"`` — A is frozen and shared: ``mean_i(B_i)·A = mean_i(B_i·A)``. Exact (FFA-LoRA).
* ``"A"`` — B is frozen and shared: ``B·mean_i(A_i) = mean_i(B·A_i)``. Exact.
* ``"both"`` — ``mean(B_i)·mean(A_i) ≠ mean(B_i·A_i)`` in general: the classic FedAvg-LoRA
  discrepancy. Used only for the warm-up rounds (the design's "full updates first, low-rank
  later") and for the ``fedavg`` baseline.

Heterogeneous ranks keep this: in phase ``"A"`` row ``j`` of A is averaged over the clients
whose rank covers it, exactly as column ``j`` of B is in phase ``"B"``.

Alternating freeze starts with ``"B"`` after the warm-up: with FFA's zero-initialised B the
gradient of A is ``s·Bᵀ·∂L/∂ΔW = 0``, so an ``"A"`` phase first would not move anything.
"""

from __future__ import annotations

from typing import Literal, get_args

from ffa_lora.errors import ConfigError

TrainStrategy = Literal["ffa", "alternating", "fedavg"]
TrainPhase = Literal["both", "B", "A"]

STRATEGIES: tuple[str, ...] = get_args(TrainStrategy)


def phase_for_round(
    strategy: TrainStrategy,
    round: int,  # shadows the builtin on purpose: the name callers pass by keyword
    warmup_rounds: int = 0,
    alternate_every: int = 1,
) -> TrainPhase:
    """Which factors train in round ``round`` (0-based).

    Args:
        strategy: ``"ffa"`` (B only after the warm-up), ``"alternating"`` (after the warm-up,
            ``alternate_every`` rounds of B with A frozen, then as many of A with B frozen,
            and so on), or ``"fedavg"`` (both factors every round; the warm-up is moot).
        round: the round index, counting from 0.
        warmup_rounds: rounds at the start in which both A and B train and are averaged.
        alternate_every: length of each B / A block of the alternating strategy.

    Returns:
        ``"both"``, ``"B"`` or ``"A"``.

    Raises:
        ConfigError: unknown strategy, negative round or warm-up, or ``alternate_every < 1``.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown training strategy {strategy!r}; choose one of {STRATEGIES}")
    for name, value, low in (
        ("round", round, 0),
        ("warmup_rounds", warmup_rounds, 0),
        ("alternate_every", alternate_every, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    if strategy == "fedavg" or round < warmup_rounds:
        return "both"
    if strategy == "ffa":
        return "B"
    block = (round - warmup_rounds) // alternate_every
    return "B" if block % 2 == 0 else "A"


def trains_a(phase: TrainPhase) -> bool:
    """True when A trains (and is uploaded) in this phase."""
    return phase in ("both", "A")


def trains_b(phase: TrainPhase) -> bool:
    """True when B trains (and is uploaded) in this phase."""
    return phase in ("both", "B")


def is_exact_under_additive_encryption(phase: TrainPhase) -> bool:
    """True when averaging the clients' uploads gives exactly the mean of their ΔW."""
    return phase != "both"

"""Rank reduction at convergence: truncated SVD of ``ΔW = scaling·B·A`` per module.

For each LoRA module the product ``ΔW = s·B·A`` (rank ≤ r_max) is factorised as
``U·diag(σ)·Vᵀ`` and truncated to the uniform new rank ``r′``. The new factors are

    A′ = V_{r′}ᵀ                 (orthonormal rows; frozen and shared, like the seed A)
    B′ = U_{r′}·diag(σ_{r′}) / s′

so that ``s′·B′·A′ = U_{r′} diag(σ_{r′}) V_{r′}ᵀ`` — the best rank-r′ approximation of ΔW
(Eckart–Young). The scale is folded into B′, so peft's adapter_config (``r``, ``lora_alpha``)
reproduces ΔW whatever ``s′`` is.

Scaling convention (decided here). peft computes ``s′ = lora_alpha′ / r′``. By default
(``alpha_mode="keep_scaling"``) we write ``lora_alpha′ = alpha · r′ / r_max`` so that
``s′ = alpha / r_max = s``: the effective scaling is unchanged by the reduction, just as it is
identical across heterogeneous client ranks, and the step size B′ sees in later rounds is not
inflated by ``r_max / r′``. ``alpha_mode="keep_alpha"`` keeps ``lora_alpha′ = alpha`` (so
``s′ = alpha / r′``) for callers that want peft's usual "alpha fixed, r varies" convention; ΔW
is reproduced exactly either way. ``lora_alpha′`` may be fractional; peft accepts it.

Energy guarantee. The smallest rank ``k_m`` per module with
``Σ_{i>k_m} σ_i² ≤ (1 − energy)·Σ σ_i²`` is computed; the uniform rank is
``r′ = max(target_rank, max_m k_m)``, so for every module
``‖ΔW − ΔW′‖_F² = Σ_{i>r′} σ_i² ≤ (1 − energy)·‖ΔW‖_F²`` (up to float tolerance): the energy
bound wins over a too-small ``target_rank`` and the report says so. The SVD of the
``out × in`` product is done through two thin QRs and an ``r × r`` SVD, in float64.

After a reduction A′ is no longer derivable from the federation's seed: the coordinator must
ship it with the next global adapter version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ffa_lora.errors import RankError
from ffa_lora.rank.keys import as_array, lora_modules, state_rank

AlphaMode = Literal["keep_scaling", "keep_alpha"]

# Relative slack on the energy test so that energy=1.0 drops only numerically-zero directions.
_ENERGY_RTOL = 1e-12


@dataclass(frozen=True)
class ProductSVD:
    """Thin SVD of ``B·A`` (without scaling): ``B·A = u · diag(s) · vt``, ``s`` descending."""

    u: np.ndarray
    s: np.ndarray
    vt: np.ndarray


@dataclass(frozen=True)
class ModuleReduction:
    """What the reduction did to one module (no tensor values, safe to log).

    Attributes:
        module: module key prefix.
        needed_rank: smallest rank keeping the requested energy fraction in this module.
        kept_energy: fraction of ``‖ΔW‖_F²`` kept at the uniform new rank (1.0 if ΔW = 0).
        relative_error: ``‖ΔW − ΔW′‖_F / ‖ΔW‖_F`` (0.0 if ΔW = 0).
    """

    module: str
    needed_rank: int
    kept_energy: float
    relative_error: float


@dataclass(frozen=True)
class ReductionReport:
    """Summary of a rank reduction, for logs, metrics and the new adapter_config.

    Attributes:
        old_rank / new_rank: r_max before and after.
        lora_alpha: the new adapter_config ``lora_alpha``.
        scaling: the new effective scaling ``lora_alpha / new_rank``.
        energy / target_rank: the requested energy fraction and rank.
        energy_raised_rank: True when ``target_rank`` was too small for the energy bound.
        lora_values_before / lora_values_after: number of A and B values in the state.
        modules: one :class:`ModuleReduction` per LoRA module.
    """

    old_rank: int
    new_rank: int
    lora_alpha: float
    scaling: float
    energy: float
    target_rank: int | None
    energy_raised_rank: bool
    lora_values_before: int
    lora_values_after: int
    modules: tuple[ModuleReduction, ...] = field(default_factory=tuple)

    def adapter_config_updates(self) -> dict[str, float | int]:
        """Fields to change in peft's ``adapter_config.json`` / ``LoraConfig``."""
        return {"r": self.new_rank, "lora_alpha": self.lora_alpha}


def product_svd(b: np.ndarray, a: np.ndarray) -> ProductSVD:
    """SVD of ``B·A`` (``(out, r)·(r, in)``) via thin QRs: cost O((out + in)·r²), not O(out·in·r).

    ``u`` has orthonormal columns and ``vt`` orthonormal rows even where ``B·A`` is
    rank-deficient, so any prefix of ``vt`` is a valid frozen A′.
    """
    b64 = as_array(b).astype(np.float64)
    a64 = as_array(a).astype(np.float64)
    if b64.ndim != 2 or a64.ndim != 2 or b64.shape[1] != a64.shape[0]:
        raise RankError(f"B {b64.shape} and A {a64.shape} do not multiply as (out, r)·(r, in)")
    q_b, r_b = np.linalg.qr(b64)  # (out, k_b), (k_b, r)
    q_a, r_a = np.linalg.qr(a64.T)  # (in, k_a), (k_a, r)
    core_u, s, core_vt = np.linalg.svd(r_b @ r_a.T)  # (k_b, k_b), min(k_b, k_a), (k_a, k_a)
    k = s.shape[0]
    return ProductSVD(u=q_b @ core_u[:, :k], s=s, vt=(q_a @ core_vt[:k].T).T)


def rank_for_energy(singular_values: np.ndarray, energy: float) -> int:
    """Smallest k with ``Σ_{i>k} σ_i² ≤ (1 − energy)·Σ σ_i²`` (0 when all σ are 0)."""
    sq = np.asarray(singular_values, dtype=np.float64) ** 2
    total = float(sq.sum())
    if total == 0.0:
        return 0
    # tails[k] = Σ_{i>=k} σ_i² (energy lost when keeping k components), k = 0..n
    tails = np.concatenate([np.cumsum(sq[::-1])[::-1], [0.0]])
    allowed = (1.0 - energy) * total + _ENERGY_RTOL * total
    return int(np.argmax(tails <= allowed))


def required_rank(state: Mapping[str, Any], *, energy: float) -> int:
    """Smallest uniform rank (≥ 1) keeping ``energy`` of ‖ΔW‖_F² in every LoRA module.

    The scaling does not matter (the energy fraction is scale-free), so this needs only the
    state; it is the rank :func:`reduce_adapter_state` picks when ``target_rank`` is None.
    """
    if not (isinstance(energy, (int, float)) and 0.0 < float(energy) <= 1.0):
        raise RankError("energy must be a fraction in (0, 1], e.g. 0.9 keeps 90% of ‖ΔW‖²")
    state_rank(state)  # validates shapes
    needed = [
        rank_for_energy(product_svd(as_array(state[m.b_key]), as_array(state[m.a_key])).s, energy)
        for m in lora_modules(state)
    ]
    return max(1, *needed)


def _validate(energy: float, target_rank: int | None, alpha: float, r_max: int) -> None:
    if not (isinstance(energy, (int, float)) and 0.0 < float(energy) <= 1.0):
        raise RankError("energy must be a fraction in (0, 1], e.g. 0.9 keeps 90% of ‖ΔW‖²")
    if isinstance(r_max, bool) or not isinstance(r_max, int) or r_max < 1:
        raise RankError("r_max must be a positive integer (the adapter's current rank)")
    if not (isinstance(alpha, (int, float)) and np.isfinite(alpha) and alpha > 0):
        raise RankError("alpha must be a positive number (the adapter's lora_alpha)")
    if target_rank is not None and (
        isinstance(target_rank, bool)
        or not isinstance(target_rank, int)
        or not 1 <= target_rank <= r_max
    ):
        raise RankError(
            f"target_rank must be an integer in 1..r_max={r_max} (reduction cannot raise the "
            "rank), or None to let the energy fraction decide"
        )


def reduce_adapter_state(
    state: Mapping[str, Any],
    *,
    energy: float,
    target_rank: int | None = None,
    alpha: float,
    r_max: int,
    alpha_mode: AlphaMode = "keep_scaling",
) -> tuple[dict[str, np.ndarray], int, ReductionReport]:
    """Reduce every LoRA module of an adapter state to one uniform lower rank.

    Args:
        state: adapter state (peft saved-adapter keys → arrays), LoRA factors of rank r_max.
        energy: fraction of ``‖ΔW‖_F²`` each module must keep, in (0, 1].
        target_rank: requested uniform rank; raised if the energy bound needs more. ``None``:
            the smallest rank meeting the energy bound in every module.
        alpha: the adapter's ``lora_alpha`` (scaling is ``alpha / r_max``).
        r_max: the adapter's current rank (must match the state's shapes).
        alpha_mode: how the new ``lora_alpha`` is chosen (see module docstring).

    Returns:
        ``(new_state, new_rank, report)``: head keys are copied unchanged; ``lora_A`` becomes
        ``(new_rank, in)`` with orthonormal rows, ``lora_B`` becomes ``(out, new_rank)``; both
        keep the input dtype. ``report.adapter_config_updates()`` gives ``r`` and
        ``lora_alpha`` for the new adapter_config.

    Raises:
        RankError: invalid arguments, a state whose rank is not ``r_max``, or a new rank larger
            than some module's ``min(out, in)``.
    """
    _validate(energy, target_rank, alpha, r_max)
    if alpha_mode not in ("keep_scaling", "keep_alpha"):
        raise RankError("alpha_mode must be 'keep_scaling' or 'keep_alpha'")
    found = state_rank(state)
    if found != r_max:
        raise RankError(f"the adapter state has rank {found} but r_max={r_max} was given")
    modules = lora_modules(state)
    svds = [product_svd(as_array(state[m.b_key]), as_array(state[m.a_key])) for m in modules]
    needed = [rank_for_energy(dec.s, float(energy)) for dec in svds]
    new_rank = _uniform_rank(svds, needed, target_rank)
    new_alpha = float(alpha) * new_rank / r_max if alpha_mode == "keep_scaling" else float(alpha)

    new_state = {k: np.array(as_array(v), copy=True) for k, v in state.items()
                 if k not in {key for m in modules for key in (m.a_key, m.b_key)}}
    reports: list[ModuleReduction] = []
    for m, dec, k_m in zip(modules, svds, needed):
        new_state[m.a_key], new_state[m.b_key] = _truncated_factors(
            dec, new_rank, scaling=float(alpha) / r_max, new_scaling=new_alpha / new_rank,
            a_dtype=as_array(state[m.a_key]).dtype, b_dtype=as_array(state[m.b_key]).dtype)
        reports.append(_module_report(m.module, dec, needed_rank=k_m, new_rank=new_rank))

    def lora_size(st: Mapping[str, Any]) -> int:
        return sum(int(as_array(st[m.a_key]).size + as_array(st[m.b_key]).size) for m in modules)

    report = ReductionReport(
        old_rank=r_max,
        new_rank=new_rank,
        lora_alpha=new_alpha,
        scaling=new_alpha / new_rank,
        energy=float(energy),
        target_rank=target_rank,
        energy_raised_rank=target_rank is not None and max(needed) > target_rank,
        lora_values_before=lora_size(state),
        lora_values_after=lora_size(new_state),
        modules=tuple(reports),
    )
    return new_state, new_rank, report


def _uniform_rank(svds: list[ProductSVD], needed: list[int], target_rank: int | None) -> int:
    """The one rank every module gets: the target, raised to what the energy bound needs."""
    new_rank = max(1, max(needed), target_rank or 0)
    capacity = min(dec.vt.shape[0] for dec in svds)
    if new_rank > capacity:
        raise RankError(
            f"rank {new_rank} exceeds a module's min(out, in, r_max)={capacity}; "
            "choose a smaller target_rank"
        )
    return new_rank


def _truncated_factors(dec: ProductSVD, rank: int, *, scaling: float, new_scaling: float,
                       a_dtype: np.dtype[Any], b_dtype: np.dtype[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(A′, B′)`` of rank ``rank`` with ``new_scaling·B′·A′`` the best rank-``rank``
    approximation of ``scaling·B·A``: A′ has orthonormal rows, B′ carries the singular values."""
    # scaling·(B·A) has singular values scaling·σ; fold both scales into B′.
    sigma = scaling * dec.s[:rank]
    a = np.ascontiguousarray(dec.vt[:rank]).astype(a_dtype)
    b = np.ascontiguousarray(dec.u[:, :rank] * (sigma / new_scaling)).astype(b_dtype)
    return a, b


def _module_report(module: str, dec: ProductSVD, *, needed_rank: int, new_rank: int) -> ModuleReduction:
    """How much of one module's ``‖ΔW‖_F²`` the truncation to ``new_rank`` keeps."""
    sq = dec.s.astype(np.float64) ** 2
    total = float(sq.sum())
    lost = float(sq[new_rank:].sum())
    return ModuleReduction(
        module=module,
        needed_rank=needed_rank,
        kept_energy=1.0 if total == 0.0 else 1.0 - lost / total,
        relative_error=0.0 if total == 0.0 else float(np.sqrt(lost / total)),
    )

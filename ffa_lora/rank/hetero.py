"""Heterogeneous-rank aggregation: pure math over per-module B updates.

The global A has ``r_max`` rows and is shared by every client (frozen, from a seed). A client
with rank ``r_i`` uses ``A[:r_i]`` and trains ``B[:, :r_i]``; the rest of its B is zero. Its
update is zero-padded to ``r_max`` columns, so every client's update has the same layout and
the encrypted sum adds position by position. Column ``j`` is then divided by the total weight
``W_j`` of the clients whose rank covers it (``r_i > j``) — weight totals per rank bucket
travel as plaintext metadata, so the coordinator can form ``W_j`` without seeing any update.

Why this is exact: ``ΔW = s·B·A = s·Σ_j B[:, j] ⊗ A[j, :]`` and A is identical for all
clients, so averaging column ``j`` of B over the clients that have it is the same as averaging
their rank-one pieces ``B_i[:, j] ⊗ A[j, :]`` (linear in B). LoRA's scaling ``s = alpha /
r_max`` is the same for every client whatever its rank, so columns mean the same thing in
every client. Methods that need plaintext products (FlexLoRA's SVD of ``Σ B_i·A_i``, FLoRA's
stacking of per-client A) cannot be computed under additive encryption; this can.

Flat wire layout (shared convention): the head first, then for each rank column
``j = 0..r_max-1`` the ``B[:, j]`` of every module (and ``A[j, :]`` when A trains). A rank-r
client's update is therefore a prefix of ``head + r * values_per_column`` values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ffa_lora.errors import RankError
from ffa_lora.rank.keys import as_array, head_keys, lora_modules, state_rank


def _check_rank(rank: int, r_max: int) -> None:
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise RankError(f"rank must be an integer, got {type(rank).__name__}")
    if not 1 <= rank <= r_max:
        raise RankError(f"rank {rank} is outside 1..r_max={r_max}; pick a rank the global A has")


def pad_update(b_delta: np.ndarray, r_max: int) -> np.ndarray:
    """Zero-pad a client's ``(out, r)`` B update to ``(out, r_max)`` columns.

    Raises:
        RankError: ``b_delta`` is not 2-D or already has more than ``r_max`` columns.
    """
    b = as_array(b_delta)
    if b.ndim != 2:
        raise RankError(f"a B update must be 2-D (out, r), got {b.ndim}-D")
    out, r = b.shape
    if r > r_max:
        raise RankError(f"a B update has {r} columns but r_max is {r_max}; it cannot be padded")
    padded = np.zeros((out, r_max), dtype=b.dtype)
    padded[:, :r] = b
    return padded


def column_weight_totals(ranks_weights: Iterable[tuple[int, float]], r_max: int) -> np.ndarray:
    """Per-column weight totals ``W_j = Σ_{i: r_i > j} w_i`` (shape ``(r_max,)``, float64)."""
    totals = np.zeros(r_max, dtype=np.float64)
    for rank, weight in ranks_weights:
        _check_rank(rank, r_max)
        _check_weight(weight)
        totals[:rank] += float(weight)
    return totals


def rank_bucket_totals(ranks_weights: Iterable[tuple[int, float]]) -> dict[int, float]:
    """Total weight per rank bucket: the plaintext metadata sent beside the encrypted sum."""
    buckets: dict[int, float] = {}
    for rank, weight in ranks_weights:
        _check_weight(weight)
        buckets[int(rank)] = buckets.get(int(rank), 0.0) + float(weight)
    return buckets


def column_totals_from_buckets(buckets: Mapping[int, float], r_max: int) -> np.ndarray:
    """``W_j`` from per-rank-bucket totals: ``W_j = Σ_{r > j} bucket[r]``."""
    return column_weight_totals(buckets.items(), r_max)


def divide_by_column_totals(weighted_sum: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Turn a decrypted ``Σ_i w_i·pad(B_i)`` (shape ``(out, r_max)``) into per-column means.

    Columns whose total weight is 0 (no client had that rank) stay 0.
    """
    s = np.asarray(weighted_sum, dtype=np.float64)
    t = np.asarray(totals, dtype=np.float64)
    if s.ndim != 2 or t.shape != (s.shape[1],):
        raise RankError(
            f"weighted sum of shape {s.shape} does not match column totals of shape {t.shape}"
        )
    mean = np.zeros_like(s)
    has = t > 0
    mean[:, has] = s[:, has] / t[has]
    return mean


def aggregate_columns(
    updates: Sequence[tuple[np.ndarray, float, int]], *, r_max: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Plaintext reference of heterogeneous-rank aggregation for one module's B.

    Args:
        updates: one ``(b_delta, weight, rank)`` per client; ``b_delta`` is ``(out, rank)`` or
            already padded to ``(out, r_max)`` with zeros beyond ``rank``.
        r_max: columns of the result; defaults to the largest rank given.

    Returns:
        ``(b_mean, totals)``: ``b_mean`` of shape ``(out, r_max)`` whose column ``j`` is the
        weighted mean of column ``j`` over the clients with ``rank > j`` (0 where none has it),
        and ``totals`` the per-column weight totals ``W_j``.

    Raises:
        RankError: no updates, mismatched row counts, a padded update that is not zero beyond
            its rank, or a rank outside ``1..r_max``.
    """
    if not updates:
        raise RankError("no updates to aggregate")
    r_top = r_max if r_max is not None else max(int(rank) for _, _, rank in updates)
    out: int | None = None
    weighted_sum: np.ndarray | None = None
    for b_delta, weight, rank in updates:
        _check_rank(rank, r_top)
        _check_weight(weight)
        b = as_array(b_delta).astype(np.float64, copy=False)
        if b.ndim != 2 or b.shape[1] < rank:
            raise RankError(f"a rank-{rank} update must have at least {rank} columns")
        if np.any(b[:, rank:] != 0):
            raise RankError(
                f"a rank-{rank} update has nonzero values beyond column {rank}; a client may "
                "only send the columns its rank covers"
            )
        padded = pad_update(b[:, :rank], r_top)
        if out is None:
            out = padded.shape[0]
            weighted_sum = np.zeros((out, r_top), dtype=np.float64)
        elif padded.shape[0] != out:
            raise RankError(
                f"updates disagree on the module's output size ({padded.shape[0]} vs {out})"
            )
        assert weighted_sum is not None
        weighted_sum += float(weight) * padded
    assert weighted_sum is not None
    totals = column_weight_totals(((int(r), float(w)) for _, w, r in updates), r_top)
    return divide_by_column_totals(weighted_sum, totals), totals


def delta_w(b: np.ndarray, a: np.ndarray, scaling: float) -> np.ndarray:
    """The weight change a LoRA pair applies: ``ΔW = scaling · B · A`` (float64)."""
    b64 = as_array(b).astype(np.float64, copy=False)
    a64 = as_array(a).astype(np.float64, copy=False)
    if b64.ndim != 2 or a64.ndim != 2 or b64.shape[1] != a64.shape[0]:
        raise RankError(f"B {b64.shape} and A {a64.shape} do not multiply as (out, r)·(r, in)")
    return float(scaling) * (b64 @ a64)


def layout_sizes(state: Mapping[str, Any], *, train_a: bool = False) -> tuple[int, int, int]:
    """Sizes of the flat wire layout of an adapter state.

    Returns:
        ``(head_values, values_per_column, r_max)``: values of the head block, values of one
        rank column (``Σ out`` over modules, plus ``Σ in`` when A trains), and the rank.
    """
    r_max = state_rank(state)
    head = sum(int(as_array(state[k]).size) for k in head_keys(state))
    per_column = 0
    for m in lora_modules(state):
        out_dim = int(as_array(state[m.b_key]).shape[0])
        in_dim = int(as_array(state[m.a_key]).shape[1])
        per_column += out_dim + (in_dim if train_a else 0)
    return head, per_column, r_max


def flat_update_size(rank: int, *, head_values: int, values_per_column: int) -> int:
    """Values a rank-``rank`` client uploads: ``head_values + rank * values_per_column``.

    This is the natural ``values_at_rank`` callable for the rank scheduler
    (``functools.partial(flat_update_size, head_values=..., values_per_column=...)``).
    """
    if rank < 0 or head_values < 0 or values_per_column < 0:
        raise RankError("rank and layout sizes must be non-negative")
    return int(head_values) + int(rank) * int(values_per_column)


def flat_position_totals(
    *, head_values: int, values_per_column: int, column_totals: np.ndarray, head_total: float
) -> np.ndarray:
    """Per-position weight totals ``W_pos`` of the flat layout (divide the decrypted sum by it).

    Head positions get ``head_total`` (all contributing clients); every position of rank
    column ``j`` gets ``column_totals[j]``.
    """
    t = np.asarray(column_totals, dtype=np.float64)
    return np.concatenate(
        [np.full(head_values, float(head_total)), np.repeat(t, values_per_column)]
    )


def _check_weight(weight: float) -> None:
    w = float(weight)
    if not np.isfinite(w) or w < 0:
        raise RankError("client weights must be finite and non-negative")

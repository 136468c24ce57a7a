"""The wire layout of an update: which adapter values travel, in which order.

An update is a flat float32 vector of the values that train in the current phase, ordered
so that a client of rank ``r`` sends exactly a *prefix* of it:

1. the task head (every client has it), each head tensor flattened in C order, keys sorted;
2. for rank column ``j = 0 … r_max−1``: ``B[:, j]`` of every LoRA module (modules sorted by
   name) when B trains, then ``A[j, :]`` of every module when A trains.

A rank-``r`` client's vector is ``layout.prefix_len(r)`` long; everything after it is
implicitly zero with weight zero. The coordinator divides the decrypted sum position-wise by
``weight_totals``: head positions by the total weight of all clients, column-``j`` positions
by the total weight of the clients whose rank exceeds ``j``. Because A is shared, this
per-column mean of B is exactly the weighted mean of the clients' ΔW restricted per column:
``ΔW = s·Σ_j B[:, j] ⊗ A[j, :]`` is linear in B, and the scaling ``s = alpha / r_max`` is the
same for every rank. Methods that need plaintext products (FlexLoRA's SVD of ``Σ B_i·A_i``,
FLoRA's stacking of per-client A) cannot be computed under additive encryption; this can.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ffa_lora.errors import LayoutError, StateError
from ffa_lora.lora.spec import LoRASpec, Phase, check_phase
from ffa_lora.lora.state import (
    AdapterState,
    adapter_shapes,
    is_head,
    is_lora_a,
    is_lora_b,
    lora_modules,
)

HEAD_COLUMN = -1


@dataclass(frozen=True)
class _Segment:
    key: str
    src: np.ndarray  # flat indices into the state array, in layout order
    dst: np.ndarray  # positions in the full (rank r_max) vector


@dataclass(frozen=True)
class UpdateLayout:
    """Order of the trainable adapter values of one phase on the wire.

    Build with :meth:`build` (from an adapter state or a ``{key: shape}`` map).
    """

    phase: Phase
    r_max: int
    head_keys: tuple[str, ...]
    modules: tuple[str, ...]
    head_len: int
    column_len: int
    segments: tuple[_Segment, ...] = field(repr=False)
    shapes: dict[str, tuple[int, ...]] = field(repr=False)

    @classmethod
    def build(
        cls, shapes: Mapping[str, tuple[int, ...]] | Mapping[str, np.ndarray], *, phase: Phase
    ) -> UpdateLayout:
        """Layout for ``phase`` over an adapter with these keys and shapes.

        ``shapes`` may be an adapter state (its arrays' shapes are used).
        """
        check_phase(phase)
        shp = {k: tuple(np.shape(v)) if not isinstance(v, tuple) else v for k, v in shapes.items()}
        modules = lora_modules(shp)
        if not modules:
            raise LayoutError("the adapter has no LoRA modules")
        head_keys = tuple(sorted(k for k in shp if is_head(k)))
        ranks = {shp[m + ".lora_A.weight"][0] for m in modules} | {
            shp[m + ".lora_B.weight"][1] for m in modules
        }
        if len(ranks) != 1:
            raise LayoutError(f"LoRA factors disagree on the rank: {sorted(ranks)}")
        r_max = ranks.pop()
        train_b = phase in ("B", "AB")
        train_a = phase in ("A", "AB")

        segments: list[_Segment] = []
        pos = 0
        for key in head_keys:
            n = int(np.prod(shp[key], dtype=np.int64))
            segments.append(_Segment(key, np.arange(n), np.arange(pos, pos + n)))
            pos += n
        head_len = pos
        column_len = sum(
            (shp[m + ".lora_B.weight"][0] if train_b else 0)
            + (shp[m + ".lora_A.weight"][1] if train_a else 0)
            for m in modules
        )
        # Per module and factor: element j of column/row block sits at head_len + j*column_len
        # + offset; build the index arrays once, vectorized over j.
        offset = 0
        cols = np.arange(r_max)
        for factor, trains in (("lora_B", train_b), ("lora_A", train_a)):
            if not trains:
                continue
            for m in modules:
                key = f"{m}.{factor}.weight"
                rows, r = shp[key] if factor == "lora_B" else shp[key][::-1]
                k = np.arange(rows)
                if factor == "lora_B":  # B is (out, r): column j = elements k*r + j
                    src = (k[None, :] * r + cols[:, None]).ravel()
                else:  # A is (r, in): row j = elements j*in + k
                    src = (cols[:, None] * rows + k[None, :]).ravel()
                dst = (head_len + cols[:, None] * column_len + offset + k[None, :]).ravel()
                segments.append(_Segment(key, src, dst))
                offset += rows
        return cls(
            phase=phase,
            r_max=r_max,
            head_keys=head_keys,
            modules=tuple(modules),
            head_len=head_len,
            column_len=column_len,
            segments=tuple(segments),
            shapes=shp,
        )

    @classmethod
    def for_spec(cls, spec: LoRASpec, *, phase: Phase) -> UpdateLayout:
        """Layout of ``spec``'s adapter in ``phase`` (shapes from the model config only)."""
        return cls.build(adapter_shapes(spec).shapes, phase=phase)

    # -- sizes -----------------------------------------------------------------------------

    @property
    def total_len(self) -> int:
        """Length of a full-rank (r_max) update."""
        return self.head_len + self.r_max * self.column_len

    def trainable_keys(self) -> list[str]:
        """State keys that train in this phase (and travel)."""
        return [s.key for s in self.segments]

    def _check_rank(self, rank: int) -> int:
        if not isinstance(rank, (int, np.integer)) or not 0 <= rank <= self.r_max:
            raise LayoutError(f"rank must be in 0..{self.r_max}, got {rank!r}")
        return int(rank)

    def prefix_len(self, rank: int) -> int:
        """Number of values a rank-``rank`` client sends (head + ``rank`` columns)."""
        return self.head_len + self._check_rank(rank) * self.column_len

    def columns(self) -> np.ndarray:
        """Rank column of every position of the full vector (−1 for the head)."""
        col = np.full(self.total_len, HEAD_COLUMN, dtype=np.int64)
        col[self.head_len:] = np.arange(self.r_max * self.column_len) // self.column_len
        return col

    def column_of(self, index: int) -> int:
        """Rank column of position ``index`` (−1 for the head)."""
        if not 0 <= index < self.total_len:
            raise LayoutError(f"position {index} outside 0..{self.total_len - 1}")
        return HEAD_COLUMN if index < self.head_len else (index - self.head_len) // self.column_len

    def weight_totals(self, weights_by_rank: Mapping[int, float]) -> np.ndarray:
        """Per-position total weight: ``W_pos = Σ_{ranks r > column(pos)} w_r`` (float64).

        ``weights_by_rank`` maps a rank to the summed weight of the clients with that rank.
        Head positions get the weight of all clients.
        """
        per_col = np.zeros(self.r_max + 1)  # index 0 = head, j+1 = column j
        for rank, w in weights_by_rank.items():
            r = self._check_rank(rank)
            if w < 0:
                raise LayoutError(f"weight for rank {rank} is negative")
            per_col[: r + 1] += float(w)
        totals = np.empty(self.total_len)
        totals[: self.head_len] = per_col[0]
        totals[self.head_len:] = np.repeat(per_col[1:], self.column_len)
        return totals

    # -- conversions -----------------------------------------------------------------------

    def flatten(self, state: Mapping[str, np.ndarray], rank: int | None = None) -> np.ndarray:
        """The first ``prefix_len(rank)`` values of ``state`` in layout order (float32).

        ``rank`` defaults to ``r_max``. Values of columns ≥ rank are not included.
        """
        r = self.r_max if rank is None else self._check_rank(rank)
        out = np.zeros(self.total_len, dtype=np.float32)
        for seg in self.segments:
            if seg.key not in state:
                raise StateError(f"state lacks {seg.key!r}, which trains in phase {self.phase}")
            arr = np.asarray(state[seg.key], dtype=np.float32)
            if arr.shape != self.shapes[seg.key]:
                raise StateError(f"{seg.key}: shape {arr.shape}, layout expects {self.shapes[seg.key]}")
            out[seg.dst] = arr.ravel()[seg.src]
        return out[: self.prefix_len(r)]

    def pad(self, vec: np.ndarray) -> np.ndarray:
        """Zero-pad a prefix to the full length (float64 kept if given)."""
        v = np.asarray(vec)
        if v.ndim != 1 or len(v) > self.total_len:
            raise LayoutError(f"update of length {v.shape} does not fit the layout ({self.total_len})")
        if len(v) >= self.head_len and (len(v) - self.head_len) % self.column_len:
            raise LayoutError(
                f"update length {len(v)} is not head + whole rank columns "
                f"({self.head_len} + k·{self.column_len})"
            )
        out = np.zeros(self.total_len, dtype=v.dtype if v.dtype.kind == "f" else np.float64)
        out[: len(v)] = v
        return out

    def unflatten(self, vec: np.ndarray, rank: int | None = None) -> AdapterState:
        """Arrays of the trainable keys (full shapes) from a prefix; missing columns are 0.

        With ``rank`` given, ``vec`` must be exactly ``prefix_len(rank)`` long.
        """
        if rank is not None and len(vec) != self.prefix_len(rank):
            raise LayoutError(
                f"update has {len(vec)} values; rank {rank} sends {self.prefix_len(rank)}"
            )
        full = self.pad(vec)
        state: AdapterState = {}
        for seg in self.segments:
            arr = np.zeros(int(np.prod(self.shapes[seg.key])), dtype=np.float32)
            arr[seg.src] = full[seg.dst]
            state[seg.key] = arr.reshape(self.shapes[seg.key])
        return state

    def mean_from_sum(self, sum_vec: np.ndarray, weights_by_rank: Mapping[int, float]) -> np.ndarray:
        """Per-position weighted mean from a weighted sum; positions nobody sent stay 0."""
        totals = self.weight_totals(weights_by_rank)
        full = self.pad(np.asarray(sum_vec, dtype=np.float64))
        return np.divide(full, totals, out=np.zeros_like(full, dtype=np.float64), where=totals > 0)


def is_trainable(key: str, phase: Phase) -> bool:
    """Whether state entry ``key`` trains in ``phase`` (the head always does)."""
    if is_lora_a(key):
        return phase in ("A", "AB")
    if is_lora_b(key):
        return phase in ("B", "AB")
    return True


def apply_mean_update(
    global_state: Mapping[str, np.ndarray],
    mean_vec: np.ndarray,
    layout: UpdateLayout,
    *,
    server_lr: float = 1.0,
) -> AdapterState:
    """``global + server_lr · mean update`` (a new float32 state; the input is not changed)."""
    if not server_lr > 0:
        raise LayoutError(f"server_lr must be > 0, got {server_lr}")
    delta = layout.unflatten(mean_vec)
    new = {k: np.array(v, dtype=np.float32, copy=True) for k, v in global_state.items()}
    for k, d in delta.items():
        if k not in new:
            raise StateError(f"global state lacks {k!r}")
        new[k] = (new[k].astype(np.float64) + server_lr * d.astype(np.float64)).astype(np.float32)
    return new

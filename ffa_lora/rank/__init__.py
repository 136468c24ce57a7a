"""Dynamic LoRA rank: heterogeneous client ranks (exact under additive encryption), the
pluggable rank scheduler, SVD rank reduction at convergence, and the warm-up /
alternating-freeze policy.

Modules: ``hetero`` (per-column aggregation math and the flat-layout sizes), ``base`` (the
scheduler interface), ``fixed`` and ``dynamic`` (the schedulers), ``registry`` (name ->
scheduler), ``svd`` (rank
reduction of an adapter state), ``phases`` (which factors train in a round), ``keys``
(reading peft adapter-state keys).
"""

from ffa_lora.rank.base import ClientReport, RankDecision, RankScheduler
from ffa_lora.rank.dynamic import DynamicRankConfig, DynamicRankScheduler
from ffa_lora.rank.fixed import FixedRankScheduler
from ffa_lora.rank.hetero import (
    aggregate_columns,
    column_totals_from_buckets,
    column_weight_totals,
    delta_w,
    divide_by_column_totals,
    flat_position_totals,
    flat_update_size,
    layout_sizes,
    pad_update,
    rank_bucket_totals,
)
from ffa_lora.rank.phases import (
    TrainPhase,
    TrainStrategy,
    is_exact_under_additive_encryption,
    phase_for_round,
    trains_a,
    trains_b,
)
from ffa_lora.rank.registry import available_schedulers, make_scheduler, register_scheduler
from ffa_lora.rank.svd import (
    ModuleReduction,
    ReductionReport,
    product_svd,
    rank_for_energy,
    reduce_adapter_state,
    required_rank,
)

__all__ = [
    "ClientReport",
    "DynamicRankConfig",
    "DynamicRankScheduler",
    "FixedRankScheduler",
    "ModuleReduction",
    "RankDecision",
    "RankScheduler",
    "ReductionReport",
    "TrainPhase",
    "TrainStrategy",
    "aggregate_columns",
    "available_schedulers",
    "column_totals_from_buckets",
    "column_weight_totals",
    "delta_w",
    "divide_by_column_totals",
    "flat_position_totals",
    "flat_update_size",
    "is_exact_under_additive_encryption",
    "layout_sizes",
    "make_scheduler",
    "pad_update",
    "phase_for_round",
    "product_svd",
    "rank_bucket_totals",
    "rank_for_energy",
    "reduce_adapter_state",
    "register_scheduler",
    "required_rank",
    "trains_a",
    "trains_b",
]

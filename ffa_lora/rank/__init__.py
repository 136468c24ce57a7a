"""Dynamic LoRA rank: the pluggable rank scheduler and SVD rank reduction at convergence.

Modules: ``base`` (the scheduler interface), ``fixed`` and ``dynamic`` (the schedulers),
``registry`` (name -> scheduler), ``svd`` (rank reduction of an adapter state), ``keys``
(reading peft adapter-state keys). How updates of different ranks add up exactly is the wire
layout's business (:mod:`ffa_lora.lora.layout`); which factors train in a round is
:meth:`ffa_lora.lora.spec.LoRASpec.phase`.
"""

from ffa_lora.rank.base import ClientReport, RankDecision, RankScheduler
from ffa_lora.rank.dynamic import DynamicRankConfig, DynamicRankScheduler
from ffa_lora.rank.fixed import FixedRankScheduler
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
    "available_schedulers",
    "make_scheduler",
    "product_svd",
    "rank_for_energy",
    "reduce_adapter_state",
    "register_scheduler",
    "required_rank",
]

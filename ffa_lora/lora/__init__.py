"""LoRA core: the shared spec, the deterministic adapter, the wire layout of updates, local
training/evaluation, PEFT export and the aggregation-exactness helpers.

Importing this package imports numpy only; torch, transformers and peft load when a model,
the adapter shapes or training are first used (the torch-heavy names below load lazily).
"""

from typing import TYPE_CHECKING

from ffa_lora.lora.exactness import aggregation_discrepancy, delta_w, mean_state
from ffa_lora.lora.layout import UpdateLayout, apply_mean_update, is_trainable
from ffa_lora.lora.spec import PHASES, STRATEGIES, LoRASpec, Phase, Strategy, demo_model_path
from ffa_lora.lora.state import (
    AdapterState,
    adapter_shapes,
    check_state,
    copy_state,
    export_peft_adapter,
    initial_adapter_state,
    read_peft_adapter,
)

if TYPE_CHECKING:
    from ffa_lora.lora.model import LoRAModel, build_model, get_adapter_state, load_adapter_state
    from ffa_lora.lora.train import (
        CentralizedResult,
        DataCursor,
        DPSGDOptions,
        OptimizerState,
        RunOptions,
        TrainOptions,
        TrainResult,
        evaluate,
        train_centralized,
        train_local,
    )

__all__ = [
    "PHASES",
    "STRATEGIES",
    "AdapterState",
    "CentralizedResult",
    "DPSGDOptions",
    "DataCursor",
    "LoRAModel",
    "LoRASpec",
    "OptimizerState",
    "Phase",
    "RunOptions",
    "Strategy",
    "TrainOptions",
    "TrainResult",
    "UpdateLayout",
    "adapter_shapes",
    "aggregation_discrepancy",
    "apply_mean_update",
    "build_model",
    "check_state",
    "copy_state",
    "delta_w",
    "demo_model_path",
    "evaluate",
    "export_peft_adapter",
    "get_adapter_state",
    "initial_adapter_state",
    "is_trainable",
    "load_adapter_state",
    "mean_state",
    "read_peft_adapter",
    "train_centralized",
    "train_local",
]


def __getattr__(name: str) -> object:
    # torch-heavy names load lazily so the coordinator's layout math stays light to import.
    if name in {"LoRAModel", "build_model", "load_adapter_state", "get_adapter_state"}:
        from ffa_lora.lora import model

        return getattr(model, name)
    if name in {"TrainResult", "CentralizedResult", "DataCursor", "DPSGDOptions", "OptimizerState", "evaluate",
                "TrainOptions", "RunOptions",
                "train_centralized", "train_local"}:
        from ffa_lora.lora import train

        return getattr(train, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

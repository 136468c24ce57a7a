"""Building the LoRA-wrapped classifier and moving adapter states in and out of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ffa_lora.errors import ConfigError, StateError
from ffa_lora.lora.heads import apply_head
from ffa_lora.lora.spec import LoRASpec
from ffa_lora.lora.state import (
    AdapterState,
    check_state,
    initial_adapter_state,
    wrap_with_lora,
)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" → CUDA when available, else CPU; anything else as given."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: CUDA was requested but no GPU is available; use 'cpu' or 'auto'")
    return dev


@dataclass
class LoRAModel:
    """A PEFT LoRA classifier with its tokenizer, spec and device.

    Attributes:
        peft: the ``peft.PeftModel`` (base ``AutoModelForSequenceClassification``).
        tokenizer: the base model's tokenizer.
        spec: the spec it was built from.
        device: where it lives.
    """

    peft: Any
    tokenizer: Any
    spec: LoRASpec
    device: torch.device

    def adapter_state(self) -> AdapterState:
        """The current adapter as the float32 numpy state convention."""
        return get_adapter_state(self)

    def load_adapter_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the adapter's values by ``state``."""
        load_adapter_state(self, state)


def param_state_key(name: str) -> str | None:
    """State key of a PEFT parameter name, or ``None`` if it is not part of the adapter.

    ``….lora_A.default.weight`` → ``….lora_A.weight``;
    ``….classifier.modules_to_save.default.weight`` → ``….classifier.weight``.
    """
    for marker, repl in ((".lora_A.default.", ".lora_A."), (".lora_B.default.", ".lora_B."),
                         (".modules_to_save.default.", ".")):
        if marker in name:
            return name.replace(marker, repl)
    return None


def adapter_parameters(model: LoRAModel) -> dict[str, torch.nn.Parameter]:
    """``{state key: parameter}`` of every adapter value in the model."""
    out: dict[str, torch.nn.Parameter] = {}
    for name, p in model.peft.named_parameters():
        key = param_state_key(name)
        if key is not None:
            out[key] = p
    return out


def get_adapter_state(model: LoRAModel) -> AdapterState:
    """Copy the adapter out of the model (float32 numpy arrays on the CPU)."""
    return {
        k: p.detach().to("cpu", torch.float32).numpy().copy()
        for k, p in adapter_parameters(model).items()
    }


def load_adapter_state(model: LoRAModel, state: Mapping[str, np.ndarray]) -> None:
    """Write ``state`` into the model's adapter parameters (keys and shapes must match)."""
    params = adapter_parameters(model)
    if set(params) != set(state):
        raise StateError(
            f"adapter state has {len(set(state) - set(params))} unknown and "
            f"{len(set(params) - set(state))} missing keys for this model; "
            "was it made for another model, target_modules or num_labels?"
        )
    with torch.no_grad():
        for k, p in params.items():
            value = np.asarray(state[k], dtype=np.float32)
            if tuple(value.shape) != tuple(p.shape):
                raise StateError(f"{k}: shape {value.shape}, model has {tuple(p.shape)}")
            p.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(p.device, p.dtype))


@lru_cache(maxsize=4)
def _load_tokenizer(path: str, local_only: bool) -> Any:
    return AutoTokenizer.from_pretrained(path, local_files_only=local_only)


def load_tokenizer(spec: LoRASpec) -> Any:
    """The base model's tokenizer (cached per path)."""
    try:
        return _load_tokenizer(spec.model_path(), spec.use_local_files_only())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model: cannot load a tokenizer from {spec.model!r}: {exc}") from None


def build_model(
    spec: LoRASpec,
    *,
    device: str | torch.device | None = "cpu",
    state: Mapping[str, np.ndarray] | None = None,
) -> LoRAModel:
    """Load the base classifier, put the task head ``spec.head`` on it, wrap it with LoRA and
    load the adapter state.

    The adapter starts from ``state`` or, by default, :func:`initial_adapter_state` — A from
    the shared seed, B zero, head from the seed — so every client and the coordinator hold the
    same adapter. Base weights the checkpoint lacks (e.g. a fresh head) are drawn under a
    forked torch RNG seeded with ``spec.seed``, so the caller's RNG is untouched. All ranks use
    the full-rank PEFT module (scaling ``alpha / r_max``); lower ranks are masks in training.
    """
    dev = resolve_device(device)
    path = spec.model_path()
    local_only = spec.use_local_files_only()
    tokenizer = load_tokenizer(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        try:
            base = AutoModelForSequenceClassification.from_pretrained(
                path,
                num_labels=spec.num_labels,
                local_files_only=local_only,
                ignore_mismatched_sizes=True,
                dtype=torch.float32,
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model: cannot load {spec.model!r}: {exc}") from None
    if base.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        base.config.pad_token_id = tokenizer.pad_token_id
    peft_model = wrap_with_lora(apply_head(base, spec), spec)
    model = LoRAModel(peft=peft_model, tokenizer=tokenizer, spec=spec, device=dev)
    init = initial_adapter_state(spec) if state is None else state
    check_state(init, spec)
    load_adapter_state(model, init)
    peft_model.to(dev)
    return model

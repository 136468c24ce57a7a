"""Adapter state: the deterministic initial adapter, loading it into a model, and export in
standard PEFT format.

Convention (shared by the coordinator, the rank code and export): an adapter state is a
``dict[str, numpy.ndarray]`` of float32 arrays keyed exactly like PEFT's saved adapter
(``peft.get_peft_model_state_dict``), e.g.
``base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight`` (shape r×in),
``….lora_B.weight`` (out×r) and the task head ``base_model.model.classifier.weight``.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from ffa_lora.errors import StateError
from ffa_lora.files import atomic_write, replacing
from ffa_lora.lora.spec import LoRASpec

AdapterState = dict[str, np.ndarray]

LORA_A_SUFFIX = ".lora_A.weight"
LORA_B_SUFFIX = ".lora_B.weight"
#: PEFT's default ``modules_to_save`` for sequence classification (BERT's and GPT's heads).
HEAD_MODULES: tuple[str, ...] = ("classifier", "score")
ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"


def is_lora_a(key: str) -> bool:
    """Whether ``key`` is a LoRA A factor (r × in)."""
    return key.endswith(LORA_A_SUFFIX)


def is_lora_b(key: str) -> bool:
    """Whether ``key`` is a LoRA B factor (out × r)."""
    return key.endswith(LORA_B_SUFFIX)


def is_head(key: str) -> bool:
    """Whether ``key`` belongs to the task head (everything that is not a LoRA factor)."""
    return not (is_lora_a(key) or is_lora_b(key))


def module_of(key: str) -> str:
    """The LoRA-wrapped module a factor key belongs to (key without the factor suffix)."""
    for suffix in (LORA_A_SUFFIX, LORA_B_SUFFIX):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    raise StateError(f"{key!r} is not a LoRA factor key")


def lora_modules(keys: Any) -> list[str]:
    """Sorted names of the modules that have both factors among ``keys``."""
    a = {module_of(k) for k in keys if is_lora_a(k)}
    b = {module_of(k) for k in keys if is_lora_b(k)}
    if a != b:
        raise StateError(f"{len(a ^ b)} modules have only one of lora_A / lora_B")
    return sorted(a)


def wrap_with_lora(base: Any, spec: LoRASpec) -> Any:
    """``peft.get_peft_model(base, peft_lora_config(spec))``, without peft's deprecation noise."""
    from peft import get_peft_model  # lazy: peft loads torch, which the edge must not pay for

    with warnings.catch_warnings():
        # peft 0.21 calls transformers' deprecated is_gradient_checkpointing; not ours to fix.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        return get_peft_model(base, peft_lora_config(spec))


def peft_lora_config(spec: LoRASpec, *, inference_mode: bool = False) -> Any:
    """The ``peft.LoraConfig`` of ``spec`` (rank r_max, task SEQ_CLS, head in modules_to_save)."""
    from peft import LoraConfig, TaskType  # lazy: see wrap_with_lora

    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=spec.r_max,
        # peft types lora_alpha as int; an integral alpha is written as one.
        lora_alpha=int(spec.alpha) if float(spec.alpha).is_integer() else spec.alpha,  # type: ignore[arg-type]
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        modules_to_save=list(HEAD_MODULES),
        bias="none",
        inference_mode=inference_mode,
        base_model_name_or_path=spec.model_path(),
    )


@dataclass(frozen=True)
class AdapterShapes:
    """Shapes of an adapter's state entries plus what head initialization needs."""

    shapes: dict[str, tuple[int, ...]]
    initializer_range: float


@lru_cache(maxsize=8)
def _adapter_shapes_cached(
    path: str, local_only: bool, num_labels: int, target_modules: tuple[str, ...], r_max: int,
    head: str = "pooler",
) -> AdapterShapes:
    # lazy: see wrap_with_lora
    import torch
    from peft import get_peft_model_state_dict
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from ffa_lora.lora.heads import apply_head

    spec = LoRASpec(model=path, num_labels=num_labels, target_modules=target_modules,
                    r_max=r_max, local_files_only=local_only, head=head)  # type: ignore[arg-type]
    try:
        config = AutoConfig.from_pretrained(path, num_labels=num_labels, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read the model config of {path!r}: {exc}") from None
    # Built on the meta device: shapes only, no weights are loaded or allocated.
    with torch.device("meta"):
        base = apply_head(AutoModelForSequenceClassification.from_config(config), spec)
        model = wrap_with_lora(base, spec)
    sd = get_peft_model_state_dict(model)
    if not any(is_lora_a(k) for k in sd):
        raise StateError(
            f"target_modules {list(target_modules)} match no module of {path!r}; "
            "set target_modules to the model's attention projection names"
        )
    return AdapterShapes(
        shapes={k: tuple(v.shape) for k, v in sd.items()},
        initializer_range=float(getattr(config, "initializer_range", 0.02) or 0.02),
    )


def adapter_shapes(spec: LoRASpec) -> AdapterShapes:
    """Shapes of every adapter-state entry of ``spec`` (without loading model weights)."""
    return _adapter_shapes_cached(
        spec.model_path(), spec.use_local_files_only(), spec.num_labels,
        tuple(spec.target_modules), spec.r_max, spec.head,
    )


def _rng_for(seed: int, key: str) -> np.random.Generator:
    """A generator that depends only on (seed, key): identical in every process."""
    digest = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, digest]))


def initial_adapter_state(spec: LoRASpec) -> AdapterState:
    """The adapter every participant starts from, generated from ``spec.seed`` only.

    ``lora_A`` ~ U(−1/√in, 1/√in) (PEFT's default Kaiming-uniform bound), ``lora_B`` = 0, head
    weights ~ N(0, initializer_range²), head biases 0 (1-D "weight"s — layer norms — 1); the
    ``mean_linear`` head starts at zero.
    Independent of torch's global RNG and of the device; float32.
    """
    info = adapter_shapes(spec)
    state: AdapterState = {}
    for key, shape in info.shapes.items():
        rng = _rng_for(spec.seed, key)
        if is_lora_a(key):
            bound = 1.0 / np.sqrt(shape[1])
            state[key] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
        elif is_lora_b(key) or key.endswith("bias") or spec.head == "mean_linear":
            state[key] = np.zeros(shape, dtype=np.float32)
        elif len(shape) == 1:
            state[key] = np.ones(shape, dtype=np.float32)
        else:
            state[key] = rng.normal(0.0, info.initializer_range, size=shape).astype(np.float32)
    return state


def check_state(state: Mapping[str, np.ndarray], spec: LoRASpec) -> None:
    """Raise :class:`StateError` unless ``state`` has exactly the keys and shapes of ``spec``."""
    shapes = adapter_shapes(spec).shapes
    missing = sorted(set(shapes) - set(state))
    extra = sorted(set(state) - set(shapes))
    if missing or extra:
        raise StateError(
            f"adapter state does not match the LoRA spec: {len(missing)} keys missing "
            f"(e.g. {missing[:1]}), {len(extra)} unexpected (e.g. {extra[:1]}); "
            "was it made for another model, target_modules or num_labels?"
        )
    bad = [k for k in shapes if tuple(np.shape(state[k])) != shapes[k]]
    if bad:
        raise StateError(
            f"adapter state has {len(bad)} entries of the wrong shape (e.g. {bad[0]}: "
            f"{tuple(np.shape(state[bad[0]]))} vs {shapes[bad[0]]}); check r_max and num_labels"
        )


def copy_state(state: Mapping[str, np.ndarray]) -> AdapterState:
    """A float32 deep copy."""
    return {k: np.array(v, dtype=np.float32, copy=True) for k, v in state.items()}


#: safetensors metadata key of the task head (``LoRASpec.head``) in an exported adapter
HEAD_METADATA_KEY = "ffa_lora.head"


def export_peft_adapter(
    state: Mapping[str, np.ndarray], spec: LoRASpec, out_dir: str | Path
) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (standard PEFT format).

    The result loads with ``PeftModel.from_pretrained(base, out_dir)`` where ``base`` is
    ``AutoModelForSequenceClassification.from_pretrained(spec.model_path(),
    num_labels=spec.num_labels)``. No model is instantiated; both files are written to
    temporary names and renamed into place, so a crash never leaves a half-written file.
    """
    check_state(state, spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = peft_lora_config(spec, inference_mode=True).to_dict()
    for k, v in list(config.items()):
        if isinstance(v, set):
            config[k] = sorted(v)
    config["peft_type"] = "LORA"
    config["task_type"] = "SEQ_CLS"
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}

    with replacing(out / ADAPTER_WEIGHTS_NAME) as tmp:
        # the task head is not part of PEFT's config: it travels in the weights' metadata
        save_file(tensors, str(tmp), metadata={"format": "pt", HEAD_METADATA_KEY: spec.head})
    atomic_write(out / ADAPTER_CONFIG_NAME,
                 json.dumps(config, indent=2, sort_keys=True, default=str).encode())
    return out


def peft_adapter_head(out_dir: str | Path) -> str | None:
    """The task head an exported adapter was trained with, or None where the export predates
    recording it (or the weights came from elsewhere)."""
    path = Path(out_dir) / ADAPTER_WEIGHTS_NAME
    try:
        with safe_open(str(path), framework="numpy") as f:
            return (f.metadata() or {}).get(HEAD_METADATA_KEY)
    except (SafetensorError, OSError, ValueError):
        return None


def read_peft_adapter(out_dir: str | Path) -> AdapterState:
    """Read the weights of an exported adapter back into the state convention."""
    path = Path(out_dir) / ADAPTER_WEIGHTS_NAME
    if not path.is_file():
        raise StateError(f"{path}: no exported adapter weights there")
    try:
        return {k: v.astype(np.float32) for k, v in load_file(str(path)).items()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise StateError(f"{path}: corrupt adapter weights ({type(exc).__name__})") from None

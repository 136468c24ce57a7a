"""Reading the shared adapter-state convention: which keys are LoRA factors, which are head.

An adapter state is a ``dict[str, np.ndarray]`` keyed by the keys that
``peft.get_peft_model_state_dict`` returns, e.g.
``base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight`` (shape
``(r_max, in)``) and ``...lora_B.weight`` (shape ``(out, r_max)``). Every other key (task head,
``modules_to_save``) is "head": it is averaged over all clients whatever their rank.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ffa_lora.errors import RankError

_A_MARK = ".lora_A."
_B_MARK = ".lora_B."
# LoRA variants whose tensors do not follow the (out, r) x (r, in) convention handled here.
_UNSUPPORTED_MARKS = ("lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")


@dataclass(frozen=True)
class LoraModuleKeys:
    """The two state keys of one LoRA-adapted module.

    Attributes:
        module: the key prefix naming the module (everything before ``.lora_A.``).
        a_key: key of the ``(r, in)`` down-projection A.
        b_key: key of the ``(out, r)`` up-projection B.
    """

    module: str
    a_key: str
    b_key: str


def as_array(value: Any) -> np.ndarray:
    """Return ``value`` as a numpy array (accepts numpy arrays and CPU torch tensors)."""
    if isinstance(value, np.ndarray):
        return value
    detach = getattr(value, "detach", None)
    if detach is not None:  # a torch tensor; torch is not imported here on purpose
        return np.asarray(detach().cpu().numpy())
    return np.asarray(value)


def lora_modules(state: Mapping[str, Any]) -> list[LoraModuleKeys]:
    """List the LoRA modules of an adapter state, in the state's key order.

    Raises:
        RankError: a ``lora_A`` key has no matching ``lora_B`` key (or the reverse), or the
            state holds a LoRA variant this package does not handle (embedding LoRA, DoRA).
    """
    modules: list[LoraModuleKeys] = []
    b_keys_seen: set[str] = set()
    for key in state:
        if any(mark in key for mark in _UNSUPPORTED_MARKS):
            raise RankError(
                f"adapter key {key!r} belongs to a LoRA variant (embedding LoRA or DoRA) that "
                "rank scheduling does not support; adapt only linear layers"
            )
        if _A_MARK in key:
            b_key = key.replace(_A_MARK, _B_MARK)
            if b_key not in state:
                raise RankError(
                    f"adapter key {key!r} has no matching lora_B key {b_key!r}; "
                    "the state is incomplete"
                )
            modules.append(LoraModuleKeys(key.split(_A_MARK)[0], key, b_key))
            b_keys_seen.add(b_key)
    for key in state:
        if _B_MARK in key and key not in b_keys_seen:
            raise RankError(
                f"adapter key {key!r} has no matching lora_A key; the state is incomplete"
            )
    return modules


def head_keys(state: Mapping[str, Any]) -> list[str]:
    """Keys of the state that are not LoRA factors (task head, other ``modules_to_save``)."""
    return [k for k in state if _A_MARK not in k and _B_MARK not in k]


def state_rank(state: Mapping[str, Any]) -> int:
    """The common rank r_max of all LoRA modules in ``state``.

    Raises:
        RankError: no LoRA module, inconsistent shapes, or modules with different ranks.
    """
    modules = lora_modules(state)
    if not modules:
        raise RankError("adapter state has no lora_A/lora_B keys; nothing to rank")
    ranks: set[int] = set()
    for m in modules:
        a = as_array(state[m.a_key])
        b = as_array(state[m.b_key])
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise RankError(
                f"module {m.module!r}: lora_A shape {a.shape} and lora_B shape {b.shape} do not "
                "form (r, in) and (out, r)"
            )
        ranks.add(int(a.shape[0]))
    if len(ranks) != 1:
        raise RankError(
            f"adapter modules have different ranks {sorted(ranks)}; rank scheduling needs one "
            "r_max for all modules (no rank_pattern)"
        )
    return ranks.pop()

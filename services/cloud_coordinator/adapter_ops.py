"""The coordinator's view of the adapter: layouts per phase, applying the mean update,
serialization, PEFT export and (optionally) evaluation on a public held-out set."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from ffa_lora.data.loaders import load_table
from ffa_lora.errors import StateError
from ffa_lora.lora import (
    LoRASpec,
    UpdateLayout,
    adapter_shapes,
    apply_mean_update,
    check_state,
    export_peft_adapter,
    initial_adapter_state,
)
from ffa_lora.lora.model import build_model, load_adapter_state
from ffa_lora.lora.train import evaluate
from services.common.config import EvaluationConfig, FederationConfig

log = logging.getLogger(__name__)


def lora_spec(fed: FederationConfig) -> LoRASpec:
    """The LoRASpec every participant derives from the federation config."""
    m, t = fed.model, fed.training
    return LoRASpec(
        model=m.name_or_path, num_labels=m.num_labels, target_modules=tuple(m.target_modules),
        r_max=m.rank, alpha=m.alpha, dropout=m.dropout, max_length=m.max_length,
        strategy=t.strategy, warmup_rounds=t.warmup_rounds, alternate_every=t.alternate_every,
        seed=fed.seed, head=fed.head(),  # type: ignore[arg-type]
    )


class LoraAdapterOps:
    """AdapterOps over ffa_lora.lora (see handlers.AdapterOps)."""

    def __init__(self, spec: LoRASpec, *, labels: list[str], evaluation: EvaluationConfig | None = None) -> None:
        self.spec, self.labels, self.evaluation = spec, labels, evaluation
        self._shapes = adapter_shapes(spec).shapes
        self._layouts: dict[str, UpdateLayout] = {}
        self._model: Any = None
        self._eval_data: Any = None
        self._lock = threading.Lock()

    def set_rank(self, r_max: int, alpha: float) -> None:
        """Switch to another adapter rank (after an SVD rank reduction, or on restart from one).

        Layouts, shapes and the evaluation model are rebuilt for the new spec; A then comes
        from the adapter state, never from the seed again.
        """
        spec = replace(self.spec, r_max=int(r_max), alpha=float(alpha))
        with self._lock:
            if spec != self.spec:
                self.spec = spec
                self._shapes = adapter_shapes(spec).shapes
                self._layouts = {}
                self._model = None

    def layout(self, phase: str) -> UpdateLayout:
        if phase not in self._layouts:
            self._layouts[phase] = UpdateLayout.build(self._shapes, phase=phase)  # type: ignore[arg-type]
        return self._layouts[phase]

    def initial_state(self) -> dict[str, np.ndarray]:
        return initial_adapter_state(self.spec)

    def phase(self, round_index: int) -> str:
        return self.spec.phase(round_index)

    def num_values(self, phase: str, rank: int) -> int:
        return self.layout(phase).prefix_len(rank)

    def upload_cost(self, phase: str, rank: int) -> int:
        """Values a rank-``rank`` client uploads in ``phase``; unlike :meth:`num_values` not
        limited to the current r_max (a scheduler prices ranks up to the configured maximum,
        also after the adapter was reduced)."""
        layout = self.layout(phase)
        return int(layout.head_len + rank * layout.column_len)

    def weight_totals(self, phase: str, weights_by_rank: dict[int, float]) -> np.ndarray:
        return self.layout(phase).weight_totals(weights_by_rank)

    def apply_mean(self, state: dict[str, np.ndarray], mean: np.ndarray, phase: str, server_lr: float) -> dict[str, np.ndarray]:
        return apply_mean_update(state, mean, self.layout(phase), server_lr=server_lr)

    def to_bytes(self, state: dict[str, np.ndarray]) -> bytes:
        return st_save({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()})

    def from_bytes(self, blob: bytes) -> dict[str, np.ndarray]:
        try:
            state = dict(st_load(blob))
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types on corrupt input
            raise StateError(f"adapter blob is not valid safetensors ({type(exc).__name__})") from None
        check_state(state, self.spec)
        return state

    def export(self, state: dict[str, np.ndarray], out_dir: Any) -> None:
        export_peft_adapter(state, self.spec, Path(out_dir))

    def evaluate(self, state: dict[str, np.ndarray]) -> dict[str, float] | None:
        ev = self.evaluation
        if ev is None or ev.path is None:
            return None
        with self._lock:
            if self._model is None:
                self._eval_data = load_table(ev.path, text_column=ev.text_column, label_column=ev.label_column,
                                             label_names=self.labels)
                self._model = build_model(self.spec, device="cpu", state=state)
            else:
                load_adapter_state(self._model, state)
            return evaluate(self._model, self._eval_data, batch_size=ev.batch_size)

"""The model side of the membership-inference audit: load an exported adapter, score texts
with it, and train reference models. Imports torch; import it explicitly.

Scores per example (eval mode, no dropout, batches of similar length padded to their
longest text):

- ``loss`` — cross-entropy of the true label, −log p_y;
- ``phi`` — the logit-scaled confidence φ = log(p_y / (1 − p_y)) = z_y − logsumexp_{j≠y} z_j,
  computed from the logits z without forming p_y (which rounds to 1 for fitted examples).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ffa_lora.data.dataset import Dataset
from ffa_lora.errors import ConfigError, DataError, StateError
from ffa_lora.lora.batching import collate
from ffa_lora.lora.model import LoRAModel, build_model, get_adapter_state, load_adapter_state
from ffa_lora.lora.spec import LoRASpec
from ffa_lora.lora.state import ADAPTER_CONFIG_NAME, HEAD_MODULES, AdapterState, read_peft_adapter

#: ``trainer(data, seed) -> adapter state``: how a reference model is trained. It should train
#: the way the audited adapter was trained (same model, recipe and, under DP, same noise).
ReferenceTrainer = Callable[[Dataset, int], AdapterState]


@dataclass(frozen=True)
class ExampleScores:
    """Per-example loss and φ (see the module docstring), in the data's order."""

    loss: np.ndarray
    phi: np.ndarray


def _num_labels(state: AdapterState) -> int:
    for key, value in state.items():
        if any(key.endswith(f".{m}.weight") for m in HEAD_MODULES) and value.ndim == 2:
            return int(value.shape[0])
        if key.endswith(".out_proj.weight") and value.ndim == 2:  # RoBERTa-style head
            return int(value.shape[0])
    raise StateError("the adapter has no classification head weight; was it exported by ffa-lora?")


def spec_from_adapter(
    adapter_dir: str | Path,
    *,
    model: str | None = None,
    max_length: int = 64,
    seed: int = 0,
    strategy: str = "ffa",
    warmup_rounds: int = 0,
) -> tuple[LoRASpec, AdapterState]:
    """The :class:`LoRASpec` and state of an adapter exported in PEFT format.

    Rank, alpha, dropout, target modules and base model come from ``adapter_config.json``,
    the number of classes from the head's weights. What the export does not record is given:
    ``model`` overrides the base model path (when the adapter moved between machines),
    ``max_length`` the tokenizer truncation, ``seed``/``strategy``/``warmup_rounds`` what
    reference models start from and how they train.
    """
    path = Path(adapter_dir)
    config_path = path / ADAPTER_CONFIG_NAME
    if not config_path.is_file():
        raise StateError(f"{path}: no {ADAPTER_CONFIG_NAME}; pass the directory an adapter was exported to")
    try:
        cfg = json.loads(config_path.read_text(encoding="utf-8"))
        base = model or str(cfg["base_model_name_or_path"])
        spec = LoRASpec(
            model=base,
            num_labels=2,  # replaced below from the head's shape
            target_modules=tuple(sorted(cfg["target_modules"])),
            r_max=int(cfg["r"]),
            alpha=float(cfg["lora_alpha"]),
            dropout=float(cfg.get("lora_dropout", 0.0)),
            max_length=max_length,
            strategy=strategy,  # type: ignore[arg-type]
            warmup_rounds=warmup_rounds,
            seed=seed,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StateError(f"{config_path}: not a PEFT LoRA adapter config ({type(exc).__name__}: {exc})") from None
    state = read_peft_adapter(path)
    spec = replace(spec, num_labels=_num_labels(state))
    if model is None and Path(base).is_absolute() and not Path(base).exists():
        raise ConfigError(
            f"the adapter's base model {base} is not on this machine; pass the base model "
            "(a local directory, a Hugging Face id, or 'demo') explicitly"
        )
    return spec, state


def load_adapter_model(
    adapter_dir: str | Path,
    *,
    model: str | None = None,
    max_length: int = 64,
    seed: int = 0,
    strategy: str = "ffa",
    warmup_rounds: int = 0,
    device: str | torch.device | None = "cpu",
) -> LoRAModel:
    """The base classifier with the exported adapter loaded (see :func:`spec_from_adapter`)."""
    spec, state = spec_from_adapter(adapter_dir, model=model, max_length=max_length, seed=seed,
                                    strategy=strategy, warmup_rounds=warmup_rounds)
    return build_model(spec, device=device, state=state)


def _encode(model: LoRAModel, texts: Sequence[str]) -> list[list[int]]:
    enc = model.tokenizer(list(texts), truncation=True, max_length=model.spec.max_length,
                          padding=False, return_attention_mask=False, return_token_type_ids=False)
    return [list(ids) for ids in enc["input_ids"]]


def score_examples(model: LoRAModel, data: Dataset, *, batch_size: int = 64) -> ExampleScores:
    """Loss and φ of every example of ``data`` under ``model`` (eval mode, no gradients)."""
    if len(data) == 0:
        raise DataError("cannot score an empty data set")
    if data.num_labels != model.spec.num_labels:
        raise DataError(f"data has {data.num_labels} classes, the model {model.spec.num_labels}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
    ids = _encode(model, data.texts)
    labels = np.asarray(data.labels, dtype=np.int64)
    pad = model.tokenizer.pad_token_id
    pad = int(pad) if pad is not None else 0
    loss = np.empty(len(ids))
    phi = np.empty(len(ids))
    order = np.argsort([len(x) for x in ids], kind="stable")
    net = model.peft
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = collate([ids[i] for i in idx], pad, model.device)
                logits = net(**batch).logits.float()
                y = torch.as_tensor(labels[idx], device=logits.device)
                true = logits.gather(1, y[:, None])[:, 0]
                others = logits.scatter(1, y[:, None], float("-inf"))
                loss[idx] = (torch.logsumexp(logits, dim=1) - true).cpu().double().numpy()
                phi[idx] = (true - torch.logsumexp(others, dim=1)).cpu().double().numpy()
    finally:
        net.train(was_training)
    return ExampleScores(loss=loss, phi=phi)


def round_trainer(
    spec: LoRASpec,
    *,
    rounds: int,
    local_epochs: float,
    lr: float,
    batch_size: int = 16,
    device: str | torch.device | None = "cpu",
    train_fn: Callable[..., Any] | None = None,
) -> ReferenceTrainer:
    """A reference trainer that trains like one site of a federation, alone.

    Each call builds a fresh model from ``spec`` (the federation's seeded initial adapter)
    and runs ``rounds`` calls of ``train_fn`` (default :func:`ffa_lora.lora.train_local`),
    each ``local_epochs`` long with the phase the strategy gives that round, as a client does.
    ``train_fn`` is called as ``train_fn(model, data, epochs=, lr=, batch_size=, phase=,
    seed=)``; pass another one (e.g. a DP-SGD recipe) to audit adapters trained that way.
    """
    if not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds: must be an integer >= 1, got {rounds!r}")
    if not local_epochs > 0 or not lr > 0:
        raise ConfigError(f"local_epochs and lr must be > 0, got {local_epochs!r} and {lr!r}")

    def train(data: Dataset, seed: int) -> AdapterState:
        fn = train_fn
        if fn is None:
            from ffa_lora.lora.train import RunOptions, TrainOptions, train_local

            def fn(model: LoRAModel, data: Dataset, **kw: Any) -> Any:
                return train_local(model, data, TrainOptions(**kw), run=RunOptions(loss_samples=0))

        model = build_model(spec, device=device)
        for r in range(rounds):
            fn(model, data, epochs=local_epochs, lr=lr, batch_size=batch_size,
               phase=spec.phase(r), seed=seed * 1000 + r)
        return get_adapter_state(model)

    return train


def reference_subsets(pool: Dataset, *, n_models: int, size: int, seed: int = 0) -> list[Dataset]:
    """``n_models`` seeded random subsets of ``pool`` (without replacement within each)."""
    if not isinstance(n_models, int) or n_models < 1:
        raise ConfigError(f"n_models: must be an integer >= 1, got {n_models!r}")
    if not isinstance(size, int) or not 1 <= size <= len(pool):
        raise ConfigError(
            f"reference training size must be in 1..{len(pool)} (the reference pool), got {size!r}"
        )
    rng = np.random.default_rng(seed)
    return [pool.subset(np.sort(rng.choice(len(pool), size=size, replace=False)))
            for _ in range(n_models)]


def reference_scores(
    model: LoRAModel,
    trainer: ReferenceTrainer,
    subsets: Sequence[Dataset],
    candidates: Sequence[Dataset],
    *,
    seed: int = 0,
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
) -> list[list[ExampleScores]]:
    """Train one reference model per subset and score every candidate set with it.

    Returns ``out[m][c]``: model ``m``'s scores of candidate set ``c``. The reference states
    are loaded into ``model`` one after the other; its own adapter is restored afterwards.
    """
    own = get_adapter_state(model)
    out: list[list[ExampleScores]] = []
    try:
        for m, subset in enumerate(subsets):
            if progress is not None:
                progress(f"reference model {m + 1}/{len(subsets)}: training on {len(subset)} records")
            state = trainer(subset, seed + m)
            load_adapter_state(model, state)
            out.append([score_examples(model, c, batch_size=batch_size) for c in candidates])
    finally:
        load_adapter_state(model, own)
    return out

"""Personalized task heads: the shared adapter stays global, each site tunes its own head.

In a federation every site trains and uploads the adapter *and* the task head, and the
aggregate of both is the global model. With personalized heads a site additionally keeps a
head of its own: starting from the global head it fine-tunes only the head on its local
data — the encoder and the aggregated adapter frozen, exactly as received — and scores its
data with that head. The personal head never leaves the site and never enters an update, so
the aggregation and its exactness are untouched.

Because nothing below the head trains, the head's inputs (for BERT-style models the pooled
features the ``classifier`` layer sees) are computed once in eval mode, and the head is fitted
on them: one forward pass over the local data, then cheap epochs of a linear layer. A
proximal term ``prox/2 · ‖θ − θ_global‖²`` keeps a head fitted on few examples near the global
one. The features are taken without dropout; the global head trained with the model's dropout.

Functions:

* :func:`head_state` — the head's entries of an adapter state;
* :func:`finetune_head` — fit a site's head on its data (returns it; the model is unchanged);
* :func:`evaluate_heads` — metrics of several heads on the same data from one forward pass;
* :func:`head_swapped` — a context in which the model carries another head (e.g. to export it
  or to run :func:`~ffa_lora.lora.train.evaluate` with it).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from ffa_lora.data.dataset import Dataset
from ffa_lora.errors import ConfigError, DataError, StateError
from ffa_lora.lora.batching import collate, encode, pad_id
from ffa_lora.lora.metrics import classification_metrics
from ffa_lora.lora.model import LoRAModel, adapter_parameters, param_state_key
from ffa_lora.lora.state import AdapterState, is_head

#: The head's entries of an adapter state (``classifier.weight``, ``classifier.bias``, …).
HeadState = dict[str, np.ndarray]

_ACTIVE_HEAD_SUFFIX = ".modules_to_save.default"


@dataclass(frozen=True)
class HeadTuneResult:
    """Outcome of :func:`finetune_head`.

    Attributes:
        head: the fitted head (state keys, float32 arrays); stays at the site.
        steps: optimizer steps taken.
        train_loss: mean cross-entropy of the last epoch's minibatches (without the proximal
            term).
        seconds: fitting time; feature_seconds: the forward pass that computed the features.
    """

    head: HeadState
    steps: int
    train_loss: float
    seconds: float
    feature_seconds: float


def head_state(state: Mapping[str, np.ndarray] | LoRAModel) -> HeadState:
    """The task head's entries of an adapter state (or of a model's current adapter)."""
    if isinstance(state, LoRAModel):
        return {k: p.detach().to("cpu", torch.float32).numpy().copy()
                for k, p in adapter_parameters(state).items() if is_head(k)}
    return {k: np.array(v, dtype=np.float32) for k, v in state.items() if is_head(k)}


def _head_module(model: LoRAModel) -> tuple[str, torch.nn.Module]:
    found = [(n[: -len(_ACTIVE_HEAD_SUFFIX)], m) for n, m in model.peft.named_modules()
             if n.endswith(_ACTIVE_HEAD_SUFFIX)]
    if len(found) != 1:
        raise ConfigError(
            f"personalized heads need exactly one task-head module; this model has {len(found)}"
        )
    return found[0]


def _check_head(model: LoRAModel, head: Mapping[str, np.ndarray]) -> None:
    params = {k: p for k, p in adapter_parameters(model).items() if is_head(k)}
    if set(head) != set(params):
        raise StateError(
            f"head has {len(set(head) - set(params))} unknown and {len(set(params) - set(head))} "
            "missing entries for this model; was it fitted for another model or num_labels?"
        )
    for k, p in params.items():
        if tuple(np.shape(head[k])) != tuple(p.shape):
            raise StateError(f"{k}: head shape {np.shape(head[k])}, model has {tuple(p.shape)}")


@contextmanager
def head_swapped(model: LoRAModel, head: Mapping[str, np.ndarray]) -> Iterator[LoRAModel]:
    """Within the context the model carries ``head``; its own head is restored afterwards
    (also on error). The adapter's LoRA factors are not touched."""
    _check_head(model, head)
    params = {k: p for k, p in adapter_parameters(model).items() if is_head(k)}
    saved = {k: p.detach().clone() for k, p in params.items()}
    try:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(torch.as_tensor(np.asarray(head[k], dtype=np.float32)).to(p.device, p.dtype))
        yield model
    finally:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(saved[k])


def head_features(model: LoRAModel, data: Dataset, *, batch_size: int = 64) -> torch.Tensor:
    """What the task head sees for each example (eval mode, no dropout): ``n × features``.

    Raises :class:`ConfigError` for heads that take more than one vector per example (e.g.
    RoBERTa's, which pools inside the head): those cannot be tuned on cached features.
    """
    if len(data) == 0:
        raise DataError("no examples to compute head features for")
    _, module = _head_module(model)
    captured: list[torch.Tensor] = []

    def grab(_mod: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        captured.append(args[0].detach())

    ids = encode(model, data.texts)
    pad = pad_id(model)
    net = model.peft
    was_training = net.training
    net.eval()
    handle = module.register_forward_pre_hook(grab)
    feats: list[torch.Tensor] = []
    try:
        with torch.no_grad():
            for start in range(0, len(ids), batch_size):
                captured.clear()
                net(**collate(ids[start : start + batch_size], pad, model.device))
                x = captured[-1]
                if x.dim() != 2:
                    raise ConfigError(
                        "personalized heads need a head on pooled features (one vector per "
                        f"example, as BERT's classifier); this model's head takes {x.dim()}-D input"
                    )
                feats.append(x.float())
    finally:
        handle.remove()
        net.train(was_training)
    return torch.cat(feats)


def finetune_head(
    model: LoRAModel,
    data: Dataset,
    *,
    epochs: int = 20,
    lr: float = 1e-2,
    batch_size: int = 32,
    prox: float = 0.0,
    weight_decay: float = 0.0,
    seed: int = 0,
    start: Mapping[str, np.ndarray] | None = None,
    features: torch.Tensor | None = None,
) -> HeadTuneResult:
    """Fit a site's own task head on its local data, everything below the head frozen.

    Args:
        model: holds the received global adapter (LoRA factors and head); left unchanged.
        data: the site's local training data.
        epochs: passes over ``data`` (AdamW, fresh seeded permutation each pass).
        lr: AdamW learning rate; batch_size: minibatch size.
        prox: weight of ``prox/2 · ‖θ − θ_start‖²`` (0: plain fine-tuning).
        weight_decay: AdamW's decoupled weight decay.
        seed: seed of the minibatch order.
        start: the head to start from and stay near; default the model's current (global)
            head.
        features: :func:`head_features` of ``data`` for this model, if already computed.

    Returns:
        the fitted head and training statistics.
    """
    if epochs < 1 or batch_size < 1 or not lr > 0 or prox < 0 or weight_decay < 0:
        raise ConfigError(
            "finetune_head: epochs and batch_size must be >= 1, lr > 0, prox and weight_decay "
            f">= 0 (got {epochs}, {batch_size}, {lr}, {prox}, {weight_decay})"
        )
    if len(data) == 0:
        raise DataError("no local data to fit a personal head on")
    if data.num_labels != model.spec.num_labels:
        raise DataError(f"data has {data.num_labels} classes, the model {model.spec.num_labels}")
    t0 = time.perf_counter()
    x = head_features(model, data) if features is None else features
    if len(x) != len(data):
        raise DataError(f"{len(x)} feature rows for {len(data)} examples")
    feature_seconds = time.perf_counter() - t0

    name, module = _head_module(model)
    with head_swapped(model, start if start is not None else head_state(model)):
        head = copy.deepcopy(module).to(x.device).float()
    anchor = [p.detach().clone() for p in head.parameters()]
    for p in head.parameters():
        p.requires_grad_(True)
    head.train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    y = torch.tensor(data.labels, dtype=torch.long, device=x.device)
    rng = np.random.default_rng(seed)
    steps, epoch_loss = 0, 0.0
    t1 = time.perf_counter()
    for _ in range(epochs):
        total, batches = 0.0, 0
        for idx in np.array_split(rng.permutation(len(x)), max(1, -(-len(x) // batch_size))):
            sel = torch.from_numpy(idx).to(x.device)
            loss = torch.nn.functional.cross_entropy(head(x[sel]), y[sel])
            objective = loss
            if prox > 0:
                objective = loss + 0.5 * prox * sum(
                    (p - a).square().sum() for p, a in zip(head.parameters(), anchor, strict=True))
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
            steps += 1
        epoch_loss = total / batches
    prefix = name + _ACTIVE_HEAD_SUFFIX + "."
    fitted = {param_state_key(prefix + n) or n: p.detach().to("cpu", torch.float32).numpy().copy()
              for n, p in head.named_parameters()}
    _check_head(model, fitted)
    return HeadTuneResult(head=fitted, steps=steps, train_loss=epoch_loss,
                          seconds=time.perf_counter() - t1, feature_seconds=feature_seconds)


def evaluate_heads(
    model: LoRAModel,
    data: Dataset,
    heads: Mapping[str, Mapping[str, np.ndarray] | None],
    *,
    features: torch.Tensor | None = None,
) -> dict[str, dict[str, float]]:
    """Score several heads on the same data from one forward pass of the encoder.

    Args:
        heads: ``{name: head}``; ``None`` means the model's current (e.g. the global) head.
        features: :func:`head_features` of ``data`` for this model, if already computed.

    Returns:
        ``{name: metrics}`` with the keys of :func:`~ffa_lora.lora.train.evaluate` (accuracy,
        macro-F1, ROC-AUC and per-class AUC, loss, n), computed in float32 on the features.
    """
    if len(data) == 0:
        raise DataError("cannot evaluate on an empty data set")
    if data.num_labels != model.spec.num_labels:
        raise DataError(f"data has {data.num_labels} classes, the model {model.spec.num_labels}")
    x = head_features(model, data) if features is None else features
    _, module = _head_module(model)
    y = torch.tensor(data.labels, dtype=torch.long, device=x.device)
    out: dict[str, dict[str, float]] = {}
    for name, head in heads.items():
        with head_swapped(model, head if head is not None else head_state(model)), torch.no_grad():
            was_training = module.training
            module.eval()
            logits = module(x).double()
            module.train(was_training)
        probs = torch.softmax(logits, dim=-1).cpu().numpy()
        loss = float(torch.nn.functional.cross_entropy(logits, y))
        out[name] = {**classification_metrics(data.labels, probs, data.label_names),
                     "loss": loss, "n": float(len(data))}
    return out


def adapter_with_head(state: Mapping[str, np.ndarray], head: Mapping[str, np.ndarray]) -> AdapterState:
    """A copy of an adapter state with its head entries replaced by ``head`` (e.g. to export
    a site's personalized model); the LoRA factors are the shared ones."""
    missing = [k for k in state if is_head(k) and k not in head]
    extra = [k for k in head if k not in state or not is_head(k)]
    if missing or extra:
        raise StateError(f"head does not fit the adapter ({len(missing)} missing, {len(extra)} unknown)")
    return {k: np.array(head[k] if is_head(k) else v, dtype=np.float32) for k, v in state.items()}

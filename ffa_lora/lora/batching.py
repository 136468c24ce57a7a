"""Records to model inputs: tokenization, dynamic padding, the unit-norm features of the
``mean_linear`` head, and the order in which local training visits the records."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ffa_lora.errors import ConfigError
from ffa_lora.lora.model import LoRAModel


def encode(model: LoRAModel, texts: list[str]) -> list[list[int]]:
    """Token ids of ``texts``, truncated to the spec's ``max_length``, unpadded."""
    enc = model.tokenizer(
        texts, truncation=True, max_length=model.spec.max_length, padding=False,
        return_attention_mask=False, return_token_type_ids=False,
    )
    return [list(ids) for ids in enc["input_ids"]]


def collate(ids: list[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence of the batch (dynamic padding: cheap for short texts)."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}


def pad_id(model: LoRAModel) -> int:
    """The tokenizer's padding id (0 when it has none)."""
    pid = model.tokenizer.pad_token_id
    return int(pid) if pid is not None else 0


def features_of(model: LoRAModel, ids: list[list[int]], batch_size: int = 64) -> torch.Tensor:
    """The head's unit-norm input features of tokenized records (``mean_linear`` head; eval
    mode, no gradient), records × hidden on the model's device."""
    head = model.peft.base_model.model
    if not hasattr(head, "features"):
        raise ConfigError("features need a model built with head: mean_linear")
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = torch.empty((len(ids), int(head.config.hidden_size)), device=model.device)
    modes = {m: m.training for m in model.peft.modules()}  # restored module by module
    model.peft.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = collate([ids[i] for i in idx], pad_id(model), model.device)
                out[torch.from_numpy(idx).to(model.device)] = head.features(**batch).float()
    finally:
        for m, training in modes.items():
            m.training = training
    return out


@dataclass(frozen=True)
class DataCursor:
    """Where a client stands in its passes over its local data, kept between rounds.

    With fractional local epochs (0.5 per round) and each round's batches drawn from a fresh
    permutation, rounds sample with replacement: over six half-epoch rounds an example is seen
    0 to 6 times (1.6 % never) where the pooled baseline sees each exactly 3 times. A cursor
    walks one seeded permutation per epoch instead, so successive calls together see every
    example once per epoch, as the pooled baseline does (README, "Data order": the bank
    federation's accuracy did not measurably change).

    Attributes:
        seed: epoch k's permutation is ``default_rng([seed, k]).permutation(n)``.
        n: the data size it walks (another size restarts at step 0).
        step: batches consumed so far.
    """

    seed: int
    n: int
    step: int = 0


def shuffled_batches(n: int, batch_size: int, epochs: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Minibatches for ``epochs`` passes (fractions allowed); each pass a fresh permutation."""
    per_epoch = math.ceil(n / batch_size)
    total = max(1, math.ceil(epochs * per_epoch))
    out: list[np.ndarray] = []
    while len(out) < total:
        perm = rng.permutation(n)
        out.extend(perm[i : i + batch_size] for i in range(0, n, batch_size))
    return out[:total]


def cursor_batches(n: int, batch_size: int, epochs: float,
                    cursor: DataCursor) -> tuple[list[np.ndarray], DataCursor]:
    """``epochs`` worth of minibatches, continuing ``cursor`` through its per-epoch
    permutations, and the cursor just past them."""
    per_epoch = math.ceil(n / batch_size)
    total = max(1, math.ceil(epochs * per_epoch))
    start = cursor.step if cursor.n == n else 0
    perms: dict[int, np.ndarray] = {}
    out: list[np.ndarray] = []
    for step in range(start, start + total):
        k, j = divmod(step, per_epoch)
        if k not in perms:
            perms[k] = np.random.default_rng([cursor.seed, k]).permutation(n)
        out.append(perms[k][j * batch_size : (j + 1) * batch_size])
    return out, DataCursor(seed=cursor.seed, n=n, step=start + total)

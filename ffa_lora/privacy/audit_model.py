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
import math
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
from ffa_lora.lora.spec import LoRASpec, head_only_round
from ffa_lora.lora.state import (
    ADAPTER_CONFIG_NAME,
    HEAD_MODULES,
    AdapterState,
    peft_adapter_head,
    read_peft_adapter,
)
from ffa_lora.lora.steps import DPSGDOptions

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
    head: str | None = None,
) -> tuple[LoRASpec, AdapterState]:
    """The :class:`LoRASpec` and state of an adapter exported in PEFT format.

    Rank, alpha, dropout, target modules and base model come from ``adapter_config.json``,
    the number of classes from the head's weights. What the export does not record is given:
    ``model`` overrides the base model path (when the adapter moved between machines),
    ``max_length`` the tokenizer truncation, ``seed``/``strategy``/``warmup_rounds`` what
    reference models start from and how they train, ``head`` the task head it was trained
    with (default: the one the export recorded, else ``"pooler"``; the head's weights fit
    either head's shape, so a wrong head scores a different model).
    """
    path = Path(adapter_dir)
    head = head or peft_adapter_head(path) or "pooler"
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
            head=head,  # type: ignore[arg-type]
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
    head: str | None = None,
    device: str | torch.device | None = "cpu",
) -> LoRAModel:
    """The base classifier with the exported adapter loaded (see :func:`spec_from_adapter`)."""
    spec, state = spec_from_adapter(adapter_dir, model=model, max_length=max_length, seed=seed,
                                    strategy=strategy, warmup_rounds=warmup_rounds, head=head)
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


@dataclass(frozen=True)
class DPTraining:
    """Sample-level DP-SGD for a model trained alone the way one site trains under
    ``privacy.dpsgd`` (:func:`ffa_lora.lora.train_local` with :class:`DPSGDOptions`).

    Attributes:
        epsilon: the budget every trained model spends at ``options.delta`` over all its
            steps: σ is calibrated per training set by :func:`ffa_lora.privacy.dp_sgd.plan_site`
            (``math.inf``: clipped, not noised — a reference point, no privacy).
        options: the recipe (clips, rates, batches, head epochs); its ``noise_multiplier``,
            ``accountant_state`` and ``seed`` are ignored (set per model and round).
        probe_rounds: rounds that take head-only steps (``local_epochs`` 0): the first ones,
            less the ``final_head_rounds`` that come last.
        seed: TESTS ONLY — fixes the noise and the Poisson sampling (default: the OS CSPRNG).
    """

    epsilon: float
    options: DPSGDOptions
    probe_rounds: int = 0
    seed: int | None = None
    final_head_rounds: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.epsilon, bool) or not isinstance(self.epsilon, (int, float)) \
                or math.isnan(self.epsilon) or self.epsilon <= 0:
            raise ConfigError(f"epsilon: the DP budget must be a number > 0 (e.g. 8; inf for "
                              f"clipping without noise), got {self.epsilon!r}")
        if not isinstance(self.probe_rounds, int) or self.probe_rounds < 0:
            raise ConfigError(f"probe_rounds: must be an integer >= 0, got {self.probe_rounds!r}")
        if not isinstance(self.final_head_rounds, int) or not 0 <= self.final_head_rounds <= self.probe_rounds:
            raise ConfigError(f"final_head_rounds: must be an integer in [0, probe_rounds={self.probe_rounds}], "
                              f"got {self.final_head_rounds!r}")
        if self.probe_rounds and self.options.head_epochs <= 0:
            raise ConfigError("probe_rounds need head steps: set the recipe's head_epochs > 0")


@dataclass(frozen=True)
class DPTrainResult:
    """A model trained by :func:`train_dpsgd`: its adapter and what its privacy cost.

    ``noise_multiplier`` is σ (0 when not noised), ``epsilon_spent`` what the accountant
    reports after every step (``inf`` without noise), ``steps`` the steps taken.
    """

    state: AdapterState
    noise_multiplier: float
    epsilon_spent: float
    delta: float
    sample_rate: float
    steps: int
    planned_steps: int
    accountant_state: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """The JSON-friendly privacy fields (no weights)."""
        return {"noise_multiplier": self.noise_multiplier, "epsilon_spent": self.epsilon_spent,
                "delta": self.delta, "sample_rate": self.sample_rate, "steps": self.steps,
                "planned_steps": self.planned_steps}


def train_dpsgd(
    spec: LoRASpec,
    data: Dataset,
    dp: DPTraining,
    *,
    rounds: int,
    local_epochs: float,
    lr: float,
    batch_size: int = 16,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
) -> DPTrainResult:
    """Train a fresh model from ``spec`` on ``data`` alone, as one site of a federation under
    DP-SGD: ``rounds`` calls of :func:`ffa_lora.lora.train_local` (``dp.probe_rounds`` with
    head-only steps, placed as :func:`ffa_lora.lora.spec.head_only_round` says; the rest with
    ``local_epochs`` of steps through the model after the head steps), the accountant carried
    from round to round, σ calibrated so that all the steps spend ``dp.epsilon`` at
    ``dp.options.delta``."""
    from ffa_lora.lora.train import RunOptions, TrainOptions, train_local
    from ffa_lora.privacy.dp_sgd import plan_site

    if not isinstance(rounds, int) or not dp.probe_rounds < rounds:
        raise ConfigError(f"rounds: must be an integer above probe_rounds={dp.probe_rounds}, "
                          f"got {rounds!r}")
    o = dp.options
    batch = o.expected_batch_size or batch_size
    plan = plan_site(len(data), epsilon=dp.epsilon if math.isfinite(dp.epsilon) else 1.0,
                     delta=o.delta, expected_batch_size=batch, local_epochs=local_epochs,
                     rounds=rounds, accountant=o.accountant, head_epochs=o.head_epochs,
                     probe_rounds=dp.probe_rounds)
    sigma = plan.noise_multiplier if math.isfinite(dp.epsilon) else 0.0
    model = build_model(spec, device=device)
    accountant: dict[str, Any] | None = None
    steps, extra = 0, {}
    for r in range(rounds):
        opts = replace(o, noise_multiplier=sigma, accountant_state=accountant,
                       seed=None if dp.seed is None else dp.seed * 1000 + r)
        res = train_local(model, data, TrainOptions(
            epochs=0.0 if head_only_round(r, rounds=rounds, head_only_rounds=dp.probe_rounds,
                                          final_head_rounds=dp.final_head_rounds) else local_epochs,
            lr=lr, batch_size=batch_size,
            phase=spec.phase(r), seed=seed * 1000 + r), run=RunOptions(loss_samples=0), dp_sgd=opts)
        extra = res.extra
        accountant = extra.get("dpsgd_accountant_state")
        steps += res.steps
    return DPTrainResult(state=get_adapter_state(model), noise_multiplier=sigma,
                         epsilon_spent=float(extra.get("dpsgd_epsilon", math.inf)), delta=o.delta,
                         sample_rate=plan.sample_rate, steps=steps, planned_steps=plan.steps,
                         accountant_state=accountant)


def round_trainer(
    spec: LoRASpec,
    *,
    rounds: int,
    local_epochs: float,
    lr: float,
    batch_size: int = 16,
    device: str | torch.device | None = "cpu",
    train_fn: Callable[..., Any] | None = None,
    dp: DPTraining | None = None,
    on_dp_result: Callable[[DPTrainResult], None] | None = None,
) -> ReferenceTrainer:
    """A reference trainer that trains like one site of a federation, alone.

    Each call builds a fresh model from ``spec`` (the federation's seeded initial adapter)
    and runs ``rounds`` calls of ``train_fn`` (default :func:`ffa_lora.lora.train_local`),
    each ``local_epochs`` long with the phase the strategy gives that round, as a client does.
    ``train_fn`` is called as ``train_fn(model, data, epochs=, lr=, batch_size=, phase=,
    seed=)``; pass another one to audit adapters trained another way. With ``dp``, each call
    is :func:`train_dpsgd` instead (``train_fn`` is not used), and ``on_dp_result`` sees each
    model's σ and ε spent.
    """
    if not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds: must be an integer >= 1, got {rounds!r}")
    if not local_epochs > 0 or not lr > 0:
        raise ConfigError(f"local_epochs and lr must be > 0, got {local_epochs!r} and {lr!r}")
    if dp is not None and not dp.probe_rounds < rounds:
        raise ConfigError(f"the DP recipe's {dp.probe_rounds} head-only rounds leave none of "
                          f"{rounds} rounds for the adapter; give more rounds or fewer probe rounds")

    def train(data: Dataset, seed: int) -> AdapterState:
        if dp is not None:
            res = train_dpsgd(spec, data, dp, rounds=rounds, local_epochs=local_epochs, lr=lr,
                              batch_size=batch_size, seed=seed, device=device)
            if on_dp_result is not None:
                on_dp_result(res)
            return res.state
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

"""Local training, evaluation and the centralized baseline.

:func:`train_local` trains the values of the round's phase — B (FFA), A and B (warm-up /
fedavg) or A (alternating) plus the task head — for a possibly fractional number of epochs and
returns the update ``Δ = trained − received`` as the flat vector of
:class:`~ffa_lora.lora.layout.UpdateLayout`. It prepares the model (which values train, rank
masks), draws the batches, runs one step strategy of :mod:`ffa_lora.lora.steps` over them —
plain AdamW, or DP-SGD when :class:`~ffa_lora.lora.steps.DPSGDOptions` are given — and
packages the change. A fresh AdamW each call is what FedAvg-style clients usually do; its
state can also continue across calls (:class:`OptimizerState`).

A rank-``r`` client masks the gradients of ``B[:, r:]`` (and ``A[r:, :]``) to zero, so those
entries stay exactly at their received values (zero for B) and the client uses only ``A[:r]``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ffa_lora.data.dataset import Dataset
from ffa_lora.errors import ConfigError, DataError
from ffa_lora.lora.batching import (
    DataCursor,
    collate,
    cursor_batches,
    encode,
    features_of,
    pad_id,
    shuffled_batches,
)
from ffa_lora.lora.layout import UpdateLayout, is_trainable
from ffa_lora.lora.metrics import classification_metrics
from ffa_lora.lora.model import LoRAModel, adapter_parameters, build_model, get_adapter_state
from ffa_lora.lora.spec import LoRASpec, Phase, check_phase
from ffa_lora.lora.state import AdapterState, is_lora_a, is_lora_b
from ffa_lora.lora.steps import DPSGDOptions, PlainSteps, PrivateSteps, StepContext, make_private

__all__ = ["CentralizedResult", "DPSGDOptions", "DataCursor", "OptimizerState", "RunOptions",
           "TrainOptions", "TrainResult", "evaluate", "train_centralized", "train_local"]

#: progress(step, total_steps, running_mean_loss)
ProgressFn = Callable[[int, int, float], None]

#: Obsolete: DP-SGD clients now account with dp-accounting (RDP or PLD) at any noise level.
#: Kept for callers that still compare against it.
PRV_MIN_NOISE = 0.3


@dataclass(frozen=True)
class TrainOptions:
    """What one :func:`train_local` call trains and how long.

    Attributes:
        epochs: passes over the data; fractions allowed (0.5 = half an epoch of batches). 0 only
            under DP-SGD with ``head_epochs``: a round that trains the head alone.
        lr: AdamW learning rate (FFA-LoRA needs larger ones than LoRA, e.g. 5e-3); under
            DP-SGD the default rate of the adapter (see ``DPSGDOptions.learning_rate``).
        batch_size: minibatch size (under DP-SGD the default expected and physical batch).
        phase: ``"B"``, ``"AB"`` or ``"A"`` (see :meth:`LoRASpec.phase`).
        rank: the client's rank (default r_max); only ``B[:, :rank]`` / ``A[:rank]`` change.
        seed: seeds the minibatch order and dropout (through a forked torch RNG). Vary it per
            round and client so successive fractional epochs see different examples.
        weight_decay: decoupled weight decay (0 keeps untouched entries exactly fixed).
        max_grad_norm: optional clipping of the trainable gradients' global L2 norm (not
            under DP-SGD, which clips per sample).
        dropout: train with the encoder's dropout layers active (``False``: they stay in
            eval mode, as when the model predicts).
    """

    epochs: float = 1.0
    lr: float = 5e-3
    batch_size: int = 16
    phase: Phase = "B"
    rank: int | None = None
    seed: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float | None = None
    dropout: bool = True

    def __post_init__(self) -> None:
        check_phase(self.phase)
        if not self.epochs >= 0 or not self.lr > 0 or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ConfigError(f"epochs must be >= 0, lr > 0 and batch_size >= 1 "
                              f"(got {self.epochs}, {self.lr}, {self.batch_size})")


@dataclass(frozen=True)
class RunOptions:
    """How a :func:`train_local` call runs and measures, not what it learns.

    Attributes:
        amp: on CUDA, fp16 autocast with a GradScaler; ignored on the CPU and under DP-SGD.
        num_threads: if given, ``torch.set_num_threads(num_threads)`` (process-wide).
        loss_samples: size of the seeded local subsample for ``loss_before/after`` (0 = skip).
        eval_batch_size: batch size of those loss evaluations.
    """

    amp: bool = True
    num_threads: int | None = None
    loss_samples: int = 256
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1, got {self.num_threads}")


@dataclass
class OptimizerState:
    """AdamW's moments and step counts for one client's trainable values, kept between rounds.

    A fresh AdamW starts each round with empty second-moment estimates, so its first steps
    move every value by about the full learning rate whatever its gradient's scale; with a
    round of a few hundred steps that restart recurs every round. Handing the state of the
    last round back to :func:`train_local` continues the optimizer instead (README, "The
    bank demo", has what it changed there). It is used only for the same trainable keys,
    shapes and rank it was saved with; it never leaves the client (it is derived from local
    gradients).

    Attributes:
        keys: the trainable state keys, in optimizer order.
        shapes: their shapes (an SVD rank reduction reshapes the factors).
        rank: the client's rank when it was saved (masked entries must stay untouched).
        state: ``torch.optim.AdamW.state_dict()["state"]`` of the finished call's optimizer.
    """

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    rank: int
    state: dict[int, dict[str, torch.Tensor]]


@dataclass
class TrainResult:
    """Outcome of one local training call.

    Attributes:
        delta: the update, ``layout.prefix_len(rank)`` float32 values in layout order.
        delta_state: the same update as arrays of the trainable keys (full shapes).
        layout: the layout ``delta`` follows.
        rank: the client's rank; phase: what trained.
        samples: local examples available (the FedAvg weight basis).
        examples_seen: examples processed (steps × batch, last batch smaller).
        steps: optimizer steps taken (steps skipped by the fp16 grad scaler excluded).
        loss_before / loss_after: mean loss of the received / trained model on a fixed, seeded
            subsample of the local data (``loss_samples`` examples, eval mode) — the received
            model's value is this client's share of the weighted global loss. NaN if disabled.
        train_loss: mean training loss over the steps.
        grad_snr: gradient signal-to-noise ratio over the minibatches,
            ``‖ḡ‖² / mean_t ‖g_t − ḡ‖²`` with ``g_t`` the (masked, unscaled) gradient of the
            trainable values at step t. High ⇒ the minibatches agree ⇒ the data are consistent
            and informative. 0.0 with fewer than two steps. Computed while the parameters move,
            so it slightly under-states the SNR at a fixed point.
        seconds: wall time of the training loop; eval_seconds: of the two loss evaluations.
    """

    delta: np.ndarray
    delta_state: AdapterState
    layout: UpdateLayout
    rank: int
    phase: Phase
    samples: int
    examples_seen: int
    steps: int
    loss_before: float
    loss_after: float
    train_loss: float
    grad_snr: float
    seconds: float
    eval_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    optimizer_state: OptimizerState | None = None
    cursor: DataCursor | None = None

    def metrics(self) -> dict[str, float | int | str]:
        """Scalar metadata that may leave the client (no update values)."""
        return {
            "rank": self.rank,
            "phase": self.phase,
            "samples": self.samples,
            "examples_seen": self.examples_seen,
            "steps": self.steps,
            "loss_before": self.loss_before,
            "loss_after": self.loss_after,
            "train_loss": self.train_loss,
            "grad_snr": self.grad_snr,
            "seconds": self.seconds,
        }


# -- evaluation ----------------------------------------------------------------------------


def _use_amp(device: torch.device, amp: bool) -> bool:
    return bool(amp) and device.type == "cuda"


def _autocast(device: torch.device, amp: bool) -> Any:
    if _use_amp(device, amp):
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return torch.autocast(device_type=device.type, enabled=False)


def _mean_loss(
    model: LoRAModel, ids: list[list[int]], labels: list[int], *, batch_size: int, amp: bool
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and the predicted class probabilities (``n × num_labels``), eval
    mode, sorted-by-length batches."""
    net = model.peft
    was_training = net.training
    net.eval()
    order = np.argsort([len(x) for x in ids], kind="stable")
    probs = np.empty((len(ids), model.spec.num_labels), dtype=np.float64)
    total = 0.0
    pad = pad_id(model)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = collate([ids[i] for i in idx], pad, model.device)
            y = torch.tensor([labels[i] for i in idx], device=model.device)
            with _autocast(model.device, amp):
                logits = net(**batch).logits.float()
            total += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            probs[idx] = torch.softmax(logits.double(), dim=-1).cpu().numpy()
    net.train(was_training)
    return total / max(len(ids), 1), probs


def evaluate(
    model: LoRAModel,
    data: Dataset,
    *,
    batch_size: int = 64,
    amp: bool = True,
) -> dict[str, float]:
    """Accuracy, macro-F1, macro one-vs-rest ROC-AUC with each class's AUC, mean cross-entropy
    and ``n`` on ``data`` (:func:`ffa_lora.lora.metrics.classification_metrics` says what each
    key holds and what happens when ``data`` lacks a class)."""
    if len(data) == 0:
        raise DataError("cannot evaluate on an empty data set")
    if data.num_labels != model.spec.num_labels:
        raise DataError(
            f"data has {data.num_labels} classes, the model {model.spec.num_labels}"
        )
    ids = encode(model, data.texts)
    loss, probs = _mean_loss(model, ids, data.labels, batch_size=batch_size, amp=amp)
    return {
        **classification_metrics(data.labels, probs, data.label_names),
        "loss": loss,
        "n": float(len(data)),
    }


# -- training ------------------------------------------------------------------------------


def _set_trainable(model: LoRAModel, phase: Phase) -> dict[str, torch.nn.Parameter]:
    """Freeze everything except the adapter values of ``phase``; return those."""
    for p in model.peft.parameters():
        p.requires_grad_(False)
    trainable: dict[str, torch.nn.Parameter] = {}
    for key, p in adapter_parameters(model).items():
        if is_trainable(key, phase):
            p.requires_grad_(True)
            trainable[key] = p
    return trainable


def _rank_masks(
    params: Mapping[str, torch.nn.Parameter], rank: int, r_max: int
) -> dict[str, torch.Tensor]:
    """0/1 masks that keep B[:, :rank] and A[:rank, :]; only for rank < r_max."""
    if rank >= r_max:
        return {}
    masks: dict[str, torch.Tensor] = {}
    for key, p in params.items():
        m = torch.zeros_like(p)
        if is_lora_b(key):
            m[:, :rank] = 1
        elif is_lora_a(key):
            m[:rank, :] = 1
        else:
            continue
        masks[key] = m
    return masks


def _check_inputs(model: LoRAModel, data: Dataset) -> None:
    if len(data) == 0:
        raise DataError("no local training data")
    if data.num_labels != model.spec.num_labels:
        raise DataError(f"data has {data.num_labels} classes, the model {model.spec.num_labels}")


@dataclass
class _LossProbe:
    """The mean loss on a fixed, seeded subsample of the local data (eval mode)."""

    ids: list[list[int]]
    labels: list[int]
    run: RunOptions
    seconds: float = 0.0

    @classmethod
    def draw(cls, ids: list[list[int]], labels: list[int], rng: np.random.Generator,
             run: RunOptions) -> _LossProbe:
        idx = np.sort(rng.permutation(len(ids))[: min(len(ids), run.loss_samples)])
        return cls([ids[i] for i in idx], [labels[i] for i in idx], run)

    def measure(self, model: LoRAModel) -> float:
        if self.run.loss_samples <= 0:
            return float("nan")
        start = time.perf_counter()
        loss = _mean_loss(model, self.ids, self.labels, batch_size=self.run.eval_batch_size,
                          amp=self.run.amp)[0]
        self.seconds += time.perf_counter() - start
        return loss


def _loss_fn(model: LoRAModel, ids: list[list[int]], labels: list[int], *, amp: bool) -> Any:
    """``loss(indices, reduction)``: cross-entropy of the model on those records."""
    pad, y_all = pad_id(model), torch.tensor(labels, dtype=torch.long)

    def loss(idx: np.ndarray, reduction: str) -> torch.Tensor:
        batch = collate([ids[i] for i in idx], pad, model.device)
        y = y_all[torch.from_numpy(np.asarray(idx, dtype=np.int64))].to(model.device)
        with _autocast(model.device, amp):
            logits = model.peft(**batch).logits
        return torch.nn.functional.cross_entropy(logits.float(), y, reduction=reduction)

    return loss


def _plain_steps(ctx: StepContext, opts: TrainOptions, run: RunOptions, rank: int,
                 saved: OptimizerState | None) -> PlainSteps:
    """AdamW steps, continuing ``saved`` when it was kept for these keys, shapes and rank."""
    params = ctx.params
    optimizer = torch.optim.AdamW(list(params.values()), lr=opts.lr, weight_decay=opts.weight_decay)
    keys, shapes = tuple(params), tuple(tuple(p.shape) for p in params.values())
    if saved is not None and saved.keys == keys and saved.shapes == shapes and saved.rank == rank:
        state = optimizer.state_dict()
        state["state"] = saved.state
        optimizer.load_state_dict(state)  # copies onto the parameters' device and dtype
    scaler = torch.amp.GradScaler("cuda") if _use_amp(ctx.model.device, run.amp) else None
    return PlainSteps(ctx, optimizer, max_grad_norm=opts.max_grad_norm, scaler=scaler)


def _kept_state(steps: PlainSteps, params: Mapping[str, torch.nn.Parameter], rank: int
                ) -> OptimizerState:
    # This optimizer ends with the call: its state tensors can be handed on as they are.
    return OptimizerState(keys=tuple(params), shapes=tuple(tuple(p.shape) for p in params.values()),
                          rank=rank, state=steps.optimizer.state_dict()["state"])


def _train_mode(model: LoRAModel, dropout: bool,
                params: Mapping[str, torch.nn.Parameter]) -> None:
    """Train mode; without ``dropout`` only the modules that own trainable values train (the
    rest, attention dropout included, behaves as in evaluation)."""
    if dropout:
        model.peft.train()
        return
    model.peft.eval()
    owned = {id(p) for p in params.values()}
    for m in model.peft.modules():
        if any(id(p) in owned for p in m.parameters(recurse=False)):
            m.train()


def _run_steps(model: LoRAModel, steps: PlainSteps | PrivateSteps, batches: list[np.ndarray], *,
               seed: int, progress: ProgressFn | None) -> tuple[float, int]:
    """Call ``steps.step`` on every batch (dropout seeded by ``seed``); returns the summed
    batch losses and the examples seen."""
    device = model.device
    loss_sum, seen = 0.0, 0
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for i, idx in enumerate(batches, start=1):
            loss_sum += steps.step(idx)
            seen += len(idx)
            if progress is not None:
                progress(i, len(batches), loss_sum / i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return loss_sum, seen


def _restore_masked(params: Mapping[str, torch.nn.Parameter], masks: Mapping[str, torch.Tensor],
                    before: AdapterState) -> None:
    """Masked entries got zero gradients, but weight decay shrinks them: put them back."""
    with torch.no_grad():
        for key, m in masks.items():
            orig = torch.from_numpy(before[key]).to(params[key].device)
            params[key].copy_(params[key] * m + orig * (1 - m))


def _update(model: LoRAModel, before: AdapterState, layout: UpdateLayout, rank: int
            ) -> tuple[np.ndarray, AdapterState]:
    """The flat update ``after − before`` of the trainable keys, and exactly what travels."""
    after = get_adapter_state(model)
    delta_state = {
        k: (after[k].astype(np.float64) - before[k].astype(np.float64)).astype(np.float32)
        for k in layout.trainable_keys()
    }
    delta = layout.flatten(delta_state, rank)
    return delta, layout.unflatten(delta)  # columns ≥ rank are zero


def train_local(
    model: LoRAModel,
    data: Dataset,
    options: TrainOptions = TrainOptions(),
    *,
    run: RunOptions = RunOptions(),
    dp_sgd: DPSGDOptions | None = None,
    optimizer_state: OptimizerState | None = None,
    cursor: DataCursor | None = None,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train the model's adapter on ``data`` and return the update.

    Args:
        model: built by :func:`~ffa_lora.lora.model.build_model`, holding the received
            global adapter (the update is relative to the adapter at call time).
        data: local training data.
        options: what trains and how long (:class:`TrainOptions`).
        run: AMP, threads and the loss subsample (:class:`RunOptions`).
        dp_sgd: run DP-SGD (:class:`~ffa_lora.lora.steps.DPSGDOptions`): Poisson batches of
            ``expected_batch_size`` (default ``batch_size``), ``round(epochs × records /
            expected)`` steps; ``extra`` then holds ``dpsgd_epsilon`` (all rounds so far, at
            ``dp_sgd.delta``) and ``dpsgd_accountant_state``; ``grad_snr`` is computed from
            the noised gradients (post-processing).
        optimizer_state: AdamW state from an earlier call (``TrainResult.optimizer_state``) to
            continue from; ignored unless it was saved for the same trainable keys, shapes and
            rank. Not used with ``dp_sgd`` (whose result carries none).
        cursor: continue the data order from an earlier call (``TrainResult.cursor``; start
            with ``DataCursor(seed, len(data))``) instead of drawing the batches from ``seed``;
            the result's cursor points past this call's batches. DP-SGD's Poisson batches
            ignore it.
        progress: called as ``progress(step, total_steps, mean_loss)`` after each step.
    """
    _check_inputs(model, data)
    if options.epochs == 0 and (dp_sgd is None or dp_sgd.head_epochs <= 0):
        raise ConfigError("epochs must be > 0 (0 is a head-only round: DP-SGD with head_epochs)")
    if run.num_threads is not None:
        torch.set_num_threads(run.num_threads)
    spec = model.spec
    rank = spec.r_max if options.rank is None else spec.check_rank(options.rank)
    before = get_adapter_state(model)
    layout = UpdateLayout.build(before, phase=options.phase)
    ids = encode(model, data.texts)
    rng = np.random.default_rng(options.seed)
    probe = _LossProbe.draw(ids, data.labels, rng, run)
    loss_before = probe.measure(model)

    params = _set_trainable(model, options.phase)
    masks = _rank_masks(params, rank, spec.r_max)
    amp = _use_amp(model.device, run.amp) and dp_sgd is None
    ctx = StepContext(model, params, masks, _loss_fn(model, ids, data.labels, amp=amp),
                      labels=torch.tensor(data.labels, dtype=torch.long))
    steps: PlainSteps | PrivateSteps
    if dp_sgd is None:
        steps = _plain_steps(ctx, options, run, rank, optimizer_state)
        if cursor is None:
            batches = shuffled_batches(len(ids), options.batch_size, options.epochs, rng)
        else:
            batches, cursor = cursor_batches(len(ids), options.batch_size, options.epochs, cursor)
    else:
        steps = make_private(ctx, dp_sgd, lr=options.lr, batch_size=options.batch_size,
                             lengths=[len(x) for x in ids], weight_decay=options.weight_decay,
                             features=lambda: features_of(model, ids, run.eval_batch_size))
        batches = steps.batches(options.epochs)
    _train_mode(model, options.dropout, params)
    start = time.perf_counter()
    try:
        loss_sum, seen = _run_steps(model, steps, batches, seed=options.seed, progress=progress)
        extra = steps.finish()
    finally:
        steps.close()
    seconds = time.perf_counter() - start
    kept = _kept_state(steps, params, rank) if isinstance(steps, PlainSteps) else None
    if masks and options.weight_decay:
        _restore_masked(params, masks, before)
    for p in model.peft.parameters():
        p.requires_grad_(False)
    loss_after = probe.measure(model)
    delta, delta_state = _update(model, before, layout, rank)
    return TrainResult(
        delta=delta, delta_state=delta_state, layout=layout, rank=rank, phase=options.phase,
        samples=len(data), examples_seen=seen, steps=ctx.stats.steps, loss_before=loss_before,
        loss_after=loss_after, train_loss=loss_sum / max(len(batches), 1),
        grad_snr=ctx.stats.snr(), seconds=seconds, eval_seconds=probe.seconds, extra=extra,
        optimizer_state=kept, cursor=cursor,
    )


@dataclass
class CentralizedResult:
    """Outcome of :func:`train_centralized`: test metrics, the trained adapter, training info."""

    metrics: dict[str, float]
    state: AdapterState
    train: TrainResult
    curve: list[dict[str, float]] = field(default_factory=list)


def train_centralized(
    spec: LoRASpec,
    train: Dataset,
    test: Dataset,
    *,
    epochs: float = 2.0,
    lr: float = 5e-3,
    batch_size: int = 16,
    phase: Phase | None = None,
    device: str | torch.device | None = "cpu",
    seed: int = 0,
    amp: bool = True,
    num_threads: int | None = None,
    progress: ProgressFn | None = None,
    eval_every: float | None = None,
    resample_pieces: bool = False,
) -> CentralizedResult:
    """The baseline: the same model and adapter trained on the pooled data, then tested.

    ``phase`` defaults to ``"B"`` (FFA-LoRA) for ``strategy="ffa"`` and ``"AB"`` (plain LoRA,
    both factors) otherwise. Returns test accuracy, macro-F1 and loss plus timing.

    With ``eval_every`` (epochs), training runs in pieces of that length, as a federation's
    rounds are — one AdamW and one :class:`DataCursor` continued across them — and ``curve``
    holds the test metrics after each piece. ``resample_pieces`` draws each piece's batches
    from a fresh permutation instead (what clients did before they kept a cursor: sampling
    with replacement across pieces). Either order differs from one uninterrupted run's.
    """
    if phase is None:
        phase = "B" if spec.strategy == "ffa" else "AB"
    if eval_every is not None and not 0 < eval_every <= epochs:
        raise ConfigError(f"eval_every must be in (0, epochs={epochs:g}], got {eval_every}")
    model = build_model(spec, device=device)
    if eval_every is None:
        pieces = [(epochs, seed)]
    else:
        n = math.ceil(epochs / eval_every - 1e-9)
        pieces = [(min(eval_every, epochs - i * eval_every), seed * 1000 + i) for i in range(n)]
    curve: list[dict[str, float]] = []
    results: list[TrainResult] = []
    state: OptimizerState | None = None
    cursor = None if resample_pieces or eval_every is None else DataCursor(seed=seed, n=len(train))
    metrics: dict[str, float] = {}
    done = 0.0
    for piece_epochs, piece_seed in pieces:
        result = train_local(
            model, train,
            TrainOptions(epochs=piece_epochs, lr=lr, batch_size=batch_size, phase=phase, seed=piece_seed),
            run=RunOptions(amp=amp, num_threads=num_threads, loss_samples=0), progress=progress,
            optimizer_state=state, cursor=cursor,
        )
        state, cursor = result.optimizer_state, result.cursor
        results.append(result)
        done += piece_epochs
        if eval_every is not None or len(results) == len(pieces):
            metrics = evaluate(model, test, amp=amp)
        if eval_every is not None:
            curve.append({"epochs": done, "accuracy": metrics["accuracy"],
                          "macro_f1": metrics["macro_f1"], "loss": metrics["loss"], "train_loss": result.train_loss})
    steps = sum(r.steps for r in results)
    metrics.update(
        {"train_seconds": sum(r.seconds for r in results), "steps": float(steps), "epochs": float(epochs),
         "train_loss": sum(r.train_loss * r.steps for r in results) / max(steps, 1)}
    )
    return CentralizedResult(metrics=metrics, state=get_adapter_state(model), train=results[-1], curve=curve)

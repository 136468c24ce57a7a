"""Local training, evaluation and the centralized baseline.

Local training (:func:`train_local`) runs AdamW on the values that train in the round's phase
— B (FFA), A and B (warm-up / fedavg) or A (alternating) plus the task head — for a possibly
fractional number of epochs, and returns the update ``Δ = trained − received`` as the flat
vector of :class:`~ffa_lora.lora.layout.UpdateLayout`. The optimizer is created afresh each
call (each round): its moment estimates are local state that would otherwise drift from the
aggregated model, and a fresh AdamW is what FedAvg-style clients usually do.

A rank-``r`` client masks the gradients of ``B[:, r:]`` (and ``A[r:, :]``) to zero, so those
entries stay exactly at their received values (zero for B) and the client uses only ``A[:r]``.

With :class:`DPSGDOptions` the same loop runs Opacus DP-SGD instead (sample-level DP, the
FFA-LoRA paper's setting): Poisson-sampled minibatches, per-sample gradients clipped to
``max_grad_norm`` and Gaussian noise on the trainable values only; the accountant's history
is carried across rounds by the caller (``TrainResult.extra["dpsgd_accountant_state"]``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ffa_lora.data.dataset import Dataset
from ffa_lora.errors import ConfigError, DataError
from ffa_lora.lora.layout import UpdateLayout, is_trainable
from ffa_lora.lora.metrics import classification_metrics
from ffa_lora.lora.model import LoRAModel, adapter_parameters, build_model, get_adapter_state
from ffa_lora.lora.spec import DPSGD_OPTIMIZERS, LoRASpec, Phase, check_phase
from ffa_lora.lora.state import AdapterState, is_head, is_lora_a, is_lora_b

#: progress(step, total_steps, running_mean_loss)
ProgressFn = Callable[[int, int, float], None]


#: below this noise multiplier the PRV accountant is replaced by RDP (see ``_make_private``)
PRV_MIN_NOISE = 0.3


@dataclass(frozen=True)
class DPSGDOptions:
    """Sample-level DP-SGD for one :func:`train_local` call (see ``ffa_lora.privacy.dp_sgd``).

    Attributes:
        noise_multiplier: σ / max_grad_norm of the Gaussian noise on each step's summed gradient.
        max_grad_norm: per-sample L2 clip bound over the trainable values of the round.
        delta: δ of the ε this client reports.
        accountant_state: the previous rounds' ``extra["dpsgd_accountant_state"]`` (ε accumulates).
        accountant: Opacus accountant (``"prv"``, ``"rdp"`` or ``"gdp"``).
        seed: TESTS ONLY — fixes the noise and the Poisson sampling.
        optimizer: ``"adamw"`` or ``"sgd"`` (momentum 0.9). Adam rescales every coordinate to
            about ``lr`` per step, so coordinates with no signal take full-size noise steps;
            plain SGD moves them by ``lr × noise`` (often recommended under DP; on 900 records per site neither learned).
        learning_rate: the rate for this optimizer (default: the call's ``lr``).
        head_learning_rate: the rate for the task head (default: ``learning_rate``). DP-SGD wants
            large batches, hence few steps, and the two parts want different rates: the head
            (≈1k values, ~99 % of a per-sample gradient's squared norm at the start, a high
            signal-to-noise ratio) and the noise-dominated LoRA factors (under AdamW a larger
            rate for the head; under SGD, whose steps scale with the gradient, a smaller one).
    """

    noise_multiplier: float
    max_grad_norm: float
    delta: float
    accountant_state: dict[str, Any] | None = None
    accountant: str = "prv"
    seed: int | None = None
    optimizer: str = "adamw"
    learning_rate: float | None = None
    head_learning_rate: float | None = None


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


# -- batching ------------------------------------------------------------------------------


def _encode(model: LoRAModel, texts: list[str]) -> list[list[int]]:
    enc = model.tokenizer(
        texts, truncation=True, max_length=model.spec.max_length, padding=False,
        return_attention_mask=False, return_token_type_ids=False,
    )
    return [list(ids) for ids in enc["input_ids"]]


def _collate(ids: list[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence of the batch (dynamic padding: cheap for short texts)."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}


def _pad_id(model: LoRAModel) -> int:
    pid = model.tokenizer.pad_token_id
    return int(pid) if pid is not None else 0


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
    pad = _pad_id(model)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = _collate([ids[i] for i in idx], pad, model.device)
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
    ids = _encode(model, data.texts)
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


def _batches(n: int, batch_size: int, epochs: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Minibatches for ``epochs`` passes (fractions allowed); each pass a fresh permutation."""
    per_epoch = math.ceil(n / batch_size)
    total = max(1, math.ceil(epochs * per_epoch))
    out: list[np.ndarray] = []
    while len(out) < total:
        perm = rng.permutation(n)
        out.extend(perm[i : i + batch_size] for i in range(0, n, batch_size))
    return out[:total]


def _cursor_batches(n: int, batch_size: int, epochs: float,
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


def train_local(
    model: LoRAModel,
    data: Dataset,
    *,
    epochs: float = 1.0,
    lr: float = 5e-3,
    batch_size: int = 16,
    phase: Phase = "B",
    rank: int | None = None,
    seed: int = 0,
    amp: bool = True,
    num_threads: int | None = None,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = None,
    loss_samples: int = 256,
    eval_batch_size: int = 64,
    progress: ProgressFn | None = None,
    dp_sgd: DPSGDOptions | None = None,
    optimizer_state: OptimizerState | None = None,
    cursor: DataCursor | None = None,
) -> TrainResult:
    """Train the model's adapter on ``data`` and return the update.

    Args:
        model: built by :func:`~ffa_lora.lora.model.build_model`, holding the received
            global adapter (the update is relative to the adapter at call time).
        data: local training data.
        epochs: passes over the data; fractions allowed (0.5 = half an epoch of batches).
        lr: AdamW learning rate (FFA-LoRA needs larger ones than LoRA, e.g. 5e-3).
        batch_size: minibatch size.
        phase: ``"B"``, ``"AB"`` or ``"A"`` (see :meth:`LoRASpec.phase`).
        rank: the client's rank (default r_max); only ``B[:, :rank]`` / ``A[:rank]`` change.
        seed: seeds the minibatch order and dropout (through a forked torch RNG). Vary it per
            round and client (e.g. hash of federation seed, round, client id) so successive
            fractional epochs see different examples.
        amp: on CUDA, fp16 autocast with a GradScaler; ignored on the CPU (fp32 there).
        num_threads: if given, ``torch.set_num_threads(num_threads)`` (process-wide).
        weight_decay: AdamW decoupled weight decay (0 keeps untouched entries exactly fixed).
        max_grad_norm: optional clipping of the trainable gradients' global L2 norm.
        loss_samples: size of the seeded local subsample for ``loss_before/after`` (0 = skip).
        eval_batch_size: batch size of those loss evaluations.
        progress: called as ``progress(step, total_steps, mean_loss)`` after each step.
        dp_sgd: run Opacus DP-SGD (Poisson sampling with rate ``batch_size / len(data)``, the
            same number of steps); ``extra`` then holds ``dpsgd_epsilon`` (all rounds so far,
            at ``dp_sgd.delta``) and ``dpsgd_accountant_state``. ``grad_snr`` is computed from
            the noised gradients (post-processing), ``max_grad_norm`` and AMP are not used.
        optimizer_state: AdamW state from an earlier call (``TrainResult.optimizer_state``) to
            continue from; ignored unless it was saved for the same trainable keys, shapes and
            rank. Not used with ``dp_sgd`` (whose result carries none).
        cursor: continue the data order from an earlier call (``TrainResult.cursor``; start
            with ``DataCursor(seed, len(data))``) instead of drawing the batches from ``seed``;
            the result's cursor points past this call's batches. DP-SGD's Poisson batches
            ignore it.
    """
    phase = check_phase(phase)
    spec = model.spec
    r = spec.r_max if rank is None else spec.check_rank(rank)
    if len(data) == 0:
        raise DataError("no local training data")
    if data.num_labels != spec.num_labels:
        raise DataError(f"data has {data.num_labels} classes, the model {spec.num_labels}")
    if not epochs > 0 or not lr > 0 or batch_size < 1:
        raise ConfigError(
            f"epochs and lr must be > 0 and batch_size >= 1 (got {epochs}, {lr}, {batch_size})"
        )
    if num_threads is not None:
        if num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1, got {num_threads}")
        torch.set_num_threads(num_threads)

    device = model.device
    use_amp = _use_amp(device, amp)
    before = get_adapter_state(model)
    layout = UpdateLayout.build(before, phase=phase)
    ids = _encode(model, data.texts)
    rng = np.random.default_rng(seed)

    eval_start = time.perf_counter()
    loss_idx = np.sort(rng.permutation(len(ids))[: min(len(ids), loss_samples)])
    sub_ids = [ids[i] for i in loss_idx]
    sub_y = [data.labels[i] for i in loss_idx]
    loss_before = (
        _mean_loss(model, sub_ids, sub_y, batch_size=eval_batch_size, amp=amp)[0]
        if loss_samples > 0 else float("nan")
    )
    eval_seconds = time.perf_counter() - eval_start

    params = _set_trainable(model, phase)
    masks = _rank_masks(params, r, spec.r_max)
    plist = list(params.values())
    if dp_sgd is not None and dp_sgd.optimizer not in DPSGD_OPTIMIZERS:
        raise ConfigError(f"dp_sgd.optimizer must be one of {DPSGD_OPTIMIZERS}, got {dp_sgd.optimizer!r}")
    step_lr = dp_sgd.learning_rate if dp_sgd is not None and dp_sgd.learning_rate else lr
    groups: list[dict[str, Any]] = [{"params": plist}]
    if dp_sgd is not None and dp_sgd.head_learning_rate:
        groups = [{"params": [p for k, p in params.items() if not is_head(k)]},
                  {"params": [p for k, p in params.items() if is_head(k)], "lr": dp_sgd.head_learning_rate}]
    optimizer: Any = (torch.optim.SGD(groups, lr=step_lr, momentum=0.9, weight_decay=weight_decay)
                      if dp_sgd is not None and dp_sgd.optimizer == "sgd"
                      else torch.optim.AdamW(groups, lr=step_lr, weight_decay=weight_decay))
    keys, shapes = tuple(params), tuple(tuple(p.shape) for p in params.values())
    if (optimizer_state is not None and dp_sgd is None and optimizer_state.keys == keys
            and optimizer_state.shapes == shapes and optimizer_state.rank == r):
        saved = optimizer.state_dict()
        saved["state"] = optimizer_state.state
        optimizer.load_state_dict(saved)  # copies onto the parameters' device and dtype
    if cursor is None:
        batches = _batches(len(ids), batch_size, epochs, rng)
    else:
        batches, cursor = _cursor_batches(len(ids), batch_size, epochs, cursor)
    net: Any = model.peft
    dp = None
    if dp_sgd is not None:
        dp = _make_private(net, optimizer, len(ids), batch_size, dp_sgd)
        net, optimizer, batches = dp.model, dp.optimizer, _poisson_batches(dp.data_loader, len(batches))
        use_amp = False
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    pad = _pad_id(model)
    labels = torch.tensor(data.labels, dtype=torch.long)

    n_vals = sum(p.numel() for p in plist)
    # Running sums stay on the device: no host sync per step (it dominates small GPU steps).
    g_sum = torch.zeros(n_vals, dtype=torch.float64, device=device)
    g_sq = torch.zeros((), dtype=torch.float64, device=device)
    g_count = torch.zeros((), dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    net.train()
    start = time.perf_counter()
    cuda_devices = [device.index or 0] if device.type == "cuda" else []

    def grad_stats() -> None:
        nonlocal g_sum, g_sq, g_count
        flat = torch.cat([
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in plist
        ]).double()
        # fp16 overflow: the scaler skips the step; keep it out of the statistics too.
        finite = torch.isfinite(flat).all()
        g_sum += torch.where(finite, flat, 0.0)
        g_sq += torch.where(finite, flat.square().sum(), 0.0)
        g_count += finite

    try:
        with torch.random.fork_rng(devices=cuda_devices), warnings.catch_warnings():
            # Opacus' per-sample hooks on a frozen base model: torch notes that no input needs
            # a gradient, which is exactly the FFA-LoRA case.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            torch.manual_seed(seed)
            for step, idx in enumerate(batches, start=1):
                optimizer.zero_grad(set_to_none=True)
                if len(idx) == 0:  # a Poisson batch can be empty: a noise-only step, still counted
                    for p in plist:
                        p.grad_sample = torch.zeros(  # type: ignore[attr-defined]
                            (0, *p.shape), dtype=p.dtype, device=p.device)
                    optimizer.step()
                    grad_stats()
                    continue
                batch = _collate([ids[i] for i in idx], pad, device)
                y = labels[torch.from_numpy(idx)].to(device)
                with _autocast(device, amp and dp is None):
                    logits = net(**batch).logits
                loss = torch.nn.functional.cross_entropy(logits.float(), y)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                for key, m in masks.items():
                    p = params[key]
                    per_sample = getattr(p, "grad_sample", None) if dp is not None else None
                    if per_sample is not None:
                        per_sample.mul_(m)  # before per-sample clipping: masked values cost nothing
                    elif p.grad is not None:
                        p.grad.mul_(m)
                if dp is None:
                    grad_stats()
                    if max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(plist, max_grad_norm)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                if dp is not None:
                    grad_stats()  # the clipped, noised gradient: post-processing of DP output
                loss_sum += loss.detach()
                seen += len(idx)
                if progress is not None:
                    progress(step, len(batches), float(loss_sum) / step)
    finally:
        if dp is not None:
            dp.model._close()  # remove Opacus' hooks: the next round wraps the model afresh
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    extra: dict[str, Any] = {}
    kept = None
    if dp is None:
        # This optimizer ends with the call: its state tensors can be handed on as they are.
        kept = OptimizerState(keys=keys, shapes=shapes, rank=r, state=optimizer.state_dict()["state"])
    else:
        assert dp_sgd is not None
        extra = {"dpsgd_epsilon": dp.epsilon(delta=dp_sgd.delta),
                 "dpsgd_accountant_state": dp.accountant_state(),
                 "dpsgd_noise_multiplier": dp.noise_multiplier, "dpsgd_sample_rate": dp.sample_rate}
    # Masked entries got zero gradients; AdamW leaves them exactly unchanged with
    # weight_decay=0. With decay they would shrink, so restore them explicitly.
    if masks and weight_decay:
        with torch.no_grad():
            for key, m in masks.items():
                orig = torch.from_numpy(before[key]).to(device)
                params[key].copy_(params[key] * m + orig * (1 - m))
    for p in model.peft.parameters():
        p.requires_grad_(False)

    eval_start = time.perf_counter()
    loss_after = (
        _mean_loss(model, sub_ids, sub_y, batch_size=eval_batch_size, amp=amp)[0]
        if loss_samples > 0 else float("nan")
    )
    eval_seconds += time.perf_counter() - eval_start

    after = get_adapter_state(model)
    delta_state = {
        k: (after[k].astype(np.float64) - before[k].astype(np.float64)).astype(np.float32)
        for k in layout.trainable_keys()
    }
    delta = layout.flatten(delta_state, r)
    delta_state = layout.unflatten(delta)  # exactly what travels (columns ≥ r are zero)
    steps = int(g_count)
    g_sq_f = float(g_sq)
    if steps >= 2:
        mean = g_sum / steps
        mean_sq = float(mean.square().sum())
        var = g_sq_f / steps - mean_sq
        grad_snr = mean_sq / var if var > 0 else float("inf")
    else:
        grad_snr = 0.0
    return TrainResult(
        delta=delta,
        delta_state=delta_state,
        layout=layout,
        rank=r,
        phase=phase,
        samples=len(data),
        examples_seen=seen,
        steps=steps,
        loss_before=loss_before,
        loss_after=loss_after,
        train_loss=float(loss_sum) / max(len(batches), 1),
        grad_snr=grad_snr,
        seconds=seconds,
        eval_seconds=eval_seconds,
        extra=extra,
        optimizer_state=kept,
        cursor=cursor,
    )


def _make_private(net: torch.nn.Module, optimizer: torch.optim.Optimizer, n: int, batch_size: int,
                  opts: DPSGDOptions) -> Any:
    from torch.utils.data import DataLoader, TensorDataset

    from ffa_lora.privacy.dp_sgd import make_dp_sgd

    # Opacus replaces this loader by a Poisson-sampling one with rate batch_size / n; it
    # yields index batches into the tokenized data.
    loader = DataLoader(TensorDataset(torch.arange(n)), batch_size=min(batch_size, n))
    # Opacus' PRV accountant breaks down (the process dies in numpy) for very small noise;
    # RDP gives a valid, looser bound there.
    accountant = "rdp" if opts.accountant == "prv" and opts.noise_multiplier < PRV_MIN_NOISE else opts.accountant
    return make_dp_sgd(net, optimizer, loader, max_grad_norm=opts.max_grad_norm, delta=opts.delta,
                       noise_multiplier=opts.noise_multiplier, accountant=accountant,
                       accountant_state=opts.accountant_state, seed=opts.seed)


def _poisson_batches(loader: Any, steps: int) -> list[np.ndarray]:
    """``steps`` Poisson-sampled index batches (possibly empty), drawn from Opacus' loader."""
    out: list[np.ndarray] = []
    while len(out) < steps:
        for (idx,) in loader:
            out.append(idx.numpy().astype(np.int64))
            if len(out) == steps:
                break
    return out


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
            model, train, epochs=piece_epochs, lr=lr, batch_size=batch_size, phase=phase, seed=piece_seed,
            amp=amp, num_threads=num_threads, loss_samples=0, progress=progress, optimizer_state=state,
            cursor=cursor,
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

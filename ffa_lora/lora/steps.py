"""How one local training step updates the adapter: plainly, or privately (DP-SGD).

:func:`ffa_lora.lora.train.train_local` runs the same loop either way — draw the batches, call
``step(batch)`` for each, ``finish()`` — over one of two step strategies:

* :class:`PlainSteps` — the minibatch's mean loss, backward, rank masks, optional global norm
  clip, AdamW (its state can continue from an earlier call), fp16 autocast on CUDA.
* :class:`PrivateSteps`, built by :func:`make_private` the way Opacus' ``make_private`` wraps
  a model: Poisson-sampled logical batches run as length-sorted physical batches, per-sample
  gradients (Opacus ``GradSampleModule``) clipped per group — task head and adapter each to
  their own bound — and summed, Gaussian noise once per logical batch, then plain SGD (or
  AdamW) with a rate per group. Its accountant composes every step, and ``finish`` reports
  ε with the accountant's state for the next round.

Why a rate per group: the zero-initialised head gives the adapter no gradient at first (the
adapter's gradient flows through the head), so the head learns alone — a linear probe —
until it has grown; the adapter's gradient then appears but stays small next to its noise,
which is isotropic over many more values. A separate rate (and clip) lets the adapter move
as far as its signal allows without a random walk that spoils the features the head relies
on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ffa_lora.errors import ConfigError
from ffa_lora.lora.model import LoRAModel
from ffa_lora.lora.spec import DPSGD_OPTIMIZERS
from ffa_lora.lora.state import is_head
from ffa_lora.privacy.dp_sgd import (
    DPSGD_ACCOUNTANTS,
    ClipGroup,
    PrivateGradient,
    load_accountant,
    physical_batches,
    poisson_sample,
    quiet_absl,
    step_event,
    steps_per_round,
)
from ffa_lora.privacy.rng import NoiseSource, resolve_source

#: ``loss(batch indices, reduction)`` → the batch's loss (graph attached)
LossFn = Callable[[np.ndarray, str], torch.Tensor]



@dataclass(frozen=True)
class DPSGDOptions:
    """Sample-level DP-SGD for one :func:`~ffa_lora.lora.train.train_local` call.

    Attributes:
        noise_multiplier: σ; the noise std on each step's clipped sum is
            ``σ × sqrt(max_grad_norm² + head_max_grad_norm²)`` (one group: ``σ × max_grad_norm``).
        max_grad_norm: per-sample L2 clip of the adapter's values — of all trainable values
            when ``head_max_grad_norm`` is ``None``.
        delta: δ of the ε this client reports.
        head_max_grad_norm: the task head's own clip bound (per-group clipping), or ``None``.
        head_epochs: before the steps through the model, this many epochs (in expectation)
            of steps that train the head alone on features computed once per call with the
            received adapter (``mean_linear`` head only): a private linear probe inside the
            round, one forward pass per record instead of a forward and backward pass per step.
        adapter_only: the steps through the model train the adapter alone (the head keeps
            what the head steps made of it); their sensitivity is then ``max_grad_norm``
            alone, not shared with the head's clip. Needs ``head_epochs`` > 0.
        expected_batch_size: Poisson batch size in expectation (default: the call's
            ``batch_size``); the sample rate is ``expected / records``.
        physical_batch_size: most records per forward/backward pass (default: the call's
            ``batch_size``, so memory stays as without DP); does not change the result.
        optimizer: ``"sgd"`` (plain SGD on the noised mean gradient: a coordinate without
            signal moves by ``lr × noise``) or ``"adamw"`` (rescales every coordinate to about
            ``lr`` per step, noise included).
        learning_rate: the adapter's rate (default: the call's ``lr``).
        head_learning_rate: the head's rate (default: ``learning_rate``).
        momentum: SGD momentum (0: plain SGD).
        accountant: ``"rdp"`` (dp-accounting's RDP, as :func:`plan_dp_sgd` calibrates) or
            ``"pld"``.
        accountant_state: the previous rounds' ``extra["dpsgd_accountant_state"]``.
        seed: TESTS ONLY — fixes the noise and the Poisson sampling.
    """

    noise_multiplier: float
    max_grad_norm: float
    delta: float
    head_max_grad_norm: float | None = None
    head_epochs: float = 0.0
    adapter_only: bool = False
    expected_batch_size: int | None = None
    physical_batch_size: int | None = None
    optimizer: str = "sgd"
    learning_rate: float | None = None
    head_learning_rate: float | None = None
    momentum: float = 0.0
    accountant: str = "rdp"
    accountant_state: dict[str, Any] | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in DPSGD_OPTIMIZERS:
            raise ConfigError(f"dp_sgd.optimizer must be one of {DPSGD_OPTIMIZERS}, "
                              f"got {self.optimizer!r}")
        if self.accountant not in DPSGD_ACCOUNTANTS:
            raise ConfigError(f"dp_sgd.accountant must be one of {DPSGD_ACCOUNTANTS}, "
                              f"got {self.accountant!r}")
        for name in ("max_grad_norm", "head_max_grad_norm", "learning_rate", "head_learning_rate"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ConfigError(f"dp_sgd.{name} must be a positive number, got {v!r}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise ConfigError(f"dp_sgd.noise_multiplier must be >= 0, got {self.noise_multiplier!r}")
        for name in ("expected_batch_size", "physical_batch_size"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"dp_sgd.{name} must be an integer >= 1, got {v!r}")
        if not (math.isfinite(self.head_epochs) and self.head_epochs >= 0):
            raise ConfigError(f"dp_sgd.head_epochs must be >= 0, got {self.head_epochs!r}")
        if self.adapter_only and self.head_epochs <= 0:
            raise ConfigError("dp_sgd.adapter_only needs head_epochs > 0, or the head never trains")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"dp_sgd.momentum must be in [0, 1), got {self.momentum!r}")


class GradStats:
    """Running sums for the gradient signal-to-noise ratio ``‖ḡ‖² / mean_t ‖g_t − ḡ‖²``.

    Kept on the device (no host sync per step). Non-finite gradients (an fp16 overflow the
    scaler skips) are left out.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], device: torch.device) -> None:
        self.params = list(params)
        n = sum(p.numel() for p in self.params)
        self.sum = torch.zeros(n, dtype=torch.float64, device=device)
        self.sq = torch.zeros((), dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)

    def add(self) -> None:
        """Record the parameters' current ``.grad``."""
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in self.params]).double()
        finite = torch.isfinite(flat).all()
        self.sum += torch.where(finite, flat, 0.0)
        self.sq += torch.where(finite, flat.square().sum(), 0.0)
        self.count += finite

    @property
    def steps(self) -> int:
        """Steps recorded."""
        return int(self.count)

    def snr(self) -> float:
        """The ratio; 0.0 with fewer than two steps."""
        steps = self.steps
        if steps < 2:
            return 0.0
        mean_sq = float((self.sum / steps).square().sum())
        var = float(self.sq) / steps - mean_sq
        return mean_sq / var if var > 0 else float("inf")


@dataclass
class StepContext:
    """What both strategies need: the model, its trainable values and their rank masks."""

    model: LoRAModel
    params: dict[str, torch.nn.Parameter]
    masks: dict[str, torch.Tensor]
    loss: LossFn
    labels: torch.Tensor
    stats: GradStats = field(init=False)

    def __post_init__(self) -> None:
        self.stats = GradStats(list(self.params.values()), self.model.device)

    def head_linear(self) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
        """Weight and bias of a one-layer head (the ``mean_linear`` classifier)."""
        head = {k: p for k, p in self.params.items() if is_head(k)}
        weight = next((p for k, p in head.items() if k.endswith("weight")), None)
        bias = next((p for k, p in head.items() if k.endswith("bias")), None)
        if len(head) != 2 or weight is None or bias is None or weight.dim() != 2:
            raise ConfigError("dp_sgd.head_epochs needs the one-layer head: set head: "
                              "mean_linear in the model config")
        return weight, bias

    def apply_masks(self) -> None:
        """Zero the gradients of masked entries (a rank-r client's columns past r)."""
        for key, m in self.masks.items():
            g = self.params[key].grad
            if g is not None:
                g.mul_(m)


class PlainSteps:
    """Non-private steps: mean loss, backward, masks, optional norm clip, optimizer step."""

    def __init__(self, ctx: StepContext, optimizer: torch.optim.Optimizer, *,
                 max_grad_norm: float | None, scaler: Any = None) -> None:
        self.ctx, self.optimizer, self.scaler = ctx, optimizer, scaler
        self.max_grad_norm = max_grad_norm

    def step(self, idx: np.ndarray) -> float:
        """One optimizer step on the records ``idx``; returns the batch's mean loss."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.ctx.loss(idx, "mean")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        self.ctx.apply_masks()
        self.ctx.stats.add()
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(self.ctx.params.values()), self.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return float(loss.detach())

    def finish(self) -> dict[str, Any]:
        """Nothing to release; no extra results."""
        return {}

    def close(self) -> None:
        """Nothing to undo."""


@dataclass(frozen=True)
class PoissonBatching:
    """How a site's DP-SGD steps draw and cut their batches.

    Attributes:
        records: the site's training records.
        expected_batch_size: records per logical batch in expectation.
        physical_batch_size: most records per forward/backward pass.
        lengths: each record's token count (pieces are sorted by it).
        source: the sampling's randomness (apart from the noise's).
    """

    records: int
    expected_batch_size: int
    physical_batch_size: int
    lengths: np.ndarray
    source: NoiseSource

    @property
    def sample_rate(self) -> float:
        """``q``: each record's chance to be in a step's batch."""
        return min(1.0, self.expected_batch_size / self.records)

    def steps(self, epochs: float) -> int:
        """Steps for ``epochs`` passes in expectation."""
        return steps_per_round(self.records, expected_batch_size=self.expected_batch_size,
                               local_epochs=epochs)


class PrivateSteps:
    """DP-SGD steps on Poisson batches; built by :func:`make_private`.

    The first ``head_steps`` steps (``DPSGDOptions.head_epochs``) train the head alone on
    features computed once, with the received adapter, by ``features()``: a private linear
    probe inside the round, at the cost of one forward pass per record. The remaining steps
    train head and adapter together. Every step is charged alike (same σ, same rate).
    """

    def __init__(self, ctx: StepContext, optimizer: torch.optim.Optimizer, private: PrivateGradient,
                 *, gsm: Any, opts: DPSGDOptions, batching: PoissonBatching,
                 head_private: PrivateGradient | None = None,
                 features: Callable[[], torch.Tensor] | None = None) -> None:
        self.ctx, self.optimizer, self.private, self.gsm, self.opts = ctx, optimizer, private, gsm, opts
        self.batching = batching
        self.sample_rate = batching.sample_rate
        self.head_private, self._features_fn = head_private, features
        self._features: torch.Tensor | None = None
        self.head_steps_left = 0
        self.steps_taken = 0

    def batches(self, epochs: float) -> list[np.ndarray]:
        """Poisson batches for ``head_epochs`` then ``epochs`` passes in expectation (possibly
        empty ones)."""
        head = self.batching.steps(self.opts.head_epochs) if self.opts.head_epochs > 0 else 0
        self.head_steps_left = head
        n = head + (self.batching.steps(epochs) if epochs > 0 else 0)
        q, records = self.sample_rate, self.batching.records
        return [poisson_sample(records, q, self.batching.source) for _ in range(n)]

    def step(self, idx: np.ndarray) -> float:
        """One DP-SGD step over the logical batch ``idx``; returns its mean loss."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.head_steps_left > 0:
            self.head_steps_left -= 1
            total = self._head_gradient(idx)
        else:
            total = self._joint_gradient(idx)
        self.ctx.stats.add()  # of the noised gradient: post-processing of DP output
        self.optimizer.step()
        self.steps_taken += 1
        return total / max(len(idx), 1)

    def _joint_gradient(self, idx: np.ndarray) -> float:
        total = 0.0
        for piece in physical_batches(idx, self.batching.lengths,
                                      self.batching.physical_batch_size):
            loss = self.ctx.loss(piece, "sum")
            loss.backward()
            self.private.accumulate()
            total += float(loss.detach())
        self.private.release(expected_batch_size=self.sample_rate * self.batching.records)
        return total

    def _head_gradient(self, idx: np.ndarray) -> float:
        assert self.head_private is not None and self._features_fn is not None
        if self._features is None:
            self._features = self._features_fn()
        weight, bias = self.ctx.head_linear()
        total = 0.0
        if len(idx):
            x = self._features[torch.from_numpy(idx)]
            y = self.ctx.labels[torch.from_numpy(idx)].to(x.device)
            logits = x @ weight.detach().T + bias.detach()
            err = torch.softmax(logits, dim=1) - torch.nn.functional.one_hot(y, logits.shape[1])
            weight.grad_sample = torch.einsum("nk,nd->nkd", err, x)  # type: ignore[attr-defined]
            bias.grad_sample = err  # type: ignore[attr-defined]
            self.head_private.accumulate()
            total = float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        self.head_private.release(expected_batch_size=self.sample_rate * self.batching.records)
        return total

    def close(self) -> None:
        """Remove the per-sample hooks (the next round wraps the model afresh)."""
        self.gsm._close()

    def finish(self) -> dict[str, Any]:
        """Charge the steps taken to the accountant; report ε and the accountant's state."""
        acc = load_accountant(self.opts.accountant_state, accountant=self.opts.accountant)
        if self.private.noise_multiplier == 0:  # clipped, not noised: no privacy to account
            return {"dpsgd_epsilon": math.inf, "dpsgd_accountant_state": acc.state_dict(),
                    "dpsgd_noise_multiplier": 0.0, "dpsgd_sample_rate": self.sample_rate,
                    "dpsgd_clipped": dict(self.private.clipped)}
        if self.steps_taken:
            acc.add_event(step_event(noise_multiplier=self.private.noise_multiplier,
                                     sample_rate=self.sample_rate, steps=self.steps_taken))
        with quiet_absl():
            eps = acc.get_epsilon(delta=self.opts.delta) if len(acc) else 0.0
        return {"dpsgd_epsilon": eps, "dpsgd_accountant_state": acc.state_dict(),
                "dpsgd_noise_multiplier": self.private.noise_multiplier,
                "dpsgd_sample_rate": self.sample_rate,
                "dpsgd_clipped": dict(self.private.clipped)}


def dp_optimizer(params: Mapping[str, torch.nn.Parameter], opts: DPSGDOptions, lr: float,
                 *, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The DP step's optimizer, one parameter group (rate) for the adapter, one for the head."""
    rate = opts.learning_rate or lr
    adapter = [p for k, p in params.items() if not is_head(k)]
    head = [p for k, p in params.items() if is_head(k)]
    groups: list[dict[str, Any]] = []
    if adapter:
        groups.append({"params": adapter, "lr": rate})
    if head:
        groups.append({"params": head, "lr": opts.head_learning_rate or rate})
    if opts.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=rate, momentum=opts.momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, lr=rate, weight_decay=weight_decay)


def clip_groups(params: Mapping[str, torch.nn.Parameter], opts: DPSGDOptions) -> list[ClipGroup]:
    """The clip groups of the steps through the model: one over everything, head and adapter
    apart (``head_max_grad_norm``), or the adapter alone (``adapter_only``)."""
    head = tuple(p for k, p in params.items() if is_head(k))
    adapter = tuple(p for k, p in params.items() if not is_head(k))
    if opts.adapter_only:
        return [ClipGroup("adapter", adapter, opts.max_grad_norm)]
    if opts.head_max_grad_norm is None:
        return [ClipGroup("all", tuple(params.values()), opts.max_grad_norm)]
    groups = [ClipGroup("head", head, opts.head_max_grad_norm)] if head else []
    if adapter:
        groups.append(ClipGroup("adapter", adapter, opts.max_grad_norm))
    return groups


def make_private(ctx: StepContext, opts: DPSGDOptions, *, lr: float, batch_size: int,
                 lengths: Sequence[int], weight_decay: float = 0.0,
                 features: Callable[[], torch.Tensor] | None = None) -> PrivateSteps:
    """Wrap the context's model for per-sample gradients and return DP-SGD steps over it.

    ``batch_size`` is the call's batch (default expected and physical batch); ``lengths``
    each record's token count (physical batches are sorted by it); ``features()`` the
    head's input for every record (needed with ``opts.head_epochs``).
    """
    from opacus import GradSampleModule

    if opts.adapter_only:
        # The head trains only in the head steps, from closed-form per-sample gradients:
        # without requires_grad the steps through the model neither reach it nor record it.
        for key, p in ctx.params.items():
            if is_head(key):
                p.requires_grad_(False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Full backward hook.*")
        gsm = GradSampleModule(ctx.model.peft, batch_first=True, loss_reduction="sum")
    masks: dict[torch.Tensor, torch.Tensor] = {ctx.params[k]: m for k, m in ctx.masks.items()}
    source = resolve_source(opts.seed)
    private = PrivateGradient(clip_groups(ctx.params, opts), noise_multiplier=opts.noise_multiplier,
                              source=source, masks=masks)
    head_private = None
    if opts.head_epochs > 0:
        if features is None:
            raise ConfigError("dp_sgd.head_epochs needs the records' features")
        clip = opts.head_max_grad_norm or opts.max_grad_norm
        head_private = PrivateGradient([ClipGroup("head", ctx.head_linear(), clip)],
                                       noise_multiplier=opts.noise_multiplier, source=source)
    batching = PoissonBatching(records=len(lengths),
                               expected_batch_size=opts.expected_batch_size or batch_size,
                               physical_batch_size=opts.physical_batch_size or batch_size,
                               lengths=np.asarray(lengths),
                               source=resolve_source(None if opts.seed is None else opts.seed + 1))
    return PrivateSteps(ctx, dp_optimizer(ctx.params, opts, lr, weight_decay=weight_decay), private,
                        gsm=gsm, opts=opts, batching=batching, head_private=head_private,
                        features=features)

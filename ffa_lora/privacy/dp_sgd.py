"""Sample-level DP-SGD at the client: Poisson batches, per-group clipping, Gaussian noise,
physical batching, and the calibration of the noise to a whole federation's steps.

One DP-SGD step on a site with ``n`` records:

1. :func:`poisson_sample` draws the logical batch: each record independently with probability
   ``q = expected_batch_size / n`` (the sampling the accountant assumes; a batch may be empty).
2. :func:`physical_batches` cuts it into pieces of at most ``physical_batch_size`` records,
   sorted by length so that dynamic padding wastes little. Per-sample gradients do not depend
   on which records share a piece, so the pieces together give exactly the big batch's sum
   while memory stays that of one piece.
3. After each piece's backward pass :meth:`PrivateGradient.accumulate` clips every record's
   gradient, group by group (:class:`ClipGroup`: e.g. the task head to ``C_head``, the adapter
   to ``C_adapter``), and adds it to a running sum. A record then changes the sum by at most
   ``sensitivity = sqrt(Σ C_g²)`` in L2.
4. :meth:`PrivateGradient.release` adds ``N(0, (σ · sensitivity)²)`` to every coordinate of the
   sum once and divides by the expected batch size; the optimizer steps on that.

Each step is one Poisson-subsampled Gaussian mechanism with noise multiplier ``σ`` and rate
``q``; the accountant (``ffa_lora.privacy.accountant``, dp-accounting's RDP by default) composes
them. :func:`plan_dp_sgd` finds, for every site of a federation plan (rounds × local epochs,
expected batch, site sizes), the smallest ``σ`` that keeps the site within ``ε`` at ``δ`` over
all its steps of all rounds.

Randomness: noise and sampling come from :mod:`ffa_lora.privacy.rng` — the OS CSPRNG in every
real run, a seeded source only in tests.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ffa_lora.errors import ConfigError, StateError
from ffa_lora.privacy.accountant import (
    PrivacyAccountant,
    check_delta,
    check_epsilon,
    make_accountant,
)
from ffa_lora.privacy.events import PrivacyEvent
from ffa_lora.privacy.rng import NoiseSource

#: accountants a DP-SGD client can compose its steps with
DPSGD_ACCOUNTANTS: tuple[str, ...] = ("rdp", "pld")


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters DP-SGD will clip and noise (``requires_grad=True``)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value > 0
    ):
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


# -- accounting and calibration ------------------------------------------------------------


@contextlib.contextmanager
def quiet_absl() -> Iterator[None]:
    """Silence absl's warnings while ε is computed."""
    # dp-accounting's RDP logs a warning for every fractional order it drops while a bisection
    # probes small noise multipliers; the orders it keeps still bound ε.
    log = logging.getLogger("absl")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def step_event(*, noise_multiplier: float, sample_rate: float, steps: int = 1) -> PrivacyEvent:
    """The privacy event of ``steps`` DP-SGD steps with these parameters."""
    return PrivacyEvent(mechanism="gaussian", noise_multiplier=noise_multiplier, count=steps,
                        sample_rate=sample_rate)


def round_noise_std(*, learning_rate: float, steps: int, noise_multiplier: float,
                    max_grad_norm: float, expected_batch_size: int, momentum: float = 0.0) -> float:
    """Bound on the std, per value, of the DP noise in one round's change of the parameters.

    Every step adds Gaussian noise of std ``σ · C / B`` to the mean gradient (``C`` the
    per-sample clip, ``B`` the expected batch); SGD with heavy-ball momentum ``β`` carries each
    step's noise at most ``1 / (1 − β)`` times into the parameters, and ``steps`` independent
    draws add up to ``sqrt(steps)`` times one. The update leaves the client through the secure
    sum's quantizer, whose range (``secure_sum.clip``) must hold this noise: a value clipped
    there loses its share of the signal too.
    """
    if not 0 <= momentum < 1:
        raise ConfigError(f"momentum must be in [0, 1), got {momentum!r}")
    if expected_batch_size < 1 or steps < 0:
        raise ConfigError("expected_batch_size must be >= 1 and steps >= 0")
    return (learning_rate * noise_multiplier * max_grad_norm / expected_batch_size
            * math.sqrt(steps) / (1 - momentum))


def epsilon_after_steps(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                        accountant: str = "rdp") -> float:
    """ε at δ of ``steps`` DP-SGD steps from a fresh accountant."""
    acc = make_accountant(accountant)
    acc.add_event(step_event(noise_multiplier=noise_multiplier, sample_rate=sample_rate,
                             steps=steps))
    with quiet_absl():
        return acc.get_epsilon(delta=delta)


def calibrate_noise_multiplier(*, epsilon: float, delta: float, sample_rate: float, steps: int,
                               accountant: str = "rdp", rtol: float = 1e-3) -> float:
    """The smallest noise multiplier (to relative precision ``rtol``) whose ``steps`` steps at
    ``sample_rate`` spend at most ``epsilon`` at ``delta``."""
    check_epsilon(epsilon)
    check_delta(delta)
    if not 0 < sample_rate <= 1:
        raise ConfigError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")

    def eps(z: float) -> float:
        return epsilon_after_steps(noise_multiplier=z, sample_rate=sample_rate, steps=steps,
                                   delta=delta, accountant=accountant)

    lo, hi = 0.05, 1.0
    while eps(hi) > epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            raise ConfigError(f"epsilon={epsilon:g} is out of reach with {steps} steps at "
                              f"sample rate {sample_rate:g}; raise the budget or take fewer steps")
    if eps(lo) <= epsilon:
        return lo
    while hi - lo > rtol * hi:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if eps(mid) <= epsilon else (mid, hi)
    return hi


def steps_per_round(records: int, *, expected_batch_size: int, local_epochs: float) -> int:
    """DP-SGD steps one round takes: ``round(local_epochs × records / expected_batch)`` (≥ 1),
    so that the round processes ``local_epochs`` passes over the records in expectation."""
    batch = min(expected_batch_size, records)
    return max(1, round(local_epochs * records / batch))


@dataclass(frozen=True)
class SitePlan:
    """What DP-SGD does at one site over the whole federation.

    Attributes:
        site: the site's name; records: its training records.
        sample_rate: ``q = min(1, expected batch / records)``.
        steps_per_round / steps: steps of one round (after the probe rounds), of all rounds.
        head_steps_per_round: of those, the head-only steps (all of a probe round's).
        noise_multiplier: σ (noise std / sensitivity) of every step.
        epsilon: ε at the plan's δ after all steps (≤ the budget).
    """

    site: str
    records: int
    sample_rate: float
    steps_per_round: int
    steps: int
    noise_multiplier: float
    epsilon: float
    head_steps_per_round: int = 0


@dataclass(frozen=True)
class DPSGDPlan:
    """The calibration of a federation's sample-level DP: one :class:`SitePlan` per site."""

    epsilon: float
    delta: float
    expected_batch_size: int
    local_epochs: float
    rounds: int
    accountant: str
    sites: tuple[SitePlan, ...]
    head_epochs: float = 0.0
    probe_rounds: int = 0

    def site(self, name: str) -> SitePlan:
        """The plan of site ``name``."""
        for s in self.sites:
            if s.site == name:
                return s
        raise ConfigError(f"no site {name!r} in this DP-SGD plan; it has "
                          f"{', '.join(s.site for s in self.sites)}")

    def update_noise_std(self, *, learning_rate: float, head_learning_rate: float,
                         max_grad_norm: float, head_max_grad_norm: float, momentum: float,
                         noise_multipliers: Mapping[str, float] | None = None) -> float:
        """The largest :func:`round_noise_std` of any site's round: its head steps (at the head's
        rate and clip) and its steps through the model (at the adapter's), each with the site's
        σ (``noise_multipliers``, default the plan's)."""
        out = 0.0
        for s in self.sites:
            z = s.noise_multiplier if noise_multipliers is None else noise_multipliers.get(
                s.site, s.noise_multiplier)
            for lr, clip, steps in ((head_learning_rate, head_max_grad_norm, s.head_steps_per_round),
                                    (learning_rate, max_grad_norm, s.steps_per_round - s.head_steps_per_round)):
                out = max(out, round_noise_std(learning_rate=lr, steps=steps, noise_multiplier=z,
                                               max_grad_norm=clip, momentum=momentum,
                                               expected_batch_size=self.expected_batch_size))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (what ``ffa-lora privacy plan`` prints)."""
        return {"epsilon": self.epsilon, "delta": self.delta,
                "expected_batch_size": self.expected_batch_size,
                "local_epochs": self.local_epochs, "head_epochs": self.head_epochs,
                "probe_rounds": self.probe_rounds,
                "rounds": self.rounds,
                "accountant": self.accountant, "sites": [vars(s) for s in self.sites]}


def plan_site(records: int, *, epsilon: float, delta: float, expected_batch_size: int,
              local_epochs: float, rounds: int, accountant: str = "rdp", head_epochs: float = 0.0,
              probe_rounds: int = 0, probe_head_epochs: float | None = None,
              site: str = "site") -> SitePlan:
    """Calibrate one site: σ so that all its steps of all rounds spend at most ``epsilon``.

    A round takes :func:`steps_per_round` steps for ``local_epochs`` plus, with
    ``head_epochs`` > 0, as many for the head-only steps that precede them; the first
    ``probe_rounds`` rounds take only head-only steps, ``probe_head_epochs`` of them (default
    ``head_epochs``)."""
    if isinstance(records, bool) or not isinstance(records, int) or records < 1:
        raise ConfigError(f"site {site!r}: records must be an integer >= 1, got {records!r}")
    if not isinstance(expected_batch_size, int) or expected_batch_size < 1:
        raise ConfigError(f"expected_batch_size must be an integer >= 1, got {expected_batch_size!r}")
    _positive(local_epochs, "local_epochs")
    if not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be an integer >= 1, got {rounds!r}")
    if accountant not in DPSGD_ACCOUNTANTS:
        raise ConfigError(f"accountant must be one of {DPSGD_ACCOUNTANTS}, got {accountant!r}")
    q = min(1.0, expected_batch_size / records)
    if head_epochs < 0 or not math.isfinite(head_epochs):
        raise ConfigError(f"head_epochs must be >= 0, got {head_epochs!r}")
    if not isinstance(probe_rounds, int) or not 0 <= probe_rounds <= rounds or (
            probe_rounds and head_epochs <= 0):
        raise ConfigError(f"probe_rounds must be an integer in [0, rounds={rounds}] and needs "
                          f"head_epochs > 0; got {probe_rounds!r}")
    head = (steps_per_round(records, expected_batch_size=expected_batch_size,
                            local_epochs=head_epochs) if head_epochs > 0 else 0)
    per_round = head + steps_per_round(records, expected_batch_size=expected_batch_size,
                                       local_epochs=local_epochs)
    probe = head if probe_head_epochs is None else steps_per_round(
        records, expected_batch_size=expected_batch_size, local_epochs=probe_head_epochs)
    steps = per_round * (rounds - probe_rounds) + probe * probe_rounds
    z = calibrate_noise_multiplier(epsilon=epsilon, delta=delta, sample_rate=q, steps=steps,
                                   accountant=accountant)
    spent = epsilon_after_steps(noise_multiplier=z, sample_rate=q, steps=steps, delta=delta,
                                accountant=accountant)
    return SitePlan(site=site, records=records, sample_rate=q, steps_per_round=per_round,
                    steps=steps, noise_multiplier=z, epsilon=spent, head_steps_per_round=head)


def plan_dp_sgd(site_records: Mapping[str, int], *, epsilon: float, delta: float,
                expected_batch_size: int, local_epochs: float, rounds: int,
                accountant: str = "rdp", head_epochs: float = 0.0,
                probe_rounds: int = 0, probe_head_epochs: float | None = None) -> DPSGDPlan:
    """Calibrate every site of a federation (``{site: training records}``) to ``epsilon``.

    Each site gets its own σ: a smaller site samples a larger share of its records per step
    and needs more noise for the same ε. Every site's steps are ``rounds ×``
    :func:`steps_per_round`, as :func:`ffa_lora.lora.train.train_local` takes them.
    """
    if not site_records:
        raise ConfigError("plan_dp_sgd needs at least one site")
    sites = tuple(plan_site(n, epsilon=epsilon, delta=delta,
                            expected_batch_size=expected_batch_size, local_epochs=local_epochs,
                            rounds=rounds, accountant=accountant, head_epochs=head_epochs,
                            probe_rounds=probe_rounds, probe_head_epochs=probe_head_epochs,
                            site=s)
                  for s, n in site_records.items())
    return DPSGDPlan(epsilon=float(epsilon), delta=float(delta),
                     expected_batch_size=expected_batch_size, local_epochs=float(local_epochs),
                     rounds=rounds, accountant=accountant, sites=sites,
                     head_epochs=float(head_epochs), probe_rounds=probe_rounds)


def load_accountant(state: Mapping[str, Any] | None, *, accountant: str = "rdp"
                    ) -> PrivacyAccountant:
    """The DP-SGD accountant of a site, with the history of its earlier rounds.

    ``state`` is an earlier :meth:`PrivacyAccountant.state_dict` or the Opacus-era record
    ``{"accountant": …, "history": [[σ, q, steps], …]}`` (the same steps, converted).
    """
    acc = make_accountant(accountant)
    if not state:
        return acc
    if "history" in state and "events" not in state:
        try:
            events = [step_event(noise_multiplier=float(z), sample_rate=float(q), steps=int(n))
                      for z, q, n in state["history"]]
        except (TypeError, ValueError, ConfigError) as exc:
            raise StateError("DP-SGD accountant state is corrupt; restore it from a backup: "
                             "it records the privacy this site has spent") from exc
        for e in events:
            acc.add_event(e)
        return acc
    acc.load_state_dict(dict(state))
    return acc


# -- sampling and batching -----------------------------------------------------------------


def poisson_sample(n: int, sample_rate: float, source: NoiseSource) -> np.ndarray:
    """Indices of a Poisson-sampled batch: each of ``n`` records kept with ``sample_rate``."""
    if not 0 < sample_rate <= 1:
        raise ConfigError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if sample_rate == 1:
        return np.arange(n, dtype=np.int64)
    return np.flatnonzero(source.uniform(n) < sample_rate).astype(np.int64)


def physical_batches(indices: np.ndarray, lengths: Sequence[int] | np.ndarray,
                     max_size: int) -> list[np.ndarray]:
    """``indices`` cut into pieces of at most ``max_size``, sorted by ``lengths[index]``."""
    if not isinstance(max_size, int) or max_size < 1:
        raise ConfigError(f"physical batch size must be an integer >= 1, got {max_size!r}")
    idx = np.asarray(indices, dtype=np.int64)
    order = idx[np.argsort(np.asarray(lengths)[idx], kind="stable")] if len(idx) else idx
    return [order[i : i + max_size] for i in range(0, len(order), max_size)]


# -- clipping and noise --------------------------------------------------------------------


@dataclass(frozen=True)
class ClipGroup:
    """Parameters whose per-sample gradients are clipped together to ``max_grad_norm`` (L2)."""

    name: str
    params: tuple[torch.Tensor, ...]
    max_grad_norm: float

    def __post_init__(self) -> None:
        _positive(self.max_grad_norm, f"clip group {self.name!r}: max_grad_norm")
        if not self.params:
            raise ConfigError(f"clip group {self.name!r} has no parameters")


class PrivateGradient:
    """Clipped per-sample gradients summed over physical batches, noised once per step.

    Args:
        groups: the clip groups; together they are every parameter that trains.
        noise_multiplier: σ; each coordinate of the sum gets ``N(0, (σ·sensitivity)²)``.
        source: randomness of the noise (``SystemNoiseSource`` outside tests).
        masks: optional 0/1 tensor per parameter; masked entries get neither gradient nor
            noise (a rank-r client's columns past r), applied before clipping.

    Per-sample gradients are read from ``param.grad_sample`` (Opacus' ``GradSampleModule``
    with ``loss_reduction="sum"``) and removed after each :meth:`accumulate`.
    """

    def __init__(self, groups: Sequence[ClipGroup], *, noise_multiplier: float,
                 source: NoiseSource, masks: Mapping[torch.Tensor, torch.Tensor] | None = None
                 ) -> None:
        if not groups:
            raise ConfigError("DP-SGD needs at least one clip group")
        params = [p for g in groups for p in g.params]
        if len({id(p) for p in params}) != len(params):
            raise ConfigError("a parameter belongs to more than one clip group")
        if not (isinstance(noise_multiplier, (int, float)) and math.isfinite(noise_multiplier)
                and noise_multiplier >= 0):
            raise ConfigError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")
        self.groups = tuple(groups)
        self.noise_multiplier = float(noise_multiplier)
        self.source = source
        self.masks = {id(p): m for p, m in (masks or {}).items()}
        self._params = params
        self._sum = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        self.samples = 0
        self.clipped = {g.name: 0 for g in self.groups}  # local diagnostics only

    @property
    def sensitivity(self) -> float:
        """L2 bound on one record's clipped gradient: ``sqrt(Σ C_g²)``."""
        return math.sqrt(sum(g.max_grad_norm**2 for g in self.groups))

    def accumulate(self) -> int:
        """Clip this piece's per-sample gradients per group and add them; returns its size."""
        n = -1
        i = 0
        for g in self.groups:
            grads = []
            for p in g.params:
                gs = getattr(p, "grad_sample", None)
                if gs is None:
                    raise StateError(f"clip group {g.name!r}: a parameter has no per-sample "
                                     "gradient; was the model wrapped by GradSampleModule?")
                mask = self.masks.get(id(p))
                if mask is not None:
                    gs = gs * mask
                grads.append(gs)
                p.grad_sample = None  # type: ignore[attr-defined]
            n = grads[0].shape[0]
            norms = torch.sqrt(sum(x.reshape(n, -1).double().square().sum(1) for x in grads))
            factor = (g.max_grad_norm / (norms + 1e-6)).clamp(max=1.0).to(grads[0].dtype)
            self.clipped[g.name] += int((norms > g.max_grad_norm).sum())
            for x in grads:
                self._sum[i] += torch.einsum("n,n...->...", factor, x)
                i += 1
        self.samples += max(n, 0)
        return max(n, 0)

    def release(self, *, expected_batch_size: float) -> None:
        """Write ``(clipped sum + noise) / expected_batch_size`` into each ``param.grad`` and
        start the next step's sum."""
        _positive(expected_batch_size, "expected_batch_size")
        std = self.noise_multiplier * self.sensitivity
        for p, s in zip(self._params, self._sum):
            noisy = s
            if std > 0:
                noise = self.source.normal(std=std, size=s.numel())
                noisy = s + torch.from_numpy(noise).to(s.device, s.dtype).reshape(s.shape)
            mask = self.masks.get(id(p))
            if mask is not None:
                noisy = noisy * mask
            p.grad = (noisy / expected_batch_size).to(p.dtype)
            s.zero_()


def dp_sgd_noise_multiplier(*, target_epsilon: float, delta: float, sample_rate: float,
                            epochs: int | None = None, steps: int | None = None,
                            accountant: str = "rdp") -> float:
    """Noise multiplier reaching ``(target_epsilon, delta)`` after ``epochs`` (``1/q`` steps
    each) or ``steps`` steps; see :func:`plan_dp_sgd` for a whole federation."""
    if (epochs is None) == (steps is None):
        raise ConfigError("give exactly one of epochs or steps")
    if steps is None:
        assert epochs is not None
        steps = max(1, round(epochs / sample_rate))
    if accountant not in DPSGD_ACCOUNTANTS:
        raise ConfigError(f"accountant must be one of {DPSGD_ACCOUNTANTS}, got {accountant!r}")
    return calibrate_noise_multiplier(epsilon=target_epsilon, delta=delta,
                                      sample_rate=sample_rate, steps=steps, accountant=accountant)

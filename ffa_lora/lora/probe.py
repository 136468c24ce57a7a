"""The DP linear probe: the reference every DP fine-tuning run should beat.

The encoder stays frozen; each record becomes its unit-norm mean-pooled feature vector (the
``mean_linear`` head's input, computed once); a zero-initialised linear classifier on those
features trains federated over the sites — each site DP-SGD with the same mechanism as the
adapter (:class:`ffa_lora.privacy.dp_sgd.PrivateGradient`: Poisson batches, per-sample clip,
Gaussian noise, plain SGD on the noised sum over the expected batch), the server averaging the
sites' updates weighted by their records. What the adapter adds under DP is its accuracy
above this probe's at the same ε.

Per-sample gradients of softmax regression are closed-form, ``((p − y) ⊗ x, p − y)``, so a
whole federation of the probe takes seconds once the features exist.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import f1_score

from ffa_lora.errors import ConfigError, DataError
from ffa_lora.lora.batching import encode, features_of
from ffa_lora.lora.model import LoRAModel
from ffa_lora.privacy.dp_sgd import (
    ClipGroup,
    PrivateGradient,
    load_accountant,
    poisson_sample,
    quiet_absl,
    step_event,
    steps_per_round,
)
from ffa_lora.privacy.rng import NoiseSource, resolve_source


def pooled_features(model: LoRAModel, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """Unit-norm mean-pooled features (float32, records × hidden) of ``texts`` under ``model``
    (eval mode, no gradient); ``model`` must have the ``mean_linear`` head."""
    return features_of(model, encode(model, list(texts)), batch_size).cpu().numpy()


@dataclass(frozen=True)
class ProbeSite:
    """One site's probe data: features (records × dim) and labels."""

    features: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if len(self.features) != len(self.labels) or len(self.labels) == 0:
            raise DataError("a probe site needs as many labels as feature rows, at least one")


@dataclass(frozen=True)
class ProbeOptions:
    """The DP recipe of the probe.

    Attributes:
        rounds / local_epochs: federation rounds; passes over a site's records per round.
        expected_batch_size: Poisson batch size in expectation.
        learning_rate: SGD rate on the noised mean gradient.
        momentum: SGD momentum within a round (0: plain SGD).
        max_grad_norm: per-sample L2 clip.
        noise_multipliers: σ per site (from :func:`ffa_lora.privacy.dp_sgd.plan_dp_sgd`);
            ``None``: clipped but not noised (the ε = ∞ reference).
        delta / accountant: what ε is reported at / composed with.
    """

    rounds: int = 6
    local_epochs: float = 3.0
    expected_batch_size: int = 512
    learning_rate: float = 8.0
    momentum: float = 0.0
    max_grad_norm: float = 1.0
    noise_multipliers: Mapping[str, float] | None = None
    delta: float = 1e-5
    accountant: str = "rdp"


@dataclass
class ProbeResult:
    """The trained probe and what each site spent."""

    weight: np.ndarray
    bias: np.ndarray
    epsilon: dict[str, float] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class predictions for feature rows."""
        return np.asarray(np.argmax(features @ self.weight.T + self.bias, axis=1))

    def metrics(self, features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Accuracy and macro-F1 on labelled feature rows."""
        pred, y = self.predict(features), np.asarray(labels)
        return {"accuracy": float((pred == y).mean()),
                "macro_f1": float(f1_score(y, pred, average="macro",
                                           labels=list(range(self.weight.shape[0])),
                                           zero_division=0))}


def _local_round(weight: torch.Tensor, bias: torch.Tensor, site: ProbeSite, *, steps: int,
                 opts: ProbeOptions, noise_multiplier: float | None, source: NoiseSource) -> None:
    x = torch.from_numpy(site.features)
    y = torch.from_numpy(np.asarray(site.labels, dtype=np.int64))
    n = len(y)
    q = min(1.0, opts.expected_batch_size / n)
    private = PrivateGradient([ClipGroup("head", (weight, bias), opts.max_grad_norm)],
                              noise_multiplier=noise_multiplier or 0.0, source=source)
    optimizer = torch.optim.SGD([weight, bias], lr=opts.learning_rate, momentum=opts.momentum)
    for _ in range(steps):
        idx = torch.from_numpy(poisson_sample(n, q, source))
        if len(idx):
            xb = x[idx]
            p = torch.softmax(xb @ weight.detach().T + bias.detach(), dim=1)
            err = p - torch.nn.functional.one_hot(y[idx], p.shape[1]).to(p.dtype)
            weight.grad_sample = torch.einsum("nk,nd->nkd", err, xb)  # type: ignore[attr-defined]
            bias.grad_sample = err  # type: ignore[attr-defined]
            private.accumulate()
        private.release(expected_batch_size=q * n)
        optimizer.step()


def train_federated_probe(sites: Mapping[str, ProbeSite], *, num_labels: int,
                          options: ProbeOptions = ProbeOptions(),
                          seed: int | None = None) -> ProbeResult:
    """FedAvg of per-site DP-SGD on the head alone, starting from zero.

    ``seed``: TESTS AND BENCHMARKS ONLY — seeds the Poisson sampling and the noise.
    """
    if not sites:
        raise ConfigError("the probe needs at least one site")
    dim = next(iter(sites.values())).features.shape[1]
    source = resolve_source(seed)
    weight = torch.zeros((num_labels, dim), dtype=torch.float32)
    bias = torch.zeros(num_labels, dtype=torch.float32)
    total = sum(len(s.labels) for s in sites.values())
    accountants = {name: load_accountant(None, accountant=options.accountant) for name in sites}
    steps = {name: steps_per_round(len(s.labels), expected_batch_size=options.expected_batch_size,
                                   local_epochs=options.local_epochs) for name, s in sites.items()}
    start = time.perf_counter()
    for _ in range(options.rounds):
        new_w, new_b = torch.zeros_like(weight), torch.zeros_like(bias)
        for name, site in sites.items():
            w, b = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
            z = None if options.noise_multipliers is None else options.noise_multipliers[name]
            _local_round(w, b, site, steps=steps[name], opts=options, noise_multiplier=z,
                         source=source)
            share = len(site.labels) / total
            new_w += share * w.detach()
            new_b += share * b.detach()
            if z is not None:
                q = min(1.0, options.expected_batch_size / len(site.labels))
                accountants[name].add_event(step_event(noise_multiplier=z, sample_rate=q,
                                                       steps=steps[name]))
        weight, bias = new_w, new_b
    with quiet_absl():
        eps = {name: (acc.get_epsilon(delta=options.delta) if options.noise_multipliers is not None
                      else float("inf")) for name, acc in accountants.items()}
    return ProbeResult(weight=weight.numpy(), bias=bias.numpy(), epsilon=eps,
                       steps={k: v * options.rounds for k, v in steps.items()},
                       seconds=time.perf_counter() - start)

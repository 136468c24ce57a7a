"""Noise mechanisms applied by the coordinator to the aggregated (mean) update.

* ``"laplace"`` — the design's mechanism: per coordinate Laplace(0, b) with ``b = Δ1/ε_t``
  (Δ1 the L1 sensitivity from an L1 clip bound) gives pure ε_t-DP for the round.
* ``"gaussian"`` — per coordinate N(0, σ²) with ``σ = z·Δ2`` (Δ2 the L2 sensitivity from an
  L2 clip bound); (ε, δ)-DP, composed tightly by the PLD accountant.

Both take the *noise multiplier* ``z`` = noise scale / sensitivity, the quantity the
accountant composes. Noise comes from the operating system's CSPRNG unless a seeded source is
passed explicitly (tests only).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from ffa_lora.errors import ConfigError
from ffa_lora.privacy.clipping import NormKind
from ffa_lora.privacy.events import MechanismName, PrivacyEvent, check_mechanism
from ffa_lora.privacy.rng import NoiseSource, resolve_source


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")
    return float(value)


class NoiseMechanism(ABC):
    """Interface of an additive noise mechanism on a flat float vector."""

    name: ClassVar[MechanismName]
    #: The clipping norm whose bound is this mechanism's sensitivity.
    norm: ClassVar[NormKind]

    def noise_scale(self, *, noise_multiplier: float, sensitivity: float) -> float:
        """Absolute noise scale: Laplace ``b`` or Gaussian ``σ`` = multiplier × sensitivity."""
        return _positive("noise_multiplier", noise_multiplier) * _positive(
            "sensitivity", sensitivity
        )

    @abstractmethod
    def sample(self, *, scale: float, size: int, rng: NoiseSource) -> np.ndarray:
        """Draw ``size`` i.i.d. noise values of the given absolute scale."""

    @abstractmethod
    def std(self, *, scale: float) -> float:
        """Standard deviation of one noise coordinate of the given absolute scale."""

    def add_noise(
        self,
        vector: np.ndarray,
        *,
        noise_multiplier: float,
        sensitivity: float,
        rng: NoiseSource | np.random.Generator | int | None = None,
    ) -> np.ndarray:
        """Return ``vector + noise`` (float64, same shape); the input is not modified.

        Args:
            vector: the aggregated mean update.
            noise_multiplier: noise scale / sensitivity (the accountant's parameter).
            sensitivity: Δ in this mechanism's norm (:mod:`ffa_lora.privacy.sensitivity`).
            rng: ``None`` for the OS CSPRNG (always in production); a seed or generator only
                in tests.
        """
        v = np.asarray(vector, dtype=np.float64)
        scale = self.noise_scale(noise_multiplier=noise_multiplier, sensitivity=sensitivity)
        noise = self.sample(scale=scale, size=v.size, rng=resolve_source(rng))
        return v + noise.reshape(v.shape)

    def event(self, *, noise_multiplier: float, count: int = 1) -> PrivacyEvent:
        """The accountant event for ``count`` releases with this multiplier."""
        return PrivacyEvent(mechanism=self.name, noise_multiplier=noise_multiplier, count=count)


class LaplaceMechanism(NoiseMechanism):
    """Laplace(0, b) per coordinate; ``b = Δ1 · z`` and a round's pure ε is ``1/z``."""

    name = "laplace"
    norm = "l1"

    def sample(self, *, scale: float, size: int, rng: NoiseSource) -> np.ndarray:
        """Laplace(0, scale) samples."""
        return rng.laplace(scale=scale, size=size)

    def std(self, *, scale: float) -> float:
        """``sqrt(2)·b``."""
        return math.sqrt(2.0) * scale

    @staticmethod
    def scale_for_epsilon(*, sensitivity: float, epsilon: float) -> float:
        """The design's formula ``b = Δf / ε_t``."""
        return _positive("sensitivity", sensitivity) / _positive("epsilon", epsilon)


class GaussianMechanism(NoiseMechanism):
    """N(0, σ²) per coordinate with ``σ = z · Δ2``."""

    name = "gaussian"
    norm = "l2"

    def sample(self, *, scale: float, size: int, rng: NoiseSource) -> np.ndarray:
        """N(0, scale²) samples."""
        return rng.normal(std=scale, size=size)

    def std(self, *, scale: float) -> float:
        """``σ``."""
        return scale


MECHANISMS: dict[str, type[NoiseMechanism]] = {
    LaplaceMechanism.name: LaplaceMechanism,
    GaussianMechanism.name: GaussianMechanism,
}


def get_mechanism(name: str) -> NoiseMechanism:
    """Instantiate a registered mechanism by name (``"laplace"`` or ``"gaussian"``)."""
    return MECHANISMS[check_mechanism(name)]()

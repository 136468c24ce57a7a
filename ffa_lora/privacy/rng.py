"""Randomness for DP noise: a cryptographically secure source, and a seeded one for tests.

Every sampler here turns uniform variates into the target distribution by its inverse CDF, so
the secure source and the test source share exactly the same transforms (the statistical tests
of the seeded source therefore check the code path used in production).

The secure source reads the operating system's CSPRNG (``os.urandom``: getrandom/ChaCha20 on
Linux) for every draw; nothing is seeded, nothing can be replayed. Known limitation: noise is
produced in IEEE-754 doubles (53-bit uniforms), so the textbook floating-point attack on the
Laplace mechanism (Mironov, CCS 2012) is not mitigated by snapping; in this system the noised
update is additionally quantized before it is published or encrypted, which coarsens the
low-order bits that attack relies on.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod

import numpy as np
from scipy import special

_TWO_POW_53 = float(2**53)


def _to_open_unit(bits: np.ndarray) -> np.ndarray:
    """Map uniform 64-bit integers to doubles in the open interval (0, 1)."""
    top53 = (bits >> np.uint64(11)).astype(np.float64)
    return (top53 + 0.5) / _TWO_POW_53


class NoiseSource(ABC):
    """Source of uniform variates plus the inverse-CDF samplers the mechanisms need."""

    #: True only for the operating-system CSPRNG; production code refuses anything else.
    secure: bool = False

    @abstractmethod
    def uniform(self, size: int) -> np.ndarray:
        """Return ``size`` independent Uniform(0, 1) doubles, never exactly 0 or 1."""

    def laplace(self, *, scale: float, size: int) -> np.ndarray:
        """Laplace(0, scale) via the inverse CDF."""
        u = self.uniform(size) - 0.5
        return -scale * np.sign(u) * np.log1p(-2.0 * np.abs(u))

    def normal(self, *, std: float, size: int) -> np.ndarray:
        """Normal(0, std^2) via the inverse CDF (``scipy.special.ndtri``)."""
        return std * special.ndtri(self.uniform(size))

    def gamma(self, *, shape: float, scale: float, size: int) -> np.ndarray:
        """Gamma(shape, scale) via the inverse regularized incomplete gamma function."""
        return scale * special.gammaincinv(shape, self.uniform(size))


class SystemNoiseSource(NoiseSource):
    """Uniforms from ``os.urandom`` (the OS CSPRNG). Use this for every real run."""

    secure = True

    def uniform(self, size: int) -> np.ndarray:
        """Return ``size`` uniforms built from fresh OS random bytes."""
        if size <= 0:
            return np.empty(0, dtype=np.float64)
        bits = np.frombuffer(os.urandom(8 * size), dtype=np.uint64)
        return _to_open_unit(bits)


class SeededNoiseSource(NoiseSource):
    """Reproducible source for TESTS ONLY: noise from it gives no privacy to anyone who knows
    the seed. Wraps a numpy ``Generator``; the transforms are the production ones."""

    secure = False

    def __init__(self, seed: int | np.random.Generator) -> None:
        self._gen = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def uniform(self, size: int) -> np.ndarray:
        """Return ``size`` uniforms from the seeded generator."""
        if size <= 0:
            return np.empty(0, dtype=np.float64)
        bits = self._gen.integers(0, 2**64, size=size, dtype=np.uint64, endpoint=False)
        return _to_open_unit(bits)


def resolve_source(rng: NoiseSource | np.random.Generator | int | None) -> NoiseSource:
    """Return the secure source for ``None``; wrap a seed or numpy Generator (tests only)."""
    if rng is None:
        return SystemNoiseSource()
    if isinstance(rng, NoiseSource):
        return rng
    if isinstance(rng, (np.random.Generator, int)) and not isinstance(rng, bool):
        return SeededNoiseSource(rng)
    raise TypeError(
        "rng must be None (secure OS randomness), a NoiseSource, or — in tests only — "
        f"an int seed or numpy Generator; got {type(rng).__name__}"
    )

"""Clipping and unbiased stochastic quantization of float updates to b-bit codes.

A value x is clipped to [-C, C] and mapped affinely onto [0, L] with L = 2^b - 1 levels:
y = (x + C)·L / (2C). The code is floor(y) + Bernoulli(y - floor(y)), so E[code] = y exactly
(unbiased) and |code - y| < 1. Codes are non-negative, which is what the packing codec needs.

The same quantizer is the INT8 communication compression when encryption is off.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ffa_lora.errors import ConfigError, CryptoError

__all__ = ["QuantizationError", "Quantizer"]


class QuantizationError(CryptoError):
    """An update cannot be quantized (non-finite values) or codes are out of range."""


class Quantizer:
    """Clip to ±``clip`` and quantize to ``bits``-bit codes with stochastic rounding.

    Args:
        clip: the clipping bound C > 0 (per coordinate).
        bits: code width b, 2..16 (8 default, 16 for finer steps).
    """

    def __init__(self, *, clip: float, bits: int = 8) -> None:
        clip = float(clip)
        if not np.isfinite(clip) or clip <= 0:
            raise ConfigError(f"clip must be a finite positive number, got {clip!r}")
        if isinstance(bits, bool) or int(bits) != bits or not 2 <= int(bits) <= 16:
            raise ConfigError(f"bits must be an integer in 2..16 (8 or 16 usual), got {bits!r}")
        self.clip = clip
        self.bits = int(bits)
        self.levels = (1 << self.bits) - 1
        self.step = 2.0 * clip / self.levels
        self.dtype: type[np.unsignedinteger[Any]] = np.uint8 if self.bits <= 8 else np.uint16

    def __repr__(self) -> str:
        return f"Quantizer(clip={self.clip}, bits={self.bits})"

    def quantize(self, x: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
        """Clip and stochastically round ``x`` to codes in [0, levels] (uint8 or uint16).

        Raises:
            QuantizationError: ``x`` holds NaN or infinity.
        """
        a = np.asarray(x, dtype=np.float64).ravel()
        if not np.all(np.isfinite(a)):
            raise QuantizationError(
                "update contains NaN or infinite values; check the local training step"
            )
        y = (np.clip(a, -self.clip, self.clip) + self.clip) * (self.levels / (2.0 * self.clip))
        np.clip(y, 0.0, float(self.levels), out=y)
        low = np.floor(y)
        up = rng.random(y.shape) < (y - low)
        codes = low.astype(np.int64) + up
        np.minimum(codes, self.levels, out=codes)
        return codes.astype(self.dtype)

    def dequantize(self, codes: np.ndarray) -> np.ndarray:
        """Map one client's codes back to float32 values in [-C, C]."""
        c = np.asarray(codes)
        if c.size and (c.min() < 0 or c.max() > self.levels):
            raise QuantizationError(f"codes must lie in [0, {self.levels}]")
        return (c.astype(np.float64) * self.step - self.clip).astype(np.float32)

    def dequantize_mean(self, code_sums: np.ndarray,
                        weight_totals: np.ndarray | float) -> np.ndarray:
        """Weighted mean of the clients' values from the sums of their (weighted) codes.

        Args:
            code_sums: ``code_sums[j] = Σ_i w_i·q_ij`` over the clients that have position j.
            weight_totals: ``Σ w_i`` over those clients, per position (array, for
                heterogeneous ranks) or one number for all positions.

        Returns:
            float32 array; positions whose weight total is 0 are 0.0.
        """
        s = np.asarray(code_sums, dtype=np.float64)
        w = np.broadcast_to(np.asarray(weight_totals, dtype=np.float64), s.shape)
        if np.any(w < 0):
            raise QuantizationError("weight totals must be non-negative")
        if np.any(s < 0) or np.any(s > w * self.levels):
            raise QuantizationError(
                "code sums exceed weight_total × levels: the weight totals do not match the sums"
            )
        out = np.zeros(s.shape, dtype=np.float64)
        has = w > 0
        out[has] = s[has] / w[has] * self.step - self.clip
        return out.astype(np.float32)

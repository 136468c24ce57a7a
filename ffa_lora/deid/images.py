"""Additive Gaussian noise for image tensors (torch or numpy)."""

from __future__ import annotations

import math
from typing import Any

from ffa_lora.errors import DeidError


def add_image_noise(
    x: Any,
    *,
    sigma: float,
    low: float = 0.0,
    high: float = 1.0,
    generator: Any = None,
) -> Any:
    """Return ``clip(x + N(0, sigma²), low, high)`` as a new tensor of the same type.

    ``x`` is a ``torch.Tensor`` or ``numpy.ndarray`` with values in ``[low, high]`` (use
    ``high=255`` for 8-bit images: integer inputs are rounded back to their dtype).
    ``generator`` is a ``torch.Generator`` for tensors or a ``numpy.random.Generator`` for
    arrays; ``None`` draws fresh randomness. ``sigma=0`` returns a clipped copy.
    """
    if not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma < 0:
        raise DeidError(f"sigma must be a finite number >= 0, got {sigma!r}")
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise DeidError(f"need finite low < high for the valid pixel range, got [{low}, {high}]")
    module = type(x).__module__
    if module.startswith("torch"):
        return _torch_noise(x, sigma=float(sigma), low=low, high=high, generator=generator)
    if module.startswith("numpy"):
        return _numpy_noise(x, sigma=float(sigma), low=low, high=high, generator=generator)
    raise DeidError(
        f"add_image_noise takes a torch.Tensor or numpy.ndarray, got {type(x).__name__}"
    )


def _torch_noise(x: Any, *, sigma: float, low: float, high: float, generator: Any) -> Any:
    import torch

    if generator is not None and not isinstance(generator, torch.Generator):
        raise DeidError("for a torch.Tensor pass a torch.Generator (or None) as generator")
    work_dtype = x.dtype if x.is_floating_point() else torch.float32
    base = x.to(work_dtype)
    if sigma > 0:
        noise = torch.randn(x.shape, generator=generator, dtype=work_dtype, device=x.device)
        base = base + sigma * noise
    out = base.clamp(low, high)
    if not x.is_floating_point():
        out = out.round().to(x.dtype)
    return out


def _numpy_noise(x: Any, *, sigma: float, low: float, high: float, generator: Any) -> Any:
    import numpy as np

    if generator is None:
        generator = np.random.default_rng()
    if not isinstance(generator, np.random.Generator):
        raise DeidError("for a numpy array pass a numpy.random.Generator (or None) as generator")
    floating = np.issubdtype(x.dtype, np.floating)
    base = x.astype(x.dtype if floating else np.float64, copy=True)
    if sigma > 0:
        base = base + generator.normal(0.0, sigma, size=x.shape).astype(base.dtype)
    out = np.clip(base, low, high)
    if not floating:
        out = np.rint(out).astype(x.dtype)
    return out

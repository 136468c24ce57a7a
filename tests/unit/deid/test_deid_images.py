"""Gaussian noise on image tensors: statistics, clipping, dtypes, determinism, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ffa_lora.deid import add_image_noise
from ffa_lora.errors import DeidError


def test_torch_noise_statistics_and_range() -> None:
    x = torch.full((3, 128, 128), 0.5)
    g = torch.Generator().manual_seed(0)
    y = add_image_noise(x, sigma=0.05, generator=g)
    noise = y - x
    assert y.shape == x.shape and y.dtype == x.dtype
    assert abs(noise.mean().item()) < 0.002
    assert noise.std().item() == pytest.approx(0.05, rel=0.03)
    assert torch.equal(x, torch.full((3, 128, 128), 0.5))  # input untouched


def test_clipped_to_valid_range() -> None:
    x = torch.tensor([0.0, 1.0, 0.0, 1.0]).repeat(1000)
    y = add_image_noise(x, sigma=0.5, generator=torch.Generator().manual_seed(1))
    assert y.min().item() >= 0.0 and y.max().item() <= 1.0
    assert (y == 0.0).any() and (y == 1.0).any()


def test_numpy_and_uint8() -> None:
    rng = np.random.default_rng(0)
    x = np.full((64, 64), 0.5, dtype=np.float32)
    y = add_image_noise(x, sigma=0.1, generator=rng)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    assert float((y - x).std()) == pytest.approx(0.1, rel=0.05)
    img = np.full((64, 64), 128, dtype=np.uint8)
    out = add_image_noise(img, sigma=10.0, low=0, high=255, generator=np.random.default_rng(1))
    assert out.dtype == np.uint8 and 20 < out.astype(float).var() ** 0.5 * 3 < 40
    t = torch.full((16, 16), 250, dtype=torch.uint8)
    tout = add_image_noise(t, sigma=20.0, low=0, high=255, generator=torch.Generator())
    assert tout.dtype == torch.uint8 and int(tout.max()) <= 255


def test_deterministic_with_generator() -> None:
    x = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(5))
    a = add_image_noise(x, sigma=0.1, generator=torch.Generator().manual_seed(7))
    b = add_image_noise(x, sigma=0.1, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert torch.equal(add_image_noise(x, sigma=0.0), x.clamp(0, 1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sigma": -0.1}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"sigma": 0.1, "low": 1.0, "high": 0.0}, "low < high"),
        ({"sigma": 0.1, "generator": np.random.default_rng()}, "torch.Generator"),
    ],
)
def test_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DeidError, match=message):
        add_image_noise(torch.zeros(4), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(DeidError, match="torch.Tensor or numpy.ndarray"):
        add_image_noise([0.1, 0.2], sigma=0.1)

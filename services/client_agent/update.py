"""A client's update on its way out: DP clipping and noise share, quantization, packing and
encryption, and the encrypted update kept until the edge acknowledges it.

Nothing here trains or loads a model (and nothing imports torch): the load and fault
benchmarks reuse it with synthetic updates in processes that run many clients.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

import numpy as np

from ffa_lora.crypto import (
    CiphertextVector,
    Encryptor,
    ObfuscatorPool,
    PackingLayout,
    PublicKey,
    Quantizer,
)
from ffa_lora.privacy.clipping import clip_by_norm
from ffa_lora.privacy.distributed import noise_share
from services.common import domain as d

log = logging.getLogger(__name__)


@dataclass
class PreparedUpdate:
    """An encrypted update ready to stream, kept until the edge acknowledges it."""

    round: int
    vec: CiphertextVector
    idempotency_key: str
    num_samples: int
    rank: int
    quality: d.Quality
    base_version: int
    train_seconds: float
    crypto_seconds: float


def encrypt_update(delta: np.ndarray, task: d.RoundTask, public_key: PublicKey, layout: PackingLayout,
                   *, pool: ObfuscatorPool | None = None) -> tuple[CiphertextVector, float]:
    """Clip (DP bound), add the noise share (distributed DP), quantize with stochastic rounding,
    pack and encrypt one update; returns the ciphertexts and the seconds it took."""
    t1 = time.perf_counter()
    delta = privatize(np.asarray(delta, dtype=np.float64), task)
    clipped = float(np.mean(np.abs(delta) > task.secure_sum.clip)) if len(delta) else 0.0
    if clipped > 0.01:
        log.warning("%.1f%% of update values exceed the quantization range +-%g and are clipped; "
                    "consider a larger secure_sum.clip", 100 * clipped, task.secure_sum.clip)
    log.info("update: max |value| %.4g, %.2f%% outside +-%g", float(np.max(np.abs(delta))) if len(delta) else 0.0,
             100 * clipped, task.secure_sum.clip)
    codes = Quantizer(clip=task.secure_sum.clip, bits=task.secure_sum.bits).quantize(
        delta, rng=np.random.default_rng(secrets.randbits(128)))
    vec = Encryptor(public_key, layout, pool=pool).encrypt_codes(codes)
    return vec, time.perf_counter() - t1


def privatize(delta: np.ndarray, task: d.RoundTask) -> np.ndarray:
    """Norm clipping (the DP bound) and, in distributed mode, this client's noise share."""
    p = task.privacy
    if p.mode == "off" or p.norm_clip <= 0:
        return delta
    norm = "l1" if p.mechanism == "laplace" else "l2"
    delta = clip_by_norm(delta, bound=p.norm_clip, norm=norm).vector  # type: ignore[arg-type]
    if p.mode == "distributed" and p.noise_scale > 0:
        # The edge multiplies this update by the client's weight, so the share is divided
        # by it: the weighted shares then add up to noise of the planned scale.
        scale = p.noise_scale / max(1, task.assignment.weight)
        delta = delta + noise_share(mechanism=p.mechanism, scale=scale, n_clients=p.share_clients,  # type: ignore[arg-type]
                                    tolerated_dropouts=p.tolerated_dropouts, size=len(delta))
    return delta

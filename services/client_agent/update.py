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
from ffa_lora.privacy.clipping import NormKind, clip_by_norm
from ffa_lora.privacy.distributed import noise_share
from ffa_lora.privacy.rounding import quantize_within_norm, rounding_slack
from services.common import domain as d

log = logging.getLogger(__name__)


def under_dp(task: d.RoundTask) -> bool:
    """Whether the round runs under differential privacy (client-level or DP-SGD)."""
    return task.privacy.mode != "off" or task.privacy.dpsgd_noise_multiplier > 0


def reported_metadata(
    task: d.RoundTask, *, num_samples: int, quality: d.Quality
) -> tuple[int, d.Quality]:
    """The record count and quality scalars this client sends with its update.

    Without DP: all of them (the coordinator takes the median of the losses, the dynamic rank
    scheduler reads the gradient statistics; the record count is informational only: weights
    come from the federation's policy). Under DP every scalar computed from
    the site's records -- training loss, validation losses and accuracy (the validation records
    are the site's records too), gradient signal-to-noise ratio, record count -- would be
    released without noise, so none is sent (all 0). What remains is the DP-SGD ε, which is
    the site's own privacy accounting: it depends on the public noise settings and the number
    of local steps, not on what the records contain.
    """
    if not under_dp(task):
        return num_samples, quality
    return 0, d.Quality(dpsgd_epsilon=quality.dpsgd_epsilon)


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
    # The client's signed ContributionClaim about ``vec`` (added by the agent before upload).
    contribution: d.SignedBytes | None = None


def encrypt_update(delta: np.ndarray, task: d.RoundTask, public_key: PublicKey, layout: PackingLayout,
                   *, pool: ObfuscatorPool | None = None) -> tuple[CiphertextVector, float]:
    """Clip (DP bound), add the noise share (distributed DP), quantize with stochastic rounding
    (under DP: bounded, so the rounded update stays within the norm the noise covers), pack and
    encrypt one update; returns the ciphertexts and the seconds it took."""
    t1 = time.perf_counter()
    delta, share = privatize(np.asarray(delta, dtype=np.float64), task)
    clipped = float(np.mean(np.abs(delta) > task.secure_sum.clip)) if len(delta) else 0.0
    if clipped > 0.01:
        log.warning("%.1f%% of update values exceed the quantization range +-%g and are clipped; "
                    "consider a larger secure_sum.clip", 100 * clipped, task.secure_sum.clip)
    log.info("update: max |value| %.4g, %.2f%% outside +-%g", float(np.max(np.abs(delta))) if len(delta) else 0.0,
             100 * clipped, task.secure_sum.clip)
    quantizer = Quantizer(clip=task.secure_sum.clip, bits=task.secure_sum.bits)
    rng = np.random.default_rng(secrets.randbits(128))
    p = task.privacy
    if p.mode == "off" or p.norm_clip <= 0:
        codes = quantizer.quantize(delta, rng=rng)
    else:
        norm: NormKind = "l1" if p.mechanism == "laplace" else "l2"
        beta = rounding_slack(
            norm_clip=p.norm_clip, step=quantizer.step, dimension=len(delta), norm=norm
        )
        codes = quantize_within_norm(
            delta, quantizer=quantizer, bound=p.norm_clip + beta, norm=norm, rng=rng, offset=share
        )
    vec = Encryptor(public_key, layout, pool=pool).encrypt_codes(codes)
    return vec, time.perf_counter() - t1


def privatize(delta: np.ndarray, task: d.RoundTask) -> tuple[np.ndarray, np.ndarray | None]:
    """Norm clipping (the DP bound) and, in distributed mode, this client's noise share; returns
    the update to quantize and the share inside it (None without one)."""
    p = task.privacy
    if p.mode == "off" or p.norm_clip <= 0:
        return delta, None
    norm = "l1" if p.mechanism == "laplace" else "l2"
    delta = clip_by_norm(delta, bound=p.norm_clip, norm=norm).vector  # type: ignore[arg-type]
    if p.mode == "distributed" and p.noise_scale > 0:
        # The edge multiplies this update by the client's weight, so the share is divided
        # by it: the weighted shares then add up to noise of the planned scale.
        scale = p.noise_scale / max(1, task.assignment.weight)
        share = noise_share(
            mechanism=p.mechanism,  # type: ignore[arg-type]
            scale=scale,
            n_clients=p.share_clients,
            tolerated_dropouts=p.tolerated_dropouts,
            size=len(delta),
        )
        return delta + share, share
    return delta, None

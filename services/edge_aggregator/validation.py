"""Checks on the plaintext scalars a client sends with its update, made at the edge.

Besides its ciphertexts a client reports a few numbers in the clear: its training and
validation losses, validation accuracy, gradient signal-to-noise ratio, sample count, DP-SGD
epsilon, timings and, in asynchronous mode, the adapter version it trained from. The
coordinator uses them for convergence, rank decisions, staleness weights and the round
summary, so one client sending NaN, infinity or 1e308 could end the federation or steer it.
Every such scalar is checked here, before the update is counted: finite and within a range an
honest client cannot leave. A refused update gets ``InvalidMessage`` with reason
``invalid_scalar`` (or ``base_version``) and a message naming the field.

These bounds catch impossible values only; a client can still report plausible lies about
itself. The coordinator therefore also aggregates the reported losses robustly (a median) and
never takes weights from a client.
"""

from __future__ import annotations

import math
from collections.abc import Collection

from services.common import domain as d
from services.common.rejections import InvalidMessage

__all__ = [
    "MAX_EPSILON",
    "MAX_GRAD_SNR",
    "MAX_LOSS",
    "MAX_SAMPLES",
    "MAX_SECONDS",
    "check_base_version",
    "check_hello",
    "check_update_scalars",
]

MAX_LOSS = 1e4
"""Largest loss accepted (cross-entropy of a uniform guess over 10^4 classes is 9.2)."""

MAX_GRAD_SNR = 1e6
"""Largest gradient signal-to-noise ratio accepted."""

MAX_EPSILON = 1e6
"""Largest sample-level DP-SGD epsilon a client may report (it only reports, it spends it)."""

MAX_SECONDS = 7 * 86400.0
"""Longest training or encryption time a client may report for one round."""

MAX_SAMPLES = 10**12
"""Largest sample count a client may report."""


def _in_range(field: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise InvalidMessage("invalid_scalar",
                             f"{field} is {value!r}: send a finite number in [{low:g}, {high:g}]")


def check_hello(*, num_samples: int, check_in_s: float, max_check_in_s: float) -> None:
    """Refuse a hello with an impossible sample count (informational only: weights come from
    the coordinator's policy) or a check-in interval this edge does not accept."""
    if not 0 <= num_samples <= MAX_SAMPLES:
        raise InvalidMessage("invalid_scalar", f"num_samples is {num_samples}: at most {MAX_SAMPLES} are accepted")
    if not (math.isfinite(check_in_s) and 0 <= check_in_s <= max_check_in_s):
        raise InvalidMessage("bad_hello", f"check_in_interval_s must be in [0, {max_check_in_s:.0f}] seconds on this "
                                          f"edge (edge.max_check_in_s), got {check_in_s}")


def check_update_scalars(*, num_samples: int, quality: d.Quality, train_seconds: float,
                         crypto_seconds: float) -> None:
    """Refuse an update whose reported scalars are not finite or out of range."""
    if not 0 <= num_samples <= MAX_SAMPLES:
        raise InvalidMessage("invalid_scalar", f"num_samples is {num_samples}: at most {MAX_SAMPLES} are accepted")
    for field, value in (("quality.train_loss", quality.train_loss),
                         ("quality.val_loss_before", quality.val_loss_before),
                         ("quality.val_loss_after", quality.val_loss_after)):
        _in_range(field, value, 0.0, MAX_LOSS)
    _in_range("quality.val_accuracy", quality.val_accuracy, 0.0, 1.0)
    _in_range("quality.grad_snr", quality.grad_snr, 0.0, MAX_GRAD_SNR)
    _in_range("quality.dpsgd_epsilon", quality.dpsgd_epsilon, 0.0, MAX_EPSILON)
    _in_range("train_seconds", train_seconds, 0.0, MAX_SECONDS)
    _in_range("crypto_seconds", crypto_seconds, 0.0, MAX_SECONDS)


def check_base_version(base_version: int, *, mode: str, current_version: int, served: Collection[int]) -> None:
    """Refuse a ``base_version`` the client cannot have trained from.

    Synchronous rounds: any version up to the round's adapter version (it is reported only).
    Asynchronous rounds: the staleness weight depends on it, so it must be a version this edge
    has sent this client (``served``); a client cannot claim a fresher adapter than it got.
    """
    if base_version > current_version:
        raise InvalidMessage("base_version",
                             f"base_version {base_version} is newer than the round's adapter version {current_version}")
    if mode == "async" and base_version not in served:
        raise InvalidMessage("base_version",
                             f"base_version {base_version} is not an adapter version this edge sent this client; "
                             "train on the adapter of your current task")

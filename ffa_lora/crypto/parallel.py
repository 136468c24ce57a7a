"""Process-parallel big-integer work: obfuscators r^n mod n² and CRT decryption.

gmpy2 holds the GIL, so parallelism uses worker processes. Workers start with the ``spawn``
method by default (safe next to gRPC and torch threads, which do not survive ``fork``); a
:class:`WorkerPool` starts its processes lazily and keeps them, so the start-up cost is paid
once per service, not per round. The decryption workers receive the private key once, in the
pool initializer, never per task.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import secrets
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Self

import gmpy2

from ffa_lora.errors import ConfigError

__all__ = [
    "WorkerPool",
    "available_cores",
    "crt_decrypt",
    "fresh_obfuscators",
    "split_batches",
]


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def split_batches(count: int, parts: int, *, min_batch: int = 1) -> list[int]:
    """Split ``count`` items into at most ``parts`` near-equal batch sizes (none empty)."""
    if count <= 0:
        return []
    parts = max(1, min(parts, count // max(1, min_batch) or 1))
    base, extra = divmod(count, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def fresh_obfuscators(n: int, count: int) -> list[gmpy2.mpz]:
    """``count`` values r^n mod n² for fresh uniformly random r in [1, n) with gcd(r, n) = 1.

    Randomness comes from the OS (``secrets``), independently in every process.
    """
    nn = gmpy2.mpz(n)
    n2 = nn * nn
    out: list[gmpy2.mpz] = []
    while len(out) < count:
        r = gmpy2.mpz(secrets.randbelow(int(nn) - 1) + 1)
        if gmpy2.gcd(r, nn) != 1:  # only if r hits a prime factor: negligible, but be exact
            continue
        out.append(gmpy2.powmod(r, nn, n2))
    return out


def crt_decrypt(c: gmpy2.mpz, p: gmpy2.mpz, q: gmpy2.mpz, psquare: gmpy2.mpz,
                qsquare: gmpy2.mpz, hp: gmpy2.mpz, hq: gmpy2.mpz,
                q_inverse: gmpy2.mpz) -> gmpy2.mpz:
    """Paillier decryption of one ciphertext by CRT (g = n + 1)."""
    mp_ = ((gmpy2.powmod(c % psquare, p - 1, psquare) - 1) // p) * hp % p
    mq_ = ((gmpy2.powmod(c % qsquare, q - 1, qsquare) - 1) // q) * hq % q
    return mq_ + ((mp_ - mq_) * q_inverse % p) * q


# -- decryption worker state (set once per worker by the initializer) ------------------------

_DECRYPT_KEY: tuple[gmpy2.mpz, ...] | None = None


def _init_decrypt_worker(p: int, q: int) -> None:
    global _DECRYPT_KEY
    _DECRYPT_KEY = _crt_params(p, q)


def _crt_params(p: int, q: int) -> tuple[gmpy2.mpz, ...]:
    p_, q_ = sorted((gmpy2.mpz(p), gmpy2.mpz(q)))
    ps, qs = p_ * p_, q_ * q_
    g = p_ * q_ + 1
    hp = gmpy2.invert((gmpy2.powmod(g, p_ - 1, ps) - 1) // p_, p_)
    hq = gmpy2.invert((gmpy2.powmod(g, q_ - 1, qs) - 1) // q_, q_)
    return (p_, q_, ps, qs, hp, hq, gmpy2.invert(q_, p_))


def decrypt_batch(ciphertexts: Sequence[int], key: tuple[gmpy2.mpz, ...] | None = None
                  ) -> list[gmpy2.mpz]:
    """CRT-decrypt a batch with ``key`` (from :func:`crt_params`) or the worker's key."""
    k = key if key is not None else _DECRYPT_KEY
    if k is None:
        raise RuntimeError("decryption worker was started without a key")
    return [crt_decrypt(gmpy2.mpz(c), *k) for c in ciphertexts]


def crt_params(p: int, q: int) -> tuple[gmpy2.mpz, ...]:
    """(p, q, p², q², hp, hq, q^-1 mod p) for :func:`decrypt_batch`."""
    return _crt_params(p, q)


def _shutdown_executor(executor: ProcessPoolExecutor) -> None:
    executor.shutdown(wait=False, cancel_futures=True)


class WorkerPool:
    """A lazily started, persistent process pool.

    Args:
        workers: number of worker processes (default: all available cores). ``0`` means no
            processes at all: work runs in the calling process, synchronously.
        initializer, initargs: run once in every worker (e.g. to install a key).
        start_method: multiprocessing start method, ``"spawn"`` by default.
    """

    def __init__(self, *, workers: int | None = None,
                 initializer: Callable[..., None] | None = None,
                 initargs: tuple[Any, ...] = (), start_method: str = "spawn") -> None:
        if workers is not None and (isinstance(workers, bool) or int(workers) < 0):
            raise ConfigError(f"workers must be a non-negative integer or None, got {workers!r}")
        self.workers = int(workers) if workers is not None else available_cores()
        self._initializer = initializer
        self._initargs = initargs
        self._start_method = start_method
        self._executor: ProcessPoolExecutor | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._lock = threading.Lock()

    @property
    def in_process(self) -> bool:
        """True when work runs in the calling process (workers == 0)."""
        return self.workers == 0

    def executor(self) -> ProcessPoolExecutor:
        """The process pool, started on first use."""
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=mp.get_context(self._start_method),
                    initializer=self._initializer,
                    initargs=self._initargs,
                )
                # Owners that are dropped without close() must not leave processes behind.
                self._finalizer = weakref.finalize(self, _shutdown_executor, self._executor)
            return self._executor

    @property
    def parallelism(self) -> int:
        """How many tasks run at once (1 when in-process)."""
        return max(1, self.workers)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run ``fn(*args)`` in a worker (or inline, already completed, when in-process)."""
        if self.in_process:
            fut: Future[Any] = Future()
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - mirrors executor semantics
                fut.set_exception(exc)
            return fut
        return self.executor().submit(fn, *args)

    def warm_up(self) -> None:
        """Start all worker processes now (so that timing later excludes start-up)."""
        if self.in_process:
            return
        futs = [self.executor().submit(available_cores) for _ in range(self.workers * 2)]
        for f in futs:
            f.result()

    def close(self) -> None:
        """Stop the worker processes (cancelling queued work)."""
        with self._lock:
            ex, self._executor = self._executor, None
            fin, self._finalizer = self._finalizer, None
        if fin is not None:
            fin.detach()
        if ex is not None:
            ex.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

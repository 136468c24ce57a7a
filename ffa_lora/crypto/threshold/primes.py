"""Safe primes p = 2p' + 1 (p' prime) for the threshold key ceremony, searched in parallel.

Shoup's threshold scheme needs n = p·q with safe primes so that the group of squares mod n²
is cyclic of order n·p'·q' with no small prime factors: then a random square generates it
(the verification base) and squaring removes every small-order component a cheating key
holder could hide in a decryption share.

Search: pick a random odd p' with its two top bits set, sieve a window of candidates
p' + 2k against every odd prime below ``SIEVE_LIMIT`` for *both* p' and 2p' + 1 (numpy
slices, no loop per candidate), then run a base-2 Fermat test on 2p' + 1 and finally
Miller–Rabin (gmpy2, 32 rounds) on both. Each worker process searches its own random
windows; the first safe prime found wins.
"""

from __future__ import annotations

import secrets
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_futures
from functools import lru_cache
from typing import Any

import gmpy2
import numpy as np

from ffa_lora.crypto.parallel import WorkerPool
from ffa_lora.errors import ConfigError

__all__ = ["SIEVE_LIMIT", "is_safe_prime", "random_safe_prime", "safe_prime_window"]

SIEVE_LIMIT = 1 << 16
_WINDOW = 1 << 15  # candidates p' + 2k, k < _WINDOW, per sieve pass
_MR_ROUNDS = 32
_MIN_BITS = 16


@lru_cache(maxsize=1)
def _sieve_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Odd primes r < SIEVE_LIMIT with 2^-1 and 4^-1 mod r."""
    flags = np.ones(SIEVE_LIMIT, dtype=bool)
    flags[:2] = False
    for i in range(2, int(SIEVE_LIMIT**0.5) + 1):
        if flags[i]:
            flags[i * i :: i] = False
    primes = np.flatnonzero(flags)[1:]  # drop 2: candidates are odd
    inv2 = (primes + 1) // 2
    inv4 = np.array([pow(4, -1, int(r)) for r in primes], dtype=np.int64)
    return primes, inv2, inv4


def is_safe_prime(p: int) -> bool:
    """True if p and (p - 1) / 2 are both (probable) primes."""
    p = int(p)
    return p > 5 and p % 2 == 1 and bool(gmpy2.is_prime(p, _MR_ROUNDS)) and bool(
        gmpy2.is_prime((p - 1) // 2, _MR_ROUNDS))


def safe_prime_window(bits: int, windows: int = 1) -> int | None:
    """Search ``windows`` random sieve windows for a ``bits``-bit safe prime (top two bits
    set, so the product of two of them has exactly 2·bits bits); None if none was found."""
    primes, inv2, inv4 = _sieve_table()
    small = [int(r) for r in primes]
    for _ in range(windows):
        # p' has bits-1 bits with its two top bits set, so p = 2p'+1 has them too.
        start = secrets.randbits(bits - 1) | (3 << (bits - 3)) | 1
        start_mod = np.array([start % r for r in small], dtype=np.int64)
        # p' + 2k ≡ 0 (mod r)  <=>  k ≡ -p'·2^-1;   2(p' + 2k) + 1 ≡ 0  <=>  k ≡ -(2p'+1)·4^-1
        k_q = (-start_mod * inv2) % primes
        k_p = (-(2 * start_mod + 1) * inv4) % primes
        alive = np.ones(_WINDOW, dtype=bool)
        for r, a, b in zip(small, k_q.tolist(), k_p.tolist()):
            alive[a::r] = False
            alive[b::r] = False
        two = gmpy2.mpz(2)
        for k in np.flatnonzero(alive).tolist():
            q = gmpy2.mpz(start + 2 * k)
            if q.bit_length() != bits - 1:
                break
            p = 2 * q + 1
            if gmpy2.powmod(two, p - 1, p) != 1:
                continue
            if gmpy2.is_prime(q, _MR_ROUNDS) and gmpy2.is_prime(p, _MR_ROUNDS):
                return int(p)
    return None


def random_safe_prime(bits: int, *, pool: WorkerPool | None = None,
                      exclude: frozenset[int] = frozenset(),
                      windows_per_task: int = 4) -> int:
    """A uniformly placed random ``bits``-bit safe prime, not in ``exclude``.

    With a :class:`WorkerPool` every worker searches its own windows and the first result
    wins; without one (or with ``workers=0``) the search runs in this process.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < _MIN_BITS:
        raise ConfigError(f"safe prime size must be an integer >= {_MIN_BITS} bits, got {bits!r}")
    if pool is None or pool.in_process:
        while True:
            p = safe_prime_window(bits, windows_per_task)
            if p is not None and p not in exclude:
                return p
    pending: set[Future[Any]] = {pool.submit(safe_prime_window, bits, windows_per_task)
                                 for _ in range(pool.parallelism)}
    try:
        while True:
            done, pending = wait_futures(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                p = fut.result()
                if p is not None and p not in exclude:
                    return int(p)
                pending.add(pool.submit(safe_prime_window, bits, windows_per_task))
    finally:
        for fut in pending:
            fut.cancel()

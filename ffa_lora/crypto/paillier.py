"""Packed Paillier encryption (g = n + 1), the obfuscator pool, and CRT decryption.

With g = n + 1, g^m = 1 + m·n (mod n²), so encrypting a packed plaintext m is one
multiplication by an obfuscator r^n mod n²: c = (1 + m·n)·r^n mod n². The obfuscator does not
depend on the data, so an :class:`ObfuscatorPool` computes them ahead of time in background
worker processes (while the model trains); encryption is then a few microseconds per
ciphertext. Each obfuscator is handed out exactly once: reusing one links two ciphertexts
(c1/c2 = g^(m1-m2)) and breaks semantic security.

The coordinator decrypts with CRT over p² and q² in worker processes that receive the key once.

Worker counts everywhere: ``None`` = all available cores, ``0`` = in the calling process
(no subprocesses; unit tests), ``k`` = k processes.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from typing import Any, Self

import gmpy2
import numpy as np

from ffa_lora.crypto.keys import PrivateKey, PublicKey
from ffa_lora.crypto.packing import PackingLayout
from ffa_lora.crypto.parallel import (
    WorkerPool,
    _init_decrypt_worker,
    crt_params,
    decrypt_batch,
    fresh_obfuscators,
    split_batches,
)
from ffa_lora.crypto.quantize import Quantizer
from ffa_lora.crypto.vector import CiphertextVector, RunningSum, add, scale
from ffa_lora.errors import (
    CiphertextError,
    ConfigError,
    FingerprintMismatchError,
    LayoutError,
    ObfuscatorReuseError,
)

__all__ = [
    "CiphertextVector",
    "Decryptor",
    "Encryptor",
    "ObfuscatorPool",
    "RunningSum",
    "add",
    "scale",
    "unpack_code_sums",
]

# Batches per worker when splitting work, so that a core slowed by another process does not
# hold up the whole call.
_BATCHES_PER_WORKER = 4


def _lower_priority(increment: int) -> None:
    os.nice(increment)


class ObfuscatorPool:
    """Precomputed obfuscators r^n mod n², each handed out at most once.

    Args:
        public_key: the key the obfuscators are for.
        workers: background worker processes (None: all cores; 0: compute synchronously).
        batch_size: obfuscators per background task.
        start_method: multiprocessing start method.
        nice: niceness added to the background workers (e.g. 10) so that filling yields
            the CPU to local training; 0 keeps normal priority.

    Every value ever deposited is remembered by a 128-bit digest; a value seen before is
    refused with :class:`ObfuscatorReuseError` (on deposit and again on hand-out), and values
    are popped, so no path can hand one out twice.
    """

    def __init__(self, public_key: PublicKey, *, workers: int | None = None,
                 batch_size: int = 16, start_method: str = "spawn", nice: int = 0) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= nice <= 19:
            raise ConfigError(f"nice must be in 0..19, got {nice}")
        self.public_key = public_key
        self.worker_pool = WorkerPool(workers=workers, start_method=start_method,
                                      initializer=_lower_priority if nice else None,
                                      initargs=(nice,) if nice else ())
        self.batch_size = int(batch_size)
        self._width = public_key.ciphertext_bytes
        self._items: deque[gmpy2.mpz] = deque()
        self._seen: set[bytes] = set()
        self._handed: set[bytes] = set()
        self._pending: set[Future[Any]] = set()
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()
        self.deposited = 0
        self.handed_out = 0

    def _digest(self, v: gmpy2.mpz) -> bytes:
        return hashlib.blake2b(v.to_bytes(self._width, "big"), digest_size=16).digest()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def pending(self) -> int:
        """Background tasks not finished yet."""
        with self._lock:
            return len(self._pending)

    def fill(self, count: int) -> None:
        """Start computing ``count`` more obfuscators in the background (returns at once).

        With ``workers=0`` the values are computed synchronously before returning.
        """
        if count <= 0:
            return
        n = int(self.public_key.n)
        full, rest = divmod(int(count), self.batch_size)
        sizes = [self.batch_size] * full + ([rest] if rest else [])
        for size in sizes:
            fut = self.worker_pool.submit(fresh_obfuscators, n, size)
            with self._lock:
                self._pending.add(fut)
            fut.add_done_callback(self._on_done)
        self._raise_errors()

    def _on_done(self, fut: Future[Any]) -> None:
        with self._lock:
            self._pending.discard(fut)
        if fut.cancelled():
            return
        try:
            self.add_precomputed(fut.result())
        except BaseException as exc:  # noqa: BLE001 - surfaced by wait()/take()
            with self._lock:
                self._errors.append(exc)

    def _raise_errors(self) -> None:
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            raise errors[0]

    def wait(self, timeout: float | None = None) -> bool:
        """Block until background fills finish; True if none is left pending."""
        with self._lock:
            pending = set(self._pending)
        if pending:
            wait_futures(pending, timeout=timeout)
        self._raise_errors()
        return self.pending == 0

    def add_precomputed(self, values: list[Any]) -> None:
        """Deposit obfuscators (validated: 0 < v < n², never seen before)."""
        n2 = self.public_key.nsquare
        checked = []
        for v in values:
            v = gmpy2.mpz(v)
            if not 0 < v < n2:
                raise CiphertextError("obfuscator out of range (must satisfy 0 < r^n < n²)")
            checked.append((v, self._digest(v)))
        with self._lock:
            fresh = set()
            for _, d in checked:
                if d in self._seen or d in fresh:
                    raise ObfuscatorReuseError(
                        "an obfuscator offered to the pool was seen before; refusing to reuse it"
                    )
                fresh.add(d)
            self._seen |= fresh
            self._items.extend(v for v, _ in checked)
            self.deposited += len(checked)

    def take(self) -> gmpy2.mpz | None:
        """Pop one obfuscator, or None if the pool is empty."""
        got = self.take_many(1)
        return got[0] if got else None

    def take_many(self, count: int) -> list[gmpy2.mpz]:
        """Pop up to ``count`` obfuscators (fewer if the pool runs dry)."""
        self._raise_errors()
        out: list[gmpy2.mpz] = []
        with self._lock:
            while len(out) < count and self._items:
                v = self._items.popleft()
                d = self._digest(v)
                if d in self._handed:
                    raise ObfuscatorReuseError("an obfuscator was about to be handed out twice")
                self._handed.add(d)
                out.append(v)
            self.handed_out += len(out)
            if self.handed_out + len(self._items) != self.deposited:
                raise ObfuscatorReuseError("obfuscator pool accounting is inconsistent")
        return out

    def close(self) -> None:
        """Cancel pending fills and stop the worker processes."""
        with self._lock:
            pending = list(self._pending)
        for f in pending:
            f.cancel()
        self.worker_pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Encryptor:
    """Client-side packed encryption of quantized codes.

    Args:
        public_key: the federation's public key.
        layout: the round's packing layout.
        pool: optional :class:`ObfuscatorPool`; its values are used first, fresh ones are
            computed for the rest. Its worker processes are shared when ``workers`` is None.
        workers: processes for fresh obfuscators (None: all cores; 0: in-process).
    """

    def __init__(self, public_key: PublicKey, layout: PackingLayout, *,
                 pool: ObfuscatorPool | None = None, workers: int | None = None,
                 start_method: str = "spawn") -> None:
        if layout.key_bits != public_key.bits:
            raise LayoutError(
                f"layout is for {layout.key_bits}-bit keys, the public key has {public_key.bits}"
            )
        if pool is not None and pool.public_key != public_key:
            raise FingerprintMismatchError("obfuscator pool belongs to a different public key")
        self.public_key = public_key
        self.layout = layout
        self.pool = pool
        self._owns_workers = pool is None or workers is not None
        self.worker_pool = (WorkerPool(workers=workers, start_method=start_method)
                            if self._owns_workers else pool.worker_pool)  # type: ignore[union-attr]
        self.last_pooled = 0
        self.last_fresh = 0

    def fresh_obfuscators(self, count: int) -> list[gmpy2.mpz]:
        """Compute ``count`` obfuscators now, in parallel over the worker processes."""
        n = int(self.public_key.n)
        sizes = split_batches(count, self.worker_pool.parallelism * _BATCHES_PER_WORKER)
        futs = [self.worker_pool.submit(fresh_obfuscators, n, s) for s in sizes]
        out: list[gmpy2.mpz] = []
        for f in futs:
            out.extend(f.result())
        return out

    def encrypt_codes(self, codes: np.ndarray, *, weight: int = 1) -> CiphertextVector:
        """Pack and encrypt codes in [0, levels], optionally pre-multiplied by ``weight``.

        Returns a vector with ``weight_total = weight``. Raises :class:`LayoutError` for codes
        out of range or a weight above the layout's capacity.
        """
        c = np.asarray(codes).ravel()
        if c.size and not np.issubdtype(c.dtype, np.integer):
            raise LayoutError(f"codes must be integers, got dtype {c.dtype}")
        levels = self.layout.levels
        if c.size and (int(c.min()) < 0 or int(c.max()) > levels):
            raise LayoutError(f"codes must lie in [0, {levels}] for {self.layout.bits}-bit layouts")
        if isinstance(weight, bool) or not isinstance(weight, (int, np.integer)) or not (
            1 <= weight <= self.layout.capacity
        ):
            raise LayoutError(f"weight must be an integer in [1, {self.layout.capacity}]")
        scaled = c.astype(np.int64) * int(weight) if weight != 1 else c
        plaintexts = self.layout.pack(scaled)
        values = self.encrypt_plaintexts(plaintexts)
        return CiphertextVector(public_key=self.public_key, layout=self.layout,
                                num_values=int(c.size), values=values, weight_total=int(weight))

    def encrypt_plaintexts(self, plaintexts: list[int]) -> list[gmpy2.mpz]:
        """Encrypt packed plaintexts (each < n) with pooled obfuscators, then fresh ones."""
        count = len(plaintexts)
        obf = self.pool.take_many(count) if self.pool is not None else []
        self.last_pooled = len(obf)
        self.last_fresh = count - len(obf)
        if self.last_fresh:
            obf.extend(self.fresh_obfuscators(self.last_fresh))
        n, n2 = self.public_key.n_mpz, self.public_key.nsquare
        mpz = gmpy2.mpz
        return [(1 + mpz(m) * n) * r % n2 for m, r in zip(plaintexts, obf)]

    def warm_up(self) -> None:
        """Start the worker processes now."""
        self.worker_pool.warm_up()

    def close(self) -> None:
        """Stop worker processes this encryptor owns."""
        if self._owns_workers:
            self.worker_pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unpack_code_sums(layout: PackingLayout, vec: CiphertextVector,
                     plaintexts: list[Any]) -> np.ndarray:
    """Unpack decrypted plaintexts of ``vec`` into slot sums (int64) and check their range.

    This is where plaintexts meet the packing layout, whoever decrypted them: the
    :class:`Decryptor` (whole key, CRT) or a threshold combiner (key shares).

    Raises:
        CiphertextError: a plaintext or slot sum is impossible for the vector's weight
            total (tampering, wrong layout or value count): never a silent wrong sum.
    """
    if vec.layout != layout:
        raise LayoutError("ciphertext vector uses a different packing layout")
    sums = layout.unpack(plaintexts, vec.num_values)
    bound = vec.weight_total * layout.levels
    if sums.size and int(sums.max()) > bound:
        raise CiphertextError(
            "a decrypted slot sum exceeds weight_total × levels: ciphertexts were tampered "
            "with or the weight total is wrong"
        )
    return sums


class Decryptor:
    """Coordinator-side CRT decryption and unpacking, parallel over cores.

    Args:
        private_key: the federation's private key (sent once to each worker process).
        layout: the round's packing layout.
        workers: processes (None: all cores; 0: in-process).
    """

    def __init__(self, private_key: PrivateKey, layout: PackingLayout, *,
                 workers: int | None = None, start_method: str = "spawn") -> None:
        if layout.key_bits != private_key.public_key.bits:
            raise LayoutError("layout key size does not match the private key")
        self.public_key = private_key.public_key
        self.layout = layout
        self._key = crt_params(int(private_key.p), int(private_key.q))
        self.worker_pool = WorkerPool(
            workers=workers, initializer=_init_decrypt_worker,
            initargs=(int(private_key.p), int(private_key.q)), start_method=start_method,
        )

    def decrypt_plaintexts(self, vec: CiphertextVector) -> list[gmpy2.mpz]:
        """Raw packed plaintexts of a vector (checked against this key and layout first)."""
        if vec.fingerprint != self.public_key.fingerprint:
            raise FingerprintMismatchError(
                "ciphertext vector was made under a different public key (fingerprint mismatch)"
            )
        if vec.layout != self.layout:
            raise LayoutError("ciphertext vector uses a different packing layout")
        wp = self.worker_pool
        if wp.in_process:
            return decrypt_batch(vec.values, self._key)
        sizes = split_batches(len(vec.values), wp.parallelism * _BATCHES_PER_WORKER)
        futs, start = [], 0
        for s in sizes:
            futs.append(wp.submit(decrypt_batch, vec.values[start : start + s]))
            start += s
        out: list[gmpy2.mpz] = []
        for f in futs:
            out.extend(f.result())
        return out

    def decrypt_code_sums(self, vec: CiphertextVector) -> np.ndarray:
        """Decrypt, unpack and check the slot sums (int64, one per value).

        Raises:
            CiphertextError: a plaintext or slot sum is impossible for the vector's weight
                total (tampering, wrong layout or value count): never a silent wrong sum.
        """
        return unpack_code_sums(self.layout, vec, self.decrypt_plaintexts(vec))

    def decrypt_mean(self, vec: CiphertextVector, *, quantizer: Quantizer,
                     weight_totals: np.ndarray | float) -> np.ndarray:
        """Decrypt and dequantize to the weighted mean (float32); see Quantizer.dequantize_mean."""
        if quantizer.bits != self.layout.bits:
            raise LayoutError("quantizer bits differ from the layout's bits")
        return quantizer.dequantize_mean(self.decrypt_code_sums(vec), weight_totals)

    def warm_up(self) -> None:
        """Start the worker processes (and send them the key) now."""
        self.worker_pool.warm_up()

    def close(self) -> None:
        """Stop the worker processes."""
        self.worker_pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

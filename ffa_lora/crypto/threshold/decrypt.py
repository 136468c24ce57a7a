"""Threshold decryption: each holder's decryption share, its proof, and the combiner.

Holder i turns every ciphertext c of a vector into y = c^(2Δ·s_i) mod n² (parallel over
worker processes that receive the exponent once) and proves it used its share
(:mod:`~ffa_lora.crypto.threshold.proof`). Any t shares combine (Shoup): with integer
Lagrange coefficients λ_i = Δ·Π_{j≠i} j/(j−i) over the chosen set S,

    c' = Π_{i∈S} y_i^(2λ_i) = c^(4Δ²·d)  ≡  1 + n·4Δ²·m  (mod n²),   m = L(c')·(4Δ²)^-1 mod n,

because d ≡ 1 (mod n) and d ≡ 0 (mod p'q') removes the randomness. Fewer than t shares
determine nothing about d (Shamir). The plaintexts go through the same unpacking and range
check as whole-key decryption (:func:`~ffa_lora.crypto.paillier.unpack_code_sums`).

Every share is bound to one ciphertext vector (its canonical digest), one threshold key
(the parameters' fingerprint) and one caller-chosen ``context`` (e.g. federation, round
and phase), so a share cannot be replayed for another vector or round.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import gmpy2
import numpy as np

from ffa_lora.crypto.canonical import DIGEST_SIZE, vector_digest
from ffa_lora.crypto.packing import PackingLayout
from ffa_lora.crypto.paillier import unpack_code_sums
from ffa_lora.crypto.parallel import WorkerPool, split_batches
from ffa_lora.crypto.quantize import Quantizer
from ffa_lora.crypto.threshold import proof as proofs
from ffa_lora.crypto.threshold.ceremony import KeyShare, ThresholdParams
from ffa_lora.crypto.vector import CiphertextVector
from ffa_lora.errors import (
    DecryptionShareError,
    FingerprintMismatchError,
    LayoutError,
    ThresholdError,
)

__all__ = [
    "Combiner",
    "DecryptionShare",
    "ShareDecryptor",
    "combine",
    "decryption_share",
    "lagrange_coefficients",
    "verify_decryption_share",
]

_BATCHES_PER_WORKER = 4
_SHARE_MAGIC = b"FFADS"
_SHARE_VERSION = 1
_STATEMENT_DOMAIN = b"ffa-lora/threshold-paillier/decryption-share/v1\x00"
_HEAD = struct.Struct(">5sBH")  # magic, version, holder index


def _context_digest(context: bytes) -> bytes:
    if not isinstance(context, (bytes, bytearray)):
        raise TypeError("context must be bytes (e.g. federation, round and phase)")
    return hashlib.sha256(b"ffa-lora/threshold-context/v1\x00" + bytes(context)).digest()


def _statement(params: ThresholdParams, index: int, digest: bytes, ctx: bytes) -> bytes:
    return (_STATEMENT_DOMAIN + bytes.fromhex(params.fingerprint) + struct.pack(">H", index)
            + digest + ctx)


def _exponent_bound_bits(params: ThresholdParams) -> int:
    # the proven exponent Δ·s_i is below Δ·n·m < Δ·n²
    return (params.delta * int(params.public_key.nsquare)).bit_length()


@dataclass(frozen=True, eq=False)
class DecryptionShare:
    """One holder's decryption share of one ciphertext vector.

    Attributes:
        holder: the holder id; index: its 1-based share index.
        params_fingerprint: fingerprint of the threshold parameters it was made under.
        vector_digest: canonical digest of the ciphertext vector it decrypts.
        context_digest: digest of the caller's context (federation, round, phase …).
        values: y_j = c_j^(2Δ·s_i) mod n², one per ciphertext.
        proof: the batched proof of correctness, or None if the holder did not prove.
    """

    holder: str
    index: int
    params_fingerprint: str
    vector_digest: bytes
    context_digest: bytes
    values: list[gmpy2.mpz] = field(repr=False)
    proof: proofs.ShareProof | None = field(default=None, repr=False)

    def to_bytes(self, params: ThresholdParams) -> bytes:
        """``magic "FFADS" | version u8 | index u16 | holder len u8 + utf-8 | params fp 32 B
        | vector digest 32 B | context digest 32 B | count u32 | proof len u16 + proof
        | values`` (fixed width 2·bits/8, like ciphertexts)."""
        hb = self.holder.encode()
        pb = self.proof.to_bytes() if self.proof is not None else b""
        width = params.public_key.ciphertext_bytes
        return b"".join([
            _HEAD.pack(_SHARE_MAGIC, _SHARE_VERSION, self.index), struct.pack(">B", len(hb)), hb,
            bytes.fromhex(self.params_fingerprint), self.vector_digest, self.context_digest,
            struct.pack(">IH", len(self.values), len(pb)), pb,
            *(int(y).to_bytes(width, "big") for y in self.values),
        ])

    @classmethod
    def from_bytes(cls, data: bytes, params: ThresholdParams) -> DecryptionShare:
        """Parse :meth:`to_bytes` output and check it against ``params`` (holder, key, ranges).

        Raises:
            ThresholdError: malformed, made under other parameters, or a value out of range.
        """
        try:
            magic, version, index = _HEAD.unpack_from(data)
            if magic != _SHARE_MAGIC or version != _SHARE_VERSION:
                raise ThresholdError("not a decryption share of this format (magic/version)")
            (hl,) = struct.unpack_from(">B", data, _HEAD.size)
            off = _HEAD.size + 1
            holder = data[off : off + hl].decode()
            off += hl
            fp, vd, cd = (data[off + i * DIGEST_SIZE : off + (i + 1) * DIGEST_SIZE]
                          for i in range(3))
            off += 3 * DIGEST_SIZE
            count, plen = struct.unpack_from(">IH", data, off)
            off += 6
            proof = proofs.ShareProof.from_bytes(data[off : off + plen]) if plen else None
            off += plen
        except (struct.error, UnicodeDecodeError, ValueError):
            raise ThresholdError("decryption share is truncated or malformed") from None
        width = params.public_key.ciphertext_bytes
        if len(data) - off != count * width:
            raise ThresholdError("decryption share is truncated or padded")
        if fp.hex() != params.fingerprint:
            raise ThresholdError(f"decryption share of '{holder}' was made under other "
                                 "threshold parameters (fingerprint mismatch)")
        n2 = params.public_key.nsquare
        frm = gmpy2.mpz.from_bytes
        values = [frm(data[off + j * width : off + (j + 1) * width], "big") for j in range(count)]
        if any(not 0 < y < n2 for y in values):
            raise ThresholdError(f"decryption share of '{holder}' has a value out of range")
        share = cls(holder, int(index), fp.hex(), bytes(vd), bytes(cd), values, proof)
        _check_holder(params, share)
        return share


def _check_holder(params: ThresholdParams, share: DecryptionShare) -> None:
    if not 1 <= share.index <= len(params.holders) or params.holders[share.index - 1] != share.holder:
        raise ThresholdError(
            f"decryption share claims holder '{share.holder}' with index {share.index}, which "
            "does not match the threshold parameters"
        )


# -- worker functions (module level so that spawned workers can import them) -----------------

_SHARE_KEY: tuple[gmpy2.mpz, gmpy2.mpz] | None = None


def _init_share_worker(nsquare: int, exponent: int) -> None:
    global _SHARE_KEY
    _SHARE_KEY = (gmpy2.mpz(nsquare), gmpy2.mpz(exponent))


def _share_batch(ciphertexts: Sequence[Any],
                 key: tuple[gmpy2.mpz, gmpy2.mpz] | None = None) -> list[gmpy2.mpz]:
    k = key if key is not None else _SHARE_KEY
    if k is None:
        raise RuntimeError("share worker was started without a key share")
    n2, exponent = k
    return list(gmpy2.powmod_base_list([gmpy2.mpz(c) for c in ciphertexts], exponent, n2))


def _combine_batch(n: int, delta: int, exponents: Sequence[int],
                   columns: Sequence[Sequence[Any]]) -> list[gmpy2.mpz | None]:
    """Combine t share columns; None where the result is not 1 mod n (a wrong share)."""
    nn = gmpy2.mpz(n)
    n2 = nn * nn
    inv = gmpy2.invert(4 * gmpy2.mpz(delta) ** 2 % nn, nn)
    pos = [(i, e) for i, e in enumerate(exponents) if e > 0]
    neg = [(i, -e) for i, e in enumerate(exponents) if e < 0]
    out: list[gmpy2.mpz | None] = []
    for j in range(len(columns[0])):
        num = gmpy2.mpz(1)
        for i, e in pos:
            num = num * gmpy2.powmod(columns[i][j], e, n2) % n2
        if neg:
            den = gmpy2.mpz(1)
            for i, e in neg:
                den = den * gmpy2.powmod(columns[i][j], e, n2) % n2
            try:
                num = num * gmpy2.invert(den, n2) % n2
            except ZeroDivisionError:
                out.append(None)
                continue
        if (num - 1) % nn:
            out.append(None)
        else:
            out.append((num - 1) // nn * inv % nn)
    return out


def lagrange_coefficients(indices: Sequence[int], delta: int) -> list[int]:
    """Integer λ_i = Δ·Π_{j≠i} j/(j−i) for interpolation at 0 over ``indices``."""
    out = []
    for i in indices:
        num, den = delta, 1
        for j in indices:
            if j != i:
                num *= j
                den *= j - i
        if num % den:
            raise ThresholdError("Lagrange coefficient is not an integer: Δ is too small")
        out.append(num // den)
    return out


def _check_vector(params: ThresholdParams, vec: CiphertextVector) -> None:
    if vec.fingerprint != params.public_key.fingerprint:
        raise FingerprintMismatchError(
            "ciphertext vector was made under a different public key than this threshold key")


def _run_batched(pool: WorkerPool, fn: Any, items: Sequence[Any], *extra: Any) -> list[Any]:
    if pool.in_process:
        return list(fn(list(items), *extra))
    futs, start = [], 0
    for size in split_batches(len(items), pool.parallelism * _BATCHES_PER_WORKER):
        futs.append(pool.submit(fn, list(items[start : start + size]), *extra))
        start += size
    out: list[Any] = []
    for f in futs:
        out.extend(f.result())
    return out


class ShareDecryptor:
    """A key holder's decryption-share engine, parallel over cores.

    Args:
        share: this holder's :class:`KeyShare` (its exponent is sent once to each worker).
        workers: processes (None: all cores; 0: in this process).
    """

    def __init__(self, share: KeyShare, *, workers: int | None = None,
                 start_method: str = "spawn") -> None:
        self.share = share
        self.params = share.params
        n2 = self.params.public_key.nsquare
        self._key = (gmpy2.mpz(n2), 2 * self.params.delta * share.secret)
        self.worker_pool = WorkerPool(workers=workers, initializer=_init_share_worker,
                                      initargs=(int(n2), int(self._key[1])),
                                      start_method=start_method)

    def decryption_share(self, vec: CiphertextVector, *, context: bytes,
                         prove: bool = True) -> DecryptionShare:
        """This holder's share of ``vec`` for ``context``, with its proof unless ``prove`` is
        False. The caller must have checked that ``vec`` may be decrypted."""
        _check_vector(self.params, vec)
        ctx = _context_digest(context)
        digest = vector_digest(vec)
        if self.worker_pool.in_process:
            values = _share_batch(vec.values, self._key)
        else:
            values = _run_batched(self.worker_pool, _share_batch, vec.values)
        share = DecryptionShare(self.share.holder, self.share.index, self.params.fingerprint,
                                digest, ctx, values)
        return self.add_proof(vec, share) if prove else share

    def add_proof(self, vec: CiphertextVector, share: DecryptionShare) -> DecryptionShare:
        """``share`` (this holder's, for ``vec``) with its proof of correctness attached."""
        if share.index != self.share.index or share.vector_digest != vector_digest(vec):
            raise ThresholdError("can only prove this holder's own share of this vector")
        p, i = self.params, self.share.index
        n2 = int(p.public_key.nsquare)
        statement = _statement(p, i, share.vector_digest, share.context_digest)
        weights = proofs.batch_weights(
            proofs.weights_seed(statement=statement, shares=share.values,
                                width=p.public_key.ciphertext_bytes), len(share.values))
        big_c, big_y = proofs.weighted_products(vec.values, share.values, weights, n2,
                                                self.worker_pool)
        proof = proofs.prove(statement=statement, combined_c=big_c, combined_y=big_y,
                             base=p.verification_base, key=p.verification_keys[i - 1],
                             exponent=p.delta * int(self.share.secret),
                             exponent_bound_bits=_exponent_bound_bits(p), nsquare=n2)
        return dataclasses.replace(share, proof=proof)

    def warm_up(self) -> None:
        """Start the worker processes (and send them the share) now."""
        self.worker_pool.warm_up()

    def close(self) -> None:
        """Stop the worker processes."""
        self.worker_pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Combiner:
    """Checks decryption shares and combines any t of them into plaintexts.

    Holds no secret: anyone with the public parameters can combine. Parallel over cores.

    Args:
        params: the threshold key's public parameters.
        layout: when given, vectors must use this packing layout (the round's).
        workers: processes (None: all cores; 0: in this process).
    """

    def __init__(self, params: ThresholdParams, layout: PackingLayout | None = None, *,
                 workers: int | None = None, start_method: str = "spawn") -> None:
        if layout is not None and layout.key_bits != params.public_key.bits:
            raise LayoutError("layout key size does not match the threshold key")
        self.params = params
        self.layout = layout
        self.worker_pool = WorkerPool(workers=workers, start_method=start_method)

    def _check_binding(self, vec: CiphertextVector, share: DecryptionShare, digest: bytes,
                       ctx: bytes) -> None:
        _check_holder(self.params, share)
        if share.params_fingerprint != self.params.fingerprint:
            raise ThresholdError(f"decryption share of '{share.holder}' was made under other "
                                 "threshold parameters")
        if share.vector_digest != digest:
            raise ThresholdError(f"decryption share of '{share.holder}' is for another "
                                 "ciphertext vector (digest mismatch)")
        if share.context_digest != ctx:
            raise ThresholdError(f"decryption share of '{share.holder}' was made for another "
                                 "context (round or federation mismatch)")
        if len(share.values) != len(vec.values):
            raise ThresholdError(f"decryption share of '{share.holder}' has {len(share.values)} "
                                 f"values for {len(vec.values)} ciphertexts")

    def proof_holds(self, vec: CiphertextVector, share: DecryptionShare, *,
                    context: bytes) -> bool:
        """True if ``share`` is bound to ``vec`` and ``context`` and its proof verifies."""
        digest, ctx = vector_digest(vec), _context_digest(context)
        self._check_binding(vec, share, digest, ctx)
        return self._proof_holds(vec, share, digest, ctx)

    def _proof_holds(self, vec: CiphertextVector, share: DecryptionShare, digest: bytes,
                     ctx: bytes) -> bool:
        if share.proof is None:
            return False
        p = self.params
        n2 = int(p.public_key.nsquare)
        if any(not 0 < y < n2 for y in share.values):
            return False
        statement = _statement(p, share.index, digest, ctx)
        weights = proofs.batch_weights(
            proofs.weights_seed(statement=statement, shares=share.values,
                                width=p.public_key.ciphertext_bytes), len(share.values))
        big_c, big_y = proofs.weighted_products(vec.values, share.values, weights, n2,
                                                self.worker_pool)
        return proofs.verify(share.proof, statement=statement, combined_c=big_c,
                             combined_y=big_y, base=p.verification_base,
                             key=p.verification_keys[share.index - 1],
                             exponent_bound_bits=_exponent_bound_bits(p), nsquare=n2)

    def combine(self, vec: CiphertextVector, shares: Sequence[DecryptionShare], *,
                context: bytes, verify: bool = True) -> list[gmpy2.mpz]:
        """Packed plaintexts of ``vec`` from at least t decryption shares.

        Every share must be bound to this vector, these parameters and ``context``. With
        ``verify`` (the default) every share's proof is checked first and all holders whose
        proof fails are named together; the caller may retry without them.

        Raises:
            ThresholdError: fewer than t distinct shares, a duplicate or foreign share, or
                shares that do not combine (only possible with ``verify=False``).
            DecryptionShareError: shares whose proofs fail (``.holders`` names them).
        """
        _check_vector(self.params, vec)
        if self.layout is not None and vec.layout != self.layout:
            raise LayoutError("ciphertext vector uses a different packing layout")
        digest, ctx = vector_digest(vec), _context_digest(context)
        by_index: dict[int, DecryptionShare] = {}
        for s in shares:
            self._check_binding(vec, s, digest, ctx)
            if s.index in by_index:
                raise ThresholdError(f"two decryption shares from holder '{s.holder}'")
            by_index[s.index] = s
        t = self.params.threshold
        if len(by_index) < t:
            raise ThresholdError(
                f"threshold decryption needs shares from {t} distinct key holders, got "
                f"{len(by_index)} ({', '.join(s.holder for s in by_index.values()) or 'none'})"
            )
        if verify:
            bad = tuple(s.holder for s in by_index.values()
                        if not self._proof_holds(vec, s, digest, ctx))
            if bad:
                raise DecryptionShareError(
                    f"decryption shares failed their proof of correctness: {', '.join(bad)}; "
                    "combine again without them", holders=bad)
        chosen = sorted(by_index)[:t]
        return self._combine(vec, [by_index[i] for i in chosen], chosen)

    def _combine(self, vec: CiphertextVector, chosen: list[DecryptionShare],
                 indices: list[int]) -> list[gmpy2.mpz]:
        p = self.params
        exps = [2 * lam for lam in lagrange_coefficients(indices, p.delta)]
        n, delta = int(p.public_key.n), p.delta
        count = len(vec.values)
        if self.worker_pool.in_process:
            out = _combine_batch(n, delta, exps, [s.values for s in chosen])
        else:
            futs, start = [], 0
            for size in split_batches(count, self.worker_pool.parallelism * _BATCHES_PER_WORKER):
                cols = [s.values[start : start + size] for s in chosen]
                futs.append(self.worker_pool.submit(_combine_batch, n, delta, exps, cols))
                start += size
            out = [m for f in futs for m in f.result()]
        if any(m is None for m in out):
            raise ThresholdError(
                "decryption shares do not combine to a valid plaintext: at least one share "
                "is wrong (verify the proofs to find which holder sent it)"
            )
        return [m for m in out if m is not None]

    def decrypt_code_sums(self, vec: CiphertextVector, shares: Sequence[DecryptionShare], *,
                          context: bytes, verify: bool = True) -> np.ndarray:
        """Combine, unpack and range-check the slot sums (int64, one per value)."""
        plaintexts = self.combine(vec, shares, context=context, verify=verify)
        return unpack_code_sums(vec.layout, vec, plaintexts)

    def decrypt_mean(self, vec: CiphertextVector, shares: Sequence[DecryptionShare], *,
                     context: bytes, quantizer: Quantizer,
                     weight_totals: np.ndarray | float, verify: bool = True) -> np.ndarray:
        """Combine and dequantize to the weighted mean (float32)."""
        if quantizer.bits != vec.layout.bits:
            raise LayoutError("quantizer bits differ from the layout's bits")
        sums = self.decrypt_code_sums(vec, shares, context=context, verify=verify)
        return quantizer.dequantize_mean(sums, weight_totals)

    def close(self) -> None:
        """Stop the worker processes."""
        self.worker_pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decryption_share(share: KeyShare, vec: CiphertextVector, *, context: bytes = b"",
                     prove: bool = True, workers: int | None = 0) -> DecryptionShare:
    """One-off :meth:`ShareDecryptor.decryption_share` (in this process by default)."""
    with ShareDecryptor(share, workers=workers) as dec:
        return dec.decryption_share(vec, context=context, prove=prove)


def verify_decryption_share(params: ThresholdParams, vec: CiphertextVector,
                            share: DecryptionShare, *, context: bytes = b"",
                            workers: int | None = 0) -> None:
    """Raise :class:`DecryptionShareError` naming the holder unless ``share`` is a correct
    decryption share of ``vec`` for ``context`` (:class:`ThresholdError` if it is for
    another vector, context or key)."""
    with Combiner(params, workers=workers) as comb:
        if not comb.proof_holds(vec, share, context=context):
            raise DecryptionShareError(
                f"decryption share of '{share.holder}' failed its proof of correctness",
                holders=(share.holder,))


def combine(params: ThresholdParams, vec: CiphertextVector,
            shares: Sequence[DecryptionShare], *, context: bytes = b"", verify: bool = True,
            workers: int | None = 0) -> list[gmpy2.mpz]:
    """One-off :meth:`Combiner.combine` (in this process by default)."""
    with Combiner(params, workers=workers) as comb:
        return comb.combine(vec, shares, context=context, verify=verify)

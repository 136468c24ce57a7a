"""Non-interactive proof that a decryption share was computed with the holder's key share.

A holder i with secret exponent x = Δ·s_i publishes decryption shares y_j = c_j^(2x) mod n²
for the ciphertexts c_1..c_N of a vector, and must show that every y_j used the same x as
its public verification key v_i = v^x. Shoup's proof of equal discrete logarithms
(Chaum–Pedersen, made non-interactive with Fiat–Shamir) shows log_{c^4}(y^2) = log_v(v_i)
for one ciphertext. We prove it once per vector instead of once per ciphertext, for a random
linear combination (Bellare, Garay and Rabin's small-exponent batch test):

    ρ_j = 128-bit weights from SHAKE-256 over the statement (context, key, holder, digest
          of the ciphertext vector) and the shares,
    C = Π c_j^ρ_j,   Y = Π y_j^ρ_j   (mod n²),   u = C^4,   w = Y^2,
    prover: r random, a = u^r, b = v^r, e = H(…, u, w, a, b), z = r + e·x
    verifier: recompute C, Y, u, w, a' = u^z·w^-e, b' = v^z·v_i^-e and check e = H(…, a', b').

Because the weights depend on the shares, a holder that changes any y_j (beyond a factor
of order 2, which the squarings remove and which the combination ignores) makes the
combined statement false except with probability about 2^-128; the weights cost N
exponentiations with 128-bit exponents on each side, a few percent of computing the shares.
``z`` hides x statistically: r has 128 + 256 more bits than e·x.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gmpy2

from ffa_lora.crypto.parallel import WorkerPool, split_batches

__all__ = [
    "SHARE_WEIGHT_BITS",
    "ShareProof",
    "batch_weights",
    "prove",
    "verify",
    "weighted_products",
    "weights_seed",
]

#: Bits of each random weight ρ_j of the batch test.
SHARE_WEIGHT_BITS = 128
_CHALLENGE_BITS = 256
_HIDING_BITS = 128
_DOMAIN = b"ffa-lora/threshold-paillier/share-proof/v1"


@dataclass(frozen=True)
class ShareProof:
    """Fiat–Shamir proof (challenge e, response z) for one holder's shares of one vector."""

    e: int
    z: int

    def to_bytes(self) -> bytes:
        """``e (32 B) | len(z) u16 | z``."""
        zb = self.z.to_bytes(max(1, (self.z.bit_length() + 7) // 8), "big")
        return self.e.to_bytes(_CHALLENGE_BITS // 8, "big") + struct.pack(">H", len(zb)) + zb

    @classmethod
    def from_bytes(cls, data: bytes) -> ShareProof:
        """Parse :meth:`to_bytes` (ValueError if malformed)."""
        w = _CHALLENGE_BITS // 8
        if len(data) < w + 2:
            raise ValueError("share proof is truncated")
        (zl,) = struct.unpack_from(">H", data, w)
        if len(data) != w + 2 + zl:
            raise ValueError("share proof has the wrong length")
        return cls(int.from_bytes(data[:w], "big"), int.from_bytes(data[w + 2 :], "big"))


def _fixed(x: Any, width: int) -> bytes:
    return int(x).to_bytes(width, "big")


def batch_weights(seed: bytes, count: int) -> list[gmpy2.mpz]:
    """``count`` weights of SHARE_WEIGHT_BITS bits each, expanded from ``seed`` by SHAKE-256."""
    size = SHARE_WEIGHT_BITS // 8
    stream = hashlib.shake_256(_DOMAIN + b"/weights" + seed).digest(size * count)
    frm = gmpy2.mpz.from_bytes
    return [frm(stream[i * size : (i + 1) * size], "big") for i in range(count)]


def weights_seed(*, statement: bytes, shares: Sequence[Any], width: int) -> bytes:
    """Seed of the batch weights: the statement (which names the ciphertext vector by its
    digest) and every share."""
    h = hashlib.sha256(_DOMAIN + b"/seed")
    h.update(struct.pack(">I", len(statement)) + statement)
    for y in shares:
        h.update(_fixed(y, width))
    return h.digest()


def _weighted_product(values: Sequence[Any], weights: Sequence[Any], modulus: int) -> gmpy2.mpz:
    mod = gmpy2.mpz(modulus)
    acc = gmpy2.mpz(1)
    for x, r in zip(values, weights):
        acc = acc * gmpy2.powmod(x, r, mod) % mod
    return acc


def weighted_products(ciphertexts: Sequence[Any], shares: Sequence[Any],
                      weights: Sequence[Any], modulus: int, pool: WorkerPool
                      ) -> tuple[gmpy2.mpz, gmpy2.mpz]:
    """(Π c_j^ρ_j, Π y_j^ρ_j) mod ``modulus``, split over the pool's workers."""
    mod = gmpy2.mpz(modulus)
    if pool.in_process:
        return (_weighted_product(ciphertexts, weights, modulus),
                _weighted_product(shares, weights, modulus))
    futs = []
    for values in (ciphertexts, shares):
        start = 0
        for size in split_batches(len(weights), pool.parallelism * 2):
            sl = slice(start, start + size)
            futs.append((values is shares, pool.submit(
                _weighted_product, list(values[sl]), list(weights[sl]), int(modulus))))
            start += size
    acc_c, acc_y = gmpy2.mpz(1), gmpy2.mpz(1)
    for is_share, fut in futs:
        if is_share:
            acc_y = acc_y * fut.result() % mod
        else:
            acc_c = acc_c * fut.result() % mod
    return acc_c, acc_y


def _challenge(statement: bytes, v: int, v_i: int, u: int, w: int, a: int, b: int,
               width: int) -> int:
    h = hashlib.sha256(_DOMAIN + b"/challenge")
    h.update(struct.pack(">I", len(statement)) + statement)
    for x in (v, v_i, u, w, a, b):
        h.update(_fixed(x, width))
    return int.from_bytes(h.digest(), "big")


def _response_bits(exponent_bound_bits: int) -> int:
    return exponent_bound_bits + _CHALLENGE_BITS + _HIDING_BITS


def prove(*, statement: bytes, combined_c: int, combined_y: int, base: int, key: int,
          exponent: int, exponent_bound_bits: int, nsquare: int) -> ShareProof:
    """Prove log_{C^4}(Y^2) = log_base(key) = ``exponent`` (< 2^exponent_bound_bits)."""
    n2 = gmpy2.mpz(nsquare)
    u = gmpy2.powmod(combined_c, 4, n2)
    w = gmpy2.powmod(combined_y, 2, n2)
    r = gmpy2.mpz(secrets.randbits(_response_bits(exponent_bound_bits)))
    a, b = gmpy2.powmod(u, r, n2), gmpy2.powmod(base, r, n2)
    width = (int(n2).bit_length() + 7) // 8
    e = _challenge(statement, base, key, u, w, a, b, width)
    return ShareProof(e=e, z=int(r + e * gmpy2.mpz(exponent)))


def verify(proof: ShareProof, *, statement: bytes, combined_c: int, combined_y: int, base: int,
           key: int, exponent_bound_bits: int, nsquare: int) -> bool:
    """Check a :func:`prove` proof; False for any malformed or wrong proof."""
    if not 0 <= proof.z < (1 << (_response_bits(exponent_bound_bits) + 1)):
        return False
    if not 0 <= proof.e < (1 << _CHALLENGE_BITS):
        return False
    n2 = gmpy2.mpz(nsquare)
    u = gmpy2.powmod(combined_c, 4, n2)
    w = gmpy2.powmod(combined_y, 2, n2)
    try:
        w_inv, key_inv = gmpy2.invert(w, n2), gmpy2.invert(key, n2)
    except ZeroDivisionError:
        return False
    e = gmpy2.mpz(proof.e)
    a = gmpy2.powmod(u, proof.z, n2) * gmpy2.powmod(w_inv, e, n2) % n2
    b = gmpy2.powmod(base, proof.z, n2) * gmpy2.powmod(key_inv, e, n2) % n2
    width = (int(n2).bit_length() + 7) // 8
    return _challenge(statement, base, key, u, w, a, b, width) == proof.e

"""Ciphertexts as bytes: fixed-width big-endian integers of 2·key_bits/8 bytes each.

The leaf of the crypto package's wire code: the vector checkpoint (:mod:`ffa_lora.crypto.vector`)
and the chunked wire format (:mod:`ffa_lora.crypto.wire`) both encode ciphertexts this way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import gmpy2

from ffa_lora.crypto.keys import PublicKey
from ffa_lora.errors import CiphertextError

__all__ = ["ciphertexts_from_bytes", "ciphertexts_to_bytes"]


def _width(key_bits: int) -> int:
    return (2 * int(key_bits) + 7) // 8


def ciphertexts_to_bytes(values: Iterable[Any], *, key_bits: int) -> bytes:
    """Concatenate ciphertexts as fixed-width big-endian integers (2·key_bits/8 bytes each)."""
    w = _width(key_bits)
    try:
        return b"".join(gmpy2.mpz(c).to_bytes(w, "big") for c in values)
    except OverflowError:
        raise CiphertextError(f"a ciphertext does not fit {w} bytes (wrong key size?)") from None


def ciphertexts_from_bytes(data: bytes, *, public_key: PublicKey,
                           first_index: int = 0) -> list[gmpy2.mpz]:
    """Parse fixed-width ciphertexts and check 0 < c < n² for each.

    Raises:
        CiphertextError: the length is not a multiple of the width, or a value is out of range.
    """
    w = public_key.ciphertext_bytes
    if len(data) % w:
        raise CiphertextError(
            f"ciphertext bytes ({len(data)}) are not a multiple of the {w}-byte width: "
            "truncated or wrong key size"
        )
    n2 = public_key.nsquare
    frm = gmpy2.mpz.from_bytes
    mv = memoryview(data)
    out = []
    for i in range(len(data) // w):
        c = frm(bytes(mv[i * w : (i + 1) * w]), "big")
        if not 0 < c < n2:
            raise CiphertextError(
                f"ciphertext {first_index + i} is out of range (must satisfy 0 < c < n²)"
            )
        out.append(c)
    return out

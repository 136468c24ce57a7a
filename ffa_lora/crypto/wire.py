"""Binary wire format of ciphertext vectors: no JSON, no decimal strings.

Ciphertexts are fixed-width big-endian integers of 2·key_bits/8 bytes each
(:mod:`ffa_lora.crypto.codec`), sent in chunks of whole ciphertexts (at most 1 MiB by default). A header carries the packing layout, the key
fingerprint and the value count::

    magic "FFAV" | version u8 | layout (19 B, PackingLayout.to_bytes) | sha256(n) 32 B
    | num_values u64 | weight_total u32 | num_ciphertexts u32
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import gmpy2

from ffa_lora.crypto.codec import ciphertexts_from_bytes, ciphertexts_to_bytes
from ffa_lora.crypto.keys import PublicKey
from ffa_lora.crypto.packing import PackingLayout
from ffa_lora.crypto.vector import CiphertextVector
from ffa_lora.errors import CiphertextError, FingerprintMismatchError, LayoutError

__all__ = [
    "MAX_CHUNK_BYTES",
    "VectorHeader",
    "decode_header",
    "encode_header",
    "iter_chunks",
    "read_header",
    "vector_from_chunks",
]

MAX_CHUNK_BYTES = 1 << 20
_MAGIC = b"FFAV"
_VERSION = 1
_LAYOUT_SIZE = len(PackingLayout.derive(key_bits=2048).to_bytes())
_HEADER = struct.Struct(f">4sB{_LAYOUT_SIZE}s32sQII")


def iter_chunks(vec: CiphertextVector, *, max_chunk_bytes: int = MAX_CHUNK_BYTES
                ) -> Iterator[tuple[int, bytes]]:
    """Yield ``(ciphertext offset, bytes)`` chunks of whole ciphertexts, each ≤ max_chunk_bytes."""
    w = vec.layout.ciphertext_bytes
    per = int(max_chunk_bytes) // w
    if per < 1:
        raise CiphertextError(f"max_chunk_bytes {max_chunk_bytes} is below one ciphertext ({w} B)")
    for off in range(0, len(vec.values), per):
        yield off, ciphertexts_to_bytes(vec.values[off : off + per], key_bits=vec.layout.key_bits)


@dataclass(frozen=True)
class VectorHeader:
    """Parsed header of a ciphertext vector on the wire."""

    layout: PackingLayout
    fingerprint: str
    num_values: int
    weight_total: int

    @property
    def num_ciphertexts(self) -> int:
        """Ciphertexts that follow the header."""
        return self.layout.num_ciphertexts(self.num_values)


def encode_header(vec: CiphertextVector) -> bytes:
    """Binary header for ``vec`` (layout, fingerprint, num_values, weight_total)."""
    return _HEADER.pack(_MAGIC, _VERSION, vec.layout.to_bytes(), bytes.fromhex(vec.fingerprint),
                        vec.num_values, vec.weight_total, len(vec.values))


def read_header(data: bytes) -> VectorHeader:
    """Parse a header written by :func:`encode_header`.

    Raises:
        CiphertextError: wrong size, magic, version or inconsistent counts.
        LayoutError: an invalid layout spec.
    """
    if len(data) != _HEADER.size:
        raise CiphertextError(f"vector header must be {_HEADER.size} bytes, got {len(data)}")
    magic, version, layout_b, fp, num_values, weight_total, nct = _HEADER.unpack(data)
    if magic != _MAGIC:
        raise CiphertextError("not a ciphertext vector header (bad magic)")
    if version != _VERSION:
        raise CiphertextError(f"vector header version {version} not supported (expected {_VERSION})")
    layout = PackingLayout.from_bytes(layout_b)
    if layout.num_ciphertexts(num_values) != nct:
        raise CiphertextError("vector header is inconsistent: ciphertext count does not match")
    if weight_total > layout.capacity:
        raise LayoutError("vector header weight total exceeds the layout capacity")
    return VectorHeader(layout, fp.hex(), int(num_values), int(weight_total))


def decode_header(data: bytes) -> tuple[PackingLayout, str, int]:
    """``(layout, fingerprint, num_values)`` from a header (see :func:`read_header`)."""
    h = read_header(data)
    return h.layout, h.fingerprint, h.num_values


def vector_from_chunks(header: bytes | VectorHeader, chunks: Iterable[tuple[int, bytes]], *,
                       public_key: PublicKey,
                       expected_layout: PackingLayout | None = None) -> CiphertextVector:
    """Reassemble and validate a vector from its header and in-order chunks.

    Chunks must arrive in order, without gaps, overlaps or duplicates, and cover the vector
    exactly; otherwise :class:`CiphertextError`. ``expected_layout`` (the round's layout)
    is enforced when given.
    """
    h = header if isinstance(header, VectorHeader) else read_header(header)
    if h.fingerprint != public_key.fingerprint:
        raise FingerprintMismatchError(
            "ciphertexts were made under a different public key (fingerprint mismatch)"
        )
    if expected_layout is not None and h.layout != expected_layout:
        raise LayoutError("vector uses a different packing layout than this round's")
    values: list[gmpy2.mpz] = []
    for off, data in chunks:
        if off != len(values):
            raise CiphertextError(
                f"chunk at ciphertext offset {off} out of order (expected {len(values)})"
            )
        values.extend(ciphertexts_from_bytes(data, public_key=public_key, first_index=off))
        if len(values) > h.num_ciphertexts:
            raise CiphertextError("more ciphertexts than the header announced")
    return CiphertextVector(public_key=public_key, layout=h.layout, num_values=h.num_values,
                            values=values, fingerprint=h.fingerprint,
                            weight_total=h.weight_total)

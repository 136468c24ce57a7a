"""Canonical bytes and digests of ciphertext vectors, for signatures and decryption shares.

The canonical form of a :class:`~ffa_lora.crypto.vector.CiphertextVector` is exactly what
travels on the wire: its header (:func:`~ffa_lora.crypto.wire.encode_header`: layout, key
fingerprint, value count, weight total) followed by every ciphertext as a fixed-width
big-endian integer. Two parties that hold the same vector compute the same digest, whatever
chunking carried it; any change to a ciphertext, the layout, the count or the weight total
changes it.
"""

from __future__ import annotations

import hashlib

from ffa_lora.crypto.vector import CiphertextVector
from ffa_lora.crypto.wire import encode_header

__all__ = ["DIGEST_SIZE", "vector_digest"]

DIGEST_SIZE = 32
_DOMAIN = b"ffa-lora/ciphertext-vector/v1\x00"


def vector_digest(vec: CiphertextVector) -> bytes:
    """SHA-256 (32 bytes) of a domain tag, the vector's wire header and its ciphertexts."""
    h = hashlib.sha256(_DOMAIN)
    h.update(encode_header(vec))
    width = vec.layout.ciphertext_bytes
    for c in vec.values:
        h.update(c.to_bytes(width, "big"))
    return h.digest()

"""Chunked transfer of encrypted vectors and adapter files, shared by all tiers.

An upload is a header, chunks of whole fixed-width ciphertexts, and a commit carrying the
sha256 of all chunk bytes. :class:`IncomingVector` checks every step as it arrives and holds the
bytes of ONE in-flight upload; nothing is parsed into the running sum before the commit, so a
half-sent update never leaves a trace.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ffa_lora.crypto import (
    CiphertextVector,
    PackingLayout,
    PublicKey,
    ciphertexts_from_bytes,
    encode_header,
    iter_chunks,
    read_header,
)
from ffa_lora.errors import CryptoError
from services.common.rejections import (
    Corrupted,
    InvalidMessage,
    LimitExceeded,
    WrongState,
    as_rejection,
)

MAX_CHUNK_BYTES = 1 << 20


@dataclass
class IncomingVector:
    """Reassembles and validates one encrypted vector."""

    public_key: PublicKey
    layout: PackingLayout
    num_values: int
    num_ciphertexts: int
    max_chunks: int
    weight_total: int = 1
    received: int = 0
    chunks: int = 0
    parts: list[bytes] = field(default_factory=list)
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)

    @classmethod
    def begin(
        cls,
        *,
        header: bytes,
        num_ciphertexts: int,
        public_key: PublicKey,
        expected_layout: PackingLayout,
        max_values: int,
        expected_values: int | None = None,
        max_chunks: int,
        max_weight_total: int | None = 1,
    ) -> IncomingVector:
        """Check a header against what this round expects; raise a Rejection otherwise.

        ``max_weight_total`` bounds the weight the sender claims is inside the vector (1 for a
        client's own update: the edge applies weights itself; None for partial sums, bounded
        by the layout's capacity)."""
        try:
            h = read_header(header)
        except CryptoError as exc:
            raise as_rejection(exc) from None
        layout, fingerprint, num_values = h.layout, h.fingerprint, h.num_values
        if max_weight_total is not None and h.weight_total > max_weight_total:
            raise InvalidMessage("weight",
                            "the vector claims a larger weight than allowed; upload your own update only")
        if fingerprint != public_key.fingerprint:
            raise WrongState("key_fingerprint",
                            "ciphertexts were made under a different public key; reconnect to fetch the current key")
        if layout != expected_layout:
            raise InvalidMessage("layout_mismatch",
                            "packing layout differs from the round's layout")
        if num_values <= 0 or num_values > max_values or (expected_values is not None and num_values != expected_values):
            raise InvalidMessage("size_mismatch",
                            f"update has {num_values} values; the round expects {expected_values or max_values}")
        if num_ciphertexts != layout.num_ciphertexts(num_values):
            raise InvalidMessage("size_mismatch",
                            "ciphertext count does not match the number of values and the layout")
        return cls(public_key=public_key, layout=layout, num_values=num_values,
                   num_ciphertexts=num_ciphertexts, max_chunks=max_chunks, weight_total=h.weight_total)

    def add_chunk(self, offset: int, data: bytes) -> None:
        width = self.public_key.ciphertext_bytes
        if len(data) > MAX_CHUNK_BYTES:
            raise InvalidMessage("chunk_too_large", "chunk exceeds 1 MiB")
        if not data or len(data) % width:
            raise InvalidMessage("chunk_size",
                            f"chunk must hold whole ciphertexts of {width} bytes")
        if offset != self.received:
            raise InvalidMessage("out_of_order",
                            f"chunk offset {offset} but {self.received} ciphertexts received so far")
        count = len(data) // width
        if self.received + count > self.num_ciphertexts:
            raise InvalidMessage("size_mismatch", "more ciphertexts than announced")
        self.chunks += 1
        if self.chunks > self.max_chunks:
            raise LimitExceeded("too_many_chunks", "too many chunks for one update")
        self.received += count
        self.parts.append(data)
        self.digest.update(data)

    @property
    def nbytes(self) -> int:
        return sum(len(p) for p in self.parts)

    def finish(self, sha256_hex: str) -> CiphertextVector:
        """Verify completeness and checksum, parse and range-check every ciphertext."""
        if self.received != self.num_ciphertexts:
            raise InvalidMessage("incomplete",
                            f"commit after {self.received} of {self.num_ciphertexts} ciphertexts")
        if self.digest.hexdigest() != sha256_hex:
            raise Corrupted("checksum", "sha256 of the chunks does not match the commit")
        try:
            values = ciphertexts_from_bytes(b"".join(self.parts), public_key=self.public_key)
            return CiphertextVector(values=values, layout=self.layout, num_values=self.num_values,
                                    fingerprint=self.public_key.fingerprint, public_key=self.public_key,
                                    weight_total=self.weight_total)
        except CryptoError as exc:
            raise as_rejection(exc) from None
        finally:
            self.parts.clear()


@dataclass(frozen=True)
class OutgoingVector:
    header: bytes
    num_ciphertexts: int
    chunks: list[tuple[int, bytes]]
    sha256: str

    @property
    def nbytes(self) -> int:
        return sum(len(c) for _, c in self.chunks)


def outgoing(vec: CiphertextVector, *, max_chunk_bytes: int = MAX_CHUNK_BYTES) -> OutgoingVector:
    """Split a vector into header + chunks + checksum."""
    chunks = list(iter_chunks(vec, max_chunk_bytes=max_chunk_bytes))
    h = hashlib.sha256()
    for _, data in chunks:
        h.update(data)
    return OutgoingVector(encode_header(vec), len(vec.values), chunks, h.hexdigest())


def split_blob(blob: bytes, *, max_chunk_bytes: int = MAX_CHUNK_BYTES) -> list[tuple[int, bytes]]:
    return [(off, blob[off : off + max_chunk_bytes]) for off in range(0, max(len(blob), 1), max_chunk_bytes)]


class BlobAssembler:
    """Reassembles an adapter file sent in chunks; checks size (against the receiver's own
    limit, before a byte is kept) and sha256."""

    def __init__(self, *, version: int, total_size: int, sha256: str, max_size: int) -> None:
        if total_size > max_size:
            raise LimitExceeded("adapter_too_large",
                                f"adapter of {total_size} bytes is larger than the {max_size} bytes this peer "
                                "accepts (max_adapter_bytes)")
        self.version, self.total_size, self.sha256 = version, total_size, sha256
        self._buf = bytearray()

    def add(self, offset: int, data: bytes) -> bytes | None:
        """Add a chunk; return the whole blob once complete and verified."""
        if offset != len(self._buf) or len(self._buf) + len(data) > self.total_size:
            raise InvalidMessage("adapter_chunk", "adapter chunk out of order or too long")
        self._buf += data
        if len(self._buf) < self.total_size:
            return None
        blob = bytes(self._buf)
        if hashlib.sha256(blob).hexdigest() != self.sha256:
            raise Corrupted("adapter_checksum", "adapter sha256 mismatch")
        return blob


class AdapterReceiver:
    """Turns a stream of AdapterChunk fields into complete, verified adapter files of at most
    ``max_size`` bytes."""

    def __init__(self, *, max_size: int) -> None:
        self.max_size = max_size
        self._assembler: BlobAssembler | None = None

    def feed(self, *, version: int, offset: int, data: bytes, total_size: int, sha256: str) -> bytes | None:
        """Add one chunk; return the adapter file when its last chunk arrived."""
        if offset == 0:
            self._assembler = None
            self._assembler = BlobAssembler(version=version, total_size=total_size, sha256=sha256,
                                            max_size=self.max_size)
        if self._assembler is None:
            return None  # joined mid-file: wait for the next version's first chunk
        blob = self._assembler.add(offset, data)
        if blob is not None:
            self._assembler = None
        return blob

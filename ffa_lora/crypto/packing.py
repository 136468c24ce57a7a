"""Packing codec: many b-bit codes per Paillier plaintext (BatchCrypt-style).

A plaintext holds ``slots_per_ciphertext`` slots of ``slot_bits`` bits each, slot 0 in the
least significant bits. A slot must hold the sum of up to ``max_clients`` codes, each
multiplied by a weight of at most ``max_weight``, without carrying into its neighbour:
``2**slot_bits > max_clients · max_weight · (2**bits - 1)``. What is actually enforced
downstream is the *total weight* summed into any slot (``capacity = max_clients ·
max_weight`` weight units), so 1000 clients of weight 1 fit the same layout as 250 clients of
weight 4. All slots together stay below 2^(key_bits-1) ≤ n, so a plaintext never wraps mod n.

With 2048-bit keys, 8-bit codes and a capacity of 1024 (the defaults): 18-bit slots, 113
slots per ciphertext, 512 B / 113 ≈ 4.53 bytes per value.

Packing and unpacking are vectorized: codes → bit matrix (numpy) → bytes → one
``int.from_bytes`` per plaintext, and back. There is no Python loop per value.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ffa_lora.errors import CiphertextError, LayoutError

__all__ = ["DEFAULT_MAX_CLIENTS", "DEFAULT_MAX_WEIGHT", "PackingLayout"]

DEFAULT_MAX_CLIENTS = 256
DEFAULT_MAX_WEIGHT = 4

# Ciphertexts per vectorized block: bounds the temporary bit matrices (~15 MB at 2048 bits).
_BLOCK_CIPHERTEXTS = 4096

_MAGIC = b"FFAL"
_VERSION = 1
_STRUCT = struct.Struct(">4sBHBIIBH")  # magic, version, key_bits, bits, clients, weight, slot_bits, slots


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise LayoutError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


@dataclass(frozen=True)
class PackingLayout:
    """How codes are packed into Paillier plaintexts; shared by all three services.

    Build with :meth:`derive`; serialize with :meth:`to_bytes` / :meth:`from_bytes`.
    """

    key_bits: int
    bits: int
    max_clients: int
    max_weight: int
    slot_bits: int
    slots_per_ciphertext: int

    @classmethod
    def derive(cls, *, key_bits: int, bits: int = 8, max_clients: int = DEFAULT_MAX_CLIENTS,
               max_weight: int = DEFAULT_MAX_WEIGHT) -> PackingLayout:
        """The densest layout for these parameters.

        Raises:
            LayoutError: a parameter is out of range or not even one slot fits a plaintext.
        """
        key_bits = _check_int("key_bits", key_bits, 16, 65535)
        bits = _check_int("bits", bits, 1, 16)
        max_clients = _check_int("max_clients", max_clients, 1, 2**32 - 1)
        max_weight = _check_int("max_weight", max_weight, 1, 2**32 - 1)
        levels = (1 << bits) - 1
        slot_bits = (max_clients * max_weight * levels).bit_length()
        if slot_bits > 62:
            raise LayoutError(
                f"slots of {slot_bits} bits exceed 62 bits; lower max_clients × max_weight "
                f"({max_clients} × {max_weight}) or bits ({bits})"
            )
        slots = (key_bits - 1) // slot_bits
        if slots < 1:
            raise LayoutError(
                f"a {key_bits}-bit key cannot hold one {slot_bits}-bit slot; use a larger key "
                "or lower max_clients × max_weight"
            )
        return cls(key_bits, bits, max_clients, max_weight, slot_bits, min(slots, 65535))

    def __post_init__(self) -> None:
        levels = (1 << self.bits) - 1
        if (self.max_clients * self.max_weight * levels).bit_length() > self.slot_bits:
            raise LayoutError("slot_bits too small for max_clients × max_weight × levels")
        if self.slots_per_ciphertext < 1 or self.slots_per_ciphertext * self.slot_bits > self.key_bits - 1:
            raise LayoutError("slots_per_ciphertext × slot_bits must fit key_bits - 1 bits")

    @property
    def levels(self) -> int:
        """Largest code, 2^bits - 1."""
        return (1 << self.bits) - 1

    @property
    def capacity(self) -> int:
        """Total weight (Σ w_i over contributors) one slot can hold without carrying."""
        return self.max_clients * self.max_weight

    @property
    def plaintext_bits(self) -> int:
        """Bits of a packed plaintext actually used."""
        return self.slots_per_ciphertext * self.slot_bits

    @property
    def ciphertext_bytes(self) -> int:
        """Wire width of one ciphertext (2·key_bits/8)."""
        return (2 * self.key_bits + 7) // 8

    @property
    def bytes_per_value(self) -> float:
        """Ciphertext bytes per packed value."""
        return self.ciphertext_bytes / self.slots_per_ciphertext

    def num_ciphertexts(self, num_values: int) -> int:
        """Ciphertexts needed for ``num_values`` values."""
        if num_values < 0:
            raise LayoutError(f"num_values must be >= 0, got {num_values}")
        return -(-int(num_values) // self.slots_per_ciphertext)

    def to_bytes(self) -> bytes:
        """Compact, versioned binary spec (19 bytes, big-endian struct)."""
        return _STRUCT.pack(_MAGIC, _VERSION, self.key_bits, self.bits, self.max_clients,
                            self.max_weight, self.slot_bits, self.slots_per_ciphertext)

    @classmethod
    def from_bytes(cls, data: bytes) -> PackingLayout:
        """Parse :meth:`to_bytes`; the spec must equal what :meth:`derive` gives.

        Raises:
            LayoutError: wrong size, magic or version, or an inconsistent spec.
        """
        if len(data) != _STRUCT.size:
            raise LayoutError(f"layout spec must be {_STRUCT.size} bytes, got {len(data)}")
        magic, version, key_bits, bits, clients, weight, slot_bits, slots = _STRUCT.unpack(data)
        if magic != _MAGIC:
            raise LayoutError("not a packing layout spec (bad magic)")
        if version != _VERSION:
            raise LayoutError(f"layout spec version {version} not supported (expected {_VERSION})")
        layout = cls.derive(key_bits=key_bits, bits=bits, max_clients=clients, max_weight=weight)
        if (layout.slot_bits, layout.slots_per_ciphertext) != (slot_bits, slots):
            raise LayoutError("layout spec is inconsistent: slot sizes do not match its parameters")
        return layout

    # -- codec ------------------------------------------------------------------------------

    def _plain_bytes(self) -> int:
        return (self.plaintext_bits + 7) // 8

    def pack(self, codes: np.ndarray) -> list[int]:
        """Pack non-negative integer codes (each < 2^slot_bits) into plaintext integers.

        The last plaintext is zero-padded. Raises :class:`LayoutError` for non-integer input
        or a value that does not fit a slot.
        """
        c = np.asarray(codes).ravel()
        if c.size and not np.issubdtype(c.dtype, np.integer):
            raise LayoutError(f"codes must be integers, got dtype {c.dtype}")
        if c.size and (int(c.min()) < 0 or int(c.max()) >> self.slot_bits):
            raise LayoutError(f"codes must lie in [0, 2^{self.slot_bits}) to fit a slot")
        nct = self.num_ciphertexts(c.size)
        out: list[int] = []
        step = _BLOCK_CIPHERTEXTS * self.slots_per_ciphertext
        for start in range(0, nct * self.slots_per_ciphertext, step):
            out.extend(self._pack_block(c[start : start + step]))
        return out

    def _pack_block(self, c: np.ndarray) -> list[int]:
        k, sb = self.slots_per_ciphertext, self.slot_bits
        nct = self.num_ciphertexts(c.size)
        word = np.dtype("<u4") if sb <= 32 else np.dtype("<u8")
        padded = np.zeros(nct * k, dtype=word)
        padded[: c.size] = c
        bits = np.unpackbits(padded.view(np.uint8).reshape(nct * k, word.itemsize), axis=1,
                             bitorder="little")[:, :sb]
        nb = self._plain_bytes()
        rows = np.zeros((nct, nb * 8), dtype=np.uint8)
        rows[:, : k * sb] = bits.reshape(nct, k * sb)
        buf = np.packbits(rows, axis=1, bitorder="little").tobytes()
        return [int.from_bytes(buf[i * nb : (i + 1) * nb], "little") for i in range(nct)]

    def _unpack_block(self, data: bytes, nct: int) -> np.ndarray:
        k, sb, nb = self.slots_per_ciphertext, self.slot_bits, self._plain_bytes()
        raw = np.frombuffer(data, dtype=np.uint8).reshape(nct, nb)
        bits = np.unpackbits(raw, axis=1, bitorder="little")[:, : k * sb].reshape(nct * k, sb)
        wide = np.zeros((nct * k, 64), dtype=np.uint8)
        wide[:, :sb] = bits
        return np.packbits(wide, axis=1, bitorder="little").view("<u8").ravel().astype(np.int64)

    def unpack(self, plaintexts: Sequence[int], num_values: int) -> np.ndarray:
        """Slot values (int64) of ``num_values`` positions from packed plaintexts.

        Raises:
            LayoutError: wrong number of plaintexts for ``num_values``.
            CiphertextError: a plaintext exceeds the packed width or has non-zero padding
                slots — the ciphertexts were tampered with or made under another layout.
        """
        nct = self.num_ciphertexts(num_values)
        if len(plaintexts) != nct:
            raise LayoutError(f"{len(plaintexts)} plaintexts given, {num_values} values need {nct}")
        if nct == 0:
            return np.zeros(0, dtype=np.int64)
        nb = self._plain_bytes()
        width = self.plaintext_bits
        blocks = []
        for start in range(0, nct, _BLOCK_CIPHERTEXTS):
            parts = []
            for m in plaintexts[start : start + _BLOCK_CIPHERTEXTS]:
                m = int(m)
                if m < 0 or m.bit_length() > width:
                    raise CiphertextError(
                        "a decrypted plaintext exceeds the packed width: ciphertexts were "
                        "tampered with, or made under another key or layout"
                    )
                parts.append(m.to_bytes(nb, "little"))
            blocks.append(self._unpack_block(b"".join(parts), len(parts)))
        values = np.concatenate(blocks)
        if np.any(values[num_values:]):
            raise CiphertextError(
                "padding slots past the last value are not zero: ciphertexts were tampered "
                "with or the value count is wrong"
            )
        return values[:num_values]

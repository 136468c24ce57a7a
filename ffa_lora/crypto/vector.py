"""Ciphertext vectors and the homomorphic operations the edge runs without the private key.

A :class:`CiphertextVector` is validated when it is built: its key fingerprint must match the
public key it is checked against, each ciphertext must satisfy 0 < c < n², and the count must
match the packing layout. It also carries ``weight_total``, an upper bound on the total
weight summed into any slot; every operation that would push it past the layout's capacity
raises :class:`LayoutError` instead of letting slot sums carry into their neighbours.

Adding a shorter vector into a longer one adds it into the prefix (heterogeneous ranks: a
rank-r client's update is a prefix of the full vector, its unused slots encrypt zero).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import gmpy2
import numpy as np

from ffa_lora.crypto.codec import ciphertexts_from_bytes, ciphertexts_to_bytes
from ffa_lora.crypto.keys import PublicKey
from ffa_lora.crypto.packing import PackingLayout
from ffa_lora.errors import CiphertextError, FingerprintMismatchError, LayoutError

__all__ = ["CiphertextVector", "RunningSum", "add", "check_ciphertexts", "scale"]

_INT_TYPES = (int, np.integer, type(gmpy2.mpz(0)))


def check_ciphertexts(values: Iterable[Any], public_key: PublicKey, *,
                      first_index: int = 0) -> list[gmpy2.mpz]:
    """Convert to gmpy2 integers and check 0 < c < n² for each; :class:`CiphertextError` if not."""
    n2 = public_key.nsquare
    out: list[gmpy2.mpz] = []
    for i, c in enumerate(values):
        # gmpy2.mpz() would silently truncate floats and parse strings: accept integers only.
        if not isinstance(c, _INT_TYPES) or isinstance(c, bool):
            raise CiphertextError(f"ciphertext {first_index + i} is not an integer")
        v = gmpy2.mpz(c)
        if not 0 < v < n2:
            raise CiphertextError(
                f"ciphertext {first_index + i} is out of range (must satisfy 0 < c < n²)"
            )
        out.append(v)
    return out


def _check_weight(weight: int, name: str = "weight") -> int:
    if isinstance(weight, bool) or not isinstance(weight, (int, np.integer)) or weight < 1:
        raise LayoutError(f"{name} must be a positive integer, got {weight!r}")
    return int(weight)


class CiphertextVector:
    """Packed Paillier ciphertexts of ``num_values`` values under one key and layout.

    Args:
        public_key: the key to validate against.
        layout: the packing layout the plaintexts follow.
        num_values: number of packed values.
        values: the ciphertexts (ints or gmpy2 mpz).
        fingerprint: the fingerprint the sender claims; must equal ``public_key.fingerprint``.
        weight_total: bound on the total weight summed into any slot (1 for one client's
            update; the sum of weights after additions), at most ``layout.capacity``.

    Raises:
        FingerprintMismatchError, LayoutError, CiphertextError: on invalid input.
    """

    __slots__ = ("fingerprint", "layout", "num_values", "public_key", "values", "weight_total")

    def __init__(self, *, public_key: PublicKey, layout: PackingLayout, num_values: int,
                 values: Sequence[Any], fingerprint: str | None = None,
                 weight_total: int = 1) -> None:
        if fingerprint is not None and fingerprint != public_key.fingerprint:
            raise FingerprintMismatchError(
                "ciphertexts were made under a different public key (fingerprint mismatch); "
                "re-encrypt with the federation's current key"
            )
        if layout.key_bits != public_key.bits:
            raise LayoutError(
                f"layout is for {layout.key_bits}-bit keys but the public key has {public_key.bits} bits"
            )
        if isinstance(num_values, bool) or int(num_values) != num_values or num_values < 0:
            raise CiphertextError(f"num_values must be a non-negative integer, got {num_values!r}")
        expected = layout.num_ciphertexts(int(num_values))
        if len(values) != expected:
            raise CiphertextError(
                f"wrong number of ciphertexts: {len(values)} for {num_values} values "
                f"(layout needs {expected})"
            )
        if isinstance(weight_total, bool) or int(weight_total) != weight_total or not (
            0 <= weight_total <= layout.capacity
        ):
            raise LayoutError(
                f"weight_total {weight_total!r} outside [0, {layout.capacity}] (the layout's "
                "capacity): slot sums could carry"
            )
        self.public_key = public_key
        self.fingerprint = public_key.fingerprint
        self.layout = layout
        self.num_values = int(num_values)
        self.values = check_ciphertexts(values, public_key)
        self.weight_total = int(weight_total)

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return (f"CiphertextVector(num_values={self.num_values}, ciphertexts={len(self.values)}, "
                f"weight_total={self.weight_total}, fingerprint={self.fingerprint[:16]}…)")

    @property
    def nbytes(self) -> int:
        """Bytes of the ciphertexts on the wire."""
        return len(self.values) * self.layout.ciphertext_bytes


def _check_same(vec: CiphertextVector, public_key: PublicKey, layout: PackingLayout) -> None:
    if vec.fingerprint != public_key.fingerprint:
        raise FingerprintMismatchError(
            "ciphertext vector was made under a different public key (fingerprint mismatch)"
        )
    if vec.layout != layout:
        raise LayoutError("ciphertext vectors use different packing layouts")


def add(a: CiphertextVector, b: CiphertextVector, public_key: PublicKey) -> CiphertextVector:
    """Homomorphic sum: plaintext slot sums of ``a`` + ``b``.

    A shorter vector is added into the prefix of the longer one. Raises
    :class:`LayoutError` if the combined weight would exceed the layout's capacity.
    """
    _check_same(a, public_key, a.layout)
    _check_same(b, public_key, a.layout)
    if a.num_values < b.num_values:
        a, b = b, a
    total = a.weight_total + b.weight_total
    if total > a.layout.capacity:
        raise LayoutError(
            f"sum would hold total weight {total} > layout capacity {a.layout.capacity}: "
            "slots would carry; derive the layout with larger max_clients/max_weight"
        )
    n2 = public_key.nsquare
    values = [x * y % n2 for x, y in zip(a.values, b.values)] + a.values[len(b.values):]
    return CiphertextVector(public_key=public_key, layout=a.layout, num_values=a.num_values,
                            values=values, weight_total=total)


def scale(a: CiphertextVector, weight: int, public_key: PublicKey) -> CiphertextVector:
    """Homomorphic multiplication of every slot by a small positive integer: c^w mod n²."""
    w = _check_weight(weight)
    _check_same(a, public_key, a.layout)
    total = a.weight_total * w
    if total > a.layout.capacity:
        raise LayoutError(
            f"scaled vector would hold total weight {total} > layout capacity {a.layout.capacity}"
        )
    n2 = public_key.nsquare
    values = a.values if w == 1 else [gmpy2.powmod(c, w, n2) for c in a.values]
    return CiphertextVector(public_key=public_key, layout=a.layout, num_values=a.num_values,
                            values=values, weight_total=total)


class RunningSum:
    """Streaming encrypted sum for the edge: memory O(number of ciphertexts), not O(clients).

    Each ciphertext position tracks how much weight has been added into it, so a chunk that
    would make any slot carry is refused (:class:`LayoutError`) before the state changes.

    Args:
        public_key: the federation's public key.
        layout: the round's packing layout.
        num_values: length of the full update vector.
    """

    def __init__(self, public_key: PublicKey, layout: PackingLayout, num_values: int) -> None:
        if layout.key_bits != public_key.bits:
            raise LayoutError("layout key size does not match the public key")
        self.public_key = public_key
        self.layout = layout
        self.num_values = int(num_values)
        self.num_ciphertexts = layout.num_ciphertexts(self.num_values)
        self._acc: list[gmpy2.mpz] = [gmpy2.mpz(1)] * self.num_ciphertexts
        self._used = np.zeros(self.num_ciphertexts, dtype=np.int64)
        self._lock = threading.Lock()

    def add_chunk(self, offset_ciphertexts: int, ciphertexts: Sequence[Any], *, weight: int = 1,
                  source_weight_total: int = 1) -> None:
        """Multiply a chunk of one update's ciphertexts into the sum at ``offset_ciphertexts``.

        Args:
            offset_ciphertexts: index of the chunk's first ciphertext in the full vector.
            ciphertexts: the chunk (validated here: 0 < c < n²).
            weight: integer weight applied by the edge (c^weight), e.g. staleness.
            source_weight_total: weight already inside these ciphertexts (the sender's
                ``weight_total``, 1 for a plain client update).
        """
        w = _check_weight(weight)
        src = _check_weight(source_weight_total, "source_weight_total")
        off = int(offset_ciphertexts)
        if off < 0 or off + len(ciphertexts) > self.num_ciphertexts:
            raise CiphertextError(
                f"chunk [{off}, {off + len(ciphertexts)}) lies outside the vector's "
                f"{self.num_ciphertexts} ciphertexts"
            )
        vals = check_ciphertexts(ciphertexts, self.public_key, first_index=off)
        end = off + len(vals)
        n2 = self.public_key.nsquare
        if w != 1:
            vals = [gmpy2.powmod(c, w, n2) for c in vals]
        with self._lock:  # edges add concurrent client streams from several threads
            used = self._used[off:end] + w * src
            if used.size and int(used.max()) > self.layout.capacity:
                raise LayoutError(
                    f"adding this chunk would put total weight {int(used.max())} into a slot, "
                    f"above the layout capacity {self.layout.capacity}"
                )
            acc = self._acc
            for i, c in enumerate(vals, off):
                acc[i] = acc[i] * c % n2
            self._used[off:end] = used

    def add_vector(self, vec: CiphertextVector, *, weight: int = 1) -> None:
        """Add a whole (possibly shorter, prefix) vector with an integer weight."""
        _check_same(vec, self.public_key, self.layout)
        if vec.num_values > self.num_values:
            raise CiphertextError(
                f"vector has {vec.num_values} values, more than this sum's {self.num_values}"
            )
        if vec.weight_total == 0:
            return
        self.add_chunk(0, vec.values, weight=weight, source_weight_total=vec.weight_total)

    @property
    def weight_total(self) -> int:
        """Largest total weight held by any ciphertext position so far."""
        return int(self._used.max()) if self._used.size else 0

    def result(self) -> CiphertextVector:
        """The current encrypted sum (positions nobody contributed to encrypt zero)."""
        with self._lock:
            values, weight = list(self._acc), self.weight_total
        return CiphertextVector(public_key=self.public_key, layout=self.layout,
                                num_values=self.num_values, values=values, weight_total=weight)

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state: the layout, value count, ciphertexts and per-position weight."""
        with self._lock:
            acc, used = list(self._acc), self._used.copy()
        return {
            "fingerprint": self.public_key.fingerprint,
            "layout": self.layout.to_bytes(),
            "num_values": self.num_values,
            "ciphertexts": ciphertexts_to_bytes(acc, key_bits=self.layout.key_bits),
            "weight_used": used.astype("<i8").tobytes(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (validated like any incoming ciphertexts)."""
        if state.get("fingerprint") != self.public_key.fingerprint:
            raise FingerprintMismatchError("saved running sum was made under another public key")
        if PackingLayout.from_bytes(state["layout"]) != self.layout or int(
            state["num_values"]
        ) != self.num_values:
            raise LayoutError("saved running sum has a different layout or length")
        acc = ciphertexts_from_bytes(state["ciphertexts"], public_key=self.public_key)
        used = np.frombuffer(state["weight_used"], dtype="<i8").astype(np.int64)
        if len(acc) != self.num_ciphertexts or used.shape != (self.num_ciphertexts,):
            raise CiphertextError("saved running sum has the wrong number of ciphertexts")
        if used.size and (used.min() < 0 or used.max() > self.layout.capacity):
            raise LayoutError("saved running sum has invalid per-position weights")
        with self._lock:
            self._acc = acc
            self._used = used.copy()

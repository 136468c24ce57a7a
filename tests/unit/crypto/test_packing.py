"""Packing codec: layout derivation, serialization, vectorized pack/unpack, no carries."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ffa_lora.crypto.packing import PackingLayout
from ffa_lora.errors import CiphertextError, LayoutError


def test_default_2048_layout_meets_size_target() -> None:
    lay = PackingLayout.derive(key_bits=2048, bits=8)
    assert (lay.slot_bits, lay.slots_per_ciphertext) == (18, 113)
    assert lay.capacity == 1024
    assert lay.bytes_per_value <= 4.6
    assert lay.num_ciphertexts(40000) == 354
    assert lay.num_ciphertexts(0) == 0 and lay.num_ciphertexts(113) == 1
    assert PackingLayout.derive(key_bits=3072, bits=16).slot_bits == 26


@pytest.mark.parametrize("kwargs", [
    {"key_bits": 16, "bits": 16, "max_clients": 2**20, "max_weight": 2**12},  # > 62-bit slots
    {"key_bits": 20, "bits": 16, "max_clients": 1000, "max_weight": 1},       # no slot fits
    {"key_bits": 2048, "bits": 0},
    {"key_bits": 2048, "bits": 8, "max_clients": 0},
    {"key_bits": 2048, "bits": 8, "max_weight": True},
])
def test_impossible_layouts(kwargs) -> None:
    with pytest.raises(LayoutError):
        PackingLayout.derive(**kwargs)


def test_serialization_roundtrip_and_validation() -> None:
    lay = PackingLayout.derive(key_bits=2048, bits=16, max_clients=100, max_weight=3)
    b = lay.to_bytes()
    assert isinstance(b, bytes) and len(b) == 19 and b"{" not in b
    assert PackingLayout.from_bytes(b) == lay
    for bad in (b[:-1], b"XXXX" + b[4:], b[:4] + b"\x07" + b[5:]):
        with pytest.raises(LayoutError):
            PackingLayout.from_bytes(bad)
    tampered = bytearray(b)
    tampered[-1] ^= 0x01  # slots count no longer matches the parameters
    with pytest.raises(LayoutError):
        PackingLayout.from_bytes(bytes(tampered))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), key_bits=st.sampled_from([64, 512, 2048]), bits=st.sampled_from([8, 16]),
       size=st.integers(0, 700))
def test_pack_unpack_roundtrip(data, key_bits, bits, size) -> None:
    lay = PackingLayout.derive(key_bits=key_bits, bits=bits, max_clients=8, max_weight=2)
    codes = np.array(data.draw(st.lists(st.integers(0, (1 << lay.slot_bits) - 1),
                                        min_size=size, max_size=size)), dtype=np.int64)
    packed = lay.pack(codes)
    assert len(packed) == lay.num_ciphertexts(size)
    assert all(0 <= m < 2 ** (key_bits - 1) for m in packed)
    assert np.array_equal(lay.unpack(packed, size), codes)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), clients=st.integers(1, 32), size=st.integers(1, 300))
def test_packed_integer_sums_do_not_carry(data, clients, size) -> None:
    lay = PackingLayout.derive(key_bits=512, bits=8, max_clients=8, max_weight=4)
    ws = data.draw(st.lists(st.integers(1, 4), min_size=clients, max_size=clients))
    ws = ws if sum(ws) <= lay.capacity else [1] * clients
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
    codes = [rng.integers(0, 256, size) for _ in ws]
    total = [0] * lay.num_ciphertexts(size)
    for c, w in zip(codes, ws):
        total = [t + w * m for t, m in zip(total, lay.pack(c))]
    assert np.array_equal(lay.unpack(total, size), sum(w * c for c, w in zip(codes, ws)))


def test_extreme_all_max_codes_at_capacity() -> None:
    lay = PackingLayout.derive(key_bits=2048, bits=8)
    one = lay.pack(np.full(1000, lay.levels, dtype=np.uint8))
    total = [m * lay.capacity for m in one]  # every client at max code and max weight
    assert all(m.bit_length() <= lay.plaintext_bits for m in total)
    assert (lay.unpack(total, 1000) == lay.capacity * lay.levels).all()


def test_pack_rejects_bad_codes_and_unpack_detects_garbage() -> None:
    lay = PackingLayout.derive(key_bits=512, bits=8)
    with pytest.raises(LayoutError):
        lay.pack(np.array([1 << lay.slot_bits]))
    with pytest.raises(LayoutError):
        lay.pack(np.array([-1]))
    with pytest.raises(LayoutError):
        lay.pack(np.array([0.5]))
    packed = lay.pack(np.arange(30))
    with pytest.raises(LayoutError):
        lay.unpack(packed, 100)
    with pytest.raises(CiphertextError, match="width"):
        lay.unpack([1 << lay.plaintext_bits] + packed[1:], 30)
    with pytest.raises(CiphertextError, match="padding"):
        lay.unpack(packed, 29)  # value 29 sits in a slot past the claimed end


def test_pack_unpack_across_vectorized_blocks() -> None:
    lay = PackingLayout.derive(key_bits=64, bits=8, max_clients=8, max_weight=2)
    n = 4096 * lay.slots_per_ciphertext * 2 + 5  # three internal blocks, last one partial
    codes = np.random.default_rng(3).integers(0, 1 << lay.slot_bits, n)
    packed = lay.pack(codes)
    assert len(packed) == lay.num_ciphertexts(n)
    assert np.array_equal(lay.unpack(packed, n), codes)

"""Wire format: fixed-width big-endian ciphertexts, ≤1 MiB chunks, binary header."""

from __future__ import annotations

import numpy as np
import pytest

from ffa_lora.crypto.paillier import Decryptor, Encryptor
from ffa_lora.crypto.wire import (
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    decode_header,
    encode_header,
    iter_chunks,
    read_header,
    vector_from_chunks,
)
from ffa_lora.errors import CiphertextError, FingerprintMismatchError, LayoutError


@pytest.fixture()
def vec(keypair, layout):
    pub, _ = keypair
    return Encryptor(pub, layout, workers=0).encrypt_codes(np.arange(1000) % 256, weight=3)


def test_fixed_width_roundtrip(keypair, vec) -> None:
    pub, _ = keypair
    data = ciphertexts_to_bytes(vec.values, key_bits=512)
    assert len(data) == len(vec.values) * 128 == vec.nbytes
    assert ciphertexts_from_bytes(data, public_key=pub) == vec.values
    with pytest.raises(CiphertextError, match="multiple"):
        ciphertexts_from_bytes(data[:-1], public_key=pub)
    too_big = int(pub.nsquare).to_bytes(128, "big")
    with pytest.raises(CiphertextError, match="out of range"):
        ciphertexts_from_bytes(data[:128] + too_big, public_key=pub)
    with pytest.raises(CiphertextError, match="out of range"):
        ciphertexts_from_bytes(bytes(128), public_key=pub)
    with pytest.raises(CiphertextError):
        ciphertexts_to_bytes([1 << 1100], key_bits=512)


def test_chunks_are_whole_and_bounded(keypair, layout, vec) -> None:
    pub, priv = keypair
    chunks = list(iter_chunks(vec, max_chunk_bytes=1000))
    assert all(len(b) <= 1000 and len(b) % 128 == 0 for _, b in chunks)
    assert [o for o, _ in chunks] == list(range(0, len(vec.values), 7))
    assert all(len(b) <= 1 << 20 for _, b in iter_chunks(vec))
    header = encode_header(vec)
    # binary, not JSON: magic + version, then the fixed-width layout spec
    assert header.startswith(b"FFAV\x01FFAL") and len(header) == len(encode_header(vec))
    back = vector_from_chunks(header, chunks, public_key=pub, expected_layout=layout)
    assert back.values == vec.values and back.weight_total == 3
    out = Decryptor(priv, layout, workers=0).decrypt_code_sums(back)
    assert np.array_equal(out, 3 * (np.arange(1000) % 256))
    with pytest.raises(CiphertextError):
        list(iter_chunks(vec, max_chunk_bytes=100))


def test_header_roundtrip_and_errors(keypair, layout, vec) -> None:
    h = encode_header(vec)
    assert decode_header(h) == (layout, vec.fingerprint, 1000)
    assert read_header(h).weight_total == 3 and read_header(h).num_ciphertexts == len(vec.values)
    with pytest.raises(CiphertextError):
        read_header(h[:-1])
    with pytest.raises(CiphertextError):
        read_header(b"JSON" + h[4:])
    with pytest.raises(CiphertextError):
        read_header(h[:4] + b"\x02" + h[5:])
    bad_layout = bytearray(h)
    bad_layout[5] = ord("X")
    with pytest.raises(LayoutError):
        read_header(bytes(bad_layout))
    bad_count = bytearray(h)
    bad_count[-1] ^= 0x01
    with pytest.raises(CiphertextError, match="inconsistent"):
        read_header(bytes(bad_count))


def test_reassembly_rejects_bad_streams(keypair, other_keypair, small_layout, vec) -> None:
    pub, _ = keypair
    h = encode_header(vec)
    chunks = list(iter_chunks(vec, max_chunk_bytes=1024))
    with pytest.raises(CiphertextError, match="out of order"):
        vector_from_chunks(h, [chunks[1], chunks[0]] + chunks[2:], public_key=pub)
    with pytest.raises(CiphertextError, match="out of order"):
        vector_from_chunks(h, [chunks[0], chunks[0]] + chunks[1:], public_key=pub)
    with pytest.raises(CiphertextError, match="wrong number"):
        vector_from_chunks(h, chunks[:-1], public_key=pub)
    with pytest.raises(CiphertextError, match="more ciphertexts"):
        vector_from_chunks(h, chunks + [(len(vec.values), chunks[0][1])], public_key=pub)
    with pytest.raises(FingerprintMismatchError):
        vector_from_chunks(h, chunks, public_key=other_keypair[0])
    with pytest.raises(LayoutError):
        vector_from_chunks(h, chunks, public_key=pub, expected_layout=small_layout)

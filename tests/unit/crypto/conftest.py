"""Shared fixtures for the secure-sum tests.

The 512-bit keys here are TEST-ONLY (``generate_keypair(test_only=True)``): they keep unit
tests fast and are far too small for real use. One test in ``test_slow_2048.py`` uses a real
2048-bit key.
"""

from __future__ import annotations

import pytest

from ffa_lora.crypto.keys import PrivateKey, PublicKey, generate_keypair
from ffa_lora.crypto.packing import PackingLayout

TEST_ONLY_BITS = 512


@pytest.fixture(scope="session")
def keypair() -> tuple[PublicKey, PrivateKey]:
    """A 512-bit TEST-ONLY key pair, generated once per session."""
    return generate_keypair(bits=TEST_ONLY_BITS, test_only=True)


@pytest.fixture(scope="session")
def other_keypair() -> tuple[PublicKey, PrivateKey]:
    """A second 512-bit TEST-ONLY key pair (for fingerprint-mismatch tests)."""
    return generate_keypair(bits=TEST_ONLY_BITS, test_only=True)


@pytest.fixture(scope="session")
def layout() -> PackingLayout:
    """Default layout for the 512-bit test key: 8-bit codes, capacity 1024."""
    return PackingLayout.derive(key_bits=TEST_ONLY_BITS, bits=8)


@pytest.fixture(scope="session")
def small_layout() -> PackingLayout:
    """A tight layout (capacity 8 × 4 = 32) to exercise the overflow checks."""
    return PackingLayout.derive(key_bits=TEST_ONLY_BITS, bits=8, max_clients=8, max_weight=4)

"""Shared fixtures for the de-identification tests (built once per session: LAC takes ~1 s)."""

from __future__ import annotations

import pytest

from ffa_lora.deid import DeidConfig, Deidentifier

# Test-only secrets (256 bits each). Real sites generate theirs with generate_site_secret().
SECRET_A = bytes(range(32))
SECRET_B = bytes(range(100, 132))


@pytest.fixture(scope="session")
def secret_a() -> bytes:
    return SECRET_A


@pytest.fixture(scope="session")
def secret_b() -> bytes:
    return SECRET_B


@pytest.fixture(scope="session")
def pattern_tagger() -> Deidentifier:
    """Pattern-only mode (no LAC, no jieba), type-tag operator."""
    return Deidentifier(DeidConfig(operator="tag", use_lac=False, name_fallback="none"),
                        site_secret=None)


@pytest.fixture(scope="session")
def lac_tagger() -> Deidentifier:
    """Default recognizers (LAC for Chinese names), type-tag operator."""
    return Deidentifier(DeidConfig(operator="tag"), site_secret=None)


@pytest.fixture(scope="session")
def pseudonymizer() -> Deidentifier:
    return Deidentifier(DeidConfig(use_lac=False, name_fallback="none"), site_secret=SECRET_A)


@pytest.fixture(scope="session")
def surrogator() -> Deidentifier:
    return Deidentifier(DeidConfig(operator="surrogate", use_lac=False, name_fallback="none"),
                        site_secret=SECRET_A)

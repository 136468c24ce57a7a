"""Shared fixtures of the service unit tests: certificates (one CA per test module) and one
test-only threshold key for the whole session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ffa_lora.crypto.threshold import deal
from ffa_lora_tools.harness.threshold import KEY_HOLDERS
from services.common import certs as pki


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ca")
    pki.init_ca(d)
    return d


@pytest.fixture(scope="module")
def foreign_ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("foreign")
    pki.init_ca(d, federation="other-fed")
    return d


@pytest.fixture()
def client_files(ca_dir: Path, tmp_path: Path) -> pki.TLSFiles:
    crt, key = pki.issue_certificate(ca_dir, tmp_path, role="client", id="bank-a")
    ca_copy = tmp_path / "ca.crt"  # tests below break or move these files
    ca_copy.write_bytes((ca_dir / "ca.crt").read_bytes())
    return pki.TLSFiles(ca=ca_copy, cert=crt, key=key)


@pytest.fixture(scope="session")
def ceremony() -> Any:
    """A 2-of-3 threshold key (coordinator + the harness's two key holders), dealt once."""
    return deal(holders=["coordinator/coordinator", *KEY_HOLDERS], threshold=2, bits=512, test_only=True,
                workers=0, isolate=False)  # TEST-ONLY key size

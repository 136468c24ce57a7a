"""Certificates shared by the unit tests of the TLS modules: one CA per test module."""

from __future__ import annotations

from pathlib import Path

import pytest

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

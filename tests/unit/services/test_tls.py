"""Unit tests of services.common.tls: credentials and role checks against fake contexts. The
real handshake is tested in tests/integration/test_mtls.py.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from ffa_lora.errors import ConfigError
from services.common import certs as pki
from services.common import tls

# ---------------------------------------------------------------------------------------------
# credentials


def test_server_credentials_need_a_server_role(client_files: pki.TLSFiles, ca_dir: Path) -> None:
    with pytest.raises(pki.TLSFileError, match="'client' certificate; a server needs"):
        tls.server_credentials(client_files)
    pki.issue_certificate(ca_dir, ca_dir, role="coordinator", id="creds")
    creds = tls.server_credentials(pki.TLSFiles.for_identity(ca_dir, role="coordinator",
                                                             id="creds"))
    assert isinstance(creds, grpc.ServerCredentials)
    assert isinstance(tls.channel_credentials(client_files), grpc.ChannelCredentials)


# ---------------------------------------------------------------------------------------------
# peer_identity / require_role / RoleInterceptor rules, with fake contexts


class _Aborted(Exception):
    pass


class FakeContext:
    """Just enough of grpc.ServicerContext: auth_context() and abort()."""

    def __init__(self, auth: dict[str, list[bytes]]) -> None:
        self._auth = auth
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise _Aborted


def _tls_context(cert_path: Path) -> FakeContext:
    return FakeContext({"transport_security_type": [b"ssl"],
                        "x509_pem_cert": [cert_path.read_bytes()]})


def test_peer_identity_reads_the_certificate(client_files: pki.TLSFiles) -> None:
    ctx = _tls_context(client_files.cert)
    assert tls.peer_identity(ctx) == pki.PeerIdentity("client", "bank-a")  # type: ignore[arg-type]
    assert tls.require_role(ctx, "client", "edge") == pki.PeerIdentity("client", "bank-a")  # type: ignore[arg-type]


@pytest.mark.parametrize("auth, match", [
    ({}, "not arrive over TLS"),
    ({"transport_security_type": [b"insecure"]}, "not arrive over TLS"),
    ({"transport_security_type": [b"ssl"]}, "no client certificate"),
    ({"transport_security_type": [b"ssl"], "x509_pem_cert": [b"garbage"]}, "cannot be parsed"),
])
def test_peer_identity_without_verified_certificate(auth: dict, match: str) -> None:
    with pytest.raises(pki.PeerAuthError, match=match):
        tls.peer_identity(FakeContext(auth))  # type: ignore[arg-type]
    ctx = FakeContext(auth)
    with pytest.raises(_Aborted):
        tls.require_role(ctx, *pki.ROLES)  # type: ignore[arg-type]
    assert ctx.aborted is not None and ctx.aborted[0] == grpc.StatusCode.UNAUTHENTICATED


def test_require_role_wrong_role_and_wrong_federation(client_files: pki.TLSFiles) -> None:
    ctx = _tls_context(client_files.cert)
    with pytest.raises(_Aborted):
        tls.require_role(ctx, "coordinator")  # type: ignore[arg-type]
    assert ctx.aborted == (grpc.StatusCode.PERMISSION_DENIED,
                           "role 'client' may not call this method (allowed: coordinator)")
    ctx = _tls_context(client_files.cert)
    with pytest.raises(_Aborted):
        tls.require_role(ctx, "client", federation="other")  # type: ignore[arg-type]
    assert ctx.aborted is not None and ctx.aborted[0] == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(ConfigError):
        tls.require_role(ctx, "root")  # type: ignore[arg-type]


def test_role_interceptor_rules() -> None:
    icpt = tls.RoleInterceptor({"/a.v1.S/M": ("edge",), "/a.v1.T/*": ("client", "edge"),
                                **tls.HEALTH_RULES})
    assert icpt.allowed_roles("/a.v1.S/M") == ("edge",)
    assert icpt.allowed_roles("/a.v1.S/Other") == ()  # fail closed
    assert icpt.allowed_roles("/a.v1.T/Anything") == ("client", "edge")
    assert icpt.allowed_roles("/grpc.health.v1.Health/Check") == pki.ROLES
    with_default = tls.RoleInterceptor({"/a.v1.S/M": ("edge",)}, default=("coordinator",))
    assert with_default.allowed_roles("/a.v1.S/Other") == ("coordinator",)


@pytest.mark.parametrize("rules, kwargs", [
    ({"a.v1.S/M": ("edge",)}, {}),
    ({"/a.v1.S/M/x": ("edge",)}, {}),
    ({"/a.v1.S/M": ("root",)}, {}),
    ({}, {"default": ("root",)}),
    ({}, {"federation": "Bad_Fed"}),
])
def test_role_interceptor_rejects_bad_rules(rules: dict, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        tls.RoleInterceptor(rules, **kwargs)

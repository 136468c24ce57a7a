"""One client cannot knock out an edge: over a real mTLS stream, an oversized ``Hello.device``, a
second hello or a peer of another federation is refused with a status, and the edge keeps
serving the other clients (their uploads still count, the roster never holds the junk)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from ffalora.v1 import federation_pb2 as pb

from ffa_lora_tools.harness import fuzzing as fz
from services.common.certs import TLSFiles, role_dns_name
from services.common.tls import channel_credentials, pinned_name_option
from tests.integration.test_mtls import _handmade, raw_credentials
from tests.support.federation import make_pki

PINNED = [pinned_name_option(role_dns_name("edge", federation="ffa-lora"))]


@pytest.fixture()
def edge_server(tmp_path: Path) -> Iterator[fz.EdgeServerThread]:
    certs = make_pki(tmp_path / "pki", edges=["edge-fuzz"], clients=["mallory", "good"])
    with fz.EdgeServerThread(certs) as srv:
        srv.certs_dir = certs  # type: ignore[attr-defined]
        yield srv


def channel(srv: fz.EdgeServerThread, files: TLSFiles) -> grpc.Channel:
    return grpc.secure_channel(srv.address, channel_credentials(files), options=PINNED)


def client_files(srv: fz.EdgeServerThread, cid: str) -> TLSFiles:
    certs: Path = srv.certs_dir  # type: ignore[attr-defined]
    return TLSFiles(ca=certs / "ca.crt", cert=certs / f"client-{cid}.crt", key=certs / f"client-{cid}.key")


def good_client_is_served(srv: fz.EdgeServerThread) -> None:
    upload = fz._cached_upload("good", 0)
    with channel(srv, client_files(srv, "good")) as ch:
        acks = fz.good_session(ch, upload, round=fz.ROUND, contribution=fz.sign_upload(
            upload, "good", round=fz.ROUND, weight=1, base_version=0, certs=srv.certs_dir))  # type: ignore[attr-defined]
    assert [a.status.code for a in acks] == [0]
    assert "good" in srv.snapshot()[2]


def hello(**kw: object) -> bytes:
    return pb.ClientSessionRequest(hello=pb.ClientHello(num_samples=10, **kw)).SerializeToString()


@pytest.mark.slow  # a server on loopback
def test_an_oversized_device_name_is_refused_and_the_edge_keeps_serving(edge_server: fz.EdgeServerThread) -> None:
    """A ~1 MiB device name once went into every roster the edge sent upstream (then larger
    than a message: the edge's link to the coordinator broke on every reconnect)."""
    with channel(edge_server, client_files(edge_server, "mallory")) as ch:
        code, responses = fz.raw_session(ch, [hello(device="x" * 1_000_000)])
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and responses == []
    assert "mallory" not in edge_server.edge.clients
    assert all(len(e.device) <= 64 for e in edge_server.edge.roster())
    good_client_is_served(edge_server)


@pytest.mark.slow  # a server on loopback
def test_a_second_hello_in_one_session_ends_it(edge_server: fz.EdgeServerThread) -> None:
    with channel(edge_server, client_files(edge_server, "mallory")) as ch:
        code, _ = fz.raw_session(ch, [hello(), hello(has_adapter=False), hello()])
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    good_client_is_served(edge_server)


@pytest.mark.slow  # a server on loopback
def test_a_client_of_another_federation_is_refused_even_if_the_ca_signed_it(
        edge_server: fz.EdgeServerThread, tmp_path: Path) -> None:
    certs: Path = edge_server.certs_dir  # type: ignore[attr-defined]
    foreign = _handmade(certs, tmp_path, "other-fed-client",
                        [x509.UniformResourceIdentifier("spiffe://other-fed/client/good")])
    creds = raw_credentials((certs / "ca.crt").read_bytes(), foreign)  # past the local checks
    with grpc.secure_channel(edge_server.address, creds, options=PINNED) as ch:
        code, _ = fz.raw_session(ch, [hello()])
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "good" not in edge_server.edge.clients
    good_client_is_served(edge_server)

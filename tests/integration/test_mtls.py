"""Mutual TLS end to end: a real gRPC server on 127.0.0.1 (port 0) with real certificates.

The server runs the standard health service plus a tiny generic service whose methods answer
with the caller's role/id as the certificate names it, behind ``RoleInterceptor``. Each case
asserts the status code documented in ``services/common/tls.py``:

- valid certificate, allowed role                -> OK, the handler sees role and id
- valid certificate, role not allowed            -> PERMISSION_DENIED, handler never runs
- CA-signed cert without a federation identity   -> UNAUTHENTICATED, handler never runs
- no / foreign-CA / expired / not-yet-valid cert -> the handshake fails: UNAVAILABLE
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common import certs as pki
from services.common import tls

pytestmark = pytest.mark.slow  # servers on loopback

UTC = dt.UTC
TIMEOUT = 5.0
# the test server holds a coordinator certificate; callers pin the name every one carries
PIN = pki.role_dns_name("coordinator", federation="ffa-lora")
PINNED = [tls.pinned_name_option(PIN)]

WHO = "/test.v1.Probe/WhoAmI"                    # any role
SUBMIT = "/test.v1.Coordinator/SubmitPartialSum"  # coordinator method: edges only
UPLOAD = "/test.v1.Coordinator/Upload"            # stream-stream, edges only
WATCH = "/test.v1.Coordinator/Watch"              # unary-stream, edges only
UNLISTED = "/test.v1.Hidden/Method"               # in no rule: fail closed

RULES: dict[str, tuple[str, ...]] = {
    WHO: pki.ROLES,
    SUBMIT: ("edge",),
    UPLOAD: ("edge",),
    WATCH: ("edge",),
    **tls.HEALTH_RULES,
}


# ---------------------------------------------------------------------------------------------
# certificates


def _handmade(ca_dir: Path, out: Path, name: str, sans: list[x509.GeneralName]) -> pki.TLSFiles:
    """A client cert signed by the *federation CA* but with arbitrary SANs."""
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    crt, k = out / f"{name}.crt", out / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return pki.TLSFiles(ca_dir / "ca.crt", crt, k)


class Certs:
    def __init__(self, root: Path) -> None:
        self.dir = root / "fed"
        pki.init_ca(self.dir)
        pki.init_ca(root / "foreign")
        now = dt.datetime.now(UTC)

        def issue(role: str, id: str, **kw: object) -> pki.TLSFiles:
            pki.issue_certificate(self.dir, self.dir, role=role, id=id, **kw)  # type: ignore[arg-type]
            return pki.TLSFiles.for_identity(self.dir, role=role, id=id)

        self.coordinator = issue("coordinator", "main")
        self.edge = issue("edge", "eu-west")
        self.client = issue("client", "bank-a")
        self.expired = issue("client", "expired", not_before=now - dt.timedelta(days=30),
                             not_after=now - dt.timedelta(days=1))
        self.future = issue("client", "future", not_before=now + dt.timedelta(days=1),
                            not_after=now + dt.timedelta(days=30))
        pki.issue_certificate(root / "foreign", root / "foreign", role="client", id="bank-a")
        self.foreign = pki.TLSFiles.for_identity(root / "foreign", role="client", id="bank-a")
        self.no_identity = _handmade(self.dir, self.dir, "no-identity",
                                     [x509.DNSName("bank-x.example")])
        self.other_federation = _handmade(self.dir, self.dir, "other-fed", [
            x509.UniformResourceIdentifier("spiffe://other-fed/edge/eu-west")])

    @property
    def ca_pem(self) -> bytes:
        return (self.dir / "ca.crt").read_bytes()


def raw_credentials(ca_pem: bytes, files: pki.TLSFiles | None) -> grpc.ChannelCredentials:
    """Credentials built straight from files, bypassing TLSFiles.load()'s local checks --
    what a misconfigured or hostile peer would send."""
    if files is None:
        return grpc.ssl_channel_credentials(root_certificates=ca_pem)
    return grpc.ssl_channel_credentials(root_certificates=ca_pem,
                                        private_key=files.key.read_bytes(),
                                        certificate_chain=files.cert.read_bytes())


# ---------------------------------------------------------------------------------------------
# server


class Recorder:
    """Remembers which handlers ran, for whom."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def record(self, method: str, context: grpc.ServicerContext) -> bytes:
        who = str(tls.peer_identity(context))
        with self._lock:
            self.calls.append((method, who))
        return who.encode()


def _handlers(rec: Recorder) -> grpc.GenericRpcHandler:
    def who(request: bytes, context: grpc.ServicerContext) -> bytes:
        return rec.record(WHO, context)

    def submit(request: bytes, context: grpc.ServicerContext) -> bytes:
        return rec.record(SUBMIT, context)

    def upload(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        ident = rec.record(UPLOAD, context)
        for r in requests:
            yield ident + b":" + r

    def watch(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        ident = rec.record(WATCH, context)
        yield ident
        yield ident

    def hidden(request: bytes, context: grpc.ServicerContext) -> bytes:
        return rec.record(UNLISTED, context)

    def service(name: str, methods: dict[str, grpc.RpcMethodHandler]) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(name, methods)

    class _All(grpc.GenericRpcHandler):
        def __init__(self) -> None:
            self._services = [
                service("test.v1.Probe", {"WhoAmI": grpc.unary_unary_rpc_method_handler(who)}),
                service("test.v1.Coordinator", {
                    "SubmitPartialSum": grpc.unary_unary_rpc_method_handler(submit),
                    "Upload": grpc.stream_stream_rpc_method_handler(upload),
                    "Watch": grpc.unary_stream_rpc_method_handler(watch)}),
                service("test.v1.Hidden", {"Method": grpc.unary_unary_rpc_method_handler(hidden)}),
            ]

        def service(self, handler_call_details: grpc.HandlerCallDetails) -> object:
            for s in self._services:
                h = s.service(handler_call_details)
                if h is not None:
                    return h
            return None

    return _All()


class Server:
    def __init__(self, certs: Certs) -> None:
        self.rec = Recorder()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            handlers=[_handlers(self.rec)],
            interceptors=[tls.RoleInterceptor(RULES, federation="ffa-lora")])
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), self.server)
        self.port = self.server.add_secure_port("127.0.0.1:0",
                                                tls.server_credentials(certs.coordinator))
        self.insecure_port = self.server.add_insecure_port("127.0.0.1:0")
        self.target = f"127.0.0.1:{self.port}"
        self.server.start()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("mtls"))


@pytest.fixture(scope="module")
def server(certs: Certs) -> Iterator[Server]:
    s = Server(certs)
    yield s
    s.server.stop(grace=None)


@pytest.fixture(autouse=True)
def _fresh_recorder(request: pytest.FixtureRequest) -> None:
    if "server" in request.fixturenames:
        request.getfixturevalue("server").rec.calls.clear()


def call(channel: grpc.Channel, method: str, request: bytes = b"x") -> bytes:
    return channel.unary_unary(method)(request, timeout=TIMEOUT)


def code_of(fn: object, *args: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.code()  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# accepted


def test_valid_client_certificate_reaches_handler_with_its_identity(
        server: Server, certs: Certs) -> None:
    with tls.secure_channel(server.target, certs.client, server_name=PIN) as ch:
        assert call(ch, WHO) == b"client/bank-a"
    assert server.rec.calls == [(WHO, "client/bank-a")]


def test_edge_may_call_coordinator_methods_unary_and_streaming(
        server: Server, certs: Certs) -> None:
    with tls.secure_channel(server.target, certs.edge, server_name=PIN) as ch:
        assert call(ch, SUBMIT) == b"edge/eu-west"
        out = list(ch.stream_stream(UPLOAD)(iter([b"1", b"2"]), timeout=TIMEOUT))
        assert out == [b"edge/eu-west:1", b"edge/eu-west:2"]
        assert list(ch.unary_stream(WATCH)(b"", timeout=TIMEOUT)) == [b"edge/eu-west"] * 2


def test_health_service_answers_any_federation_role(server: Server, certs: Certs) -> None:
    for files in (certs.client, certs.edge, certs.coordinator):
        with tls.secure_channel(server.target, files, server_name=PIN) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                        timeout=TIMEOUT)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_server_identity_can_be_pinned_by_name(server: Server, certs: Certs) -> None:
    good = pki.identity_dns_name("coordinator", "main", federation="ffa-lora")
    with tls.secure_channel(server.target, certs.edge, server_name=good) as ch:
        assert call(ch, SUBMIT) == b"edge/eu-west"
    wrong = pki.identity_dns_name("edge", "main", federation="ffa-lora")
    with tls.secure_channel(server.target, certs.edge, server_name=wrong) as ch:
        assert code_of(call, ch, SUBMIT) == grpc.StatusCode.UNAVAILABLE
    assert server.rec.calls == [(SUBMIT, "edge/eu-west")]


# ---------------------------------------------------------------------------------------------
# valid certificate, wrong role -> PERMISSION_DENIED before the handler runs


def test_client_certificate_calling_coordinator_method_is_denied(
        server: Server, certs: Certs) -> None:
    with tls.secure_channel(server.target, certs.client, server_name=PIN) as ch:
        assert code_of(call, ch, SUBMIT) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: list(ch.stream_stream(UPLOAD)(iter([b"1"]), timeout=TIMEOUT))
                       ) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: list(ch.unary_stream(WATCH)(b"", timeout=TIMEOUT))
                       ) == grpc.StatusCode.PERMISSION_DENIED
    with tls.secure_channel(server.target, certs.coordinator, server_name=PIN) as ch:
        assert code_of(call, ch, SUBMIT) == grpc.StatusCode.PERMISSION_DENIED
    assert server.rec.calls == []


def test_denial_message_names_role_but_no_certificate_content(
        server: Server, certs: Certs) -> None:
    with tls.secure_channel(server.target, certs.client, server_name=PIN) as ch, \
            pytest.raises(grpc.RpcError) as info:
        call(ch, SUBMIT)
    assert info.value.details() == "role 'client' may not call this method (allowed: edge)"


def test_method_in_no_rule_is_denied_to_everyone(server: Server, certs: Certs) -> None:
    for files in (certs.client, certs.edge, certs.coordinator):
        with tls.secure_channel(server.target, files, server_name=PIN) as ch:
            assert code_of(call, ch, UNLISTED) == grpc.StatusCode.PERMISSION_DENIED
    assert server.rec.calls == []


# ---------------------------------------------------------------------------------------------
# verified certificate without a valid federation identity -> UNAUTHENTICATED


@pytest.mark.parametrize("which", ["no_identity", "other_federation"])
def test_ca_signed_certificate_without_federation_identity_is_unauthenticated(
        server: Server, certs: Certs, which: str) -> None:
    creds = raw_credentials(certs.ca_pem, getattr(certs, which))
    with grpc.secure_channel(server.target, creds, options=PINNED) as ch:
        assert code_of(call, ch, WHO) == grpc.StatusCode.UNAUTHENTICATED
        stub = health_pb2_grpc.HealthStub(ch)
        assert code_of(stub.Check, health_pb2.HealthCheckRequest()) == \
            grpc.StatusCode.UNAUTHENTICATED
    assert server.rec.calls == []


def test_plaintext_call_is_unauthenticated(server: Server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.insecure_port}") as ch:
        assert code_of(call, ch, WHO) == grpc.StatusCode.UNAUTHENTICATED
    assert server.rec.calls == []


# ---------------------------------------------------------------------------------------------
# rejected in the TLS handshake -> the client sees UNAVAILABLE, the server never sees a call


@pytest.mark.parametrize("which", [None, "foreign", "expired", "future"])
def test_handshake_rejects_missing_foreign_and_out_of_date_certificates(
        server: Server, certs: Certs, which: str | None) -> None:
    files = None if which is None else getattr(certs, which)
    with grpc.secure_channel(server.target, raw_credentials(certs.ca_pem, files), options=PINNED) as ch:
        with pytest.raises(grpc.RpcError) as info:
            call(ch, WHO)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        stub = health_pb2_grpc.HealthStub(ch)
        assert code_of(stub.Check, health_pb2.HealthCheckRequest()) == grpc.StatusCode.UNAVAILABLE
    assert server.rec.calls == []
    # and the same peer with a good certificate still gets through right after
    with tls.secure_channel(server.target, certs.client, server_name=PIN) as ch:
        assert call(ch, WHO) == b"client/bank-a"


def test_our_own_helpers_refuse_bad_local_certificates_before_connecting(certs: Certs) -> None:
    for files in (certs.expired, certs.future, certs.no_identity):
        with pytest.raises(pki.TLSFileError):
            tls.secure_channel("127.0.0.1:1", files, server_name=PIN)
    with pytest.raises(pki.TLSFileError, match="not issued by the CA"):
        tls.secure_channel("127.0.0.1:1", pki.TLSFiles(certs.dir / "ca.crt", certs.foreign.cert,
                                                       certs.foreign.key), server_name=PIN)


# ---------------------------------------------------------------------------------------------
# grpc.aio server with AioRoleInterceptor: same codes


def test_aio_interceptor_same_status_codes(certs: Certs) -> None:
    calls: list[str] = []

    async def who(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        calls.append(WHO)
        return str(tls.peer_identity(context)).encode()

    async def watch(request: bytes, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        calls.append(WATCH)
        yield str(tls.peer_identity(context)).encode()

    async def upload(requests, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[no-untyped-def]
        calls.append(UPLOAD)
        return b"".join([r async for r in requests])

    async def main() -> None:
        server = grpc.aio.server(interceptors=[tls.AioRoleInterceptor(RULES)])
        server.add_generic_rpc_handlers([
            grpc.method_handlers_generic_handler("test.v1.Probe", {
                "WhoAmI": grpc.unary_unary_rpc_method_handler(who)}),
            grpc.method_handlers_generic_handler("test.v1.Coordinator", {
                "Watch": grpc.unary_stream_rpc_method_handler(watch),
                "Upload": grpc.stream_unary_rpc_method_handler(upload)}),
        ])
        port = server.add_secure_port("127.0.0.1:0", tls.server_credentials(certs.coordinator))
        await server.start()
        target = f"127.0.0.1:{port}"
        try:
            async with grpc.aio.secure_channel(
                    target, tls.channel_credentials(certs.edge), options=PINNED) as ch:
                assert await ch.unary_unary(WHO)(b"", timeout=TIMEOUT) == b"edge/eu-west"
                assert [r async for r in ch.unary_stream(WATCH)(b"", timeout=TIMEOUT)] == \
                    [b"edge/eu-west"]
                assert await ch.stream_unary(UPLOAD)(iter([b"a", b"b"]), timeout=TIMEOUT) == b"ab"
            assert calls == [WHO, WATCH, UPLOAD]
            calls.clear()
            async with grpc.aio.secure_channel(
                    target, tls.channel_credentials(certs.client), options=PINNED) as ch:
                for coro in (ch.unary_stream(WATCH)(b"", timeout=TIMEOUT),
                             ch.stream_unary(UPLOAD)(iter([b"a"]), timeout=TIMEOUT)):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        if hasattr(coro, "__aiter__"):
                            [r async for r in coro]
                        else:
                            await coro
                    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            async with grpc.aio.secure_channel(
                    target, raw_credentials(certs.ca_pem, certs.no_identity), options=PINNED) as ch:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await ch.unary_unary(WHO)(b"", timeout=TIMEOUT)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            async with grpc.aio.secure_channel(
                    target, raw_credentials(certs.ca_pem, certs.foreign), options=PINNED) as ch:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await ch.unary_unary(WHO)(b"", timeout=TIMEOUT)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert calls == []
        finally:
            await server.stop(None)

    asyncio.run(main())


def test_refusals_are_logged_with_peer_and_reason(
        server: Server, certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="services.common.tls")
    with tls.secure_channel(server.target, certs.client, server_name=PIN) as ch:
        code_of(call, ch, SUBMIT)
    with grpc.secure_channel(server.target, raw_credentials(certs.ca_pem, certs.no_identity), options=PINNED) as ch:
        code_of(call, ch, WHO)
    messages = [r.getMessage() for r in caplog.records if r.name == "services.common.tls"]
    assert any("(client/bank-a) refused: role not in (edge)" in m and "127.0.0.1" in m
               for m in messages)
    assert any("unauthenticated call from" in m and "found 0" in m for m in messages)
    assert not any("BEGIN" in m for m in messages)


def test_an_edge_certificate_cannot_answer_for_the_coordinator(certs: Certs) -> None:
    """Callers pin the role name, never the host name dialled: an edge listening where the
    coordinator should be fails the handshake, and no certificate is valid for localhost or
    127.0.0.1 unless it was issued for them."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[_handlers(Recorder())],
                         interceptors=[tls.RoleInterceptor(RULES, federation="ffa-lora")])
    port = server.add_secure_port("127.0.0.1:0", tls.server_credentials(certs.edge))
    server.start()
    try:
        with tls.secure_channel(f"127.0.0.1:{port}", certs.client, server_name=PIN) as ch:
            assert code_of(call, ch, WHO) == grpc.StatusCode.UNAVAILABLE
        edge_name = pki.role_dns_name("edge", federation="ffa-lora")
        with tls.secure_channel(f"127.0.0.1:{port}", certs.client, server_name=edge_name) as ch:
            assert call(ch, WHO) == b"client/bank-a"
        with grpc.secure_channel(f"localhost:{port}", tls.channel_credentials(certs.client)) as ch:
            assert code_of(call, ch, WHO) == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(grace=None)

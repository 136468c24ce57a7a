"""Mutual TLS for the gRPC services: credentials from the federation's certificates
(:mod:`services.common.certs`), the caller's identity, and role checks on every call.

Verification in the handshake, identity and roles in an interceptor
    gRPC Python offers servers only two client-certificate modes: "don't request" and
    "request, require and verify" (``require_client_auth=True`` selects C-core's
    ``GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY``; the "request but let the
    application verify" modes of C-core are not exposed in Python, neither through
    ``ssl_server_credentials`` nor ``dynamic_ssl_server_credentials``). :func:`server_credentials`
    uses the second, so a certificate that is absent, does not chain to the federation CA, or
    is expired or not yet valid never reaches Python code: BoringSSL ends the handshake and
    gRPC logs the reason on the server (``Handshake failed ... certificate has expired``).
    :class:`RoleInterceptor` (or :func:`require_role` in a handler) then checks, for every
    call, that the verified certificate names a valid federation identity, and that its role
    may call the method. Unlisted methods are denied (fail closed); refusals are logged.

What a caller sees (each row asserted by ``tests/integration/test_mtls.py``):

    ========================================  ================================================
    caller presents                           result
    ========================================  ================================================
    valid cert, allowed role                  the call runs; the handler sees role and id
    valid cert, role not allowed              ``PERMISSION_DENIED``; the handler never runs
    CA-signed cert without one valid          ``UNAUTHENTICATED``; the handler never runs
    ``spiffe://<federation>/<role>/<id>``
    (or of another federation), plaintext
    no client certificate                     handshake refused: ``UNAVAILABLE`` at the client
    certificate of a foreign CA               handshake refused: ``UNAVAILABLE`` at the client
    expired or not-yet-valid certificate      handshake refused: ``UNAVAILABLE`` at the client
    ========================================  ================================================

    The last three cannot be ``UNAUTHENTICATED``: the connection is refused before any
    HTTP/2 stream exists, so no status is ever sent by the server; the client's gRPC
    library reports the failed connection as ``UNAVAILABLE`` (with TLS 1.3 the details say
    only "Socket closed"). The only way to have the server answer ``UNAUTHENTICATED``
    would be to accept unverified certificates and verify chains in Python, which gRPC
    Python does not offer and which would weaken the guarantee that no unverified
    certificate ever reaches the application. Callers that retry on ``UNAVAILABLE`` must
    cap their retries: a rejected certificate never starts working. The credential
    functions load their files with :meth:`~services.common.certs.TLSFiles.load`, which
    refuses an expired, foreign or identity-less local certificate up front.

Sync servers use :class:`RoleInterceptor` / :func:`require_role`; ``grpc.aio`` servers use
:class:`AioRoleInterceptor` / :func:`require_role_async`. Key material never appears in
errors or logs; messages name the file and the fix.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
from cryptography import x509

from ffa_lora.errors import ConfigError
from services.common.certs import (
    ROLES,
    SERVER_ROLES,
    PeerAuthError,
    PeerIdentity,
    TLSFileError,
    TLSFiles,
    check_federation,
    check_role,
    identity_from_certificate,
)

__all__ = [
    "HEALTH_RULES",
    "AioRoleInterceptor",
    "RoleInterceptor",
    "channel_credentials",
    "peer_identity",
    "pinned_name_option",
    "require_role",
    "require_role_async",
    "secure_channel",
    "server_credentials",
]

_log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# gRPC credentials


def server_credentials(files: TLSFiles) -> grpc.ServerCredentials:
    """Server credentials that require and verify a client certificate from the CA."""
    loaded = files.load()
    if loaded.identity.role not in SERVER_ROLES:
        raise TLSFileError(f"certificate {files.cert} is a {loaded.identity.role!r} certificate; "
                           f"a server needs one of role {' or '.join(SERVER_ROLES)}")
    return grpc.ssl_server_credentials([(loaded.key_pem, loaded.cert_pem)],
                                       root_certificates=loaded.ca_pem,
                                       require_client_auth=True)


def channel_credentials(files: TLSFiles) -> grpc.ChannelCredentials:
    """Channel credentials that present this peer's certificate and trust only the CA."""
    loaded = files.load()
    return grpc.ssl_channel_credentials(root_certificates=loaded.ca_pem,
                                        private_key=loaded.key_pem,
                                        certificate_chain=loaded.cert_pem)


def pinned_name_option(server_name: str) -> tuple[str, str]:
    """The channel option that makes gRPC check ``server_name`` in the server's certificate
    instead of the host name dialled."""
    return ("grpc.ssl_target_name_override", server_name)


def secure_channel(target: str, files: TLSFiles, *, server_name: str,
                   options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """Open a mutual-TLS channel to ``target`` whose server must carry ``server_name``.

    Pass ``role_dns_name(role, federation=...)`` to accept any server of a role, or
    ``identity_dns_name(role, id, federation=...)`` for one server; a DNS name or IP address
    only if the server's certificate was issued for it (``--host``).
    """
    return grpc.secure_channel(target, channel_credentials(files),
                               options=[*options, pinned_name_option(server_name)])


# ---------------------------------------------------------------------------------------------
# peer identity and authorization


def peer_identity(context: grpc.ServicerContext, *,
                  federation: str | None = None) -> PeerIdentity:
    """Return the role and id named in the verified certificate of the calling peer.

    Raises :class:`PeerAuthError` when the call did not arrive over TLS with a client
    certificate, or the certificate names no valid ``spiffe://`` identity (of
    ``federation``, when given).
    """
    auth: Mapping[str, Sequence[bytes]] = context.auth_context() or {}
    if list(auth.get("transport_security_type", [])) != [b"ssl"]:
        raise PeerAuthError("call did not arrive over TLS")
    pems = auth.get("x509_pem_cert") or []
    if len(pems) != 1:
        raise PeerAuthError("caller presented no client certificate")
    try:
        cert = x509.load_pem_x509_certificate(pems[0])
    except ValueError:
        raise PeerAuthError("caller's certificate cannot be parsed") from None
    return identity_from_certificate(cert, federation=federation)


def _authorize(context: Any, allowed_roles: Sequence[str], federation: str | None,
               ) -> PeerIdentity | tuple[grpc.StatusCode, str]:
    """The caller's identity, or the (status, public message) to abort the call with.

    Every refusal is logged with the peer address and, where known, its role and id.
    """
    try:
        who = peer_identity(context, federation=federation)
    except PeerAuthError as e:
        _log.warning("unauthenticated call from %s refused: %s", _peer_address(context), e)
        return grpc.StatusCode.UNAUTHENTICATED, str(e)
    if who.role not in allowed_roles:
        allowed = ", ".join(allowed_roles) or "none"
        _log.warning("call from %s (%s) refused: role not in (%s)", _peer_address(context), who,
                     allowed)
        return (grpc.StatusCode.PERMISSION_DENIED,
                f"role {who.role!r} may not call this method (allowed: {allowed})")
    return who


def _peer_address(context: Any) -> str:
    peer = getattr(context, "peer", None)
    return str(peer()) if callable(peer) else "unknown peer"


def require_role(context: grpc.ServicerContext, *allowed_roles: str,
                 federation: str | None = None) -> PeerIdentity:
    """Return the caller's identity, or abort the call.

    Aborts with ``UNAUTHENTICATED`` when the caller has no valid federation identity (of
    ``federation``, when given) and with ``PERMISSION_DENIED`` when its role is not in
    ``allowed_roles``. For ``grpc.aio`` servers use :func:`require_role_async`.
    """
    for r in allowed_roles:
        check_role(r)
    result = _authorize(context, allowed_roles, federation)
    if isinstance(result, PeerIdentity):
        return result
    context.abort(*result)
    raise AssertionError("unreachable: ServicerContext.abort returned")  # pragma: no cover


async def require_role_async(context: grpc.aio.ServicerContext, *allowed_roles: str,
                             federation: str | None = None) -> PeerIdentity:
    """:func:`require_role` for ``grpc.aio`` servers (same status codes)."""
    for r in allowed_roles:
        check_role(r)
    result = _authorize(context, allowed_roles, federation)
    if isinstance(result, PeerIdentity):
        return result
    await context.abort(*result)
    raise AssertionError("unreachable: ServicerContext.abort returned")  # pragma: no cover


HEALTH_RULES: dict[str, tuple[str, ...]] = {"/grpc.health.v1.Health/*": ROLES}
"""Let any authenticated federation peer use the standard health service (probes run with
the service's own certificate)."""


class _RoleTable:
    """Which roles may call which method; shared by the sync and asyncio interceptors."""

    def __init__(self, allowed_roles_by_method: Mapping[str, Sequence[str]], *,
                 default: Sequence[str] | None = None, federation: str | None = None) -> None:
        self._rules: dict[str, tuple[str, ...]] = {}
        for method, roles in allowed_roles_by_method.items():
            if not method.startswith("/") or method.count("/") != 2:
                raise ConfigError(f"method {method!r} must be a full name like "
                                  "'/pkg.Service/Method' or '/pkg.Service/*'")
            self._rules[method] = tuple(check_role(r) for r in roles)
        self._default = None if default is None else tuple(check_role(r) for r in default)
        self._federation = None if federation is None else check_federation(federation)

    def allowed_roles(self, method: str) -> tuple[str, ...]:
        """Roles allowed to call ``method`` (empty: nobody)."""
        if method in self._rules:
            return self._rules[method]
        service = method.rsplit("/", 1)[0] + "/*"
        if service in self._rules:
            return self._rules[service]
        return self._default or ()


_Behavior = Callable[..., Any]


def _rewrap(handler: grpc.RpcMethodHandler,
            guard: Callable[[_Behavior], _Behavior]) -> grpc.RpcMethodHandler:
    """The same kind of method handler with its behavior wrapped by ``guard``."""
    if handler.unary_unary:
        factory, behavior = grpc.unary_unary_rpc_method_handler, handler.unary_unary
    elif handler.unary_stream:
        factory, behavior = grpc.unary_stream_rpc_method_handler, handler.unary_stream
    elif handler.stream_unary:
        factory, behavior = grpc.stream_unary_rpc_method_handler, handler.stream_unary
    else:
        factory, behavior = grpc.stream_stream_rpc_method_handler, handler.stream_stream
    return factory(guard(behavior), request_deserializer=handler.request_deserializer,
                   response_serializer=handler.response_serializer)


class RoleInterceptor(_RoleTable, grpc.ServerInterceptor):
    """Authenticate every call and authorize the caller's role before the handler runs.

    ``allowed_roles_by_method`` maps full method names (``/pkg.Service/Method``) or whole
    services (``/pkg.Service/*``) to the roles allowed to call them (merge in
    :data:`HEALTH_RULES` for the health service); methods not listed use ``default``, and
    with ``default=None`` they are denied -- fail closed. ``federation``, when given, also
    rejects identities of another federation. A caller without a valid identity gets
    ``UNAUTHENTICATED``, a role not allowed ``PERMISSION_DENIED``. Works for unary and
    streaming methods: the check runs before the handler and before any request is read.
    Handlers read the caller with :func:`peer_identity`. For ``grpc.aio`` servers use
    :class:`AioRoleInterceptor`.
    """

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: gRPC answers UNIMPLEMENTED
        roles = self.allowed_roles(handler_call_details.method)
        federation = self._federation

        def guard(behavior: _Behavior) -> _Behavior:
            def checked(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
                require_role(context, *roles, federation=federation)
                return behavior(request_or_iterator, context)
            return checked

        return _rewrap(handler, guard)


class AioRoleInterceptor(_RoleTable, grpc.aio.ServerInterceptor):
    """:class:`RoleInterceptor` for ``grpc.aio`` servers (same rules, same status codes)."""

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
            handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        roles = self.allowed_roles(handler_call_details.method)
        federation = self._federation
        streaming_response = bool(handler.unary_stream or handler.stream_stream)

        def guard(behavior: _Behavior) -> _Behavior:
            if streaming_response:
                async def checked_stream(request_or_iterator: Any,
                                         context: grpc.aio.ServicerContext) -> Any:
                    await require_role_async(context, *roles, federation=federation)
                    result = behavior(request_or_iterator, context)
                    if inspect.isasyncgen(result):
                        async for response in result:
                            yield response
                    elif inspect.isawaitable(result):  # handler writes with context.write()
                        await result
                    else:
                        for response in result:
                            yield response
                return checked_stream

            async def checked(request_or_iterator: Any,
                              context: grpc.aio.ServicerContext) -> Any:
                await require_role_async(context, *roles, federation=federation)
                result = behavior(request_or_iterator, context)
                return await result if inspect.isawaitable(result) else result
            return checked

        return _rewrap(handler, guard)

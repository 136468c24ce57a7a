"""One catalog that maps core errors to (gRPC status, public reason).

Servicers call :func:`to_status` for in-band rejections and :func:`abort_with` to end a
session. The public message is the core error's message, which by the core's rules never holds
plaintext, key material or personal data; the full traceback is only logged locally.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from ffa_lora import errors as E
from services.common.certs import PeerAuthError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejection(Exception):
    """An in-band rejection: a gRPC status code, a metric reason and a safe message."""

    code: grpc.StatusCode
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.code.name} ({self.reason}): {self.message}"


# Most specific first.
_CATALOG: list[tuple[type[BaseException], grpc.StatusCode, str]] = [
    (PeerAuthError, grpc.StatusCode.UNAUTHENTICATED, "unauthenticated"),
    (E.FingerprintMismatchError, grpc.StatusCode.FAILED_PRECONDITION, "key_fingerprint"),
    (E.CiphertextError, grpc.StatusCode.INVALID_ARGUMENT, "ciphertext_invalid"),
    (E.LayoutError, grpc.StatusCode.INVALID_ARGUMENT, "layout_mismatch"),
    (E.KeyFileError, grpc.StatusCode.INTERNAL, "key_file"),
    (E.BudgetExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED, "privacy_budget"),
    (E.ProtocolError, grpc.StatusCode.FAILED_PRECONDITION, "protocol"),
    (E.ConfigError, grpc.StatusCode.INVALID_ARGUMENT, "config"),
    (E.FFALoraError, grpc.StatusCode.INTERNAL, "internal"),
]


def rejection_for(exc: BaseException) -> Rejection:
    """Translate an exception into a Rejection with a safe public message."""
    if isinstance(exc, Rejection):
        return exc
    for cls, code, reason in _CATALOG:
        if isinstance(exc, cls):
            return Rejection(code, reason, str(exc) if code != grpc.StatusCode.INTERNAL else "internal error")
    log.exception("unexpected error", exc_info=exc)
    return Rejection(grpc.StatusCode.INTERNAL, "internal", "internal error")


def reject(code: grpc.StatusCode, reason: str, message: str) -> Rejection:
    return Rejection(code, reason, message)

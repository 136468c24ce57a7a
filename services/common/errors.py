"""The one catalog that maps the services' refusals to gRPC status codes.

Handlers raise :class:`~services.common.rejections.Rejection` subclasses (or core errors);
servicers turn whatever they catch into an in-band status with :func:`to_status` (or end the
call with that code). The public message is the rejection's, which never holds plaintext, key
material or personal data; an unexpected error is logged here with its traceback and reaches
the peer only as ``INTERNAL`` / "internal error".
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from services.common.rejections import (
    Corrupted,
    Duplicate,
    InternalFailure,
    InvalidMessage,
    LimitExceeded,
    Rejection,
    Unauthenticated,
    WrongState,
    as_rejection,
)

__all__ = ["STATUS", "Status", "status_of", "to_status"]

STATUS: dict[type[Rejection], grpc.StatusCode] = {
    InvalidMessage: grpc.StatusCode.INVALID_ARGUMENT,
    WrongState: grpc.StatusCode.FAILED_PRECONDITION,
    Duplicate: grpc.StatusCode.ALREADY_EXISTS,
    LimitExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Corrupted: grpc.StatusCode.DATA_LOSS,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    InternalFailure: grpc.StatusCode.INTERNAL,
}
"""Kind of refusal -> the gRPC status code a peer sees."""


@dataclass(frozen=True)
class Status:
    """What a peer is told about a refused message: code, stable reason, public message."""

    code: grpc.StatusCode
    reason: str
    message: str

    @property
    def number(self) -> int:
        """The numeric status code, as carried in ``ffalora.v1.Status.code``."""
        return int(self.code.value[0])


def status_of(rejection: Rejection) -> grpc.StatusCode:
    """The status code of a kind of refusal (the kinds are disjoint: a subclass of one kind
    gets that kind's code)."""
    return next((code for kind, code in STATUS.items() if isinstance(rejection, kind)),
                grpc.StatusCode.INTERNAL)


def to_status(exc: BaseException) -> Status:
    """Any exception as the status a peer may see (see :func:`as_rejection`)."""
    rejection = as_rejection(exc)
    return Status(status_of(rejection), rejection.reason, rejection.message)

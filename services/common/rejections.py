"""Why a peer's message is refused, in the services' own terms (no transport here).

Handlers, stores and the transfer code raise a :class:`Rejection` subclass: the class says
what kind of refusal it is, ``reason`` is a stable machine-readable code (it is sent to the
peer in ``Status.reason`` and is the ``reason`` label of ``ffalora_updates_rejected_total``),
and ``message`` is a public sentence that says what was wrong and how to fix it. A message
never holds plaintext, key material or personal data.

Only :mod:`services.common.errors` knows which gRPC status each kind of refusal becomes.
:func:`as_rejection` turns errors of the core (:mod:`ffa_lora.errors`) and anything unexpected
into a :class:`Rejection` with a safe message.
"""

from __future__ import annotations

import logging

from ffa_lora import errors as E
from services.common.certs import PeerAuthError

__all__ = [
    "Corrupted",
    "Duplicate",
    "InternalFailure",
    "InvalidMessage",
    "LimitExceeded",
    "Rejection",
    "Unauthenticated",
    "WrongState",
    "as_rejection",
]

log = logging.getLogger(__name__)


class Rejection(E.FFALoraError):
    """A refused message: a stable ``reason`` code and a safe public ``message``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{type(self).__name__} ({self.reason}): {self.message}"


class InvalidMessage(Rejection):
    """The message itself is wrong: malformed, the wrong size or layout, out of order."""


class WrongState(Rejection):
    """A well-formed message that does not fit now: another round, after the deadline, not
    assigned to this peer, or before the step it depends on."""


class Duplicate(Rejection):
    """The message was already counted (a resend, or a second update for the same round)."""


class LimitExceeded(Rejection):
    """The sender asks for more than a configured limit allows (chunks, size, budget)."""


class Corrupted(Rejection):
    """The bytes do not match their announced checksum."""


class Unauthenticated(Rejection):
    """The caller has no valid federation identity."""


class InternalFailure(Rejection):
    """Something failed on this side; the details are only logged here."""

    PUBLIC_MESSAGE = "internal error"


# Core errors -> (kind of refusal, reason), most specific first.
_CORE: list[tuple[type[BaseException], type[Rejection], str]] = [
    (PeerAuthError, Unauthenticated, "unauthenticated"),
    (E.FingerprintMismatchError, WrongState, "key_fingerprint"),
    (E.CiphertextError, InvalidMessage, "ciphertext_invalid"),
    (E.LayoutError, InvalidMessage, "layout_mismatch"),
    (E.KeyFileError, InternalFailure, "key_file"),
    (E.BudgetExhaustedError, LimitExceeded, "privacy_budget"),
    (E.ProtocolError, WrongState, "protocol"),
    (E.ConfigError, InvalidMessage, "config"),
    (E.FFALoraError, InternalFailure, "internal"),
]


def as_rejection(exc: BaseException) -> Rejection:
    """``exc`` as a :class:`Rejection` with a safe public message.

    A Rejection is returned as it is; a core error keeps its message (core messages carry no
    secrets by the core's rules) unless it is an internal failure; anything else is logged
    with its traceback and becomes ``InternalFailure("internal", "internal error")``.
    """
    if isinstance(exc, Rejection):
        return exc
    for cls, kind, reason in _CORE:
        if isinstance(exc, cls):
            if kind is InternalFailure:
                log.warning("internal failure (%s): %s", reason, exc)
                return InternalFailure(reason, InternalFailure.PUBLIC_MESSAGE)
            return kind(reason, str(exc))
    log.exception("unexpected error", exc_info=exc)
    return InternalFailure("internal", InternalFailure.PUBLIC_MESSAGE)

"""The refusal hierarchy and the one catalog that maps it to gRPC status codes."""

from __future__ import annotations

import grpc
import pytest

from ffa_lora import errors as E
from services.common import rejections as R
from services.common.certs import PeerAuthError
from services.common.errors import STATUS, status_of, to_status


def test_every_kind_of_refusal_has_a_status() -> None:
    kinds = {cls for cls in vars(R).values()
             if isinstance(cls, type) and issubclass(cls, R.Rejection) and cls is not R.Rejection}
    assert kinds == set(STATUS)
    assert len(set(STATUS.values())) == len(STATUS), "two kinds share a status code"


@pytest.mark.parametrize(("exc", "code", "reason", "message"), [
    (R.Duplicate("duplicate", "already counted"), grpc.StatusCode.ALREADY_EXISTS, "duplicate",
     "already counted"),
    (E.FingerprintMismatchError("made under another key"), grpc.StatusCode.FAILED_PRECONDITION,
     "key_fingerprint", "made under another key"),
    (E.CiphertextError("out of range"), grpc.StatusCode.INVALID_ARGUMENT, "ciphertext_invalid",
     "out of range"),
    (E.BudgetExhaustedError("spent"), grpc.StatusCode.RESOURCE_EXHAUSTED, "privacy_budget", "spent"),
    (PeerAuthError("no identity"), grpc.StatusCode.UNAUTHENTICATED, "unauthenticated",
     "no identity"),
    (E.KeyFileError("/secret/path is corrupt"), grpc.StatusCode.INTERNAL, "key_file",
     "internal error"),
    (RuntimeError("p=0x1234 leaked"), grpc.StatusCode.INTERNAL, "internal", "internal error"),
])
def test_to_status(exc: BaseException, code: grpc.StatusCode, reason: str, message: str) -> None:
    s = to_status(exc)
    assert (s.code, s.reason, s.message) == (code, reason, message)
    assert s.number == code.value[0]


def test_a_subclass_takes_its_nearest_catalogued_status() -> None:
    class StaleKey(R.WrongState):
        pass

    assert status_of(StaleKey("key", "stale")) == grpc.StatusCode.FAILED_PRECONDITION


def test_unexpected_errors_are_logged_not_sent(caplog: pytest.LogCaptureFixture) -> None:
    rej = R.as_rejection(ValueError("secret 42"))
    assert isinstance(rej, R.InternalFailure) and "42" not in rej.message
    assert any("unexpected error" in r.getMessage() for r in caplog.records)

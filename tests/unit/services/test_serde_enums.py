"""Protocol enums: every domain value survives the round trip; UNSPECIFIED and unknown numbers
are refused with a clear message instead of being read as a default."""

from __future__ import annotations

import pytest
from ffalora.v1 import federation_pb2 as pb

from services.common import serde
from services.common.rejections import InvalidMessage

PAIRS = [
    (serde.strategy_to_proto, serde.strategy_from_proto, ["ffa", "fedavg", "alternating"]),
    (serde.phase_to_proto, serde.phase_from_proto, ["A", "B", "AB"]),
    (serde.mode_to_proto, serde.mode_from_proto, ["sync", "async"]),
    (serde.privacy_mode_to_proto, serde.privacy_mode_from_proto, ["off", "central", "distributed"]),
    (serde.mechanism_to_proto, serde.mechanism_from_proto, ["gaussian", "laplace"]),
]


@pytest.mark.parametrize(("to_proto", "from_proto", "values"), PAIRS)
def test_round_trip_and_refusals(to_proto, from_proto, values) -> None:  # type: ignore[no-untyped-def]
    numbers = [to_proto(v) for v in values]
    assert 0 not in numbers and len(set(numbers)) == len(values)
    assert [from_proto(n) for n in numbers] == values
    with pytest.raises(InvalidMessage, match="unspecified"):
        from_proto(0)
    with pytest.raises(InvalidMessage, match="unknown value 99"):
        from_proto(99)
    with pytest.raises(InvalidMessage, match="is not one of"):
        to_proto("bogus")


def test_dpsgd_optimizer_unspecified_only_while_dpsgd_is_off() -> None:
    assert serde.dpsgd_optimizer_to_proto("") == pb.DPSGD_OPTIMIZER_UNSPECIFIED
    assert serde.dpsgd_optimizer_from_proto(pb.DPSGD_OPTIMIZER_UNSPECIFIED, dpsgd_on=False) == ""
    assert serde.dpsgd_optimizer_from_proto(serde.dpsgd_optimizer_to_proto("sgd"), dpsgd_on=True) == "sgd"
    with pytest.raises(InvalidMessage, match="dpsgd_optimizer is unspecified"):
        serde.dpsgd_optimizer_from_proto(pb.DPSGD_OPTIMIZER_UNSPECIFIED, dpsgd_on=True)


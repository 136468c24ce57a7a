"""The edge checks every plaintext scalar a client sends with its update (finite, in range) and,
in asynchronous rounds, that ``base_version`` is an adapter version it actually sent that client."""

from __future__ import annotations

import math
from typing import Any

import pytest

from ffa_lora_tools.harness import fuzzing as fz
from services.common import domain as d
from services.common.rejections import Rejection
from services.edge_aggregator.validation import (
    MAX_LOSS,
    check_base_version,
    check_update_scalars,
)

NAN, INF = math.nan, math.inf


def scalars(**overrides: Any) -> dict[str, Any]:
    quality = {k: overrides.pop(k) for k in list(overrides) if k in d.Quality.__dataclass_fields__}
    return {"num_samples": 100, "quality": d.Quality(**{"train_loss": 0.7, **quality}),
            "train_seconds": 1.0, "crypto_seconds": 0.1, **overrides}


@pytest.mark.parametrize(("bad", "field"), [
    ({"train_loss": NAN}, "quality.train_loss"),
    ({"train_loss": INF}, "quality.train_loss"),
    ({"train_loss": -0.1}, "quality.train_loss"),
    ({"train_loss": MAX_LOSS * 10}, "quality.train_loss"),
    ({"val_loss_before": NAN}, "quality.val_loss_before"),
    ({"val_loss_after": -INF}, "quality.val_loss_after"),
    ({"val_accuracy": 1.5}, "quality.val_accuracy"),
    ({"val_accuracy": NAN}, "quality.val_accuracy"),
    ({"grad_snr": 1e300}, "quality.grad_snr"),
    ({"grad_snr": NAN}, "quality.grad_snr"),
    ({"dpsgd_epsilon": -1.0}, "quality.dpsgd_epsilon"),
    ({"dpsgd_epsilon": INF}, "quality.dpsgd_epsilon"),
    ({"train_seconds": NAN}, "train_seconds"),
    ({"crypto_seconds": -1.0}, "crypto_seconds"),
    ({"num_samples": 2**64 - 1}, "num_samples"),
])
def test_out_of_range_scalars_are_refused_naming_the_field(bad: dict[str, Any], field: str) -> None:
    with pytest.raises(Rejection) as err:
        check_update_scalars(**scalars(**bad))
    assert err.value.reason == "invalid_scalar" and field in err.value.message


def test_plausible_scalars_pass() -> None:
    check_update_scalars(**scalars(val_loss_before=1.1, val_loss_after=0.9, val_accuracy=0.8, grad_snr=3.5,
                                   dpsgd_epsilon=7.9))
    check_update_scalars(**scalars(train_loss=0.0, val_accuracy=0.0, train_seconds=0.0))  # all zero: no validation


def test_a_nan_loss_is_refused_by_the_edge_and_the_sum_is_untouched() -> None:
    h = fz.EdgeHarness()
    u = fz._cached_upload("alice", 0)
    e = h.edge
    e.begin_upload("alice", round=fz.ROUND, header=u.header, num_ciphertexts=u.num_ciphertexts)
    for off, data in u.chunks:
        e.upload_chunk("alice", round=fz.ROUND, offset=off, data=data)
    before = h.snapshot()
    with pytest.raises(Rejection) as err:
        e.commit_upload("alice", round=fz.ROUND, sha256=u.sha256, idempotency_key=u.key, num_samples=10, rank=4,
                        quality=d.Quality(train_loss=NAN), base_version=fz.ROUND - 1, train_seconds=0.0,
                        crypto_seconds=0.0)
    assert err.value.reason == "invalid_scalar" and "train_loss" in err.value.message
    assert h.snapshot() == before and "alice" not in e.agg.contributions  # type: ignore[union-attr]
    assert h.upload("alice", 0)  # the same update with a finite loss is accepted
    h.check_sum()


def test_base_version_rules() -> None:
    check_base_version(3, mode="sync", current_version=5, served=())
    with pytest.raises(Rejection, match="newer than"):
        check_base_version(6, mode="sync", current_version=5, served=(6,))
    check_base_version(4, mode="async", current_version=5, served=(2, 4))
    with pytest.raises(Rejection) as err:
        check_base_version(5, mode="async", current_version=5, served=(2, 4))
    assert err.value.reason == "base_version"


def test_async_base_version_must_be_one_the_edge_sent_that_client() -> None:
    """In async rounds the staleness weight follows base_version: a client that trained on
    version 0 cannot claim the fresh version 4 (weight x4) unless the edge sent it version 4."""
    h = fz.EdgeHarness()
    e = h.edge
    e.on_adapter(4, b"adapter v4")
    plan = fz.round_plan(h.pub, h.layout, round=fz.ROUND + 1, weights=fz.EDGE_WEIGHTS,
                         deadline=h.clock() + 60, mode="async")
    e.on_plan(plan)  # pushes v4 to every connected, assigned client (none of them held it)
    served = e._served["alice"]
    assert 4 in served and 0 not in served
    u = fz._cached_upload("alice", 0)
    r = plan.round

    def upload(base: int) -> None:
        e.begin_upload("alice", round=r, header=u.header, num_ciphertexts=u.num_ciphertexts)
        for off, data in u.chunks:
            e.upload_chunk("alice", round=r, offset=off, data=data)
        e.commit_upload("alice", round=r, sha256=u.sha256, idempotency_key=f"{u.key}:{base}", num_samples=10,
                        rank=4, quality=d.Quality(), base_version=base, train_seconds=0.0, crypto_seconds=0.0,
                        contribution=fz.sign_upload(u, "alice", round=r, weight=fz.EDGE_WEIGHTS["alice"],
                                                    base_version=base))

    with pytest.raises(Rejection) as err:
        upload(0)  # never sent by this edge
    assert err.value.reason == "base_version"
    upload(4)
    (_, _, contributions, _), = h.outbox.partials  # async, a buffer of one: forwarded at once
    assert [(c.client_id, c.base_version) for c in contributions] == [("alice", 4)]


def test_a_claimed_adapter_version_the_edge_never_sent_gets_the_adapter_pushed() -> None:
    """A hello saying "I hold version 4" does not make version 4 served: the edge sends its
    adapter with the next task, and only then counts it as the client's."""
    h = fz.EdgeHarness()
    e = h.edge
    e.on_adapter(4, b"adapter v4")
    e.client_connected("dave", num_samples=1, device="cpu", adapter_version=4)
    weights = {**fz.EDGE_WEIGHTS, "dave": 1}
    e.on_plan(fz.round_plan(h.pub, h.layout, round=fz.ROUND + 1, weights=weights, deadline=h.clock() + 60))
    assert ("dave", 4) in [(c, v) for c, v, _ in h.outbox.adapters]
    assert e._served["dave"] == (4,)


def test_hello_rules() -> None:
    from services.edge_aggregator.validation import check_hello

    check_hello(num_samples=10**6, check_in_s=30.0, max_check_in_s=300.0)
    for kw, reason in (({"num_samples": 2**64 - 1}, "invalid_scalar"), ({"check_in_s": NAN}, "bad_hello"),
                       ({"check_in_s": 3600.0}, "bad_hello"), ({"check_in_s": -1.0}, "bad_hello")):
        with pytest.raises(Rejection) as err:
            check_hello(**{"num_samples": 10, "check_in_s": 0.0, "max_check_in_s": 300.0, **kw})  # type: ignore[arg-type]
        assert err.value.reason == reason

"""Limits everywhere: field lengths of every message, one hello per session, bounded session
queues with back-pressure, a bounded roster sent as one coalesced message, check-in intervals
the edge accepts, and what a client accepts from its edge (model, adapter size)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ffalora.v1 import federation_pb2 as pb

from ffa_lora.lora import LoRASpec
from ffa_lora_tools.harness import fuzzing as fz
from services.client_agent.agent import check_model
from services.common import domain as d
from services.common.config import ClientConfig, DataConfig, LimitsConfig, parse_config
from services.common.limits import check_message
from services.common.metrics import create_metrics
from services.common.rejections import Rejection
from services.common.session import Session
from services.common.transfer import AdapterReceiver
from services.edge_aggregator.handlers import EdgeAggregator
from services.edge_aggregator.servicer import EdgeOutboxImpl

MIB = 1 << 20


def hello(**kw: Any) -> pb.ClientSessionRequest:
    return pb.ClientSessionRequest(hello=pb.ClientHello(**kw))


@pytest.mark.parametrize(("msg", "field"), [
    (hello(device="x" * MIB), "ClientHello.device"),
    (hello(device="x" * 65), "ClientHello.device"),
    (hello(agent_version="v" * 100), "ClientHello.agent_version"),
    (pb.ClientSessionRequest(goodbye=pb.ClientGoodbye(reason="r" * 300)), "ClientGoodbye.reason"),
    (pb.ClientSessionRequest(update_commit=pb.UpdateCommit(idempotency_key="k" * 300)), "UpdateCommit.idempotency_key"),
    (pb.ClientSessionRequest(update_begin=pb.UpdateBegin(header=pb.CiphertextHeader(header=b"h" * 5000))),
     "CiphertextHeader.header"),
    (pb.EdgeSessionRequest(roster=pb.Roster(clients=[pb.RosterEntry(client_id="c", device="d" * 65)])),
     "RosterEntry.device"),
    (pb.EdgeSessionRequest(roster=pb.Roster(clients=[pb.RosterEntry(client_id="c" * 65)])), "RosterEntry.client_id"),
    (pb.ClientSessionResponse(welcome=pb.EdgeWelcome(model=pb.ModelSpec(labels=["l"] * 5000))), "ModelSpec.labels"),
    (pb.ClientSessionResponse(welcome=pb.EdgeWelcome(model=pb.ModelSpec(name_or_path="/" * 2000))),
     "ModelSpec.name_or_path"),
    (pb.ClientSessionResponse(welcome=pb.EdgeWelcome(public_key=pb.PublicKey(n=b"\x01" * 2000))), "PublicKey.n"),
    (pb.ClientSessionResponse(adapter_chunk=pb.AdapterChunk(data=b"\x00" * (2 * MIB + 1))), "AdapterChunk.data"),
    (pb.ClientSessionResponse(task=pb.RoundTask(secure_sum=pb.SecureSumSpec(layout=b"l" * 2000))), "SecureSumSpec.layout"),
])
def test_an_oversized_field_is_refused_naming_it(msg: Any, field: str) -> None:
    with pytest.raises(Rejection) as err:
        check_message(msg)
    assert err.value.reason in ("field_too_long", "list_too_long") and field in err.value.message


def test_ordinary_messages_pass() -> None:
    check_message(hello(num_samples=2**64 - 1, device="cuda", agent_version="0.1.0", check_in_interval_s=10))
    check_message(pb.ClientSessionRequest(update_chunk=pb.CiphertextChunk(data=b"\x00" * MIB)))
    check_message(pb.EdgeSessionRequest(roster=pb.Roster(
        clients=[pb.RosterEntry(client_id=f"client-{i}", device="cpu") for i in range(5000)])))
    check_message(pb.ClientSessionResponse(welcome=pb.EdgeWelcome(model=pb.ModelSpec(
        name_or_path="demo", labels=["negative", "neutral", "positive"], target_modules=["query", "value"]))))


# -- sessions ---------------------------------------------------------------------------------


def test_a_session_queue_is_bounded_and_applies_back_pressure() -> None:
    async def scenario() -> None:
        s = Session(asyncio.get_running_loop(), max_queued=64)
        for i in range(32):
            s.put(i)
        assert s.writable.is_set()
        s.put(32)  # more than half full: the reader stops taking requests
        assert not s.writable.is_set()
        got = s.messages()
        for _ in range(2):
            await got.__anext__()
        assert s.writable.is_set()  # drained to half: reading resumes
        for i in range(100):  # a peer that stops reading: the queue never holds more than 64
            s.put(i)
        assert s.overflowed and s.queue.qsize() <= 65
        rest = [m async for m in got]
        assert len(rest) == 64 and s.closed  # what was queued, then the end of the session

    asyncio.run(scenario())


# -- the edge's roster ------------------------------------------------------------------------


def edge(**limits: Any) -> tuple[EdgeAggregator, fz.RecordingOutbox]:
    outbox = fz.RecordingOutbox()
    e = EdgeAggregator(edge_id="e", region="r", limits=LimitsConfig(**limits), metrics=create_metrics("edge"),
                       outbox=outbox, clock=fz.FakeClock(), signer=fz.fuzz_signer("edge", "e"))
    return e, outbox


def test_the_roster_is_capped() -> None:
    e, _ = edge(max_roster_clients=2)
    e.client_connected("a", num_samples=1, device="cpu", adapter_version=None)
    e.client_connected("b", num_samples=1, device="cpu", adapter_version=None)
    with pytest.raises(Rejection) as err:
        e.client_connected("c", num_samples=1, device="cpu", adapter_version=None)
    assert err.value.reason == "roster_full" and "edge busy" in err.value.message
    e.client_connected("a", num_samples=1, device="cpu", adapter_version=None)  # a known client comes back
    assert sorted(e.clients) == ["a", "b"]


def test_a_roster_that_would_not_fit_one_message_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="max_roster_clients"):
        LimitsConfig(max_message_bytes=64 * 1024, max_roster_clients=5000)


def test_rosters_are_coalesced_upstream() -> None:
    """However often clients come and go, one roster message waits upstream, built when sent."""
    async def scenario() -> None:
        outbox = EdgeOutboxImpl()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        outbox.attach_upstream(queue, [])
        for i in range(1000):
            outbox.roster([d.RosterEntry(f"c{j}", 1) for j in range(i + 1)])
        assert queue.qsize() == 1
        msg = outbox.upstream_message(queue.get_nowait())
        assert len(msg.roster.clients) == 1000
        outbox.roster([d.RosterEntry("c0", 1)])
        assert queue.qsize() == 1  # a change after sending queues the next one

    asyncio.run(scenario())


def test_check_in_interval_above_the_edges_maximum_is_refused_by_config() -> None:
    base = {"service": "edge", "tls": {"ca": "a", "cert": "b", "key": "c"}}
    assert parse_config({**base, "edge": {}}).edge.max_check_in_s == 300  # type: ignore[union-attr]
    with pytest.raises(Exception, match="max_check_in_s"):
        parse_config({**base, "edge": {"max_check_in_s": 7200}})


# -- what a client accepts from its edge ------------------------------------------------------


def client_config(**kw: Any) -> ClientConfig:
    return ClientConfig(edges=["127.0.0.1:1"], data=DataConfig(path="x.csv"), **kw)  # type: ignore[arg-type]


def test_a_client_refuses_a_model_it_did_not_agree_to() -> None:
    spec = LoRASpec(model="/etc/evil", num_labels=3, r_max=4)
    with pytest.raises(Rejection) as err:
        check_model(client_config(), spec)
    assert err.value.reason == "model_mismatch" and "client.model" in err.value.message
    check_model(client_config(model="/etc/evil"), spec)  # configured on purpose: accepted
    check_model(client_config(), LoRASpec(model="demo", num_labels=3, r_max=4))  # the default


def test_a_client_refuses_an_adapter_over_its_limit_before_keeping_a_byte() -> None:
    receiver = AdapterReceiver(max_size=client_config().max_adapter_bytes)
    with pytest.raises(Rejection) as err:
        receiver.feed(version=1, offset=0, data=b"\x00" * 16, total_size=8 << 30, sha256="0" * 64)
    assert err.value.reason == "adapter_too_large"
    assert receiver.feed(version=1, offset=0, data=b"ok", total_size=2,
                         sha256="2689367b205c16ce32ed4200942b8b8b1e262dfc70d9bc9fbc77c49699a4f1df") == b"ok"

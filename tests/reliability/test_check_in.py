"""Check-in clients (``client.session: check_in``): they close their session while idle or
training and come back for their task and with their update. The edge keeps them on the roster
while they are away, hands them their task when they check in, and drops them once they miss
their check-ins; a persistent client that disconnects leaves the roster at once."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil
import pytest
from ffalora.v1 import federation_pb2 as pb
from ffalora.v1 import federation_pb2_grpc as pb_grpc

from ffa_lora_tools.harness import fuzzing as fz
from ffa_lora_tools.harness.tiny_model import tiny_bert
from services.client_agent.agent import COLLECT_AFTER_SESSION_S, ClientAgent
from services.common import domain as d
from services.common.config import LimitsConfig
from services.common.metrics import create_metrics
from services.common.tls import server_credentials
from services.edge_aggregator.handlers import CHECK_IN_MISSES, CHECK_IN_SLACK_S, EdgeAggregator
from tests.support.federation import (
    InProcessFederation,
    SyntheticTrainer,
    client_config,
    make_pki,
    tls_files,
)

pytestmark = pytest.mark.timeout(300)


class RosterOutbox(fz.RecordingOutbox):
    def __init__(self) -> None:
        super().__init__()
        self.rosters: list[list[str]] = []

    def roster(self, entries: list[d.RosterEntry]) -> None:
        self.rosters.append(sorted(e.client_id for e in entries))


def _gauges(edge: EdgeAggregator) -> tuple[float, float]:
    m, s = edge.metrics, edge.metrics.service
    return m.connected_clients.labels(s)._value.get(), m.roster_clients.labels(s)._value.get()


def test_edge_keeps_away_check_in_clients_on_the_roster_and_tasks_them_on_return() -> None:
    pub, _ = fz.fuzz_keys()
    layout = fz.layout_for(pub)
    clock, outbox = fz.FakeClock(), RosterOutbox()
    edge = EdgeAggregator(edge_id="e", region="r", limits=LimitsConfig(), metrics=create_metrics("edge"),
                          outbox=outbox, clock=clock,
                          signer=fz.fuzz_signer("edge", "e"))
    edge.on_coordinator_welcome(pub, "sync", fz.federation_info())
    edge.client_connected("away", num_samples=10, device="cpu", adapter_version=0, check_in_s=10.0)
    edge.client_connected("steady", num_samples=10, device="cpu", adapter_version=0)
    edge.client_connected("leaver", num_samples=10, device="cpu", adapter_version=0)
    assert outbox.rosters[-1] == ["away", "leaver", "steady"]

    edge.client_disconnected("away")  # a check-in: stays on the roster, no roster message
    edge.client_disconnected("leaver")  # a persistent session ended: gone at once
    assert outbox.rosters[-1] == ["away", "steady"]
    assert _gauges(edge) == (1, 2)

    edge.on_plan(fz.round_plan(pub, layout, round=fz.ROUND, weights={"away": 1, "steady": 1},
                               deadline=clock() + 600))
    assert outbox.tasks == [("steady", fz.ROUND)]  # nothing is sent to a client that is away

    clock.now += 25.0
    edge.tick()
    n_rosters = len(outbox.rosters)
    edge.client_connected("away", num_samples=10, device="cpu", adapter_version=0, check_in_s=10.0)
    assert outbox.tasks[-1] == ("away", fz.ROUND)  # its task, on check-in
    assert len(outbox.rosters) == n_rosters  # back with the same entry: the roster did not change
    u = fz.make_upload(pub, layout, seed=1, key="away:1")
    edge.begin_upload("away", round=fz.ROUND, header=u.header, num_ciphertexts=u.num_ciphertexts)
    for off, data in u.chunks:
        edge.upload_chunk("away", round=fz.ROUND, offset=off, data=data)
    edge.commit_upload("away", round=fz.ROUND, sha256=u.sha256, idempotency_key=u.key, num_samples=10, rank=4,
                       quality=d.Quality(), base_version=0, train_seconds=0.0, crypto_seconds=0.0,
                       contribution=fz.sign_upload(u, "away", round=fz.ROUND, weight=1, base_version=0))
    assert edge.agg is not None and set(edge.agg.contributions) == {"away"}

    edge.client_disconnected("away")
    clock.now += CHECK_IN_MISSES * 10.0 + CHECK_IN_SLACK_S - 1
    edge.tick()
    assert outbox.rosters[-1] == ["away", "steady"]  # still due back
    clock.now += 2
    edge.tick()
    assert outbox.rosters[-1] == ["steady"]  # missed its check-ins
    assert _gauges(edge) == (1, 1)


def test_finished_federation_tells_returning_check_in_client() -> None:
    pub, _ = fz.fuzz_keys()
    outbox = RosterOutbox()
    shut: list[tuple[str, bool]] = []
    outbox.shutdown = lambda cid, reason, finished: shut.append((cid, finished))  # type: ignore[method-assign]
    edge = EdgeAggregator(edge_id="e", region="r", limits=LimitsConfig(), metrics=create_metrics("edge"), outbox=outbox,
                          signer=fz.fuzz_signer("edge", "e"))
    edge.on_coordinator_welcome(pub, "sync", fz.federation_info())
    edge.client_connected("a", num_samples=10, device="cpu", adapter_version=0, check_in_s=5.0)
    edge.client_disconnected("a")
    edge.on_finished("done")
    assert shut == [] and edge.away_clients() == 1  # away: the edge waits to tell it
    edge.client_connected("a", num_samples=10, device="cpu", adapter_version=0, check_in_s=5.0)
    assert shut == [("a", True)] and edge.away_clients() == 0


@pytest.mark.slow  # servers on loopback
def test_check_in_clients_train_away_and_every_round_counts_them(tmp_path: Path) -> None:
    """Three check-in clients over real mTLS: they leave while idle and while training (1 s),
    come back with their updates, and every round holds all three with the exact FedAvg."""
    model_dir = tiny_bert(tmp_path / "tiny")
    seen: dict[str, Any] = {"min_connected": 99, "roster_when_min": 0}

    async def watch(fed: InProcessFederation) -> None:
        while True:
            connected = sum(_gauges(e)[0] for e in fed.edges.values())
            roster = sum(_gauges(e)[1] for e in fed.edges.values())
            if fed.coordinator.current is not None and connected < seen["min_connected"]:
                seen["min_connected"], seen["roster_when_min"] = connected, roster
            await asyncio.sleep(0.02)

    async def scenario() -> None:
        fed = InProcessFederation(tmp_path, model_dir, edges=2,
                                  rounds={"max_rounds": 3, "min_clients": 3, "patience": 10, "deadline_s": 60})
        try:
            await fed.start_servers()
            for i, cid in enumerate(fed.client_ids):
                agent = fed.start_client(cid, edge_index=i % 2, num_samples=100, seed=i, delay=1.0,
                                         session="check_in", check_in_interval_s=0.5)
                agent.linger_s = 0.2
            watcher = asyncio.create_task(watch(fed))
            await fed.wait_finished(timeout=120)
            watcher.cancel()
            rounds = fed.coordinator.store.rounds()
            agents = fed.agents
            # every client's update of every round is in the model exactly once (plain FedAvg,
            # equal weights), up to 16-bit quantization
            ops, want = fed.coordinator.ops, fed.coordinator.ops.initial_state()
            for r in rounds:
                mean = np.mean([fed.trainers[c].deltas[r.round] for c in fed.client_ids], axis=0)
                want = ops.apply_mean(want, mean, "B", 1.0)
            for k, v in want.items():
                np.testing.assert_allclose(fed.coordinator.state[k], v, atol=3 * 2 * 0.5 / (2**16 - 1), rtol=0)
            for _ in range(300):  # the clients hear that the federation finished at their next check-in
                if all(a.result.finished for a in agents.values()):
                    break
                await asyncio.sleep(0.05)
            assert all(a.result.finished for a in agents.values()), {c: a.result for c, a in agents.items()}
        finally:
            await fed.stop()
        assert len(rounds) == 3
        assert all(set(r.contributors) == set(fed.client_ids) for r in rounds)
        assert all(a.result.updates_acked == 3 and not a.result.rejections for a in agents.values()), {c: a.result for c, a in agents.items()}
        assert all(a.check_ins >= 3 for a in agents.values()), {c: a.check_ins for c, a in agents.items()}
        assert seen["min_connected"] == 0 and seen["roster_when_min"] == 3  # all away, none forgotten

    asyncio.run(scenario())


@pytest.mark.slow  # servers on loopback
def test_edge_session_cap_turns_check_ins_away_and_rounds_still_complete(tmp_path: Path) -> None:
    """``limits.max_client_sessions: 1``: the edge refuses a second session with RESOURCE_EXHAUSTED
    ("edge busy"); check-in clients treat it as an ordinary check-in later, so every round still
    holds all of them while the edge never has two sessions open."""
    model_dir = tiny_bert(tmp_path / "tiny")
    most_open = 0

    async def watch(fed: InProcessFederation) -> None:
        nonlocal most_open
        while True:
            most_open = max(most_open, int(_gauges(fed.edges["edge-1"])[0]))
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        fed = InProcessFederation(tmp_path, model_dir, edges=1,
                                  rounds={"max_rounds": 2, "min_clients": 3, "patience": 10, "deadline_s": 60})
        fed.edge_limits = {"max_client_sessions": 1}
        try:
            await fed.start_servers()
            watcher = asyncio.create_task(watch(fed))
            for i, cid in enumerate(fed.client_ids):
                agent = fed.start_client(cid, num_samples=100, seed=i, delay=0.2,
                                         session="check_in", check_in_interval_s=0.3)
                agent.linger_s = 0.1
            await fed.wait_finished(timeout=120)
            watcher.cancel()
            rounds = fed.coordinator.store.rounds()
        finally:
            await fed.stop()
        assert len(rounds) == 2 and all(set(r.contributors) == set(fed.client_ids) for r in rounds)
        assert most_open == 1
        assert sum(a.busy_refusals for a in fed.agents.values()) > 0
        assert all(a.result.updates_acked == 2 and not a.result.rejections for a in fed.agents.values()), {c: a.result for c, a in fed.agents.items()}

    asyncio.run(scenario())


class _LingeringEdge(pb_grpc.EdgeServiceServicer):
    """Test-only edge that says the federation finished and then leaves the stream open."""

    async def ClientSession(self, request_iterator: Any, context: Any) -> Any:
        yield pb.ClientSessionResponse(shutdown=pb.Shutdown(reason="finished", finished=True))
        await asyncio.sleep(30)


@pytest.mark.slow  # servers on loopback
@pytest.mark.parametrize("collect", [True, False])
def test_agent_leaves_no_connection_behind_when_a_stream_ends_early(tmp_path: Path, collect: bool) -> None:
    """A channel closed while its stream is still open keeps its TCP connection until Python's
    garbage collector frees a reference cycle inside grpc.aio (grpc/grpc#42125). The agent
    collects after every session, so the edge is not left holding one idle connection (~100 KB
    of TLS buffers) per past session. Automatic collection is off here, as in a process that
    allocates little while it waits; without the agent's collection the connection stays."""
    certs = make_pki(tmp_path, edges=["edge-1"], clients=["client-1"])
    me = psutil.Process()

    def client_connections(port: int) -> int:
        return sum(1 for c in me.net_connections(kind="tcp")
                   if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED)

    async def scenario() -> tuple[bool, int]:
        server = grpc.aio.server()
        pb_grpc.add_EdgeServiceServicer_to_server(_LingeringEdge(), server)
        port = server.add_secure_port("127.0.0.1:0", server_credentials(tls_files(certs, "edge", "edge-1")))
        await server.start()
        try:
            cfg = client_config(tmp_path, certs, "client-1", [port])
            agent = ClientAgent(cfg.client, tls_files(certs, "client", "client-1"),  # type: ignore[arg-type]
                                SyntheticTrainer("client-1", 10), create_metrics("client"))
            agent.collect_after_session = collect
            result = await asyncio.wait_for(agent.run(), 30)
            await asyncio.sleep(COLLECT_AFTER_SESSION_S + 0.5)  # the collection, then the socket's FIN
            return result.finished, client_connections(port)
        finally:
            await server.stop(grace=None)

    gc.collect()
    gc.disable()
    try:
        finished, left = asyncio.run(scenario())
    finally:
        gc.enable()
    assert finished
    assert left == (0 if collect else 1)

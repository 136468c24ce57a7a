"""Real coordinator and edges on loopback with real mutual TLS; clients upload known synthetic
updates through the real encryption and streaming path (512-bit test-only keys, tiny BERT)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from ffalora.v1 import federation_pb2 as pb
from ffalora.v1 import federation_pb2_grpc as pb_grpc

from ffa_lora.crypto import PackingLayout
from ffa_lora.crypto.signing import ContributionClaim, KeyAnnouncement
from ffa_lora.crypto.threshold import deal
from ffa_lora_tools.harness.raw_client import RawClient
from ffa_lora_tools.harness.tiny_model import tiny_bert
from services.client_agent.agent import sign_update, upload_messages
from services.client_agent.update import PreparedUpdate, encrypt_update
from services.cloud_coordinator.adapter_ops import LoraAdapterOps
from services.common import domain as d
from services.common import serde
from services.common.certs import role_dns_name
from services.common.evidence import Signer
from services.common.tls import channel_credentials, pinned_name_option
from tests.support.federation import InProcessFederation, tls_files

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # servers on loopback


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def expected_state(fed: InProcessFederation, deltas: dict[str, np.ndarray], weights: dict[str, int]) -> dict[str, np.ndarray]:
    coord = fed.coordinator
    ops: LoraAdapterOps = coord.ops
    total = sum(weights.values())
    mean = sum(weights[c] * deltas[c] for c in deltas) / total
    return ops.apply_mean(ops.initial_state(), mean, "B", 1.0)


def test_one_round_equals_plaintext_fedavg(tmp_path: Path, model_dir: Path) -> None:
    async def scenario() -> None:
        sizes = {"client-1": 100, "client-2": 200, "client-3": 300}
        fed = InProcessFederation(tmp_path, model_dir, weights={"sizes": sizes})
        try:
            await fed.start_servers()
            for i, cid in enumerate(fed.client_ids):  # what the clients say about their size changes nothing
                fed.start_client(cid, edge_index=i % 2, num_samples=10**12 if i == 0 else 7, seed=i)
            await fed.wait_finished()
            coord = fed.coordinator
            assert coord.committed == 1
            # Integer weights from the declared sizes 100/200/300, capped at max_weight 16.
            weights = {"client-1": 5, "client-2": 11, "client-3": 16}
            rnd = coord.store.rounds()[0].round
            deltas = {cid: fed.trainers[cid].deltas[rnd] for cid in fed.client_ids}
            want = expected_state(fed, deltas, weights)
            step = 2 * 0.5 / (2**16 - 1)  # one 16-bit quantization step of the clip range
            for k, v in want.items():
                np.testing.assert_allclose(coord.state[k], v, atol=step, rtol=0)
            # Both edges took part, and every client was acknowledged.
            rec = coord.store.rounds()[0]
            assert sorted(rec.contributors) == sorted(fed.client_ids)
            for agent in fed.agents.values():
                assert agent.result.updates_acked == 1
        finally:
            await fed.stop()

    asyncio.run(scenario())


def test_security_rejections_leave_the_sum_unchanged(tmp_path: Path, model_dir: Path) -> None:
    async def scenario() -> None:
        fed = InProcessFederation(tmp_path, model_dir, edges=1)
        raw = None
        try:
            await fed.start_servers()
            raw = RawClient(f"127.0.0.1:{fed.edge_ports[fed.edge_ids[0]]}", tls_files(fed.certs, "client", "intruder"),
                            num_samples=150)
            await raw.start()
            welcome = await raw.next("welcome")
            pk = serde.public_key_from_proto(welcome.public_key)
            for i, cid in enumerate(fed.client_ids[:2]):
                # Slow enough that the intruder's sequence below ends before the round closes.
                fed.start_client(cid, num_samples=150, seed=i, delay=8.0)
            task = serde.task_from_proto(await raw.next("task"))
            layout = PackingLayout.from_bytes(task.secure_sum.layout)
            edge = fed.edges[fed.edge_ids[0]]

            async def ack() -> pb.UpdateAck:
                return await raw.next("ack")

            def up(round_: int, vec: Any, key: str) -> PreparedUpdate:
                return PreparedUpdate(round=round_, vec=vec, idempotency_key=key, num_samples=150,
                                      rank=task.assignment.rank, quality=d.Quality(), base_version=0,
                                      train_seconds=0, crypto_seconds=0)

            rng = np.random.default_rng(42)
            delta = rng.uniform(-0.05, 0.05, size=task.assignment.num_values)
            vec, _ = encrypt_update(delta, task, pk, layout)
            good = raw.signed(up(task.round, vec, "intruder:good"), task, federation=welcome.federation)

            # 1. an update for another round
            wrong = upload_messages(up(task.round + 5, vec, "intruder:wrong"))
            raw.send(wrong[0])
            a = await ack()
            assert a.status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0] and a.status.reason == "wrong_round"

            # 2. an oversized chunk (over 1 MiB of data)
            msgs = upload_messages(good)
            raw.send(msgs[0])
            raw.send(pb.ClientSessionRequest(update_chunk=pb.CiphertextChunk(
                round=task.round, offset=0, data=b"\x01" * ((1 << 20) + 128))))
            a = await ack()
            assert a.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and a.status.reason == "chunk_too_large"

            # 3. a ciphertext out of range (>= n^2)
            width = pk.ciphertext_bytes
            bad = bytearray(b"".join(m.update_chunk.data for m in msgs[1:-1]))
            bad[:width] = b"\xff" * width
            raw.send(msgs[0])
            raw.send(pb.ClientSessionRequest(update_chunk=pb.CiphertextChunk(round=task.round, offset=0, data=bytes(bad))))
            commit = pb.UpdateCommit()
            commit.CopyFrom(msgs[-1].update_commit)
            commit.sha256 = hashlib.sha256(bytes(bad)).hexdigest()
            raw.send(pb.ClientSessionRequest(update_commit=commit))
            a = await ack()
            assert a.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert a.status.reason == "ciphertext_invalid"
            assert "intruder" not in edge.agg.contributions

            # 3b. no signed claim, a claim that inflates the assigned weight, and a claim signed
            # with another client's certificate: each refused before it reaches the sum
            unsigned = upload_messages(up(task.round, vec, "intruder:unsigned"))
            for m in unsigned:
                raw.send(m)
            a = await ack()
            assert a.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and a.status.reason == "unsigned"
            inflated = dataclasses.replace(task, assignment=dataclasses.replace(task.assignment, weight=16 + 1))
            for m in upload_messages(raw.signed(up(task.round, vec, "intruder:heavy"), inflated,
                                                federation=welcome.federation)):
                raw.send(m)
            a = await ack()
            assert a.status.reason == "claim_mismatch" and "weight" in a.status.message
            other = Signer(tls_files(fed.certs, "client", "client-3").load())
            forged = sign_update(up(task.round, vec, "intruder:forged"), task, other, federation=welcome.federation)
            for m in upload_messages(forged):
                raw.send(m)
            a = await ack()
            assert a.status.reason == "claim_mismatch" and "client_id" in a.status.message
            claim = ContributionClaim.from_bytes(good.contribution.statement)  # type: ignore[union-attr]
            stolen = dataclasses.replace(good, idempotency_key="intruder:stolen", contribution=other.sign(
                claim.canonical_bytes()))  # the intruder's own claim, signed with another key
            for m in upload_messages(stolen):
                raw.send(m)
            a = await ack()
            assert a.status.code == grpc.StatusCode.UNAUTHENTICATED.value[0] and a.status.reason == "signature"
            assert "intruder" not in edge.agg.contributions

            # 4. the valid update is accepted ...
            for m in msgs:
                raw.send(m)
            a = await ack()
            assert a.status.code == 0, a.status
            # 5. ... its replay is recognised and not counted twice ...
            for m in msgs:
                raw.send(m)
            a = await ack()
            assert a.status.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
            # 6. ... and a second, different update in the same round is refused.
            vec2, _ = encrypt_update(-delta, task, pk, layout)
            second = raw.signed(up(task.round, vec2, "intruder:second"), task, federation=welcome.federation)
            for m in upload_messages(second):
                raw.send(m)
            a = await ack()
            assert a.status.code == grpc.StatusCode.ALREADY_EXISTS.value[0] and a.status.reason == "second_update"

            await fed.wait_finished()
            coord = fed.coordinator
            rnd = coord.store.rounds()[0].round
            deltas = {c: fed.trainers[c].deltas[rnd] for c in fed.client_ids[:2]} | {"intruder": delta}
            weights = {c: 16 for c in deltas}
            want = expected_state(fed, deltas, weights)
            for k, v in want.items():
                np.testing.assert_allclose(coord.state[k], v, atol=2 * 0.5 / (2**16 - 1), rtol=0)
            rejected = {s.labels["reason"]: s.value for m in edge.metrics.registry.collect()
                        if m.name == "ffalora_updates_rejected" for s in m.samples if s.name.endswith("_total")}
            assert rejected.get("wrong_round") == 1 and rejected.get("duplicate") == 1
        finally:
            if raw is not None:
                await raw.close()
            await fed.stop()

    asyncio.run(scenario())


def test_wrong_role_is_refused_by_the_coordinator(tmp_path: Path, model_dir: Path) -> None:
    async def scenario() -> None:
        fed = InProcessFederation(tmp_path, model_dir, edges=1)
        try:
            await fed.start_servers()
            creds = channel_credentials(tls_files(fed.certs, "client", "client-1"))
            pinned = pinned_name_option(role_dns_name("coordinator", federation="ffa-lora"))
            async with grpc.aio.secure_channel(f"127.0.0.1:{fed.coordinator_port}", creds, options=[pinned]) as ch:
                call = pb_grpc.CoordinatorServiceStub(ch).EdgeSession(
                    iter([pb.EdgeSessionRequest(hello=pb.EdgeHello(region="x"))]))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    async for _ in call:
                        pass
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            await fed.stop()

    asyncio.run(scenario())


def test_a_substituted_or_unpinned_key_is_refused_by_the_client(tmp_path: Path, model_dir: Path) -> None:
    """A client accepts only the key its coordinator signed and, when pinned, the pinned key: a
    wrong pin, or an edge that announces a key of its own (signed with its edge certificate),
    stop the client with a clear error before it trains or encrypts anything."""
    async def scenario() -> None:
        fed = InProcessFederation(tmp_path, model_dir, edges=1, clients=3)
        try:
            await fed.start_servers()
            pinned = fed.start_client("client-1", key_fingerprint="0" * 64)
            res = await asyncio.wait_for(_finished(pinned), 60)
            assert pinned.key_refused and res.rounds_trained == 0
            assert "configured to accept only 0000000000000000" in res.reason

            # a rogue edge: it re-signs the announcement of a key of its own with its edge certificate
            edge = fed.edges[fed.edge_ids[0]]
            rogue = deal(holders=["x/a", "x/b"], threshold=2, bits=512, test_only=True, workers=0, isolate=False)
            fake = KeyAnnouncement(edge.info.name, rogue.public_key)
            edge.announcement = edge.signer.sign(fake.canonical_bytes())
            edge.public_key = rogue.public_key
            victim = fed.start_client("client-2")
            res = await asyncio.wait_for(_finished(victim), 60)
            assert victim.key_refused and res.rounds_trained == 0
            assert "signed by spiffe://ffa-lora/edge/edge-1, expected spiffe://ffa-lora/coordinator/coordinator" \
                in res.reason
        finally:
            await fed.stop()

    asyncio.run(scenario())


async def _finished(agent: Any) -> Any:
    while not agent.key_refused:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    return agent.result

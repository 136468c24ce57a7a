"""gRPC shell of the edge: the client-facing ``ClientSession`` servicer and the upstream
``EdgeSession`` link to the coordinator. Only conversion, authentication and error mapping;
the rules live in :mod:`services.edge_aggregator.handlers`."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import AsyncIterator

import grpc
from ffalora.v1 import federation_pb2 as pb
from ffalora.v1 import federation_pb2_grpc as pb_grpc

from ffa_lora.crypto import CiphertextVector, PublicKey
from services.common import domain as d
from services.common import serde
from services.common.certs import TLSFiles, role_dns_name
from services.common.config import EdgeConfig
from services.common.errors import to_status
from services.common.limits import check_message
from services.common.metrics import Metrics
from services.common.rejections import InvalidMessage, Rejection, WrongState, as_rejection
from services.common.serde import adapter_messages, public_key_from_proto, public_key_to_proto
from services.common.session import Session, grpc_options, run_session, tls_files
from services.common.tls import channel_credentials, require_role_async
from services.common.transfer import AdapterReceiver, outgoing
from services.edge_aggregator.handlers import EdgeAggregator, Ignored
from services.edge_aggregator.validation import check_hello

log = logging.getLogger(__name__)


#: stands in the upstream queue for "the current roster": a roster is built when it is sent,
#: so however often clients come and go, at most one roster message waits
_ROSTER = object()


class EdgeOutboxImpl:
    """Delivers the edge's events: to client sessions and to the upstream queue."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self.sessions: dict[str, Session] = {}
        self.upstream: asyncio.Queue[pb.EdgeSessionRequest | object] | None = None
        self.pending_partial: list[pb.EdgeSessionRequest] | None = None
        self.pending_round = 0
        self._roster: list[d.RosterEntry] = []
        self._roster_queued = False

    def _put(self, client_id: str, msg: pb.ClientSessionResponse) -> None:
        s = self.sessions.get(client_id)
        if s is not None:
            s.put(msg)

    def welcome(self, client_id: str, public_key: PublicKey, info: d.FederationInfo,
                announcement: d.SignedBytes | None) -> None:
        self._put(client_id, pb.ClientSessionResponse(welcome=pb.EdgeWelcome(
            public_key=public_key_to_proto(public_key), federation=info.name, model=serde.federation_to_proto(info),
            key_announcement=serde.signed_to_proto(announcement) if announcement is not None else None)))

    def adapter(self, client_id: str, version: int, blob: bytes) -> None:
        for chunk in adapter_messages(version, blob):
            self._put(client_id, pb.ClientSessionResponse(adapter_chunk=chunk))

    def task(self, client_id: str, task: d.RoundTask) -> None:
        self._put(client_id, pb.ClientSessionResponse(task=serde.task_to_proto(task)))

    def ack(self, client_id: str, round: int, key: str, refusal: Rejection | None) -> None:
        """Answer one update: accepted (``refusal`` None) or refused, with its status."""
        if refusal is None:
            status = serde.status_to_proto(0, "", "accepted")
        else:
            s = to_status(refusal)
            status = serde.status_to_proto(s.number, s.reason, s.message)
        self._put(client_id, pb.ClientSessionResponse(ack=pb.UpdateAck(round=round, status=status, idempotency_key=key)))

    def shutdown(self, client_id: str, reason: str, finished: bool) -> None:
        self._put(client_id, pb.ClientSessionResponse(shutdown=pb.Shutdown(reason=reason, finished=finished)))
        if finished:
            s = self.sessions.get(client_id)
            if s is not None:
                s.close()

    def _up(self, msg: pb.EdgeSessionRequest | object) -> None:
        if self.upstream is not None:
            self.upstream.put_nowait(msg)

    def roster(self, entries: list[d.RosterEntry]) -> None:
        self._roster = list(entries)
        if not self._roster_queued and self.upstream is not None:
            self._roster_queued = True
            self._up(_ROSTER)

    def attach_upstream(self, queue: asyncio.Queue[pb.EdgeSessionRequest | object],
                        roster: list[d.RosterEntry]) -> None:
        """A fresh upstream queue after a (re)connect; the current roster is queued next."""
        self.upstream = queue
        self._roster = list(roster)
        self._roster_queued = True
        queue.put_nowait(_ROSTER)

    def upstream_message(self, item: pb.EdgeSessionRequest | object) -> pb.EdgeSessionRequest:
        """The message an upstream queue item stands for (the roster as it is now)."""
        if item is _ROSTER:
            self._roster_queued = False
            return pb.EdgeSessionRequest(roster=pb.Roster(
                clients=[serde.roster_entry_to_proto(e) for e in self._roster]))
        assert isinstance(item, pb.EdgeSessionRequest)
        return item

    def partial_sum(self, round: int, vec: CiphertextVector | None, contributions: list[d.Contribution], key: str,
                    evidence: d.PartialEvidence | None) -> None:
        msgs: list[pb.EdgeSessionRequest] = []
        sha = hashlib.sha256(b"").hexdigest()
        if vec is not None:
            out = outgoing(vec)
            sha = out.sha256
            msgs.append(pb.EdgeSessionRequest(partial_begin=pb.PartialSumBegin(header=pb.CiphertextHeader(
                round=round, header=out.header, num_ciphertexts=out.num_ciphertexts))))
            msgs += [pb.EdgeSessionRequest(partial_chunk=pb.CiphertextChunk(round=round, offset=off, data=data))
                     for off, data in out.chunks]
        msgs.append(pb.EdgeSessionRequest(partial_commit=pb.PartialSumCommit(
            round=round, sha256=sha, idempotency_key=key,
            contributions=[serde.contribution_to_proto(c) for c in contributions],
            partial_claim=serde.signed_to_proto(evidence.claim) if evidence is not None else None,
            contribution_claims=[serde.signed_to_proto(c) for c in evidence.contributions] if evidence else [])))
        # Kept until the coordinator acknowledges it: resent after a reconnect.
        self.pending_partial, self.pending_round = msgs, round
        if self.metrics is not None:
            self.metrics.bytes_sent.labels(self.metrics.service).inc(
                sum(len(m.partial_chunk.data) for m in msgs if m.WhichOneof("kind") == "partial_chunk"))
        for m in msgs:
            self._up(m)


class EdgeServicer(pb_grpc.EdgeServiceServicer):
    """``federation``: the trust domain of this edge's own certificate; a client certificate
    naming another federation is refused (UNAUTHENTICATED), even when the CA signed it."""

    def __init__(self, edge: EdgeAggregator, outbox: EdgeOutboxImpl, cfg: EdgeConfig, *,
                 federation: str | None = None) -> None:
        self.edge, self.outbox, self.cfg = edge, outbox, cfg
        self.federation = federation
        self._streams: dict[str, int] = {}
        self._open = 0  # client sessions open now (limits.max_client_sessions)

    def _hello(self, cid: str, h: pb.ClientHello, session: Session) -> bool:
        """Check and register a client's hello; False when it is refused (answered in band, and
        the session ends)."""
        try:
            check_hello(num_samples=h.num_samples, check_in_s=h.check_in_interval_s,
                        max_check_in_s=self.cfg.max_check_in_s)
        except Rejection as refusal:
            self.edge.metrics.reject(refusal.reason)
            self.outbox.ack(cid, 0, "", refusal)
            session.close()
            return False
        self.edge.client_connected(cid, num_samples=h.num_samples, device=h.device or "cpu",
                                   adapter_version=h.adapter_version if h.has_adapter else None,
                                   check_in_s=h.check_in_interval_s)
        return True

    async def ClientSession(
        self, request_iterator: AsyncIterator[pb.ClientSessionRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ClientSessionResponse]:
        peer = await require_role_async(context, "client", federation=self.federation)
        cid = peer.id
        if self._streams.get(cid, 0) >= self.cfg.limits.max_streams_per_peer:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many concurrent sessions for this client")
        if self._open >= self.cfg.limits.max_client_sessions:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"edge busy: {self._open} client sessions open (limits.max_client_sessions); "
                                "check in again later")
        self._streams[cid] = self._streams.get(cid, 0) + 1
        self._open += 1
        old = self.outbox.sessions.get(cid)
        session = Session(asyncio.get_running_loop(), max_queued=self.cfg.limits.max_queued_messages)
        self.outbox.sessions[cid] = session
        if old is not None:
            old.close()
        edge = self.edge
        hello_seen = False

        async def handle(req: pb.ClientSessionRequest) -> None:
            nonlocal hello_seen
            kind = req.WhichOneof("kind")
            if kind == "hello":
                h = req.hello
                if hello_seen:
                    raise InvalidMessage("second_hello", "one ClientHello per session; open a new session to start over")
                hello_seen = self._hello(cid, h, session)
                return
            if not hello_seen:
                edge.metrics.reject("no_hello")
                self.outbox.ack(cid, 0, "", WrongState("no_hello", "send ClientHello first"))
                return
            round_no = 0
            try:
                if kind == "update_begin":
                    h = req.update_begin.header
                    round_no = h.round
                    edge.begin_upload(cid, round=h.round, header=h.header, num_ciphertexts=h.num_ciphertexts)
                elif kind == "update_chunk":
                    round_no = req.update_chunk.round
                    edge.upload_chunk(cid, round=round_no, offset=req.update_chunk.offset, data=req.update_chunk.data)
                elif kind == "update_commit":
                    c = req.update_commit
                    round_no = c.round
                    edge.commit_upload(
                        cid, round=c.round, sha256=c.sha256, idempotency_key=c.idempotency_key,
                        num_samples=c.num_samples, rank=c.rank, quality=serde.quality_from_proto(c.quality),
                        base_version=c.base_version, train_seconds=c.train_seconds, crypto_seconds=c.crypto_seconds,
                        contribution=serde.signed_or_none(c.contribution))
                    self.outbox.ack(cid, c.round, c.idempotency_key, None)
                elif kind == "goodbye":
                    session.close()
            except Ignored:
                pass
            except Exception as exc:  # noqa: BLE001 - mapped to a safe in-band status
                rej = as_rejection(exc)
                log.info("client %s: round %d upload rejected: %s", cid, round_no, rej)
                key = req.update_commit.idempotency_key if kind == "update_commit" else ""
                self.outbox.ack(cid, round_no, key, rej)

        try:
            async for msg in run_session(request_iterator, session, handle, limits=self.cfg.limits, context=context,
                                         metrics=edge.metrics):
                yield msg
        finally:
            self._streams[cid] -= 1
            self._open -= 1
            if self.outbox.sessions.get(cid) is session:
                del self.outbox.sessions[cid]
                edge.client_disconnected(cid)


async def upstream_loop(edge: EdgeAggregator, outbox: EdgeOutboxImpl, cfg: EdgeConfig, tls: TLSFiles,
                        stop: asyncio.Event, *, federation: str) -> None:
    """Keep one EdgeSession to the coordinator; reconnect with jittered backoff. The
    coordinator's certificate must carry ``coordinator_server_name`` (default: the role name
    of ``federation``'s coordinator)."""
    backoff = 0.5
    creds = channel_credentials(tls)
    opts = grpc_options(cfg.limits)
    opts.append(("grpc.ssl_target_name_override",
                 cfg.coordinator_server_name or role_dns_name("coordinator", federation=federation)))
    while not stop.is_set() and not edge.finished:
        queue: asyncio.Queue[pb.EdgeSessionRequest | object] = asyncio.Queue()
        queue.put_nowait(pb.EdgeSessionRequest(hello=pb.EdgeHello(region=cfg.region,
                                                                   adapter_version=edge.adapter[0] if edge.adapter else 0)))
        outbox.attach_upstream(queue, edge.roster())
        if outbox.pending_partial is not None:
            for m in outbox.pending_partial:
                queue.put_nowait(m)

        async def requests(q: asyncio.Queue[pb.EdgeSessionRequest | object] = queue,
                           ) -> AsyncIterator[pb.EdgeSessionRequest]:
            while True:
                yield outbox.upstream_message(await q.get())

        receiver = AdapterReceiver(max_size=cfg.limits.max_adapter_bytes)
        try:
            async with grpc.aio.secure_channel(cfg.coordinator_address, creds, options=opts) as channel:
                stub = pb_grpc.CoordinatorServiceStub(channel)
                call = stub.EdgeSession(requests())
                async for resp in call:
                    backoff = 0.5
                    check_message(resp)
                    kind = resp.WhichOneof("kind")
                    if kind == "welcome":
                        w = resp.welcome
                        edge.on_coordinator_welcome(public_key_from_proto(w.public_key), serde.mode_from_proto(w.mode),
                                                    serde.federation_from_proto(w.federation, w.model),
                                                    serde.signed_or_none(w.key_announcement))
                    elif kind == "adapter_chunk":
                        ch = resp.adapter_chunk
                        blob = receiver.feed(version=ch.version, offset=ch.offset, data=ch.data,
                                             total_size=ch.total_size, sha256=ch.sha256)
                        if blob is not None:
                            edge.on_adapter(ch.version, blob)
                    elif kind == "plan":
                        edge.on_plan(serde.plan_from_proto(resp.plan))
                    elif kind == "ack":
                        a = resp.ack
                        if a.round == outbox.pending_round:
                            outbox.pending_partial = None
                        if a.status.code not in (0, grpc.StatusCode.ALREADY_EXISTS.value[0]):
                            log.warning("coordinator rejected partial sum for round %d: %s (%s)", a.round,
                                        a.status.message, a.status.reason)
                    elif kind == "shutdown":
                        log.info("coordinator: %s", resp.shutdown.reason)
                        if resp.shutdown.finished:
                            edge.on_finished(resp.shutdown.reason)
                            stop.set()
                            return
        except grpc.aio.AioRpcError as exc:
            log.warning("coordinator link lost (%s: %s); retrying in %.1fs", exc.code().name, exc.details(), backoff)
        except Rejection as rej:
            log.warning("bad message from coordinator (%s); reconnecting", rej)
        finally:
            outbox.upstream = None
        try:
            await asyncio.wait_for(stop.wait(), timeout=backoff * (0.5 + random.random()))
        except TimeoutError:
            pass
        backoff = min(backoff * 2, 10.0)


__all__ = ["EdgeOutboxImpl", "EdgeServicer", "tls_files", "upstream_loop"]

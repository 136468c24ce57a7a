"""gRPC shell of the coordinator: authenticate edges and key holders, convert messages, map
errors.

Domain decisions live in :mod:`services.cloud_coordinator.handlers` and
:mod:`services.cloud_coordinator.decryption`; this module only turns ``EdgeSession`` and
``KeyHolderSession`` stream messages into calls on them and their outgoing events into stream
messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from ffalora.v1 import federation_pb2 as pb
from ffalora.v1 import federation_pb2_grpc as pb_grpc

from ffa_lora.crypto import PublicKey
from services.cloud_coordinator.decryption import ThresholdDecryption
from services.cloud_coordinator.handlers import Coordinator
from services.common import domain as d
from services.common import serde
from services.common.config import LimitsConfig
from services.common.errors import to_status
from services.common.rejections import InvalidMessage, Rejection, WrongState, as_rejection
from services.common.serde import adapter_messages, public_key_to_proto
from services.common.session import Session, run_session
from services.common.tls import require_role_async
from services.common.transfer import AdapterReceiver, IncomingVector

log = logging.getLogger(__name__)


class CoordinatorOutboxImpl:
    """Delivers the coordinator's events to edge sessions (thread-safe)."""

    def __init__(self, info: d.FederationInfo, announcement: d.SignedBytes) -> None:
        self.info, self.announcement = info, announcement
        self.sessions: dict[str, Session] = {}

    def _put(self, edge_id: str, msg: pb.EdgeSessionResponse) -> None:
        s = self.sessions.get(edge_id)
        if s is not None:
            s.put(msg)

    def welcome(self, edge_id: str, public_key: PublicKey, mode: str) -> None:
        self._put(edge_id, pb.EdgeSessionResponse(welcome=pb.CoordinatorWelcome(
            federation=self.info.name, public_key=public_key_to_proto(public_key), mode=serde.mode_to_proto(mode),
            model=serde.federation_to_proto(self.info), key_announcement=serde.signed_to_proto(self.announcement))))

    def adapter(self, edge_id: str, version: int, blob: bytes) -> None:
        for chunk in adapter_messages(version, blob):
            self._put(edge_id, pb.EdgeSessionResponse(adapter_chunk=chunk))

    def plan(self, edge_id: str, plan: d.RoundPlan) -> None:
        self._put(edge_id, pb.EdgeSessionResponse(plan=serde.plan_to_proto(plan)))

    def shutdown(self, edge_id: str, reason: str, finished: bool) -> None:
        self._put(edge_id, pb.EdgeSessionResponse(shutdown=pb.Shutdown(reason=reason, finished=finished)))


class HolderLinkImpl:
    """A connected key holder's session, as :class:`ThresholdDecryption` sends to it."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def send(self, request: d.DecryptRequest) -> None:
        for msg in serde.decrypt_request_messages(request):
            self.session.put(msg)


class CoordinatorServicer(pb_grpc.CoordinatorServiceServicer):
    """``federation``: the trust domain of the coordinator's own certificate; an edge or key
    holder certificate naming another federation is refused (UNAUTHENTICATED)."""

    def __init__(self, coordinator: Coordinator, outbox: CoordinatorOutboxImpl, limits: LimitsConfig,
                 decryption: ThresholdDecryption, *, federation: str | None = None) -> None:
        self.coordinator, self.outbox, self.limits = coordinator, outbox, limits
        self.decryption = decryption
        self.federation = federation
        self._holder_sessions: dict[str, Session] = {}

    async def EdgeSession(
        self, request_iterator: AsyncIterator[pb.EdgeSessionRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.EdgeSessionResponse]:
        peer = await require_role_async(context, "edge", federation=self.federation)
        edge_id = peer.id
        if edge_id in self.outbox.sessions:
            # A reconnecting edge replaces its old session (the old stream is closed).
            self.outbox.sessions.pop(edge_id).close()
        session = Session(asyncio.get_running_loop(), max_queued=self.limits.max_queued_messages)
        self.outbox.sessions[edge_id] = session
        incoming: dict[str, IncomingVector | int] = {}
        coord = self.coordinator
        hello_seen = False

        def ack(round: int, key: str, refusal: BaseException | None) -> None:
            if refusal is None:
                status = serde.status_to_proto(0, "", "accepted")
            else:
                s = to_status(refusal)
                status = serde.status_to_proto(s.number, s.reason, s.message)
            session.put(pb.EdgeSessionResponse(ack=pb.PartialSumAck(round=round, status=status, idempotency_key=key)))

        async def handle(req: pb.EdgeSessionRequest) -> None:
            nonlocal hello_seen
            kind = req.WhichOneof("kind")
            if kind == "hello":
                if hello_seen:  # each hello would resend the welcome and the whole adapter
                    raise InvalidMessage("second_hello", "one EdgeHello per session; open a new session to start over")
                hello_seen = True
                coord.edge_connected(edge_id)
            elif kind == "roster":
                coord.edge_roster(edge_id, [serde.roster_entry_from_proto(e) for e in req.roster.clients])
            elif kind == "partial_begin":
                h = req.partial_begin.header
                incoming.clear()
                try:
                    cur = coord.current
                    if cur is None or h.round != cur.number:
                        raise WrongState("wrong_round", f"no round {h.round} in progress")
                    incoming["vec"] = IncomingVector.begin(
                        header=h.header, num_ciphertexts=h.num_ciphertexts, public_key=coord.public_key,
                        expected_layout=cur.layout, max_values=cur.num_values, expected_values=cur.num_values,
                        max_chunks=self.limits.max_chunks_per_update, max_weight_total=None)
                    incoming["round"] = h.round
                except Rejection as rej:
                    ack(h.round, "", rej)
            elif kind == "partial_chunk":
                vec = incoming.get("vec")
                if not isinstance(vec, IncomingVector) or incoming.get("round") != req.partial_chunk.round:
                    return  # the begin was rejected and acknowledged already
                try:
                    vec.add_chunk(req.partial_chunk.offset, req.partial_chunk.data)
                    coord.metrics.bytes_received.labels(coord.metrics.service).inc(len(req.partial_chunk.data))
                except Rejection as rej:
                    incoming.clear()
                    ack(req.partial_chunk.round, "", rej)
            elif kind == "partial_commit":
                c = req.partial_commit
                contributions = [serde.contribution_from_proto(x) for x in c.contributions]
                try:
                    vec = incoming.pop("vec", None)
                    incoming.clear()
                    ct = None
                    if contributions:
                        if not isinstance(vec, IncomingVector):
                            raise WrongState("no_upload", "commit without a partial sum")
                        ct = vec.finish(c.sha256)
                    coord.receive_partial(edge_id, round=c.round, vec=ct, contributions=contributions,
                                          key=c.idempotency_key,
                                          evidence=serde.evidence_from_proto(c.partial_claim, c.contribution_claims))
                    coord.metrics.updates_accepted.labels(coord.metrics.service).inc(len(contributions))
                    ack(c.round, c.idempotency_key, None)
                except Exception as exc:  # noqa: BLE001 - mapped to a safe status
                    refusal = as_rejection(exc)
                    log.warning("edge %s: partial sum for round %d rejected: %s", edge_id, c.round, refusal)
                    ack(c.round, c.idempotency_key, refusal)

        try:
            async for msg in run_session(request_iterator, session, handle, limits=self.limits, context=context,
                                         metrics=coord.metrics):
                yield msg
        finally:
            if self.outbox.sessions.get(edge_id) is session:
                del self.outbox.sessions[edge_id]
                coord.edge_disconnected(edge_id)

    def shutdown_holders(self, reason: str) -> None:
        """Tell every connected key holder that the federation finished."""
        for session in list(self._holder_sessions.values()):
            session.put(pb.KeyHolderSessionResponse(shutdown=pb.Shutdown(reason=reason, finished=True)))
            session.close()

    async def KeyHolderSession(
        self, request_iterator: AsyncIterator[pb.KeyHolderSessionRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.KeyHolderSessionResponse]:
        peer = await require_role_async(context, "keyholder", federation=self.federation)
        holder = str(peer)  # "keyholder/<id>", as the threshold parameters name it
        params = self.decryption.params
        if holder not in params.holders:
            log.warning("key holder %s is not a holder of this federation's key; refused", holder)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"{holder} holds no share of this federation's threshold key")
        old = self._holder_sessions.pop(holder, None)
        if old is not None:
            old.close()  # a reconnecting holder replaces its old session
        session = Session(asyncio.get_running_loop(), max_queued=self.limits.max_queued_messages)
        self._holder_sessions[holder] = session
        link = HolderLinkImpl(session)
        # bounds what one holder may send for one request (shares and their proofs)
        receiver = AdapterReceiver(max_size=self.limits.max_adapter_bytes)
        decryption = self.decryption

        async def handle(req: pb.KeyHolderSessionRequest) -> None:
            kind = req.WhichOneof("kind")
            if kind == "hello":
                if self.coordinator.finished:  # connected during the shutdown: told at once
                    session.put(pb.KeyHolderSessionResponse(shutdown=pb.Shutdown(
                        reason=self.coordinator.finish_reason, finished=True)))
                    session.close()
                    return
                if req.hello.params_fingerprint != params.fingerprint:
                    log.warning("key holder %s holds a share of another threshold key; refused", holder)
                    session.put(pb.KeyHolderSessionResponse(shutdown=pb.Shutdown(
                        reason="your share belongs to other threshold parameters than this federation's key",
                        finished=True)))
                    session.close()
                    return
                session.put(pb.KeyHolderSessionResponse(welcome=pb.KeyHolderWelcome(
                    federation=self.outbox.info.name, params_fingerprint=params.fingerprint)))
                decryption.connect(holder, link)
            elif kind == "share_chunk":
                ch = req.share_chunk
                try:
                    blob = receiver.feed(version=ch.request_id, offset=ch.offset, data=ch.data,
                                         total_size=ch.total_size, sha256=ch.sha256)
                except Rejection as rej:
                    decryption.on_refusal(holder, ch.request_id, "malformed", rej.message)
                    return
                if blob is not None:
                    decryption.on_share(holder, ch.request_id, blob)
            elif kind == "refusal":
                r = req.refusal
                decryption.on_refusal(holder, r.request_id, r.status.reason, r.status.message)

        try:
            async for msg in run_session(request_iterator, session, handle, limits=self.limits, context=context):
                yield msg
        finally:
            if self._holder_sessions.get(holder) is session:
                del self._holder_sessions[holder]
            decryption.disconnect(holder, link)

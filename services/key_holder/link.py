"""gRPC shell of a key holder: its ``KeyHolderSession`` with the coordinator.

The holder connects out (mTLS, certificate role ``keyholder``), says which threshold key it
holds, reassembles each decrypt request (the plan, every partial sum's evidence and
ciphertexts) and hands it to :class:`~services.key_holder.handlers.KeyHolder`, which checks
and records it before computing the share; the share goes back in chunks, a refusal as one
message. Reconnects with jittered backoff, like an edge.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import grpc
from ffalora.v1 import federation_pb2 as pb
from ffalora.v1 import federation_pb2_grpc as pb_grpc

from ffa_lora.crypto.packing import PackingLayout
from ffa_lora.crypto.vector import CiphertextVector
from services.common import domain as d
from services.common import serde
from services.common.certs import TLSFiles, role_dns_name
from services.common.config import KeyHolderConfig
from services.common.errors import to_status
from services.common.rejections import InvalidMessage, Rejection, as_rejection
from services.common.session import grpc_options
from services.common.tls import channel_credentials, pinned_name_option
from services.common.transfer import IncomingVector
from services.key_holder.handlers import KeyHolder

__all__ = ["RequestAssembler", "run_link"]

log = logging.getLogger(__name__)


@dataclass
class RequestAssembler:
    """Rebuilds one decrypt request from its messages; a :class:`Rejection` for anything out
    of order or malformed (the request is then refused as a whole)."""

    holder: KeyHolder
    max_chunks: int
    request: d.DecryptRequest | None = None
    layout: PackingLayout | None = None
    expected: int = 0
    partials: list[tuple[CiphertextVector, d.PartialEvidence]] = field(default_factory=list)
    _incoming: tuple[IncomingVector, d.PartialEvidence, str] | None = None

    def begin(self, m: pb.DecryptBegin) -> None:
        self.request = serde.decrypt_begin_from_proto(m)
        try:
            self.layout = PackingLayout.from_bytes(m.layout)
        except Exception as exc:  # noqa: BLE001 - any malformed layout is the sender's fault
            raise InvalidMessage("layout_mismatch", f"the request's packing layout is malformed: {exc}") from None
        self.expected, self.partials, self._incoming = m.num_partials, [], None

    def partial(self, m: pb.DecryptPartial) -> None:
        if self.request is None or self.layout is None or m.request_id != self.request.request_id:
            raise InvalidMessage("out_of_order", "a partial sum outside a decrypt request")
        self._finish_partial()
        ev = serde.evidence_from_proto(m.partial_claim, m.contribution_claims)
        if ev is None:
            raise InvalidMessage("signature", "a partial sum without its edge's signed claim")
        vec = IncomingVector.begin(
            header=m.header.header, num_ciphertexts=m.header.num_ciphertexts,
            public_key=self.holder.params.public_key, expected_layout=self.layout,
            max_values=self.request.num_values, expected_values=self.request.num_values,
            max_chunks=self.max_chunks, max_weight_total=None)
        self._incoming = (vec, ev, m.sha256)

    def chunk(self, m: pb.CiphertextChunk) -> None:
        if self._incoming is None:
            raise InvalidMessage("out_of_order", "ciphertexts before their partial sum's header")
        self._incoming[0].add_chunk(m.offset, m.data)

    def commit(self, m: pb.DecryptCommit) -> d.DecryptRequest:
        if self.request is None or m.request_id != self.request.request_id:
            raise InvalidMessage("out_of_order", "a commit without its decrypt request")
        self._finish_partial()
        if len(self.partials) != self.expected:
            raise InvalidMessage("incomplete", f"{len(self.partials)} of {self.expected} partial sums arrived")
        request = replace(self.request, partials=tuple(self.partials))
        self.request, self.partials = None, []
        return request

    def _finish_partial(self) -> None:
        if self._incoming is not None:
            vec, ev, sha = self._incoming
            self._incoming = None
            self.partials.append((vec.finish(sha), ev))


async def _answer(holder: KeyHolder, request: d.DecryptRequest,
                  out: asyncio.Queue[pb.KeyHolderSessionRequest]) -> None:
    """Check, record and compute the share in a worker thread; queue the answer."""
    loop = asyncio.get_running_loop()
    try:
        share = await loop.run_in_executor(None, holder.answer, request)
    except Exception as exc:  # noqa: BLE001 - every refusal is answered, never raised here
        _refuse(out, request.request_id, request.round, as_rejection(exc))
        return
    for msg in serde.share_messages(request.request_id, request.round, share.to_bytes(holder.params)):
        out.put_nowait(msg)


def _refuse(out: asyncio.Queue[pb.KeyHolderSessionRequest], request_id: int, round: int,
            rej: Rejection) -> None:
    s = to_status(rej)
    out.put_nowait(serde.refusal_message(request_id, round, s.number, s.reason, s.message))


async def _session(holder: KeyHolder, cfg: KeyHolderConfig, stub: pb_grpc.CoordinatorServiceStub,
                   queue: asyncio.Queue[pb.KeyHolderSessionRequest], stop: asyncio.Event) -> None:
    async def requests() -> AsyncIterator[pb.KeyHolderSessionRequest]:
        while True:
            yield await queue.get()

    assembler = RequestAssembler(holder, cfg.limits.max_chunks_per_update)
    work: set[asyncio.Task[None]] = set()
    async for resp in stub.KeyHolderSession(requests()):
        kind = resp.WhichOneof("kind")
        if kind == "welcome":
            log.info("key holder %s joined federation %s (threshold key %s…)", holder.holder,
                     resp.welcome.federation, resp.welcome.params_fingerprint[:12])
        elif kind == "shutdown":
            log.info("coordinator: %s", resp.shutdown.reason)
            if resp.shutdown.finished:
                stop.set()
            return
        else:
            _feed(assembler, resp, kind, holder, queue, work)


def _feed(assembler: RequestAssembler, resp: pb.KeyHolderSessionResponse, kind: str | None,
          holder: KeyHolder, queue: asyncio.Queue[pb.KeyHolderSessionRequest],
          work: set[asyncio.Task[None]]) -> None:
    current = assembler.request
    try:
        if kind == "decrypt_begin":
            assembler.begin(resp.decrypt_begin)
        elif kind == "decrypt_partial":
            assembler.partial(resp.decrypt_partial)
        elif kind == "partial_chunk":
            assembler.chunk(resp.partial_chunk)
        elif kind == "decrypt_commit":
            task = asyncio.create_task(_answer(holder, assembler.commit(resp.decrypt_commit), queue))
            work.add(task)
            task.add_done_callback(work.discard)
    except Rejection as rej:
        if current is not None or assembler.request is not None:
            req = assembler.request or current
            assert req is not None
            _refuse(queue, req.request_id, req.round, rej)
            holder.metrics.shares_refused.labels(holder.metrics.service, rej.reason).inc()
        log.warning("malformed decrypt request refused: %s", rej)
        assembler.request, assembler.partials = None, []


async def run_link(holder: KeyHolder, cfg: KeyHolderConfig, tls: TLSFiles, stop: asyncio.Event) -> None:
    """Keep one KeyHolderSession to the coordinator until ``stop``; reconnect with backoff."""
    backoff = 0.5
    creds = channel_credentials(tls)
    opts = grpc_options(cfg.limits)
    # the coordinator's certificate must carry the pinned name, never just the host dialled
    opts.append(pinned_name_option(
        cfg.coordinator_server_name or role_dns_name("coordinator", federation=tls.load().federation)))
    while not stop.is_set():
        queue: asyncio.Queue[pb.KeyHolderSessionRequest] = asyncio.Queue()
        queue.put_nowait(pb.KeyHolderSessionRequest(hello=pb.KeyHolderHello(
            params_fingerprint=holder.params.fingerprint)))
        try:
            async with grpc.aio.secure_channel(cfg.coordinator_address, creds, options=opts) as channel:
                await _session(holder, cfg, pb_grpc.CoordinatorServiceStub(channel), queue, stop)
                backoff = 0.5
        except grpc.aio.AioRpcError as exc:
            log.warning("coordinator link lost (%s: %s); retrying in %.1fs", exc.code().name, exc.details(), backoff)
            if exc.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION):
                backoff = 10.0  # a misconfiguration: it will not fix itself in a second
        if stop.is_set():
            return
        try:
            await asyncio.wait_for(stop.wait(), timeout=backoff * (0.5 + random.random()))
        except TimeoutError:
            pass
        backoff = min(backoff * 2, 10.0)

"""The client agent's session with its edge: hello, adapter download, tasks, encrypted upload,
acknowledgement, reconnects with backoff (to the next edge in the list), and a kept update that
is resent after a reconnect until the edge acknowledges it.

The client encrypts only under a key the coordinator signed (the KeyAnnouncement its edge
forwards; the signer must be the configured coordinator identity and, when configured, the key
the pinned fingerprint): anything else ends the agent with a clear error. It signs a
ContributionClaim about every update with its certificate's key.

``session: check_in`` clients do not hold the stream open: once no update awaits its answer
(the last one was acknowledged or rejected) and the edge has been quiet for ``linger_s`` (or at
once after the acknowledgement), the client says goodbye; it comes back after ``check_in_interval_s`` (±20 %), or
at once when an update is ready, and the edge hands it its task and takes the kept update
then. Training goes on while it is away."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import numpy as np
from ffalora.v1 import federation_pb2 as pb
from ffalora.v1 import federation_pb2_grpc as pb_grpc

from ffa_lora.crypto import PublicKey
from ffa_lora.crypto.signing import ContributionClaim
from ffa_lora.errors import FFALoraError, SignatureError
from ffa_lora.lora import LoRASpec
from services.client_agent.update import PreparedUpdate
from services.common import domain as d
from services.common import serde
from services.common.certs import TLSFiles, role_dns_name
from services.common.config import ClientConfig, LimitsConfig
from services.common.evidence import Signer, verify_announcement
from services.common.limits import check_message
from services.common.metrics import Metrics
from services.common.rejections import InvalidMessage, Rejection
from services.common.session import grpc_options
from services.common.tls import channel_credentials
from services.common.transfer import AdapterReceiver, outgoing

log = logging.getLogger(__name__)

#: seconds after a session's channel closed to run the garbage collector (see ClientAgent.run)
COLLECT_AFTER_SESSION_S = 0.3

AGENT_VERSION = "0.1.0"

#: check-in sessions: how long the edge must have been quiet before an idle client leaves
CHECK_IN_LINGER_S = 0.5


class Trainer(Protocol):
    """What the agent needs from its trainer: :class:`~services.client_agent.trainer.LocalTrainer`,
    or a synthetic one in the benchmarks and fault tests."""

    @property
    def client_id(self) -> str: ...
    @property
    def num_samples(self) -> int: ...
    @property
    def version(self) -> int: ...
    @property
    def state(self) -> dict[str, np.ndarray] | None: ...
    @property
    def device(self) -> str: ...
    def set_spec(self, spec: LoRASpec, labels: tuple[str, ...]) -> None: ...
    def load_adapter(self, version: int, blob: bytes) -> None: ...
    def run_task(self, task: d.RoundTask, public_key: PublicKey) -> PreparedUpdate: ...


class _EdgeRefused(Exception):
    """The edge sent something this client refuses (a model it did not agree to, an adapter
    over its size limit, an oversized field): it tries the next edge, with backoff."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(str(rejection))
        self.rejection = rejection


def check_model(cfg: ClientConfig, spec: LoRASpec) -> None:
    """Refuse a federation whose model is not the one this site configured (``client.model``):
    an edge could otherwise make the client load any path or hub id."""
    if spec.model != cfg.model:
        raise InvalidMessage(
            "model_mismatch",
            f"the edge names base model {spec.model[:200]!r}, but this site agreed to load {cfg.model!r} "
            "(client.model); set client.model if the federation really uses that model")


@dataclass
class AgentResult:
    rounds_trained: int = 0
    updates_acked: int = 0
    rejections: list[str] = field(default_factory=list)
    finished: bool = False
    reason: str = ""


def hello_message(trainer: Trainer, *, check_in_interval_s: float) -> pb.ClientSessionRequest:
    """The hello that opens a session. It says nothing computed from the site's records, not
    even how many there are: the hello comes before the client knows whether the federation
    trains under differential privacy, and the coordinator weighs and ranks sites by the sizes
    declared in its own config, never by what a client reports."""
    return pb.ClientSessionRequest(hello=pb.ClientHello(
        adapter_version=trainer.version, has_adapter=trainer.state is not None, device=trainer.device,
        agent_version=AGENT_VERSION, check_in_interval_s=check_in_interval_s))


def upload_messages(up: PreparedUpdate, *, max_chunk_bytes: int | None = None) -> list[pb.ClientSessionRequest]:
    """The upload as messages: begin, the ciphertext chunks (≤ 1 MiB, or ``max_chunk_bytes``), commit."""
    out = outgoing(up.vec) if max_chunk_bytes is None else outgoing(up.vec, max_chunk_bytes=max_chunk_bytes)
    msgs = [pb.ClientSessionRequest(update_begin=pb.UpdateBegin(header=pb.CiphertextHeader(
        round=up.round, header=out.header, num_ciphertexts=out.num_ciphertexts)))]
    msgs += [pb.ClientSessionRequest(update_chunk=pb.CiphertextChunk(round=up.round, offset=off, data=data))
             for off, data in out.chunks]
    msgs.append(pb.ClientSessionRequest(update_commit=pb.UpdateCommit(
        round=up.round, sha256=out.sha256, idempotency_key=up.idempotency_key, num_samples=up.num_samples,
        rank=up.rank, quality=serde.quality_to_proto(up.quality), base_version=up.base_version,
        train_seconds=up.train_seconds, crypto_seconds=up.crypto_seconds,
        contribution=serde.signed_to_proto(up.contribution) if up.contribution is not None else None)))
    return msgs


def sign_update(up: PreparedUpdate, task: d.RoundTask, signer: Signer, *, federation: str) -> PreparedUpdate:
    """Attach the client's signed ContributionClaim about ``up`` (what the edge and the key
    holders check): its ciphertexts' digest, round, phase, rank, assigned weight, base version."""
    claim = ContributionClaim.for_vector(
        up.vec, federation=federation, client_id=signer.identity.id, round=up.round,
        phase=task.training.phase, rank=task.assignment.rank, weight=task.assignment.weight,
        base_version=up.base_version)
    up.contribution = signer.sign(claim.canonical_bytes())
    return up


class ClientAgent:
    """Runs one site's participation until the federation finishes."""

    def __init__(self, cfg: ClientConfig, tls: TLSFiles, trainer: Trainer, metrics: Metrics,
                 *, on_event: Callable[[str, dict], None] | None = None) -> None:
        self.cfg, self.tls, self.trainer, self.metrics = cfg, tls, trainer, metrics
        self.on_event = on_event
        self.result = AgentResult()
        self.signer = Signer(tls.load())
        self.federation = ""
        self.key_refused = False
        self.public_key: PublicKey | None = None
        self.labels: tuple[str, ...] = ()
        self.kept: PreparedUpdate | None = None
        self._training: asyncio.Task[None] | None = None
        # Newest task and adapter that arrived while training (async mode: train again on them
        # right after the upload).
        self._pending: d.RoundTask | None = None
        self._pending_adapter: tuple[int, bytes] | None = None
        self._queue: asyncio.Queue[pb.ClientSessionRequest | None] = asyncio.Queue()
        self.check_in = cfg.session == "check_in"
        self.linger_s = CHECK_IN_LINGER_S
        self._answered_key: str | None = None  # idempotency key of the last acknowledged/rejected update
        self._wake = asyncio.Event()  # check-in: an update is ready, come back now
        self._left_idle = False
        self._delivered = False
        self._kept_queue: asyncio.Queue[pb.ClientSessionRequest | None] | None = None  # where ``kept`` was sent
        self.check_ins = 0
        self.busy_refusals = 0  # check-in sessions the edge refused at its session cap
        self.collect_after_session = True  # see run(); off where one process hosts many agents

    def _load_adapter(self, version: int, blob: bytes) -> None:
        self.trainer.load_adapter(version, blob)
        if self.kept is not None and self.kept.base_version < version:
            self.kept = None  # its round is over

    async def run(self) -> AgentResult:
        backoff, attempt = 0.5, 0
        opts = grpc_options(LimitsConfig())
        # Every edge's certificate must carry this name (the dialled host name is never used).
        server_name = self.cfg.edge_server_name or role_dns_name("edge", federation=self.tls.load().federation)
        opts.append(("grpc.ssl_target_name_override", server_name))
        creds = channel_credentials(self.tls)
        waited = 0.0
        while not self.result.finished:
            target = self.cfg.edges[attempt % len(self.cfg.edges)]
            self._left_idle = False
            try:
                async with grpc.aio.secure_channel(target, creds, options=opts) as channel:
                    await self._session(pb_grpc.EdgeServiceStub(channel))
                    backoff, waited = 0.5, 0.0
            except _EdgeRefused as refused:
                log.error("edge %s: %s; trying the next edge", target, refused.rejection.message)
                self.result.rejections.append(f"edge:{refused.rejection.reason}")
                self.metrics.reject(refused.rejection.reason)
            except grpc.aio.AioRpcError as exc:
                if self.check_in and exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "edge busy" in (exc.details() or ""):
                    self.busy_refusals += 1  # the edge is at its session cap: an ordinary check-in later
                    await self._away(busy=True)
                    continue
                log.warning("edge %s: %s (%s)", target, exc.code().name, exc.details())
                if exc.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                    self.result.reason = f"edge refused this client: {exc.details()}"
                    raise
            finally:
                if self.collect_after_session:
                    # A channel closed while its stream was still open keeps its TCP
                    # connection while a reference cycle inside grpc.aio holds the call
                    # (grpc/grpc#42125); only the garbage collector frees it, once the call's
                    # own callbacks have run. Collect shortly, or the edge keeps one idle
                    # connection per past session (~100 KB each) until this process collects.
                    asyncio.get_running_loop().call_later(COLLECT_AFTER_SESSION_S, gc.collect)
            if self.result.finished or self.key_refused:
                break
            if self._left_idle:  # a check-in client away on purpose: same edge, no backoff
                await self._away()
                continue
            attempt += 1
            delay = backoff * (0.5 + random.random())
            waited += delay
            if waited > self.cfg.max_reconnect_s * 10:
                self.result.reason = "gave up reconnecting"
                break
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, self.cfg.max_reconnect_s)
        return self.result

    async def _away(self, *, busy: bool = False) -> None:
        """Wait out a check-in interval, or less when an update becomes ready (at once, unless
        the edge just refused a session for being busy)."""
        if self._wake.is_set():
            if busy:
                await asyncio.sleep(self.cfg.check_in_interval_s * (0.1 + 0.4 * random.random()))
            return
        try:
            await asyncio.wait_for(self._wake.wait(), self.cfg.check_in_interval_s * (0.8 + 0.4 * random.random()))
        except TimeoutError:
            pass

    def _idle(self) -> bool:
        """No update awaits its answer from the edge (a check-in client may leave). Without a
        welcome yet (the federation has not started) it leaves too: the edge repeats the welcome
        at every check-in."""
        return self.kept is None or self._answered_key == self.kept.idempotency_key

    async def _session(self, stub: pb_grpc.EdgeServiceStub) -> None:
        queue: asyncio.Queue[pb.ClientSessionRequest | None] = asyncio.Queue()
        self._queue = queue  # uploads go to the session current when training ends, not when it began
        self._wake.clear()
        self._delivered = False
        queue.put_nowait(hello_message(
            self.trainer, check_in_interval_s=self.cfg.check_in_interval_s if self.check_in else 0.0))
        loop = asyncio.get_running_loop()
        last_rx = loop.time()

        async def leave_when_idle() -> None:
            while True:
                await asyncio.sleep(self.linger_s / 4)
                quiet = loop.time() - last_rx >= self.linger_s
                if self._idle() and queue.empty() and (quiet or self._delivered):
                    self._left_idle = True
                    self.check_ins += 1
                    queue.put_nowait(pb.ClientSessionRequest(goodbye=pb.ClientGoodbye(reason="check-in: idle")))
                    queue.put_nowait(None)
                    return

        async def requests() -> AsyncIterator[pb.ClientSessionRequest]:
            while True:
                m = await queue.get()
                if m is None:
                    return
                yield m

        call = stub.ClientSession(requests())
        receiver = AdapterReceiver(max_size=self.cfg.max_adapter_bytes)
        watchdog = asyncio.create_task(leave_when_idle()) if self.check_in else None
        try:
            async for resp in call:
                last_rx = loop.time()
                try:
                    check_message(resp)
                    if self._handle_response(resp, queue, receiver):
                        return
                except Rejection as rej:
                    call.cancel()
                    raise _EdgeRefused(rej) from None
        finally:
            if watchdog is not None:
                watchdog.cancel()
            queue.put_nowait(None)

    def _handle_response(self, resp: pb.ClientSessionResponse, queue: asyncio.Queue,
                         receiver: AdapterReceiver) -> bool:
        """Act on one message from the edge; True when the session ends. Raises Rejection for
        what this client refuses."""
        kind = resp.WhichOneof("kind")
        if kind == "welcome":
            w = resp.welcome
            info = serde.federation_from_proto(w.federation, w.model)
            check_model(self.cfg, info.spec)
            if not self._accept_key(w):
                queue.put_nowait(None)
                return True
            self.labels = info.labels
            self.trainer.set_spec(info.spec, info.labels)
        elif kind == "adapter_chunk":
            ch = resp.adapter_chunk
            blob = receiver.feed(version=ch.version, offset=ch.offset, data=ch.data,
                                 total_size=ch.total_size, sha256=ch.sha256)
            if blob is not None:
                if self._training is not None and not self._training.done():
                    self._pending_adapter = (ch.version, blob)  # never swap mid-training
                else:
                    self._load_adapter(ch.version, blob)
        elif kind == "task":
            task = serde.task_from_proto(resp.task)
            if task.spec is not None:
                check_model(self.cfg, task.spec)
            self._start_task(task, queue)
        elif kind == "ack":
            self._on_ack(resp.ack)
        elif kind == "shutdown":
            log.info("edge: %s", resp.shutdown.reason)
            if resp.shutdown.finished:
                self.result.finished, self.result.reason = True, resp.shutdown.reason
            queue.put_nowait(None)
            return True
        return False

    def _accept_key(self, w: pb.EdgeWelcome) -> bool:
        """Take the federation key from a verified announcement; False (and the agent stops)
        if it is missing, not signed by the configured coordinator, or not the pinned key."""
        try:
            ann = serde.signed_or_none(w.key_announcement)
            if ann is None:
                raise SignatureError("the edge sent no signed key announcement; an edge that does not "
                                     "forward the coordinator's signed key cannot be trusted with updates")
            announcement = verify_announcement(
                ann, ca_certificate=self.signer.ca_certificate,
                expected_signer_uri=self.signer.identities.coordinator(self.cfg.coordinator_id),
                pinned_fingerprint=self.cfg.key_fingerprint, federation=w.federation)
        except SignatureError as exc:
            self.key_refused = True
            self.result.reason = f"refused the federation key: {exc}"
            log.error("%s", self.result.reason)
            return False
        self.public_key, self.federation = announcement.public_key, announcement.federation
        return True

    def _sign(self, up: PreparedUpdate, task: d.RoundTask) -> None:
        sign_update(up, task, self.signer, federation=self.federation)

    def _start_task(self, task: d.RoundTask, queue: asyncio.Queue) -> None:
        if self.kept is not None and self.kept.round == task.round:
            if self._kept_queue is queue:
                return  # training ended in this session and the update is already on its way
            log.info("round %d: resending the kept encrypted update", task.round)
            for m in upload_messages(self.kept):
                queue.put_nowait(m)
            self._kept_queue = queue
            return
        if self._training is not None and not self._training.done():
            log.info("round %d: training already in progress; this task starts after it", task.round)
            self._pending = task  # picked up by _after_training when the current one ends
            return
        self._training = asyncio.create_task(self._train_and_upload(task, queue))

    async def _train_and_upload(self, task: d.RoundTask, queue: asyncio.Queue) -> None:
        assert self.public_key is not None
        if task.spec is not None:  # the rank may have been reduced: rebuild the model if so
            self.trainer.set_spec(task.spec, self.labels)
        self.metrics.round.labels(self.metrics.service).set(task.round)
        self.metrics.set_phase("training")
        self.metrics.client_rank.labels(self.metrics.service, self.trainer.client_id).set(task.assignment.rank)
        log.info("round %d: training rank %d, phase %s, %.2f epoch(s)", task.round, task.assignment.rank,
                 task.training.phase, task.training.local_epochs)
        try:
            up = await asyncio.get_running_loop().run_in_executor(None, self.trainer.run_task, task, self.public_key)
        except FFALoraError as exc:
            log.error("round %d: cannot train: %s", task.round, exc)
            self.result.rejections.append(f"local:{exc}")
            self._after_training(task.round, queue)
            return
        self._sign(up, task)
        self.kept = up
        self.result.rounds_trained += 1
        self.metrics.encrypt_seconds.labels(self.metrics.service).observe(up.crypto_seconds)
        msgs = upload_messages(up)
        nbytes = sum(len(m.update_chunk.data) for m in msgs if m.WhichOneof("kind") == "update_chunk")
        self.metrics.bytes_sent.labels(self.metrics.service).inc(nbytes)
        self.metrics.values_uploaded.labels(self.metrics.service).inc(up.vec.num_values)
        self.metrics.set_phase("aggregating")
        log.info("round %d: uploading %d values as %d bytes (train %.1fs, crypto %.2fs, loss %.4f)", task.round,
                 up.vec.num_values, nbytes, up.train_seconds, up.crypto_seconds, up.quality.train_loss)
        if self.on_event:
            self.on_event("uploaded", {"round": task.round, "bytes": nbytes})
        queue = self._queue  # a reconnect during training replaced the session it started on
        for m in msgs:
            queue.put_nowait(m)
        self._kept_queue = queue
        self._wake.set()  # a check-in client that is away comes back with it (the kept update is resent)
        self._after_training(task.round, queue)

    def _after_training(self, round_no: int, queue: asyncio.Queue) -> None:
        """Apply what arrived while training: the newer adapter, then the newer task."""
        if self._pending_adapter is not None:
            self._load_adapter(*self._pending_adapter)
            self._pending_adapter = None
        pending, self._pending = self._pending, None
        if pending is not None and pending.round > round_no:
            self._training = asyncio.create_task(self._train_and_upload(pending, queue))

    def _on_ack(self, ack: pb.UpdateAck) -> None:
        code = ack.status.code
        if ack.idempotency_key:
            self._answered_key = ack.idempotency_key
            if self.kept is not None and ack.idempotency_key == self.kept.idempotency_key:
                self._wake.clear()  # the update got through in this session: no early check-in needed
                self._delivered = True  # a check-in client leaves at once
        if code == 0 or ack.status.reason == "duplicate":
            self.result.updates_acked += 1
            self.metrics.updates_accepted.labels(self.metrics.service).inc()
            log.info("round %d: update acknowledged", ack.round)
        else:
            self.result.rejections.append(ack.status.reason)
            self.metrics.reject(ack.status.reason or "unknown")
            log.warning("round %d: update rejected: %s (%s)", ack.round, ack.status.message, ack.status.reason)

"""Edge aggregator domain logic: validate client uploads and add them homomorphically.

Every update comes with its client's signed contribution claim (round, phase, rank, assigned
weight, base version, key and the digest of the uploaded ciphertexts); the edge checks the
claim against the upload and the signature against the client's certificate before the update
enters the sum, keeps the claim, and forwards all of them with its own signed partial claim.
It never forwards a partial sum (or async buffer) of fewer than ``min_per_partial`` clients.

No transport here: the servicer calls these methods from its event loop and delivers what
they send through the injected :class:`EdgeOutbox`. The edge holds the public key only.

Memory stays O(update size): one running encrypted sum per round, plus the bytes of uploads
currently in flight (bounded by the number of concurrent sessions). An update enters the sum
only when its commit arrives complete and valid; a client that disappears mid-upload leaves no
trace.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ffa_lora.crypto import CiphertextVector, RunningSum
from ffa_lora.crypto.canonical import vector_digest
from ffa_lora.crypto.keys import PublicKey
from ffa_lora.crypto.packing import PackingLayout
from ffa_lora.crypto.signing import (
    ContributionClaim,
    PartialClaim,
    contributors_of,
    verify_statement,
)
from ffa_lora.crypto.weights import staleness_weight
from ffa_lora.errors import SignatureError
from services.common import domain as d
from services.common.config import LimitsConfig
from services.common.evidence import Signer, refusal, signed_contribution
from services.common.metrics import Metrics
from services.common.rejections import (
    Duplicate,
    InvalidMessage,
    LimitExceeded,
    Rejection,
    WrongState,
)
from services.common.transfer import IncomingVector
from services.edge_aggregator.validation import check_base_version, check_update_scalars

log = logging.getLogger(__name__)


class Ignored(Exception):
    """A message that belongs to an upload already rejected (answered once, at the rejection)."""


class EdgeOutbox(Protocol):
    """Where the edge's messages go (the servicer implements it with session queues)."""

    def welcome(self, client_id: str, public_key: PublicKey, info: d.FederationInfo,
                announcement: d.SignedBytes | None) -> None: ...
    def adapter(self, client_id: str, version: int, blob: bytes) -> None: ...
    def task(self, client_id: str, task: d.RoundTask) -> None: ...
    def shutdown(self, client_id: str, reason: str, finished: bool) -> None: ...
    def roster(self, entries: list[d.RosterEntry]) -> None: ...
    def partial_sum(self, round: int, vec: CiphertextVector | None, contributions: list[d.Contribution], key: str,
                    evidence: d.PartialEvidence | None) -> None: ...


@dataclass
class _Upload:
    round: int
    incoming: IncomingVector | None  # None: a resend of a counted update, swallowed until its commit
    assignment: d.Assignment


@dataclass
class _RoundAgg:
    plan: d.RoundPlan
    layout: PackingLayout
    total: RunningSum
    contributions: dict[str, d.Contribution] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # client -> idempotency key
    claims: dict[str, d.SignedBytes] = field(default_factory=dict)  # client -> its signed claim
    forwarded: bool = False


#: a check-in client stays on the roster this many check-in intervals (+ CHECK_IN_SLACK_S) after
#: it leaves; one that misses them is gone (its round then closes at quorum or deadline)
CHECK_IN_MISSES = 3
CHECK_IN_SLACK_S = 5.0

#: adapter versions remembered per client (those sent to it), for the async base_version check
SERVED_VERSIONS = 32


@dataclass
class _Client:
    entry: d.RosterEntry
    adapter_version: int = -1  # -1: holds no adapter
    check_in_s: float = 0.0  # 0: persistent session; > 0: comes back within about this many seconds
    connected: bool = True
    left_at: float = 0.0  # when a check-in client closed its session

    def away_too_long(self, now: float) -> bool:
        return not self.connected and now - self.left_at > CHECK_IN_MISSES * self.check_in_s + CHECK_IN_SLACK_S


class EdgeAggregator:
    """State and rules of one edge (one replica)."""

    def __init__(
        self,
        *,
        edge_id: str,
        region: str,
        limits: LimitsConfig,
        metrics: Metrics,
        outbox: EdgeOutbox,
        signer: Signer,
        min_per_partial: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.edge_id, self.region, self.limits = edge_id, region, limits
        self.metrics, self.outbox, self.clock = metrics, outbox, clock
        self.signer, self.min_per_partial = signer, min_per_partial
        self.public_key: PublicKey | None = None
        self.announcement: d.SignedBytes | None = None
        self.info: d.FederationInfo | None = None
        self.mode = "sync"
        self.finished = False
        self.clients: dict[str, _Client] = {}
        self.uploads: dict[str, _Upload] = {}
        self.adapter: tuple[int, bytes] | None = None
        self.agg: _RoundAgg | None = None
        # client -> round of an upload that was rejected mid-way: its remaining chunks and its
        # commit are dropped quietly (the client got one answer, at the rejection).
        self._rejected: dict[str, int] = {}
        # Idempotency keys of recent rounds, so a resend after a reconnect is recognised.
        self._recent_keys: dict[int, dict[str, str]] = {}
        # client -> adapter versions this edge sent it (newest last). Kept across sessions (a
        # check-in client's adapter stays valid), for at most a few times the roster's clients.
        self._served: OrderedDict[str, tuple[int, ...]] = OrderedDict()

    # -- coordinator side ------------------------------------------------------------------

    def on_coordinator_welcome(self, public_key: PublicKey, mode: str, info: d.FederationInfo,
                               announcement: d.SignedBytes | None = None) -> None:
        """The coordinator's key, mode and federation; ``announcement`` (its signed key) is
        forwarded verbatim to every client, which accepts no key without it."""
        self.public_key, self.mode, self.info = public_key, mode, info
        self.announcement = announcement
        if announcement is None:
            log.warning("the coordinator sent no signed key announcement: clients will refuse its key")
        for cid in self._connected():
            self.outbox.welcome(cid, public_key, info, announcement)
        self.outbox.roster(self.roster())

    def on_adapter(self, version: int, blob: bytes) -> None:
        if self.adapter is None or version >= self.adapter[0]:
            self.adapter = (version, blob)

    def on_plan(self, plan: d.RoundPlan) -> None:
        """A new round: start an empty running sum and hand tasks to assigned clients."""
        if self.public_key is None:
            raise WrongState("no_key", "plan before welcome")
        layout = PackingLayout.from_bytes(plan.secure_sum.layout)
        if self.agg is not None and not self.agg.forwarded and self.agg.plan.round != plan.round:
            log.warning("round %d superseded by round %d before forwarding", self.agg.plan.round, plan.round)
        self.agg = _RoundAgg(plan=plan, layout=layout, total=RunningSum(self.public_key, layout, plan.num_values))
        self._recent_keys[plan.round] = self.agg.keys
        for old in [r for r in self._recent_keys if r < plan.round - 3]:
            del self._recent_keys[old]
        self.uploads.clear()
        self.metrics.round.labels(self.metrics.service).set(plan.round)
        self.metrics.set_phase("training")
        self.metrics.buffer_size.labels(self.metrics.service).set(0)
        connected = set(self._connected())
        for a in plan.assignments:  # a check-in client that is away gets its task when it is back
            if a.client_id in connected:
                self._send_task(a.client_id, a)
        self._maybe_forward()

    def on_finished(self, reason: str) -> None:
        self.finished = True
        self.metrics.set_phase("finished")
        for cid in self._connected():  # one that is away hears it when it checks in
            self._send_adapter(cid)
            self.outbox.shutdown(cid, reason, True)

    # -- client side -----------------------------------------------------------------------

    def client_connected(self, client_id: str, *, num_samples: int, device: str, adapter_version: int | None,
                         check_in_s: float = 0.0) -> None:
        """A client said hello; ``adapter_version`` is None when it holds no adapter;
        ``check_in_s`` > 0 marks a check-in client (see ``ClientHello.check_in_interval_s``)."""
        adapter_version = self._served_version(client_id, adapter_version)
        if self.finished:
            if client_id in self.clients:  # a client of this federation back after the end
                self.clients[client_id].adapter_version = -1 if adapter_version is None else adapter_version
                self._send_adapter(client_id)
            self.outbox.shutdown(client_id, "federation finished", True)
            self.clients.pop(client_id, None)  # told: no longer awaited
            return
        before = self.clients.get(client_id)
        if before is None and len(self.clients) >= self.limits.max_roster_clients:
            self._drop_missing()
            if len(self.clients) >= self.limits.max_roster_clients:
                raise self._reject(LimitExceeded, "roster_full",
                                   f"edge busy: its roster is full ({self.limits.max_roster_clients} clients, "
                                   "limits.max_roster_clients); try again later or another edge")
        entry = d.RosterEntry(client_id, num_samples, device)
        self.clients[client_id] = _Client(entry, -1 if adapter_version is None else adapter_version,
                                          check_in_s=check_in_s)
        self._count_clients()
        if self.public_key is not None and self.info is not None:
            self.outbox.welcome(client_id, self.public_key, self.info, self.announcement)
        if before is None or before.entry != entry:  # a check-in client back from away: no change
            self.outbox.roster(self.roster())
        if self.agg is not None and not self.agg.forwarded:
            a = self.agg.plan.assignment_for(client_id)
            if a is not None and client_id not in self.agg.contributions:
                self._send_task(client_id, a)

    def client_disconnected(self, client_id: str) -> None:
        client = self.clients.get(client_id)
        if client is not None and client.check_in_s > 0 and not self.finished:
            client.connected, client.left_at = False, self.clock()  # stays on the roster while away
        else:
            self.clients.pop(client_id, None)
        if self.uploads.pop(client_id, None) is not None:
            log.info("client %s left mid-upload; its partial update was discarded", client_id)
        self._count_clients()
        if client is None or client.check_in_s <= 0:
            self.outbox.roster(self.roster())

    def roster(self) -> list[d.RosterEntry]:
        """Connected clients and check-in clients that are away but due back."""
        return [c.entry for c in self.clients.values()]

    def away_clients(self) -> int:
        """Check-in clients away and still due back (after the federation finished: not told yet)."""
        now = self.clock()
        return sum(not c.connected and not c.away_too_long(now) for c in self.clients.values())

    def _connected(self) -> list[str]:
        return [cid for cid, c in self.clients.items() if c.connected]

    def _count_clients(self) -> None:
        service = self.metrics.service
        connected = sum(c.connected for c in self.clients.values())
        self.metrics.connected_clients.labels(service).set(connected)
        self.metrics.roster_clients.labels(service).set(len(self.clients))

    def _drop_missing(self) -> None:
        """Take check-in clients that missed their check-ins off the roster."""
        now = self.clock()
        gone = [cid for cid, c in self.clients.items() if c.away_too_long(now)]
        if gone:
            for cid in gone:
                del self.clients[cid]
            log.info("%d check-in client(s) missed their check-ins and left the roster", len(gone))
            self._count_clients()
            self.outbox.roster(self.roster())

    def _send_adapter(self, client_id: str) -> None:
        """The newest global adapter, to a client that does not hold it yet (before its task,
        and when the federation has finished: every site ends with the final model)."""
        client = self.clients[client_id]
        if self.adapter is not None and client.adapter_version != self.adapter[0]:
            self.outbox.adapter(client_id, *self.adapter)
            client.adapter_version = self.adapter[0]
            self._remember_served(client_id, self.adapter[0])

    def _send_task(self, client_id: str, a: d.Assignment) -> None:
        assert self.agg is not None
        plan = self.agg.plan
        self._send_adapter(client_id)
        self.outbox.task(client_id, plan.task_for(a))

    def _served_version(self, client_id: str, adapter_version: int | None) -> int | None:
        """The adapter version a client says it holds, if this edge sent it that version; None
        otherwise (the current adapter then goes with its next task, or at the end)."""
        if adapter_version is not None and adapter_version not in self._served.get(client_id, ()):
            return None
        return adapter_version

    def _remember_served(self, client_id: str, version: int) -> None:
        versions = (*self._served.pop(client_id, ()), version)[-SERVED_VERSIONS:]
        self._served[client_id] = versions
        while len(self._served) > 4 * self.limits.max_roster_clients:
            self._served.popitem(last=False)

    # -- uploads ---------------------------------------------------------------------------

    def _reject(self, kind: type[Rejection], reason: str, message: str) -> Rejection:
        self.metrics.reject(reason)
        return kind(reason, message)

    def _current(self, client_id: str, round: int) -> tuple[_RoundAgg, d.Assignment]:
        agg = self.agg
        if agg is not None and agg.plan.mode == "async":
            # FedBuff: an update trained on an older version joins the current buffer, weighted
            # by its staleness, as long as it is at most max_staleness rounds behind.
            lag = agg.plan.round - round
            if not 0 <= lag <= agg.plan.max_staleness:
                raise self._reject(WrongState, "wrong_round",
                                   f"update for round {round} is outside the staleness window of round "
                                   f"{agg.plan.round} (max {agg.plan.max_staleness})")
        elif agg is None or round != agg.plan.round:
            current = agg.plan.round if agg else 0
            raise self._reject(WrongState, "wrong_round",
                               f"update for round {round} but the current round is {current}")
        if agg.plan.mode == "sync" and (agg.forwarded or self.clock() > agg.plan.deadline_unix):
            raise self._reject(WrongState, "deadline",
                               f"round {round} is closed (deadline passed or sum forwarded)")
        a = agg.plan.assignment_for(client_id)
        if a is None:
            raise self._reject(WrongState, "not_assigned",
                               f"client is not part of round {round}")
        return agg, a

    def begin_upload(self, client_id: str, *, round: int, header: bytes, num_ciphertexts: int) -> None:
        self._rejected.pop(client_id, None)
        agg = self.agg
        if agg is not None and round == agg.plan.round and client_id in agg.keys:
            # Already counted: the commit's idempotency key decides between a harmless resend
            # and a second update; the chunks in between are not stored.
            a = agg.plan.assignment_for(client_id)
            assert a is not None
            self.uploads[client_id] = _Upload(round, None, a)
            return
        try:
            agg, a = self._current(client_id, round)
        except Rejection:
            self._rejected[client_id] = round
            self.uploads.pop(client_id, None)  # a new begin supersedes any earlier, unfinished upload
            raise
        assert self.public_key is not None
        try:
            incoming = IncomingVector.begin(
                header=header, num_ciphertexts=num_ciphertexts, public_key=self.public_key,
                expected_layout=agg.layout, max_values=agg.plan.num_values, expected_values=a.num_values,
                max_chunks=self.limits.max_chunks_per_update,
            )
        except Rejection as rej:
            self.metrics.reject(rej.reason)
            self._rejected[client_id] = round
            self.uploads.pop(client_id, None)
            raise
        self.uploads[client_id] = _Upload(round, incoming, a)

    def upload_chunk(self, client_id: str, *, round: int, offset: int, data: bytes) -> None:
        up = self.uploads.get(client_id)
        if up is None or up.round != round:
            if self._rejected.get(client_id) == round:
                raise Ignored()
            raise self._reject(WrongState, "no_upload",
                               "chunk without a matching UpdateBegin for this round")
        if up.incoming is None:
            return
        try:
            up.incoming.add_chunk(offset, data)
        except Rejection as rej:
            self.uploads.pop(client_id, None)
            self._rejected[client_id] = round
            self.metrics.reject(rej.reason)
            raise
        self.metrics.bytes_received.labels(self.metrics.service).inc(len(data))

    def commit_upload(
        self,
        client_id: str,
        *,
        round: int,
        sha256: str,
        idempotency_key: str,
        num_samples: int,
        rank: int,
        quality: d.Quality,
        base_version: int,
        train_seconds: float,
        crypto_seconds: float,
        contribution: d.SignedBytes | None = None,
    ) -> None:
        """Count a complete, valid update exactly once; raise Rejection otherwise (or Ignored
        for the commit of an upload that was already rejected). ``contribution`` is the
        client's signed claim about this upload: required, and checked before the update
        enters the sum."""
        up = self.uploads.pop(client_id, None)
        if up is None and self._rejected.pop(client_id, None) == round:
            raise Ignored()
        counted = self._recent_keys.get(round, {}).get(client_id)
        if counted is not None:
            if counted == idempotency_key:
                raise self._reject(Duplicate, "duplicate",
                                   "this update was already counted (idempotent resend)")
            raise self._reject(Duplicate, "second_update",
                               f"an update for round {round} was already accepted from this client")
        agg, a = self._current(client_id, round)
        if client_id in agg.keys:
            raise self._reject(Duplicate, "second_update",
                               f"an update for round {agg.plan.round} was already accepted from this client")
        if up is None or up.round != round or up.incoming is None:
            raise self._reject(WrongState, "no_upload", "commit without an upload")
        if rank != a.rank:
            raise self._reject(InvalidMessage, "rank_mismatch",
                               f"update trained at rank {rank}, assigned rank {a.rank}")
        try:
            check_update_scalars(num_samples=num_samples, quality=quality, train_seconds=train_seconds,
                                 crypto_seconds=crypto_seconds)
            check_base_version(base_version, mode=agg.plan.mode, current_version=agg.plan.adapter_version,
                               served=self._served.get(client_id, ()))
            vec = up.incoming.finish(sha256)
        except Rejection as rej:
            self.metrics.reject(rej.reason)
            raise
        claim = self._check_claim(client_id, round, agg, a, vec, base_version, contribution)
        weight = self._effective_weight(a, base_version)
        agg.total.add_vector(vec, weight=weight)
        agg.claims[client_id] = claim
        nbytes = len(vec.values) * self.public_key.ciphertext_bytes  # type: ignore[union-attr]
        agg.contributions[client_id] = d.Contribution(
            client_id=client_id, rank=rank, weight=weight, num_samples=num_samples, quality=quality,
            base_version=base_version, train_seconds=train_seconds, crypto_seconds=crypto_seconds,
            bytes_uploaded=nbytes, values_uploaded=vec.num_values,
        )
        agg.keys[client_id] = idempotency_key
        self.metrics.updates_accepted.labels(self.metrics.service).inc()
        self.metrics.values_uploaded.labels(self.metrics.service).inc(vec.num_values)
        self.metrics.buffer_size.labels(self.metrics.service).set(len(agg.contributions))
        self._maybe_forward()

    def _check_claim(self, client_id: str, round: int, agg: _RoundAgg, a: d.Assignment,
                     vec: CiphertextVector, base_version: int,
                     contribution: d.SignedBytes | None) -> d.SignedBytes:
        """The client's signed claim, if it describes exactly this upload and its task and the
        client's own certificate signed it; a Rejection (reason ``unsigned``, ``signature``,
        ``claim_malformed`` or ``claim_mismatch``) otherwise."""
        if contribution is None:
            raise self._reject(InvalidMessage, "unsigned",
                               "an update needs the client's signed contribution claim (UpdateCommit."
                               "contribution); upgrade the client agent")
        try:
            sc = signed_contribution(contribution)
        except Rejection as rej:
            self.metrics.reject(rej.reason)
            raise
        assert self.info is not None
        expected = ContributionClaim.for_vector(
            vec, federation=self.info.name, client_id=client_id, round=round,
            phase=agg.plan.training.phase, rank=a.rank, weight=a.weight, base_version=base_version)
        if sc.claim != expected:
            differ = [f for f in ("federation", "client_id", "round", "phase", "rank", "weight",
                                  "key_fingerprint", "vector_digest", "base_version")
                      if getattr(sc.claim, f) != getattr(expected, f)]
            raise self._reject(InvalidMessage, "claim_mismatch",
                               f"the signed contribution claim differs from the upload and its task in: "
                               f"{', '.join(differ)}")
        try:
            verify_statement(sc.claim.canonical_bytes(), sc.signature, certificate=sc.certificate,
                             ca_certificate=self.signer.ca_certificate,
                             expected_uri=self.signer.identities.client(client_id),
                             what=f"the contribution of client '{client_id}'")
        except SignatureError as exc:
            refused = refusal(exc)
            self.metrics.reject(refused.reason)
            raise refused from None
        return contribution

    def _effective_weight(self, a: d.Assignment, base_version: int) -> int:
        """Integer weight the edge multiplies the ciphertexts by. Async: the assignment's weight
        times the quantized staleness factor s(tau) = (1+tau)^-a, tau = versions behind."""
        agg = self.agg
        assert agg is not None
        if agg.plan.mode != "async":
            return a.weight
        tau = max(0, agg.plan.adapter_version - base_version)
        return a.weight * staleness_weight(tau, agg.plan.staleness_exponent)

    # -- forwarding ------------------------------------------------------------------------

    def _maybe_forward(self, *, force: bool = False) -> None:
        agg = self.agg
        if agg is None or agg.forwarded:
            return
        if agg.plan.mode == "async":
            if agg.contributions and (force or len(agg.contributions) >= agg.plan.buffer_size):
                self._forward()
            return
        expected = {a.client_id for a in agg.plan.assignments}
        if force or expected <= set(agg.contributions):
            self._forward()

    def floor(self) -> int:
        """Fewest clients a forwarded partial sum may hold (the plan's or this edge's floor)."""
        return max(self.min_per_partial, self.agg.plan.min_per_partial if self.agg else 1)

    def _forward(self) -> None:
        agg = self.agg
        assert agg is not None
        contributions = sorted(agg.contributions.values(), key=lambda c: c.client_id)
        if 0 < len(contributions) < self.floor():
            if agg.plan.mode == "async":
                return  # the buffer waits until it holds enough clients
            self.metrics.reject("below_min_per_partial")
            log.warning("round %d: withholding a partial sum of %d client(s), fewer than min_per_partial=%d",
                        agg.plan.round, len(contributions), self.floor())
            contributions = []
        key = f"{self.edge_id}:{agg.plan.round}:" + ",".join(c.client_id for c in contributions)
        vec = agg.total.result() if contributions else None
        evidence = self._evidence(agg, vec, contributions) if vec is not None else None
        if agg.plan.mode == "async":
            # The buffer goes up; a fresh one starts for the same round (memory stays flat).
            agg.total = RunningSum(self.public_key, agg.layout, agg.plan.num_values)  # type: ignore[arg-type]
            agg.contributions, agg.claims = {}, {}
            self.metrics.buffer_size.labels(self.metrics.service).set(0)
        else:
            agg.forwarded = True
        self.metrics.set_phase("aggregating")
        log.info("round %d: forwarding partial sum of %d client(s)", agg.plan.round, len(contributions))
        self.outbox.partial_sum(agg.plan.round, vec, contributions, key, evidence)

    def _evidence(self, agg: _RoundAgg, vec: CiphertextVector,
                  contributions: list[d.Contribution]) -> d.PartialEvidence:
        """This edge's signed claim about ``vec`` and the clients' claims it lists."""
        assert self.info is not None
        claims = [agg.claims[c.client_id] for c in contributions]
        parsed = [ContributionClaim.from_bytes(sb.statement) for sb in claims]
        pc = PartialClaim(
            federation=self.info.name, edge_id=self.edge_id, round=agg.plan.round,
            phase=agg.plan.training.phase, key_fingerprint=vec.fingerprint,
            vector_digest=vector_digest(vec), weight_total=vec.weight_total,
            contributors=contributors_of(parsed, [c.weight for c in contributions]),
            adapter_version=agg.plan.adapter_version)
        return d.PartialEvidence(self.signer.sign(pc.canonical_bytes()), tuple(claims))

    def tick(self) -> None:
        """Called periodically: drop check-in clients that stopped checking in; forward at the
        deadline whatever has arrived."""
        self._drop_missing()
        agg = self.agg
        if agg is None or agg.forwarded or self.clock() <= agg.plan.deadline_unix:
            return
        if agg.plan.mode == "async":
            if agg.contributions:  # a partly filled buffer is not held back forever
                self._forward()
            return
        log.warning("round %d: deadline passed with %d/%d updates", agg.plan.round,
                    len(agg.contributions), len(agg.plan.assignments))
        self._forward()

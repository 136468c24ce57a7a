"""Cloud coordinator domain logic: plan rounds, check the edges' signed partial sums, have the
global sum of at least ``min_clients`` distinct signed clients decrypted by threshold (its own
share and t - 1 key holders'; it holds no whole private key), average, add DP noise, update and
checkpoint the global adapter, schedule ranks, detect convergence.

No transport here: the servicer feeds edge events in and delivers what the coordinator sends
through the injected :class:`CoordinatorOutbox`. Heavy steps (decryption, evaluation) run in a
worker thread so the event loop keeps serving the edges.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ffa_lora.crypto import CiphertextVector
from ffa_lora.crypto.keys import PublicKey
from ffa_lora.crypto.packing import PackingLayout
from ffa_lora.crypto.quantize import QuantizationError, Quantizer
from ffa_lora.crypto.weights import STALENESS_SCALE
from ffa_lora.errors import (
    BudgetExhaustedError,
    CiphertextError,
    CryptoError,
    PrivacyError,
    ProtocolError,
    ThresholdError,
)
from ffa_lora.lora.metrics import per_class_from
from ffa_lora.privacy.ledger import LedgerEntry
from ffa_lora.privacy.round_noise import RoundNoisePlan
from services.cloud_coordinator.rank import RankPolicy, RankReduction, ScheduledRank
from services.cloud_coordinator.reports import DiscardLog, median_finite
from services.cloud_coordinator.store import CoordinatorStore, RoundRecord
from services.common import domain as d
from services.common.config import FederationConfig
from services.common.metrics import Metrics
from services.common.rejections import Duplicate, InvalidMessage, Rejection, WrongState
from services.common.weights import WeightPolicy

log = logging.getLogger(__name__)


class AdapterOps(Protocol):
    """What the coordinator needs from the LoRA core (see adapter_ops.LoraAdapterOps)."""

    def initial_state(self) -> dict[str, np.ndarray]: ...
    def phase(self, round_index: int) -> str: ...
    def num_values(self, phase: str, rank: int) -> int: ...
    def upload_cost(self, phase: str, rank: int) -> int: ...
    def weight_totals(self, phase: str, weights_by_rank: dict[int, float]) -> np.ndarray: ...
    def apply_mean(self, state: dict[str, np.ndarray], mean: np.ndarray, phase: str, server_lr: float) -> dict[str, np.ndarray]: ...
    def to_bytes(self, state: dict[str, np.ndarray]) -> bytes: ...
    def from_bytes(self, blob: bytes) -> dict[str, np.ndarray]: ...
    def export(self, state: dict[str, np.ndarray], out_dir: Any) -> None: ...
    def evaluate(self, state: dict[str, np.ndarray]) -> dict[str, float] | None: ...
    spec: Any  # the current LoRASpec: r_max and alpha change when the rank is reduced
    def set_rank(self, r_max: int, alpha: float) -> None: ...


class PrivacyEngine(Protocol):
    """Client-level DP on the aggregate (see services.cloud_coordinator.privacy)."""

    mode: str

    def check(self, *, dimension: int) -> None: ...
    def plan_round(
        self,
        round_index: int,
        assignments: list[d.Assignment],
        *,
        dimension: int,
        adapter_version: int,
    ) -> RoundNoisePlan: ...
    def params(self, plan: RoundNoisePlan) -> d.PrivacyParams: ...
    def share_variance(
        self, plan: RoundNoisePlan, contribution: d.Contribution, assigned_weight: int
    ) -> float: ...
    def check_budget(self, round_index: int) -> None: ...
    def charge(
        self,
        plan: RoundNoisePlan,
        *,
        share_variance: np.ndarray,
        share_count: np.ndarray,
        factors: list[float],
    ) -> LedgerEntry: ...
    def commit(self, entry: LedgerEntry) -> None: ...
    def noise_sum(self, total: np.ndarray, plan: RoundNoisePlan) -> np.ndarray: ...
    def epsilon_spent(self) -> float: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_ledger(self, entries: list[LedgerEntry]) -> None: ...


class Decryption(Protocol):
    """Threshold decryption (see services.cloud_coordinator.decryption.ThresholdDecryption)."""

    own: Any  # the coordinator's KeyHolder: its share, its checks

    def next_request_id(self) -> int: ...
    def decrypt_code_sums(self, request: d.DecryptRequest, layout: PackingLayout) -> np.ndarray: ...


class CoordinatorOutbox(Protocol):
    def welcome(self, edge_id: str, public_key: PublicKey, mode: str) -> None: ...
    def adapter(self, edge_id: str, version: int, blob: bytes) -> None: ...
    def plan(self, edge_id: str, plan: d.RoundPlan) -> None: ...
    def shutdown(self, edge_id: str, reason: str, finished: bool) -> None: ...


_Partial = tuple[str, CiphertextVector | None, list[d.Contribution], str, d.PartialEvidence | None]


@dataclass
class _Round:
    number: int
    index: int  # 0-based index of the committed round this attempt would produce
    phase: str
    plans: dict[str, d.RoundPlan]
    layout: PackingLayout
    num_values: int
    started: float
    noise: RoundNoisePlan | None = None  # client-level DP: the round's noise plan
    # (edge, encrypted partial sum, its contributors, idempotency key, the edge's signed
    # evidence); in async mode an edge may send several buffers per round.
    partials: list[_Partial] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False  # decryption started: later partial sums go to the next round (async)

    def edges_reported(self) -> set[str]:
        return {p[0] for p in self.partials}

    def contributors(self) -> list[d.Contribution]:
        return [c for p in self.partials for c in p[2]]


@dataclass
class RoundSummary:
    round: int
    version: int
    clients: int
    loss: float
    accuracy: float | None
    macro_f1: float | None
    # Macro one-vs-rest ROC-AUC on the held-out evaluation set (None without one, or when it
    # holds fewer than two classes); the per-class AUCs are in extra["roc_auc_per_class"].
    roc_auc: float | None
    bytes_uploaded: int
    values_uploaded: int
    crypto_seconds: float
    train_seconds: float
    decrypt_seconds: float
    round_seconds: float
    epsilon: float
    ranks: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _RoundUpdate:
    """What applying a round's mean update produced, before it is committed."""

    state: dict[str, np.ndarray]
    blob: bytes
    reduction: RankReduction | None
    loss: float
    federated_val_accuracy: float
    evaluation: dict[str, float] | None
    eval_seconds: float
    dpsgd_epsilon: dict[str, float]


class Coordinator:
    """State and rules of the cloud coordinator."""

    def __init__(
        self,
        *,
        fed: FederationConfig,
        store: CoordinatorStore,
        public_key: PublicKey,
        decryption: Decryption,
        adapter_ops: AdapterOps,
        outbox: CoordinatorOutbox,
        metrics: Metrics,
        privacy: PrivacyEngine | None = None,
        rank_policy: RankPolicy | None = None,
        export_dir: Any = None,
        on_round: Callable[[RoundSummary], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fed, self.store, self.public_key = fed, store, public_key
        self.decryption = decryption
        self.ops, self.outbox, self.metrics = adapter_ops, outbox, metrics
        self.privacy = privacy
        # Under DP (client-level or DP-SGD) clients send no losses, accuracies or gradient
        # statistics (services.client_agent.trainer): convergence uses the coordinator's own
        # held-out evaluation when it has one, otherwise the run ends at max_rounds or the budget.
        self.dp = fed.privacy.mode != "off" or fed.privacy.dpsgd.enabled
        self.rank_policy: RankPolicy = rank_policy or ScheduledRank(fed, adapter_ops)
        self.weights = WeightPolicy(fed.weights, max_weight=fed.secure_sum.max_weight)
        self.discards = DiscardLog(metrics)
        self.export_dir = export_dir
        self.on_round, self.clock = on_round, clock
        self.edges: dict[str, dict[str, d.RosterEntry]] = {}
        self.current: _Round | None = None
        self.finished = False
        self.finish_reason = ""
        self.history: list[RoundSummary] = []
        # Async: buffers that arrived while a round was being decrypted; they join the next one.
        self._carry: list[_Partial] = []
        self._roster_changed = asyncio.Event()
        self._restore()
        if self.privacy is not None:  # unplannable noise settings fail at start-up, not at round 1
            phase = self.ops.phase(self.committed)
            self.privacy.check(dimension=self.ops.num_values(phase, self.ops.spec.r_max))

    # -- restore / persistence -------------------------------------------------------------

    def _restore(self) -> None:
        last = self.store.last_committed()
        if last is None:
            self.state = self.ops.initial_state()
            self.version = 0
            self.committed = 0
            self._blob = self.ops.to_bytes(self.state)
            self.loss_history: list[float] = []
        else:
            self._blob = self.store.load_adapter(last.adapter_version)
            spec_state = self.store.load_state("adapter_spec")
            if spec_state:  # the rank was reduced: the adapter has another r_max and alpha
                self.ops.set_rank(int(spec_state["r_max"]), float(spec_state["alpha"]))
            self.state = self.ops.from_bytes(self._blob)
            self.version = last.adapter_version
            self.committed = len(self.store.rounds())
            self.loss_history = [r.metrics.get("loss", float("nan")) for r in self.store.rounds()]
            rank_state = self.store.load_state("rank_policy")
            if rank_state:
                self.rank_policy.load_state_dict(rank_state)
            log.info("resumed at round %d (adapter v%d, %d committed rounds)", last.round, self.version, self.committed)
        if self.privacy is not None:
            self.privacy.load_ledger(self.store.ledger())
            self.metrics.epsilon_spent.labels(self.metrics.service).set(self.privacy.epsilon_spent())
        self.metrics.round.labels(self.metrics.service).set(self.version)

    # -- edges -----------------------------------------------------------------------------

    def edge_connected(self, edge_id: str) -> None:
        self.edges.setdefault(edge_id, {})
        self.outbox.welcome(edge_id, self.public_key, self.fed.rounds.mode)
        self.outbox.adapter(edge_id, self.version, self._blob)
        if self.finished:
            self.outbox.shutdown(edge_id, self.finish_reason, True)
        elif self.current is not None and edge_id in self.current.plans and (
                self.fed.rounds.mode == "async" or edge_id not in self.current.edges_reported()):
            self.outbox.plan(edge_id, self.current.plans[edge_id])

    def edge_roster(self, edge_id: str, entries: list[d.RosterEntry]) -> None:
        self.edges[edge_id] = {e.client_id: e for e in entries}
        self._roster_changed.set()

    def edge_disconnected(self, edge_id: str) -> None:
        self.edges.pop(edge_id, None)
        self._roster_changed.set()

    def roster(self) -> dict[str, tuple[str, d.RosterEntry]]:
        """client id -> (edge, entry); a client seen at two edges counts once (first edge)."""
        out: dict[str, tuple[str, d.RosterEntry]] = {}
        for edge_id in sorted(self.edges):
            for cid, e in self.edges[edge_id].items():
                out.setdefault(cid, (edge_id, e))
        return out

    # -- partial sums ----------------------------------------------------------------------

    def receive_partial(
        self, edge_id: str, *, round: int, vec: CiphertextVector | None, contributions: list[d.Contribution], key: str,
        evidence: d.PartialEvidence | None = None,
    ) -> None:
        """Accept one edge's encrypted partial sum for the current round, or raise Rejection.

        Sync: one partial sum per edge and round, labelled with the current round. Async
        (FedBuff): an edge may send several buffers; a buffer labelled with a recent earlier
        round joins the current one (the edge already applied the staleness weights).
        A non-empty partial must come with ``evidence``: the edge's signed claim and every
        listed client's, checked here as a key holder would (reason of a refusal: the check
        that failed) and again, for the whole round, before anything is decrypted."""
        cur = self.current
        rounds = self.fed.rounds
        asynchronous = rounds.mode == "async"
        lag = (cur.number - round) if cur is not None else -1
        if cur is None or not (lag == 0 or (asynchronous and 0 <= lag <= rounds.max_staleness)):
            self.metrics.reject("wrong_round")
            raise WrongState("wrong_round",
                             f"partial sum for round {round}; current round is {cur.number if cur else 'none'}")
        if any(p[3] == key for p in cur.partials):
            raise Duplicate("duplicate", "partial sum already received")
        if not asynchronous and edge_id in cur.edges_reported():
            self.metrics.reject("second_partial")
            raise Duplicate("second_partial", "edge already sent a partial sum this round")
        assigned = {a.client_id: a for p in cur.plans.values() for a in p.assignments}
        if not asynchronous:
            plan = cur.plans.get(edge_id)
            if plan is None:
                self.metrics.reject("not_assigned")
                raise WrongState("not_assigned", "this edge has no clients in the round")
            assigned = {a.client_id: a for a in plan.assignments}
        max_factor = STALENESS_SCALE if asynchronous else 1
        seen: set[str] = set()
        for c in contributions:
            a = assigned.get(c.client_id)
            weight_ok = c.weight == a.weight if (a is not None and not asynchronous) else (
                a is not None and 1 <= c.weight <= a.weight * max_factor)
            if a is None or c.client_id in seen or c.rank != a.rank or not weight_ok:
                self.metrics.reject("contributors")
                raise InvalidMessage("contributors", "contributor list does not match the round plan")
            seen.add(c.client_id)
        if seen & {c.client_id for c in cur.contributors()}:
            self.metrics.reject("double_count")
            raise Duplicate("double_count", "a contributor is already counted in this round")
        if (vec is None) != (not contributions):
            raise InvalidMessage("size_mismatch", "sum and contributor list disagree")
        if vec is not None and (vec.layout != cur.layout or vec.num_values != cur.num_values):
            self.metrics.reject("size_mismatch")
            raise InvalidMessage("size_mismatch", "partial sum has the wrong layout or length")
        if vec is not None:
            self._check_evidence(cur, edge_id, vec, contributions, evidence)
        if cur.closed:
            if not asynchronous:
                self.metrics.reject("deadline")
                raise WrongState("deadline", f"round {cur.number} is closed")
            if seen & {c.client_id for p in self._carry for c in p[2]}:
                raise Duplicate("double_count", "a contributor is already buffered")
            self._carry.append((edge_id, vec, list(contributions), key, evidence))
            log.info("round %d closed: buffer from edge %s carried to the next round", cur.number, edge_id)
            return
        cur.partials.append((edge_id, vec, list(contributions), key, evidence))
        log.info("round %d: partial sum from edge %s (%d clients)", cur.number, edge_id, len(contributions))
        if asynchronous:
            if len({c.client_id for c in cur.contributors()}) >= rounds.min_clients:
                cur.done.set()
        elif cur.edges_reported() >= set(cur.plans):
            cur.done.set()

    def _check_evidence(self, cur: _Round, edge_id: str, vec: CiphertextVector,
                        contributions: list[d.Contribution], evidence: d.PartialEvidence | None) -> None:
        """The edge's signed claim and its clients' claims, checked on arrival."""
        if evidence is None:
            self.metrics.reject("unsigned")
            raise InvalidMessage("unsigned", "a partial sum must come with the edge's signed claim "
                                              "and its clients' signed contributions")
        plan = next(iter(cur.plans.values()))
        try:
            listed = self.decryption.own.check_partial(
                vec, evidence, round=cur.number, phase=cur.phase, mode=plan.mode,
                adapter_version=plan.adapter_version, max_staleness=plan.max_staleness,
                staleness_exponent=plan.staleness_exponent, min_per_partial=plan.min_per_partial,
                assignments=tuple(a for p in cur.plans.values() for a in p.assignments))
        except Rejection as rej:
            self.metrics.reject(rej.reason)
            raise
        if sorted(listed) != sorted((c.client_id, c.weight) for c in contributions):
            self.metrics.reject("contributors")
            raise InvalidMessage("contributors", f"edge {edge_id}'s contributor list differs from the "
                                                 "clients and weights it signed")

    # -- rounds ----------------------------------------------------------------------------

    def _with_policy_sizes(self, entries: dict[str, d.RosterEntry]) -> dict[str, d.RosterEntry]:
        """Roster entries with the weight policy's sizes in place of the sample counts the
        clients reported (which decide nothing)."""
        return {cid: dataclasses.replace(e, num_samples=self.weights.size_of(cid)) for cid, e in entries.items()}

    def _weights(self, client_ids: list[str]) -> dict[str, int]:
        """The clients' integer weights: the federation's policy (``federation.weights``), never
        a client's own report. Under client-level DP every client weighs 1: a weight relative to
        the largest client's size would let one client's presence rescale every other update,
        beyond the sensitivity the noise covers."""
        if self.privacy is not None:
            return dict.fromkeys(client_ids, 1)
        return self.weights.weights(client_ids)

    def plan_round(self) -> _Round:
        roster = self.roster()
        index = self.committed
        phase = self.ops.phase(index)
        ranks = self.rank_policy.ranks(index, self._with_policy_sizes({cid: e for cid, (_, e) in roster.items()}))
        weights = self._weights(list(roster))
        r_max = self.ops.spec.r_max  # below fed.model.rank after an SVD rank reduction
        full = self.ops.num_values(phase, r_max)
        ss = self.fed.secure_sum
        layout = PackingLayout.derive(key_bits=self.public_key.bits, bits=ss.bits,
                                      max_clients=ss.max_clients, max_weight=ss.max_weight)
        number = self.store.next_round()
        deadline = self.clock() + self.fed.rounds.deadline_s
        tr = self.fed.training
        training = d.TrainingParams(strategy=tr.strategy, phase=phase, local_epochs=self.fed.local_epochs_at(index),
                                    learning_rate=tr.learning_rate_at(index, self.fed.rounds.max_rounds),
                                    batch_size=tr.batch_size,
                                    seed=self.fed.seed * 1_000_003 + number,
                                    keep_optimizer_state=tr.keep_optimizer_state,
                                    personalization=self._personalization(index))
        dpsgd = self.fed.privacy.dpsgd
        sigmas = dpsgd.noise_multipliers if dpsgd.enabled else {}
        by_edge: dict[str, list[d.Assignment]] = {}
        for cid, (edge_id, _) in sorted(roster.items()):
            rank = ranks.get(cid, r_max)
            by_edge.setdefault(edge_id, []).append(
                d.Assignment(cid, rank, weights[cid], self.ops.num_values(phase, rank),
                             dpsgd_noise_multiplier=sigmas.get(cid, 0.0)))
            self.metrics.client_rank.labels(self.metrics.service, cid).set(rank)
        everyone = [a for assigns in by_edge.values() for a in assigns]
        noise = None
        privacy = d.PrivacyParams()
        if self.privacy is not None:
            noise = self.privacy.plan_round(
                index, everyone, dimension=full, adapter_version=self.version
            )
            privacy = self.privacy.params(noise)
        if dpsgd.enabled:  # sample-level DP at the clients, independent of the aggregate's mode
            privacy = dataclasses.replace(privacy, dpsgd_noise_multiplier=dpsgd.noise_multiplier,
                                          dpsgd_max_grad_norm=dpsgd.max_grad_norm, dpsgd_delta=self.fed.privacy.delta,
                                          dpsgd_optimizer=dpsgd.optimizer,
                                          dpsgd_learning_rate=dpsgd.learning_rate or 0.0,
                                          dpsgd_head_learning_rate=dpsgd.head_learning_rate or 0.0,
                                          dpsgd_expected_batch_size=dpsgd.expected_batch_size or 0,
                                          dpsgd_physical_batch_size=dpsgd.physical_batch_size or 0,
                                          dpsgd_momentum=dpsgd.momentum,
                                          dpsgd_head_max_grad_norm=dpsgd.head_max_grad_norm or 0.0,
                                          dpsgd_head_epochs=dpsgd.head_epochs,
                                          dpsgd_adapter_only=dpsgd.adapter_only)
        secure = d.SecureSumParams(layout=layout.to_bytes(),
                                   clip=noise.quant_range if noise else ss.clip, bits=ss.bits,
                                   key_fingerprint=self.public_key.fingerprint)
        self.store.set_meta("last_round_started", str(number))
        plans = {
            edge_id: d.RoundPlan(
                round=number, adapter_version=self.version, assignments=tuple(assigns), secure_sum=secure,
                privacy=privacy, training=training, deadline_unix=deadline, min_clients=self.fed.rounds.min_clients,
                min_per_partial=self.fed.rounds.min_per_partial,
                mode=self.fed.rounds.mode, num_values=full, buffer_size=self.fed.rounds.buffer_size,
                max_staleness=self.fed.rounds.max_staleness, staleness_exponent=self.fed.rounds.staleness_exponent,
                spec=self.ops.spec,
            )
            for edge_id, assigns in by_edge.items()
        }
        carried, self._carry = self._carry, []
        if carried:
            assigned = {a.client_id for p in plans.values() for a in p.assignments}
            kept = [p for p in carried if p[1] is not None and p[1].layout == layout and p[1].num_values == full
                    and all(c.client_id in assigned for c in p[2])]
            if len(kept) < len(carried):
                log.warning("dropped %d carried buffer(s) that no longer fit the round plan", len(carried) - len(kept))
            carried = kept
        return _Round(number=number, index=index, phase=phase, plans=plans, layout=layout, partials=carried,
                      num_values=full, started=self.clock(), noise=noise)

    def _personalization(self, index: int) -> d.HeadPersonalization | None:
        """How clients fit their personal heads in round ``index``, or None in rounds without."""
        tr = self.fed.training
        if not tr.personalizes(index, self.fed.rounds.max_rounds):
            return None
        return d.HeadPersonalization(epochs=tr.head_epochs, learning_rate=tr.head_learning_rate, prox=tr.head_prox)

    async def wait_for_clients(self) -> bool:
        """Wait until at least min_clients are connected (or the wait times out)."""
        deadline = self.clock() + self.fed.rounds.wait_for_clients_s
        while len(self.roster()) < self.fed.rounds.min_clients:
            remaining = deadline - self.clock()
            if remaining <= 0:
                return False
            self._roster_changed.clear()
            try:
                await asyncio.wait_for(self._roster_changed.wait(), timeout=min(remaining, 1.0))
            except TimeoutError:
                pass
        return True

    async def run(self) -> None:
        """The federation: rounds until convergence, max rounds or budget exhaustion."""
        self.metrics.set_phase("waiting")
        failures = 0
        while not self.finished:
            if self.committed >= self.fed.rounds.max_rounds:
                self.finish(f"reached max_rounds={self.fed.rounds.max_rounds}")
                break
            if self.privacy is not None:
                try:
                    self.privacy.check_budget(self.committed)
                except BudgetExhaustedError as exc:
                    self.finish(f"privacy budget exhausted, stopping with the current adapter: {exc}")
                    break
            if not await self.wait_for_clients():
                self.finish(f"fewer than min_clients={self.fed.rounds.min_clients} clients connected in time")
                break
            cur = self.plan_round()
            self.current = cur
            self.metrics.round.labels(self.metrics.service).set(cur.number)
            self.metrics.set_phase("training")
            log.info("round %d: %d client(s) over %d edge(s), phase %s", cur.number,
                     sum(len(p.assignments) for p in cur.plans.values()), len(cur.plans), cur.phase)
            for edge_id, plan in cur.plans.items():
                self.outbox.plan(edge_id, plan)
            if self.fed.rounds.mode == "async" and len({c.client_id for c in cur.contributors()}) >= self.fed.rounds.min_clients:
                cur.done.set()  # carried buffers already cover the quorum
            timeout = max(0.0, min(p.deadline_unix for p in cur.plans.values()) - self.clock()) + 5.0
            try:
                await asyncio.wait_for(cur.done.wait(), timeout=timeout)
            except TimeoutError:
                log.warning("round %d: deadline passed with partial sums from %s", cur.number, sorted(cur.edges_reported()))
            cur.closed = True
            try:
                summary = await asyncio.get_running_loop().run_in_executor(None, self.finish_round, cur)
            except BudgetExhaustedError as exc:
                self.finish(f"privacy budget exhausted, stopping with the current adapter: {exc}")
                break
            except (ProtocolError, PrivacyError, ThresholdError) as exc:
                # ProtocolError: below the quorum or evidence refused, nothing was decrypted.
                # PrivacyError: an under-noised sum is never decrypted; its buffers are dropped,
                # not carried. ThresholdError: too few key holders gave a valid share.
                failures += 1
                log.warning("round %d aborted: %s", cur.number, exc)
                if self.fed.rounds.mode == "async" and isinstance(exc, (ProtocolError, ThresholdError)):
                    # buffers wait for the quorum, or for the key holders (claims stay valid
                    # for max_staleness rounds; the retry has a fresh round number)
                    self._carry = cur.partials + self._carry
                if failures >= 3:
                    self.finish(f"three rounds in a row aborted: {exc}")
                continue
            except CryptoError as exc:
                # The decrypted sum is impossible (a slot out of range: some client sent a
                # malformed plaintext, or a partial was tampered with), or the sum could not be
                # decrypted. Nothing was released (a privacy charge already written stays): the
                # round is dropped and the next one gets a fresh number.
                self.current = None
                reason = "range_check" if isinstance(exc, (CiphertextError, QuantizationError)) else "decryption"
                self.discards.discard(cur.number, reason, sorted(cur.edges_reported()), exc)
                continue
            failures = 0
            self.current = None
            self.history.append(summary)
            if self.on_round is not None:
                self.on_round(summary)
            if self._converged():
                self.finish(f"converged: the clients' median loss changed less than {self.fed.rounds.tolerance:g} "
                            f"for {self.fed.rounds.patience} rounds")

    def finish(self, reason: str) -> None:
        self.finished, self.finish_reason = True, reason
        self.metrics.set_phase("finished")
        log.info("federation finished: %s", reason)
        for edge_id in list(self.edges):
            self.outbox.shutdown(edge_id, reason, True)

    def _converged(self) -> bool:
        p, tol = self.fed.rounds.patience, self.fed.rounds.tolerance
        h = self.loss_history
        if len(h) < p + 1:
            return False
        recent = h[-(p + 1):]
        return all(abs(b - a) <= tol * max(abs(a), 1e-12) for a, b in itertools.pairwise(recent))

    def finish_round(self, cur: _Round) -> RoundSummary:
        """Close a round (in a worker thread): quorum check → privacy charge → combine and
        decrypt → noise → apply and evaluate → commit → publish. Raises ProtocolError below the
        quorum, PrivacyError for an under-noised sum (both before anything is charged or
        decrypted) and CryptoError for a sum that does not decrypt; nothing is committed then,
        and a charge once written stays."""
        self.metrics.set_phase("aggregating")
        contributions = self._check_quorum(cur)
        epsilon = 0.0
        if self.privacy is not None:  # the charge is durable before anything is decrypted
            epsilon = self._charge(cur, self.privacy, contributions)
        t0 = time.perf_counter()
        code_sums = self._decrypt(cur)
        decrypt_s = time.perf_counter() - t0
        self.metrics.decrypt_seconds.labels(self.metrics.service).observe(decrypt_s)
        mean, totals = self._mean_update(cur, contributions, code_sums)
        if self.privacy is not None:
            mean = self._privatize(cur, self.privacy, mean, totals)
        update = self._apply_and_evaluate(cur, contributions, mean)
        summary = self._summarize(cur, contributions, update, decrypt_s=decrypt_s, epsilon=epsilon)
        self._commit(cur, summary, update)
        self._publish()
        return summary

    # -- the steps of finish_round -----------------------------------------------------------

    def _check_quorum(self, cur: _Round) -> list[d.Contribution]:
        """The round's contributions; ProtocolError when fewer than ``min_clients`` distinct
        clients are in them (the sum is then never decrypted)."""
        contributions = cur.contributors()
        distinct = {c.client_id for c in contributions}
        if len(distinct) < self.fed.rounds.min_clients:
            self.metrics.reject("below_min_clients")
            raise ProtocolError(
                f"only {len(distinct)} distinct client(s) contributed, min_clients is "
                f"{self.fed.rounds.min_clients}: refusing to decrypt")
        return contributions

    def decrypt_request(self, cur: _Round) -> d.DecryptRequest:
        """What every key holder (the coordinator's own share included) is asked to decrypt:
        the round's partial sums with their signed evidence, and the round plan."""
        plan = next(iter(cur.plans.values()))
        partials = tuple((vec, ev) for _, vec, _, _, ev in cur.partials if vec is not None and ev is not None)
        return d.DecryptRequest(
            request_id=self.decryption.next_request_id(), round=cur.number, phase=cur.phase, mode=plan.mode,
            min_clients=self.fed.rounds.min_clients, min_per_partial=plan.min_per_partial,
            adapter_version=plan.adapter_version, max_staleness=plan.max_staleness,
            staleness_exponent=plan.staleness_exponent,
            assignments=tuple(a for p in cur.plans.values() for a in p.assignments),
            layout=cur.layout.to_bytes(), num_values=cur.num_values, partials=partials)

    def _decrypt(self, cur: _Round) -> np.ndarray:
        """The integer code sums of the global sum, decrypted by threshold: the coordinator's
        own share (after its own checks of all the evidence) and t - 1 key holders'. Raises
        ProtocolError when the evidence is refused, ThresholdError when too few shares come."""
        self.metrics.set_phase("decrypting")
        try:
            return self.decryption.decrypt_code_sums(self.decrypt_request(cur), cur.layout)
        except Rejection as rej:
            raise ProtocolError(f"the round's evidence was refused ({rej.reason}): {rej.message}") from None

    def _mean_update(self, cur: _Round, contributions: list[d.Contribution],
                     code_sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The weighted mean update and the per-position weight totals it was divided by."""
        weights_by_rank: dict[int, float] = {}
        for c in contributions:
            weights_by_rank[c.rank] = weights_by_rank.get(c.rank, 0.0) + c.weight
        totals = self.ops.weight_totals(cur.phase, weights_by_rank)
        clip = next(iter(cur.plans.values())).secure_sum.clip
        mean = Quantizer(clip=clip, bits=self.fed.secure_sum.bits).dequantize_mean(code_sums, totals)
        return mean, totals

    def _charge(
        self, cur: _Round, privacy: PrivacyEngine, contributions: list[d.Contribution]
    ) -> float:
        """Write the round's privacy charge durably, BEFORE anything is decrypted; returns ε spent.

        The charge is for the noise the decrypted sum will carry: in distributed mode what the
        contributors' shares carry (PrivacyError, and no charge, when that is below the plan),
        in central mode what the coordinator adds. One row per decryption: a round that
        aborts after this point stays charged and its retry is charged again."""
        assert cur.noise is not None
        assigned = {a.client_id: a for p in cur.plans.values() for a in p.assignments}
        variance: dict[int, float] = {}
        count: dict[int, float] = {}
        factors = []
        for c in contributions:
            weight = assigned[c.client_id].weight
            variance[c.rank] = variance.get(c.rank, 0.0) + privacy.share_variance(
                cur.noise, c, weight
            )
            count[c.rank] = count.get(c.rank, 0.0) + 1.0
            factors.append(c.weight / max(1, weight))
        entry = privacy.charge(
            cur.noise,
            share_variance=self.ops.weight_totals(cur.phase, variance),
            share_count=self.ops.weight_totals(cur.phase, count),
            factors=factors,
        )
        self.store.record_privacy_spend(entry)
        privacy.commit(entry)
        epsilon = privacy.epsilon_spent()
        self.metrics.epsilon_spent.labels(self.metrics.service).set(epsilon)
        log.info(
            "round %d: privacy charge written before decryption (noise multiplier %.4g, "
            "epsilon %.4g)",
            cur.number,
            entry.event.noise_multiplier,
            epsilon,
        )
        return epsilon

    def _reference_weights(self, cur: _Round) -> np.ndarray:
        """The public, data-independent denominator of the noised sum, per position.

        Sync: the planned participants' weight. Async: what ``min_clients`` fresh clients
        carry (the edge multiplies a fresh update by ``STALENESS_SCALE``), so that an update
        is applied at its own scale whatever staleness factors the edges applied."""
        assigned = [a for p in cur.plans.values() for a in p.assignments]
        planned: dict[int, float] = {}
        for a in assigned:
            planned[a.rank] = planned.get(a.rank, 0.0) + a.weight
        if self.fed.rounds.mode == "async":
            share = (
                STALENESS_SCALE * min(self.fed.rounds.min_clients, len(assigned)) / len(assigned)
            )
            planned = {r: w * share for r, w in planned.items()}
        return self.ops.weight_totals(cur.phase, planned)

    def _privatize(
        self, cur: _Round, privacy: PrivacyEngine, mean: np.ndarray, totals: np.ndarray
    ) -> np.ndarray:
        """Client-level DP on the aggregate; returns the noised mean (the charge is already
        written). Noise goes on the weighted sum (sensitivity: the largest weight an edge can
        apply times the clip bound plus the rounding slack), which is then divided by the
        public reference weight of :meth:`_reference_weights`."""
        assert cur.noise is not None
        noisy = privacy.noise_sum(mean.astype(np.float64) * totals, cur.noise)
        reference = self._reference_weights(cur)
        return np.divide(noisy, reference, out=np.zeros_like(noisy), where=reference > 0)

    def _apply_and_evaluate(self, cur: _Round, contributions: list[d.Contribution],
                            mean: np.ndarray) -> _RoundUpdate:
        """The new global adapter (reduced when the rank policy says so) and its scores."""
        new_state = self.ops.apply_mean(self.state, mean, cur.phase, self.fed.training.server_learning_rate)
        if self.dp:  # clients send no losses under DP: the coordinator's own evaluation, or none
            loss = val_acc = float("nan")
        else:
            # The medians of what the clients report: no single client (of three or more) moves
            # them past the others, so none can end the run (convergence) or steer the ranks.
            loss = median_finite(c.quality.train_loss for c in contributions)
            val_acc = median_finite(c.quality.val_accuracy for c in contributions)
        dpsgd_eps = {c.client_id: c.quality.dpsgd_epsilon for c in contributions if c.quality.dpsgd_epsilon > 0}
        for cid, eps in dpsgd_eps.items():
            self.metrics.client_dpsgd_epsilon.labels(self.metrics.service, cid).set(eps)
        self.rank_policy.observe(cur.index, [dataclasses.replace(c, num_samples=self.weights.size_of(c.client_id))
                                             for c in contributions], loss)
        reduction = self.rank_policy.maybe_reduce(cur.index + 1, new_state)
        if reduction is not None:  # publish the reduced adapter as this round's version
            new_state = reduction.state
            self.ops.set_rank(reduction.r_max, reduction.alpha)
        t_eval = time.perf_counter()
        evaluation = self.ops.evaluate(new_state)
        eval_s = time.perf_counter() - t_eval
        if self.dp and evaluation is not None and "loss" in evaluation:
            loss = float(evaluation["loss"])  # convergence is tested on the held-out set
        return _RoundUpdate(state=new_state, blob=self.ops.to_bytes(new_state), reduction=reduction,
                            loss=loss, federated_val_accuracy=val_acc, evaluation=evaluation,
                            eval_seconds=eval_s, dpsgd_epsilon=dpsgd_eps)

    def _summarize(self, cur: _Round, contributions: list[d.Contribution], update: _RoundUpdate, *,
                   decrypt_s: float, epsilon: float) -> RoundSummary:
        """The round's figures for the store, summary.json and the progress table."""
        evaluation, dpsgd_eps = update.evaluation, update.dpsgd_epsilon
        last = self.store.last_committed()
        extra: dict[str, Any] = {
            "phase": cur.phase,
            **({} if self.dp else {"federated_val_accuracy": update.federated_val_accuracy}),
            "eval_seconds": update.eval_seconds,
            "weights": {c.client_id: c.weight for c in contributions},
            "base_versions": {c.client_id: c.base_version for c in contributions},
            "max_client_train_seconds": max(c.train_seconds for c in contributions),
            "max_client_crypto_seconds": max(c.crypto_seconds for c in contributions),
            **(
                {"dpsgd_epsilon": dpsgd_eps, "dpsgd_epsilon_max": max(dpsgd_eps.values())}
                if dpsgd_eps
                else {}
            ),
            **({"eval_loss": evaluation.get("loss")} if evaluation else {}),
            **({"discarded_rounds": self.discards.since_last_commit()} if self.discards.since_last_commit() else {}),
            **_auc_details(evaluation),
            **({"sites": sites} if (sites := self._site_evaluations(contributions)) else {}),
        }
        values_uploaded = sum(c.values_uploaded for c in contributions)
        extra.update({  # upload and adapter size
            "values_uploaded_total": values_uploaded + int(last.metrics.get("values_uploaded_total", 0) if last else 0),
            "r_max": self.ops.spec.r_max, "adapter_values": int(sum(v.size for v in update.state.values())),
            "adapter_bytes": len(update.blob),
            **({"rank_reduction": update.reduction.report} if update.reduction else {})})
        return RoundSummary(
            round=cur.number, version=cur.number, clients=len({c.client_id for c in contributions}),
            loss=update.loss,
            accuracy=evaluation["accuracy"] if evaluation
            else (None if self.dp else update.federated_val_accuracy),
            macro_f1=evaluation.get("macro_f1") if evaluation else None,
            roc_auc=_finite(evaluation.get("roc_auc")) if evaluation else None,
            bytes_uploaded=sum(c.bytes_uploaded for c in contributions), values_uploaded=values_uploaded,
            crypto_seconds=sum(c.crypto_seconds for c in contributions) + decrypt_s,
            train_seconds=sum(c.train_seconds for c in contributions), decrypt_seconds=decrypt_s,
            round_seconds=self.clock() - cur.started, epsilon=epsilon,
            ranks={c.client_id: c.rank for c in contributions}, extra=extra,
        )

    def _commit(self, cur: _Round, summary: RoundSummary, update: _RoundUpdate) -> None:
        """Store the round, the adapter and the policies' state in one commit, then adopt them."""
        metrics_doc = {k: v for k, v in summary.__dict__.items() if k not in ("extra",)} | summary.extra
        state_blobs: dict[str, Any] = {"rank_policy": self.rank_policy.state_dict(),
                                       "adapter_spec": {"r_max": self.ops.spec.r_max, "alpha": self.ops.spec.alpha}}
        if self.privacy is not None:
            state_blobs["privacy"] = self.privacy.state_dict()
        contributors = sorted(summary.ranks)
        self.store.commit_round(
            RoundRecord(cur.number, cur.number, contributors, metrics_doc, self.clock()), update.blob, state_blobs)
        self.state, self._blob, self.version = update.state, update.blob, cur.number
        self.committed += 1
        self.discards.committed()
        self.loss_history.append(update.loss)
        if self.export_dir is not None:
            self.ops.export(update.state, self.export_dir)
        self.metrics.global_loss.labels(self.metrics.service).set(update.loss)
        if summary.accuracy is not None:
            self.metrics.global_accuracy.labels(self.metrics.service).set(summary.accuracy)
        self._export_auc(summary)
        self.metrics.round_duration.labels(self.metrics.service).observe(summary.round_seconds)
        self.metrics.set_phase("committed")

    def _site_evaluations(self, contributions: list[d.Contribution]) -> dict[str, dict[str, float]]:
        """Per client: the validation scores of the global and of its personalized head that it
        reported this round (personalized heads; only well-formed reports, scores in [0, 1])."""
        out: dict[str, dict[str, float]] = {}
        for c in contributions:
            e = c.quality.site_evaluation
            if e is None:
                continue
            scores = dataclasses.asdict(e)
            if all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in scores.values()):
                out[c.client_id] = scores
            else:
                log.warning("round: client %s reported validation scores outside [0, 1]; ignored", c.client_id)
        return out

    def _export_auc(self, summary: RoundSummary) -> None:
        """The round's ROC-AUCs as Prometheus gauges: the global adapter's macro and per-class
        AUC on the evaluation set, and each client's reported global vs personal head AUC."""
        m = self.metrics
        if summary.roc_auc is not None:
            m.global_roc_auc.labels(m.service).set(summary.roc_auc)
        for name, auc in summary.extra.get("roc_auc_per_class", {}).items():
            if name in self.fed.labels:  # class names come from the federation's config only
                m.global_class_roc_auc.labels(m.service, name).set(auc)
        for cid, scores in summary.extra.get("sites", {}).items():
            m.client_val_roc_auc.labels(m.service, cid, "global").set(scores["global_roc_auc"])
            m.client_val_roc_auc.labels(m.service, cid, "personal").set(scores["personal_roc_auc"])

    def _publish(self) -> None:
        """Send the committed adapter to every connected edge."""
        for edge_id in list(self.edges):
            self.outbox.adapter(edge_id, self.version, self._blob)


def _finite(x: Any) -> float | None:
    """``x`` as a float, or None when it is missing or not finite (the round's record is JSON)."""
    return float(x) if x is not None and math.isfinite(x) else None


def _auc_details(evaluation: dict[str, float] | None) -> dict[str, Any]:
    """The per-class AUCs and how many classes the macro AUC covers (held-out evaluation)."""
    if not evaluation:
        return {}
    return {"roc_auc_classes": int(evaluation.get("roc_auc_classes", 0)),
            "roc_auc_per_class": {k: v for k, v in per_class_from(evaluation).items() if math.isfinite(v)}}

"""Hostile-input harnesses for the property tests and ``ffa-lora bench reliability``.

Three targets, each driven with hypothesis-generated malformed, oversized, out-of-order and
random messages:

- :class:`EdgeHarness` -- the real :class:`EdgeAggregator` handlers (begin/chunk/commit, with
  disconnects and a fake clock), no network;
- :class:`CoordinatorHarness` -- the real :class:`Coordinator` and its ``receive_partial``
  and ``finish_round``, no network;
- :class:`EdgeServerThread` -- the real edge servicer on a grpc.aio server with mutual TLS in a
  thread of its own, fed raw random bytes through a generic call to
  ``/ffalora.v1.EdgeService/ClientSession``.

Invariants: nothing but an in-band :class:`Rejection` (or a gRPC status) comes out, with the
code the protocol documents for its reason; a rejected message leaves the running sum and the
contributor set untouched (checked by decryption with the test's private key); afterwards a
good client is still served and counted exactly once.

Keys are 512-bit (test-only) so every case takes milliseconds. Clients and edges sign their
claims with certificates of a throwaway federation CA (:func:`fuzz_signer`); the coordinator's
decryption is the real threshold one, with key holders in this process
(:mod:`ffa_lora_tools.harness.threshold`). The edge checks use a whole test key
(:func:`fuzz_keys`) to read the running sums: edges never hold one, the harness does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Self

import grpc
import numpy as np
from ffalora.v1 import federation_pb2 as pb
from ffalora.v1 import federation_pb2_grpc as pb_grpc
from hypothesis import strategies as st

from ffa_lora.crypto import (
    CiphertextVector,
    Encryptor,
    PackingLayout,
    PrivateKey,
    PublicKey,
    RunningSum,
    ciphertexts_from_bytes,
    generate_keypair,
)
from ffa_lora.crypto.canonical import vector_digest
from ffa_lora.crypto.signing import ContributionClaim, PartialClaim
from ffa_lora.crypto.threshold import Ceremony, deal
from ffa_lora.errors import FFALoraError, ProtocolError
from ffa_lora.lora import LoRASpec
from ffa_lora_tools.harness.threshold import KEY_HOLDERS, LocalThreshold, local_threshold
from services.cloud_coordinator.handlers import Coordinator
from services.cloud_coordinator.store import MemoryStore
from services.common import domain as d
from services.common.certs import TLSFiles, init_ca, issue_certificate
from services.common.config import EdgeConfig, LimitsConfig, TLSConfig, parse_federation
from services.common.errors import status_of
from services.common.evidence import Signer
from services.common.metrics import create_metrics
from services.common.rejections import Rejection
from services.common.session import start_server, tls_files
from services.common.transfer import outgoing
from services.edge_aggregator.handlers import EdgeAggregator, Ignored
from services.edge_aggregator.servicer import EdgeOutboxImpl, EdgeServicer

#: Fuzz cases run, by target (read by the reliability bench).
FUZZ_CASES: Counter[str] = Counter()

S = grpc.StatusCode
#: The status code the protocol documents for each rejection reason (protos/ffalora/v1).
REASON_CODES: dict[str, grpc.StatusCode] = {
    "wrong_round": S.FAILED_PRECONDITION, "deadline": S.FAILED_PRECONDITION, "no_upload": S.FAILED_PRECONDITION,
    "not_assigned": S.FAILED_PRECONDITION, "key_fingerprint": S.FAILED_PRECONDITION, "no_key": S.FAILED_PRECONDITION,
    "protocol": S.FAILED_PRECONDITION, "no_hello": S.FAILED_PRECONDITION,
    "duplicate": S.ALREADY_EXISTS, "second_update": S.ALREADY_EXISTS, "second_partial": S.ALREADY_EXISTS,
    "double_count": S.ALREADY_EXISTS,
    "checksum": S.DATA_LOSS,
    "too_many_chunks": S.RESOURCE_EXHAUSTED,
    "chunk_too_large": S.INVALID_ARGUMENT, "chunk_size": S.INVALID_ARGUMENT, "out_of_order": S.INVALID_ARGUMENT,
    "size_mismatch": S.INVALID_ARGUMENT, "rank_mismatch": S.INVALID_ARGUMENT, "layout_mismatch": S.INVALID_ARGUMENT,
    "ciphertext_invalid": S.INVALID_ARGUMENT, "weight": S.INVALID_ARGUMENT, "incomplete": S.INVALID_ARGUMENT,
    "header": S.INVALID_ARGUMENT, "contributors": S.INVALID_ARGUMENT,
    # signed claims and the evidence checks
    "unsigned": S.INVALID_ARGUMENT, "claim_mismatch": S.INVALID_ARGUMENT, "claim_malformed": S.INVALID_ARGUMENT,
    "certificate": S.INVALID_ARGUMENT, "signature": S.UNAUTHENTICATED, "weights": S.FAILED_PRECONDITION,
    "tampered": S.FAILED_PRECONDITION, "below_min_per_partial": S.FAILED_PRECONDITION,
    "below_min_clients": S.FAILED_PRECONDITION, "not_the_sum": S.FAILED_PRECONDITION,
    "counted_twice": S.FAILED_PRECONDITION, "second_request": S.ALREADY_EXISTS,
}

NUM_VALUES = 40
ROUND = 5
BITS = 16


@lru_cache(maxsize=1)
def fuzz_keys() -> tuple[PublicKey, PrivateKey]:
    """One 512-bit TEST-ONLY key pair per process."""
    return generate_keypair(bits=512, test_only=True)


@lru_cache(maxsize=1)
def _fuzz_certs() -> Path:
    certs = Path(tempfile.mkdtemp(prefix="ffa-fuzz-pki-"))
    init_ca(certs, federation="ffa-lora")
    return certs


@lru_cache(maxsize=64)
def fuzz_signer(role: str, ident: str, certs: Path | None = None) -> Signer:
    """The signer of ``role``/``ident`` under ``certs`` (default: a throwaway CA of this process)."""
    certs = certs or _fuzz_certs()
    files = TLSFiles.for_identity(certs, role=role, id=ident)
    if not files.cert.exists():
        issue_certificate(certs, certs, role=role, id=ident)
    return Signer(files.load())


def sign_upload(u: Upload, client: str, *, round: int, weight: int, base_version: int, rank: int = 4,
                phase: str = "B", federation: str = "fuzz", certs: Path | None = None) -> d.SignedBytes:
    """The client's signed contribution claim about upload ``u`` (as a client agent signs it)."""
    claim = ContributionClaim.for_vector(u.vec, federation=federation, client_id=client, round=round, phase=phase,
                                         rank=rank, weight=weight, base_version=base_version)
    return fuzz_signer("client", client, certs).sign(claim.canonical_bytes())


@lru_cache(maxsize=1)
def _fuzz_ceremony() -> Ceremony:
    return deal(holders=["coordinator/coordinator", *KEY_HOLDERS], threshold=2, bits=512, test_only=True,
                workers=0, isolate=False)  # TEST-ONLY key size


def layout_for(pub: PublicKey) -> PackingLayout:
    return PackingLayout.derive(key_bits=pub.bits, bits=BITS, max_clients=8, max_weight=4)


def check_rejection(rej: Rejection) -> None:
    """A rejection must carry a known reason and the status code documented for it."""
    want, code = REASON_CODES.get(rej.reason), status_of(rej)
    assert want is not None, f"undocumented rejection reason {rej.reason!r} ({code.name}): {rej.message}"
    assert code == want, f"reason {rej.reason!r} answered with {code.name}, documented {want.name}"
    assert rej.message, "a rejection needs a message saying what is wrong"


def plaintexts(priv: PrivateKey, layout: PackingLayout, values: list[Any], num_values: int) -> list[int]:
    assert len(values) == layout.num_ciphertexts(num_values)
    return [int(priv.raw_decrypt(int(c))) for c in values]


@dataclass
class Upload:
    """One client's valid encrypted update, split as a client would stream it."""

    header: bytes
    chunks: list[tuple[int, bytes]]
    sha256: str
    key: str
    num_ciphertexts: int
    vec: CiphertextVector

    @property
    def data(self) -> bytes:
        return b"".join(c for _, c in self.chunks)


def make_upload(pub: PublicKey, layout: PackingLayout, *, seed: int, key: str, num_values: int = NUM_VALUES) -> Upload:
    codes = np.random.default_rng(seed).integers(0, 1 << BITS, size=num_values)
    vec = Encryptor(pub, layout, workers=0).encrypt_codes(codes)
    out = outgoing(vec, max_chunk_bytes=pub.ciphertext_bytes)  # one ciphertext per chunk
    return Upload(out.header, out.chunks, out.sha256, key, out.num_ciphertexts, vec)


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingOutbox:
    """EdgeOutbox that keeps what the edge sends."""

    def __init__(self) -> None:
        self.partials: list[tuple[int, CiphertextVector | None, list[d.Contribution], str]] = []
        self.tasks: list[tuple[str, int]] = []
        self.adapters: list[tuple[str, int, int]] = []  # (client, version, bytes)

    def welcome(self, client_id: str, public_key: PublicKey, info: d.FederationInfo,
                announcement: d.SignedBytes | None) -> None:
        pass

    def adapter(self, client_id: str, version: int, blob: bytes) -> None:
        self.adapters.append((client_id, version, len(blob)))

    def task(self, client_id: str, task: d.RoundTask) -> None:
        self.tasks.append((client_id, task.round))

    def shutdown(self, client_id: str, reason: str, finished: bool) -> None:
        pass

    def roster(self, entries: list[d.RosterEntry]) -> None:
        pass

    def partial_sum(self, round: int, vec: CiphertextVector | None, contributions: list[d.Contribution], key: str,
                    evidence: d.PartialEvidence | None) -> None:
        self.partials.append((round, vec, contributions, key))


def federation_info() -> d.FederationInfo:
    return d.FederationInfo("fuzz", ("negative", "neutral", "positive"),
                            LoRASpec(model="tiny", num_labels=3, r_max=4, alpha=8.0, seed=7))


def round_plan(pub: PublicKey, layout: PackingLayout, *, round: int, weights: dict[str, int], deadline: float,
               num_values: int = NUM_VALUES, mode: str = "sync") -> d.RoundPlan:
    return d.RoundPlan(
        round=round, adapter_version=round - 1,
        assignments=tuple(d.Assignment(c, 4, w, num_values) for c, w in sorted(weights.items())),
        secure_sum=d.SecureSumParams(layout=layout.to_bytes(), clip=0.5, bits=BITS, key_fingerprint=pub.fingerprint),
        privacy=d.PrivacyParams(), training=d.TrainingParams("ffa", "B", 1.0, 0.01, 8, 0),
        deadline_unix=deadline, min_clients=2, mode=mode, num_values=num_values)


# ---------------------------------------------------------------------------------------------
# Edge handlers


EDGE_WEIGHTS = {"alice": 3, "bob": 1, "mallory": 2, "carol": 1}
FUZZED = ("alice", "bob", "mallory", "zed")  # zed is connected but not assigned; carol is kept clean


class EdgeHarness:
    """A real EdgeAggregator in a round, with a model of what its running sum must hold."""

    def __init__(self) -> None:
        self.pub, self.priv = fuzz_keys()
        self.layout = layout_for(self.pub)
        self.clock = FakeClock()
        self.outbox = RecordingOutbox()
        self.edge = EdgeAggregator(edge_id="edge-fuzz", region="fuzz", limits=LimitsConfig(max_chunks_per_update=8),
                                   metrics=create_metrics("edge"), outbox=self.outbox, clock=self.clock,
                                   signer=fuzz_signer("edge", "edge-fuzz"))
        self.edge.on_coordinator_welcome(self.pub, "sync", federation_info())
        for c in (*EDGE_WEIGHTS, "zed"):
            self.edge.client_connected(c, num_samples=10, device="cpu", adapter_version=ROUND - 1)
        self.edge.on_plan(round_plan(self.pub, self.layout, round=ROUND, weights=EDGE_WEIGHTS,
                                     deadline=self.clock() + 60))
        self.uploads = {c: [_cached_upload(c, i) for i in range(2)] for c in EDGE_WEIGHTS}
        self.sent: dict[str, list[bytes]] = {}
        self.accepted: dict[str, bytes] = {}
        self.rejections: Counter[str] = Counter()

    # the state a rejected message must not change
    def snapshot(self) -> tuple[tuple[int, ...], tuple[str, ...], bool]:
        agg = self.edge.agg
        assert agg is not None
        return (tuple(int(v) for v in agg.total.result().values), tuple(sorted(agg.contributions)), agg.forwarded)

    def _call(self, fn: Any, *args: Any, **kw: Any) -> bool:
        """Run one handler call; True when it was accepted, False when rejected or ignored."""
        before = self.snapshot()
        try:
            fn(*args, **kw)
            return True
        except Ignored:
            pass
        except Rejection as rej:
            check_rejection(rej)
            self.rejections[rej.reason] += 1
        after = self.snapshot()
        assert after == before, "a rejected message changed the running sum or the contributor set"
        return False

    def begin(self, c: str, *, round: int, header: bytes, n: int) -> None:
        if self._call(self.edge.begin_upload, c, round=round, header=header, num_ciphertexts=n):
            self.sent[c] = []

    def chunk(self, c: str, *, round: int, offset: int, data: bytes) -> None:
        if self._call(self.edge.upload_chunk, c, round=round, offset=offset, data=data):
            self.sent.setdefault(c, []).append(data)

    def commit(self, c: str, *, round: int, sha: str, key: str, rank: int = 4, which: int = 0) -> bool:
        """Commit what ``c`` sent, with its signed claim about its upload ``which``."""
        before = self.snapshot()
        u = self.uploads[c][which] if c in self.uploads else _cached_upload(c, which)
        claim = sign_upload(u, c, round=round, weight=EDGE_WEIGHTS.get(c, 1), base_version=ROUND - 1, rank=rank)
        ok = self._call(self.edge.commit_upload, c, round=round, sha256=sha, idempotency_key=key, num_samples=10,
                        rank=rank, quality=d.Quality(), base_version=ROUND - 1, train_seconds=0.0, crypto_seconds=0.0,
                        contribution=claim)
        sent = b"".join(self.sent.pop(c, []))
        if ok:
            assert c not in self.accepted, f"{c} was counted twice in one round"
            assert c in EDGE_WEIGHTS, "an unassigned client was counted"
            assert len(sent) == self.uploads[c][0].num_ciphertexts * self.pub.ciphertext_bytes
            self.accepted[c] = sent
            assert self.snapshot()[1] == tuple(sorted(self.accepted))
        else:
            assert self.snapshot()[:2] == before[:2]
        return ok

    def upload(self, c: str, which: int) -> bool:
        u = self.uploads[c][which] if c in self.uploads else _cached_upload(c, which)
        self.begin(c, round=ROUND, header=u.header, n=u.num_ciphertexts)
        for off, data in u.chunks:
            self.chunk(c, round=ROUND, offset=off, data=data)
        return self.commit(c, round=ROUND, sha=u.sha256, key=u.key, which=which)

    def disconnect(self, c: str) -> None:
        self.edge.client_disconnected(c)
        self.sent.pop(c, None)
        self.edge.client_connected(c, num_samples=10, device="cpu", adapter_version=ROUND - 1)

    def tick(self, seconds: float) -> None:
        self.clock.now += seconds
        self.edge.tick()

    def check_sum(self) -> None:
        """The running sum decrypts to the weighted sum of exactly the accepted uploads."""
        agg = self.edge.agg
        assert agg is not None
        n = self.pub.n
        want = [0] * self.layout.num_ciphertexts(NUM_VALUES)
        for c, data in self.accepted.items():
            vals = ciphertexts_from_bytes(data, public_key=self.pub)
            for i, m in enumerate(plaintexts(self.priv, self.layout, vals, NUM_VALUES)):
                want[i] = (want[i] + EDGE_WEIGHTS[c] * m) % n
        got = plaintexts(self.priv, self.layout, agg.total.result().values, NUM_VALUES)
        assert got == want, "running sum differs from the weighted sum of the accepted uploads"
        for _, vec, contributions, _ in self.outbox.partials:
            assert sorted(x.client_id for x in contributions) == sorted(self.accepted)
            if vec is not None:
                assert plaintexts(self.priv, self.layout, vec.values, NUM_VALUES) == want

    def good_client_still_served(self) -> None:
        """carol (never fuzzed) uploads once and is counted once, now or in a fresh round."""
        agg = self.edge.agg
        assert agg is not None
        if agg.forwarded or self.clock() > agg.plan.deadline_unix:
            self.edge.on_plan(round_plan(self.pub, self.layout, round=ROUND + 1, weights=EDGE_WEIGHTS,
                                         deadline=self.clock() + 60))
            self.accepted, self.outbox.partials = {}, []
            u = _cached_upload("carol", 0)
            r = ROUND + 1
            self.edge.begin_upload("carol", round=r, header=u.header, num_ciphertexts=u.num_ciphertexts)
            for off, data in u.chunks:
                self.edge.upload_chunk("carol", round=r, offset=off, data=data)
            self.edge.commit_upload("carol", round=r, sha256=u.sha256, idempotency_key=u.key, num_samples=10, rank=4,
                                    quality=d.Quality(), base_version=ROUND, train_seconds=0.0, crypto_seconds=0.0,
                                    contribution=sign_upload(u, "carol", round=r, weight=EDGE_WEIGHTS["carol"],
                                                             base_version=ROUND))
            self.accepted["carol"] = u.data
        else:
            assert self.upload("carol", 0), "a good client was refused after the fuzz"
        assert "carol" in self.edge.agg.contributions  # type: ignore[union-attr]
        self.check_sum()


@lru_cache(maxsize=64)
def _cached_upload(client: str, which: int) -> Upload:
    pub, _ = fuzz_keys()
    return make_upload(pub, layout_for(pub), seed=sum(client.encode()) * 7 + which, key=f"{client}:{ROUND}:{which}")


def run_edge_ops(ops: list[tuple[Any, ...]]) -> EdgeHarness:
    """Apply a generated sequence of operations to a fresh edge; check every invariant."""
    FUZZ_CASES["edge_handlers"] += 1
    h = EdgeHarness()
    pub = h.pub
    width = pub.ciphertext_bytes
    for op in ops:
        kind = op[0]
        if kind == "upload":
            _, c, which = op
            h.upload(c, which)
        elif kind == "begin":
            _, c, rnd, header_kind, raw, n = op
            valid = _cached_upload(c, 0)
            header = {"valid": valid.header, "random": raw, "empty": b"",
                      "flip": _flip(valid.header, raw), "truncate": valid.header[: len(raw) % max(1, len(valid.header))],
                      "other_key": _other_key_header()}[header_kind]
            h.begin(c, round=rnd, header=header, n=valid.num_ciphertexts if n is None else n)
        elif kind == "chunk":
            _, c, rnd, offset, data_kind, raw = op
            valid = _cached_upload(c, 0)
            data = {"valid0": valid.chunks[0][1], "valid1": valid.chunks[-1][1], "random": raw,
                    "ragged": raw + b"\x00" * (width - 1 - len(raw) % width if len(raw) % width else 1),
                    "n2": b"\xff" * width, "zero": b"\x00" * width,
                    "oversize": b"\x01" * ((1 << 20) + width)}[data_kind]
            h.chunk(c, round=rnd, offset=offset, data=data)
        elif kind == "commit":
            _, c, rnd, sha_kind, key_kind, rank = op
            sent = b"".join(h.sent.get(c, []))
            sha = {"sent": hashlib.sha256(sent).hexdigest(), "valid": _cached_upload(c, 0).sha256,
                   "random": "0" * 64}[sha_kind]
            key = {"valid": _cached_upload(c, 0).key, "other": f"{c}:x", "empty": ""}[key_kind]
            h.commit(c, round=rnd, sha=sha, key=key, rank=rank)
        elif kind == "disconnect":
            h.disconnect(op[1])
        elif kind == "tick":
            h.tick(op[1])
    h.check_sum()
    h.good_client_still_served()
    return h


def _flip(header: bytes, raw: bytes) -> bytes:
    if not header:
        return header
    b = bytearray(header)
    i = (raw[0] if raw else 0) % len(b)
    b[i] ^= (raw[1] if len(raw) > 1 else 1) or 1
    return bytes(b)


@lru_cache(maxsize=1)
def _other_key_header() -> bytes:
    pub2, _ = generate_keypair(bits=512, test_only=True)
    return make_upload(pub2, layout_for(pub2), seed=1, key="x").header


def edge_op_strategy() -> Any:
    """Hypothesis strategy of one operation on the edge."""
    clients = st.sampled_from(FUZZED)
    rounds = st.sampled_from([ROUND, ROUND, ROUND, ROUND - 1, ROUND + 1, 0, 2**63 - 1])
    return st.one_of(
        st.tuples(st.just("upload"), clients, st.integers(0, 1)),
        st.tuples(st.just("begin"), clients, rounds,
                  st.sampled_from(["valid", "valid", "random", "empty", "flip", "truncate", "other_key"]),
                  st.binary(max_size=64), st.one_of(st.none(), st.integers(0, 2**64 - 1), st.integers(0, 4))),
        st.tuples(st.just("chunk"), clients, rounds, st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1)),
                  st.sampled_from(["valid0", "valid1", "random", "ragged", "n2", "zero", "oversize"]),
                  st.binary(max_size=300)),
        st.tuples(st.just("commit"), clients, rounds, st.sampled_from(["sent", "valid", "random"]),
                  st.sampled_from(["valid", "other", "empty"]), st.sampled_from([4, 4, 3, 0, 2**32 - 1])),
        st.tuples(st.just("disconnect"), clients),
        st.tuples(st.just("tick"), st.sampled_from([0.5, 5.0, 61.0])),
    )


# ---------------------------------------------------------------------------------------------
# Coordinator receive_partial


class FakeOps:
    """AdapterOps over a plain 40-value vector: column j of every 10 values belongs to rank > j."""

    def __init__(self) -> None:
        self.spec = SimpleNamespace(r_max=4, alpha=8.0)  # what the coordinator records per round

    def initial_state(self) -> dict[str, np.ndarray]:
        return {"w": np.zeros(NUM_VALUES, dtype=np.float32)}

    def phase(self, round_index: int) -> str:
        return "B"

    def num_values(self, phase: str, rank: int) -> int:
        return 10 * rank

    def upload_cost(self, phase: str, rank: int) -> int:
        return 10 * rank

    def weight_totals(self, phase: str, weights_by_rank: dict[int, float]) -> np.ndarray:
        cols = np.arange(NUM_VALUES) // 10
        return np.array([sum(w for r, w in weights_by_rank.items() if r > c) for c in cols], dtype=np.float64)

    def apply_mean(self, state: dict[str, np.ndarray], mean: np.ndarray, phase: str, server_lr: float) -> dict[str, np.ndarray]:
        return {"w": (state["w"] + server_lr * mean).astype(np.float32)}

    def to_bytes(self, state: dict[str, np.ndarray]) -> bytes:
        return np.asarray(state["w"], dtype=np.float32).tobytes()

    def from_bytes(self, blob: bytes) -> dict[str, np.ndarray]:
        return {"w": np.frombuffer(blob, dtype=np.float32).copy()}

    def export(self, state: dict[str, np.ndarray], out_dir: Any) -> None:
        pass

    def evaluate(self, state: dict[str, np.ndarray]) -> dict[str, float] | None:
        return None

    def set_rank(self, r_max: int, alpha: float) -> None:
        self.spec = SimpleNamespace(r_max=r_max, alpha=alpha)


class NullCoordinatorOutbox:
    """CoordinatorOutbox that drops everything."""

    def welcome(self, edge_id: str, public_key: PublicKey, mode: str) -> None:
        pass

    def adapter(self, edge_id: str, version: int, blob: bytes) -> None:
        pass

    def plan(self, edge_id: str, plan: d.RoundPlan) -> None:
        pass

    def shutdown(self, edge_id: str, reason: str, finished: bool) -> None:
        pass


COORD_ROSTER = {"edge-a": {"c1": 100, "c2": 50}, "edge-b": {"c3": 100, "c4": 25}}


class CoordinatorHarness:
    """A real Coordinator (memory store, fake adapter) with a round in progress."""

    def __init__(self) -> None:
        self.keys: LocalThreshold = local_threshold(_fuzz_certs(), federation="fuzz", min_clients=2, max_weight=4,
                                                    ceremony=_fuzz_ceremony())
        self.pub = self.keys.ceremony.public_key
        fed = parse_federation({
            "name": "fuzz", "model": {"rank": 4},
            "rounds": {"min_clients": 2, "deadline_s": 60},
            "secure_sum": {"key_bits": 512, "bits": BITS, "max_clients": 8, "max_weight": 4, "clip": 0.5},
            "weights": {"sizes": {c: n for clients in COORD_ROSTER.values() for c, n in clients.items()}},
            "test_mode": True,
        })
        self.coord = Coordinator(fed=fed, store=MemoryStore(), public_key=self.pub, decryption=self.keys.decryption,
                                 adapter_ops=FakeOps(), outbox=NullCoordinatorOutbox(), metrics=create_metrics("coordinator"))
        for edge_id, clients in COORD_ROSTER.items():
            self.coord.edge_connected(edge_id)
            self.coord.edge_roster(edge_id, [d.RosterEntry(c, n) for c, n in clients.items()])
        self.cur = self.coord.plan_round()
        self.coord.current = self.cur
        self.layout = self.cur.layout
        self.assign = {a.client_id: (e, a) for e, p in self.cur.plans.items() for a in p.assignments}
        self.codes = {c: np.random.default_rng(i).integers(0, 1 << BITS, size=NUM_VALUES)
                      for i, c in enumerate(sorted(self.assign))}
        self.accepted: list[tuple[str, list[str]]] = []
        self.rejections: Counter[str] = Counter()

    def snapshot(self) -> tuple[Any, ...]:
        return tuple((e, tuple(c.client_id for c in cs), k) for e, _, cs, k, _ in self.cur.partials)

    def vector(self, clients: list[str], kind: str, listed: dict[str, int]) -> CiphertextVector | None:
        if kind == "none":
            return None
        if kind == "short":
            return Encryptor(self.pub, self.layout, workers=0).encrypt_codes(np.zeros(NUM_VALUES // 2, dtype=np.int64))
        if kind == "other_layout":
            lay = PackingLayout.derive(key_bits=self.pub.bits, bits=8, max_clients=8, max_weight=4)
            return Encryptor(self.pub, lay, workers=0).encrypt_codes(np.zeros(NUM_VALUES, dtype=np.int64))
        if kind == "random":
            rng = np.random.default_rng(len(clients))
            n2 = int(self.pub.nsquare)
            vals = [int.from_bytes(rng.bytes(self.pub.ciphertext_bytes), "big") % (n2 - 1) + 1
                    for _ in range(self.layout.num_ciphertexts(NUM_VALUES))]
            # a malicious edge's garbage, signed consistently (weights add up): caught at decryption
            return CiphertextVector(public_key=self.pub, layout=self.layout, num_values=NUM_VALUES, values=vals,
                                    weight_total=max(1, sum(listed.values())))
        total = RunningSum(self.pub, self.layout, NUM_VALUES)
        enc = Encryptor(self.pub, self.layout, workers=0)
        for c in clients:
            if c in self.codes:
                total.add_vector(enc.encrypt_codes(self.codes[c]), weight=self.assign[c][1].weight)
        return total.result()

    def evidence(self, edge_id: str, round: int, contributions: list[tuple[str, int, int]],
                 vec: CiphertextVector | None) -> d.PartialEvidence | None:
        """The evidence an edge would sign for ``vec``: each listed client's claim of the (rank,
        weight) listed, the edge's claim over ``vec`` itself (whatever it holds)."""
        if vec is None or not contributions or len({c for c, _, _ in contributions}) != len(contributions):
            return None
        enc = Encryptor(self.pub, self.layout, workers=0)
        updates = {c: (enc.encrypt_codes(self.codes.get(c, np.zeros(NUM_VALUES, dtype=np.int64))),
                       d.Assignment(c, r, w, NUM_VALUES)) for c, r, w in contributions}
        _, ev = self.keys.sign_partial(edge_id, updates, round=round, phase=self.cur.phase)
        if vec.weight_total != sum(w for _, _, w in contributions) or vec.num_values != NUM_VALUES:
            return ev
        claim = PartialClaim.from_bytes(ev.claim.statement)
        signed = dataclasses.replace(claim, vector_digest=vector_digest(vec), key_fingerprint=vec.fingerprint)
        return dataclasses.replace(ev, claim=self.keys.signer("edge", edge_id).sign(signed.canonical_bytes()))

    def partial(self, edge_id: str, *, round: int, contributions: list[tuple[str, int, int]], vec_kind: str,
                key: str) -> bool:
        cs = [d.Contribution(client_id=c, rank=r, weight=w, num_samples=1) for c, r, w in contributions]
        vec = self.vector([c for c, _, _ in contributions], vec_kind, {c: w for c, _, w in contributions})
        evidence = self.evidence(edge_id, round, contributions, vec)
        before = self.snapshot()
        try:
            self.coord.receive_partial(edge_id, round=round, vec=vec, contributions=cs, key=key, evidence=evidence)
        except Rejection as rej:
            check_rejection(rej)
            self.rejections[rej.reason] += 1
            assert self.snapshot() == before, "a rejected partial sum changed the round"
            return False
        # accepted: it must follow every rule of the round plan
        plan = self.cur.plans.get(edge_id)
        assert plan is not None and round == self.cur.number
        names = [c for c, _, _ in contributions]
        assert len(set(names)) == len(names)
        assert (vec is None) == (not names), "an empty partial sum carries no vector and vice versa"
        for c, r, w in contributions:
            assert c in self.assign and self.assign[c][0] == edge_id
            assert (r, w) == (self.assign[c][1].rank, self.assign[c][1].weight)
        counted = [c for _, cs2 in self.accepted for c in cs2]
        assert not set(names) & set(counted), "a client was counted through two partial sums"
        self.accepted.append((edge_id, names))
        return True

    def finish(self) -> None:
        """Decrypt only at min_clients, and then exactly the weighted sum of the accepted clients
        (a garbage partial sum is refused with an error, never published)."""
        distinct = {c for _, cs in self.accepted for c in cs}
        try:
            summary = self.coord.finish_round(self.cur)
        except ProtocolError:
            assert len(distinct) < self.coord.fed.rounds.min_clients
            return
        except FFALoraError:
            # garbage that passed the edge-level checks is caught at decryption
            return
        assert len(distinct) >= self.coord.fed.rounds.min_clients
        assert summary.clients == len(distinct)


def run_coordinator_ops(ops: list[tuple[Any, ...]]) -> CoordinatorHarness:
    FUZZ_CASES["coordinator_partials"] += 1
    h = CoordinatorHarness()
    for op in ops:
        _, edge_id, round_kind, contribs, vec_kind, key = op
        rnd = {"cur": h.cur.number, "old": h.cur.number - 1, "new": h.cur.number + 1, "zero": 0}[round_kind]
        resolved = []
        for c, rank_ok, weight_ok in contribs:
            a = h.assign.get(c)
            rank = a[1].rank if (a and rank_ok) else 3
            weight = a[1].weight if (a and weight_ok) else (a[1].weight + 1 if a else 1)
            resolved.append((c, rank, weight))
        h.partial(edge_id, round=rnd, contributions=resolved, vec_kind=vec_kind, key=key)
    h.finish()
    return h


def coordinator_op_strategy() -> Any:
    contrib = st.tuples(st.sampled_from(["c1", "c2", "c3", "c4", "cx"]), st.booleans(), st.booleans())
    return st.tuples(
        st.just("partial"), st.sampled_from(["edge-a", "edge-b", "edge-x"]),
        st.sampled_from(["cur", "cur", "cur", "old", "new", "zero"]),
        st.lists(contrib, max_size=4),
        st.sampled_from(["match", "match", "none", "short", "other_layout", "random"]),
        st.sampled_from(["k1", "k2", ""]),
    )


# ---------------------------------------------------------------------------------------------
# Raw bytes over gRPC to the real edge servicer


@dataclass
class EdgeServerThread:
    """The real edge servicer on a grpc.aio mTLS server in its own thread, placed in a round
    without a coordinator (welcome and plan injected)."""

    certs: Path
    limits: dict[str, Any] = field(default_factory=dict)
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fuzz-edge", daemon=True)
        self.pub, self.priv = fuzz_keys()
        self.layout = layout_for(self.pub)

    def _run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> Self:
        self._thread.start()
        self._run(self._start())
        return self

    async def _start(self) -> None:
        cfg = EdgeConfig(listen="127.0.0.1:0", region="fuzz", limits=LimitsConfig(**self.limits))
        self.outbox = EdgeOutboxImpl()
        self.edge = EdgeAggregator(edge_id="edge-fuzz", region="fuzz", limits=cfg.limits,
                                   metrics=create_metrics("edge"), outbox=self.outbox,
                                   signer=fuzz_signer("edge", "edge-fuzz", self.certs))
        tls = TLSConfig(ca=self.certs / "ca.crt", cert=self.certs / "edge-edge-fuzz.crt",
                        key=self.certs / "edge-edge-fuzz.key")
        servicer = EdgeServicer(self.edge, self.outbox, cfg, federation=tls_files(tls).load().federation)
        self.server, self.port, _ = await start_server(
            listen=cfg.listen, tls=tls, limits=cfg.limits,
            register=lambda s: pb_grpc.add_EdgeServiceServicer_to_server(servicer, s),
            service_names=["ffalora.v1.EdgeService"])
        self.edge.on_coordinator_welcome(self.pub, "sync", federation_info())
        self.new_round(ROUND)

    def new_round(self, round: int, clients: tuple[str, ...] = ("mallory", "good")) -> None:
        def go() -> None:
            self.edge.on_plan(round_plan(self.pub, self.layout, round=round, weights={c: 1 for c in clients},
                                         deadline=time.time() + 3600))

        if threading.current_thread() is self._thread:
            go()
        else:
            self._loop.call_soon_threadsafe(go)

    def snapshot(self) -> tuple[Any, ...]:
        async def snap() -> tuple[Any, ...]:
            agg = self.edge.agg
            assert agg is not None
            return (agg.plan.round, tuple(int(v) for v in agg.total.result().values), tuple(sorted(agg.contributions)))
        return self._run(snap())

    def stop(self) -> None:
        if self._thread.is_alive():
            self._run(self.server.stop(0))
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


CLIENT_SESSION = "/ffalora.v1.EdgeService/ClientSession"
#: What a hostile stream may end with: OK (the server answered in-band and the stream ended) or
#: the session-level codes the proto file documents (INVALID_ARGUMENT for bytes that do not
#: parse, RESOURCE_EXHAUSTED for limits). Never INTERNAL or UNKNOWN.
RAW_ALLOWED = {S.OK, S.INVALID_ARGUMENT, S.RESOURCE_EXHAUSTED}


def raw_session(channel: grpc.Channel, messages: list[bytes], *, timeout: float = 10.0) -> tuple[grpc.StatusCode, list[bytes]]:
    """Send raw request bytes on a generic ClientSession call; return the final status and the
    raw responses."""
    call = channel.stream_stream(CLIENT_SESSION, request_serializer=None, response_deserializer=None)
    responses: list[bytes] = []
    try:
        responses.extend(call(iter(messages), timeout=timeout))
        return S.OK, responses
    except grpc.RpcError as exc:
        return exc.code(), responses  # type: ignore[attr-defined]


def good_session(channel: grpc.Channel, upload: Upload, *, round: int,
                 contribution: d.SignedBytes | None = None) -> list[Any]:
    """A well-behaved client: hello, then one upload (with its signed claim); returns the acks."""
    msgs = [pb.ClientSessionRequest(hello=pb.ClientHello(num_samples=10, device="cpu")),
            pb.ClientSessionRequest(update_begin=pb.UpdateBegin(header=pb.CiphertextHeader(
                round=round, header=upload.header, num_ciphertexts=upload.num_ciphertexts)))]
    msgs += [pb.ClientSessionRequest(update_chunk=pb.CiphertextChunk(round=round, offset=o, data=b))
             for o, b in upload.chunks]
    msgs.append(pb.ClientSessionRequest(update_commit=pb.UpdateCommit(
        round=round, sha256=upload.sha256, idempotency_key=upload.key, num_samples=10, rank=4,
        contribution=pb.SignedStatement(statement=contribution.statement, signature=contribution.signature,
                                        certificate=contribution.certificate) if contribution else None)))
    done = threading.Event()

    def reqs() -> Any:
        yield from msgs
        done.wait(10)  # keep the stream open until the ack arrived

    stub = channel.stream_stream(CLIENT_SESSION, request_serializer=pb.ClientSessionRequest.SerializeToString,
                                 response_deserializer=pb.ClientSessionResponse.FromString)
    acks = []
    call = stub(reqs(), timeout=20)
    for r in call:
        if r.WhichOneof("kind") == "ack":
            acks.append(r.ack)
            done.set()
            call.cancel()
            break
    return acks


__all__ = [
    "FUZZ_CASES",
    "RAW_ALLOWED",
    "REASON_CODES",
    "CoordinatorHarness",
    "EdgeHarness",
    "EdgeServerThread",
    "check_rejection",
    "coordinator_op_strategy",
    "edge_op_strategy",
    "fuzz_keys",
    "fuzz_signer",
    "good_session",
    "make_upload",
    "raw_session",
    "run_coordinator_ops",
    "run_edge_ops",
    "sign_upload",
]

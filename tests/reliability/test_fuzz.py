"""Property-based fuzzing of the servers' message handling (hypothesis): malformed, oversized,
out-of-order and random-byte messages never crash a server, get the documented status code,
and leave the running sum and the contributor set unchanged; a good client is served after.

The edge and coordinator handlers are driven directly (hundreds of cases per second); raw bytes
go over a real mTLS gRPC channel to the real edge servicer (see fuzzing.py)."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
from ffalora.v1 import federation_pb2 as pb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ffa_lora_tools.harness import fuzzing as fz
from ffa_lora_tools.harness.cluster import make_pki
from services.common.certs import TLSFiles, role_dns_name
from services.common.errors import status_of
from services.common.tls import channel_credentials, pinned_name_option

pytestmark = pytest.mark.timeout(300)

# FFALORA_FUZZ_EXAMPLES scales every property (e.g. 2000 for a long local run).
SCALE = int(os.environ.get("FFALORA_FUZZ_EXAMPLES", "0")) or None
FAST = settings(max_examples=SCALE or 150, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FAST
@given(st.lists(fz.edge_op_strategy(), max_size=25))
def test_edge_handlers_survive_hostile_sequences(ops: list) -> None:
    fz.run_edge_ops(ops)


def test_edge_handler_rejections_have_documented_codes() -> None:
    """Deterministic corner cases, each with its exact status (and the sum stays empty)."""
    h = fz.EdgeHarness()
    u = fz._cached_upload("mallory", 0)
    S = grpc.StatusCode
    cases = []

    def expect(reason: str, fn, *a, **kw) -> None:  # type: ignore[no-untyped-def]
        try:
            fn(*a, **kw)
        except fz.Rejection as rej:
            cases.append((reason, rej.reason, status_of(rej)))
            return
        raise AssertionError(f"{reason}: accepted")

    e = h.edge
    expect("wrong_round", e.begin_upload, "mallory", round=fz.ROUND + 1, header=u.header, num_ciphertexts=u.num_ciphertexts)
    expect("not_assigned", e.begin_upload, "zed", round=fz.ROUND, header=u.header, num_ciphertexts=u.num_ciphertexts)
    expect("header", e.begin_upload, "mallory", round=fz.ROUND, header=b"\x00garbage", num_ciphertexts=1)
    expect("size_mismatch", e.begin_upload, "mallory", round=fz.ROUND, header=u.header, num_ciphertexts=999)
    expect("no_upload", e.upload_chunk, "bob", round=fz.ROUND, offset=0, data=u.chunks[0][1])
    e.begin_upload("mallory", round=fz.ROUND, header=u.header, num_ciphertexts=u.num_ciphertexts)
    expect("out_of_order", e.upload_chunk, "mallory", round=fz.ROUND, offset=1, data=u.chunks[0][1])
    e.begin_upload("mallory", round=fz.ROUND, header=u.header, num_ciphertexts=u.num_ciphertexts)
    expect("chunk_too_large", e.upload_chunk, "mallory", round=fz.ROUND, offset=0, data=b"\x01" * ((1 << 20) + 128))
    e.begin_upload("mallory", round=fz.ROUND, header=u.header, num_ciphertexts=u.num_ciphertexts)
    expect("chunk_size", e.upload_chunk, "mallory", round=fz.ROUND, offset=0, data=b"\x01" * 100)
    e.begin_upload("mallory", round=fz.ROUND, header=u.header, num_ciphertexts=u.num_ciphertexts)
    for off, data in u.chunks:
        e.upload_chunk("mallory", round=fz.ROUND, offset=off, data=data)
    expect("checksum", e.commit_upload, "mallory", round=fz.ROUND, sha256="0" * 64, idempotency_key="k", num_samples=1,
           rank=4, quality=fz.d.Quality(), base_version=0, train_seconds=0, crypto_seconds=0)
    e.begin_upload("mallory", round=fz.ROUND, header=u.header, num_ciphertexts=u.num_ciphertexts)
    e.upload_chunk("mallory", round=fz.ROUND, offset=0, data=b"\xff" * h.pub.ciphertext_bytes)
    e.upload_chunk("mallory", round=fz.ROUND, offset=1, data=u.chunks[1][1])
    import hashlib

    expect("ciphertext_invalid", e.commit_upload, "mallory", round=fz.ROUND,
           sha256=hashlib.sha256(b"\xff" * h.pub.ciphertext_bytes + u.chunks[1][1]).hexdigest(), idempotency_key="k",
           num_samples=1, rank=4, quality=fz.d.Quality(), base_version=0, train_seconds=0, crypto_seconds=0)
    e.begin_upload("mallory", round=fz.ROUND, header=u.header, num_ciphertexts=u.num_ciphertexts)
    e.upload_chunk("mallory", round=fz.ROUND, offset=0, data=u.chunks[0][1])
    expect("incomplete", e.commit_upload, "mallory", round=fz.ROUND, sha256=u.sha256, idempotency_key="k", num_samples=1,
           rank=4, quality=fz.d.Quality(), base_version=0, train_seconds=0, crypto_seconds=0)
    assert h.upload("mallory", 0)
    h.begin("mallory", round=fz.ROUND, header=u.header, n=u.num_ciphertexts)
    for off, data in u.chunks:
        h.chunk("mallory", round=fz.ROUND, offset=off, data=data)
    expect("duplicate", e.commit_upload, "mallory", round=fz.ROUND, sha256=u.sha256, idempotency_key=u.key,
           num_samples=1, rank=4, quality=fz.d.Quality(), base_version=0, train_seconds=0, crypto_seconds=0)
    h.clock.now += 3600
    expect("deadline", e.begin_upload, "bob", round=fz.ROUND, header=u.header, num_ciphertexts=u.num_ciphertexts)
    for want, got, code in cases:
        if want == "header":  # an unreadable header: any invalid-argument reason
            assert code == S.INVALID_ARGUMENT, (got, code)
        else:
            assert got == want, (want, got)
        assert code == fz.REASON_CODES[got], (got, code)
    assert cases[-1][2] == S.FAILED_PRECONDITION  # a late update in sync mode
    h.check_sum()


def test_a_rejected_begin_drops_the_earlier_unfinished_upload() -> None:
    """begin A, half of A's chunks, a bad begin B: B's chunks and commit are ignored (one
    rejection only), nothing of A is kept, and a complete resend then counts once."""
    from services.edge_aggregator.handlers import Ignored

    h = fz.EdgeHarness()
    u = fz._cached_upload("mallory", 0)
    e = h.edge
    e.begin_upload("mallory", round=fz.ROUND, header=u.header, num_ciphertexts=u.num_ciphertexts)
    e.upload_chunk("mallory", round=fz.ROUND, offset=u.chunks[0][0], data=u.chunks[0][1])
    with pytest.raises(fz.Rejection):
        e.begin_upload("mallory", round=fz.ROUND, header=b"\x00garbage", num_ciphertexts=1)
    assert "mallory" not in e.uploads
    for off, data in u.chunks[1:]:
        with pytest.raises(Ignored):
            e.upload_chunk("mallory", round=fz.ROUND, offset=off, data=data)
    with pytest.raises(Ignored):
        e.commit_upload("mallory", round=fz.ROUND, sha256=u.sha256, idempotency_key=u.key, num_samples=1, rank=4,
                        quality=fz.d.Quality(), base_version=0, train_seconds=0, crypto_seconds=0)
    assert h.upload("mallory", 0)  # the full resend is accepted
    h.check_sum()


@settings(max_examples=SCALE or 120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(fz.coordinator_op_strategy(), max_size=8))
def test_coordinator_receive_partial_survives_hostile_partials(ops: list) -> None:
    fz.run_coordinator_ops(ops)


def test_coordinator_refuses_garbage_partial_sum_without_crashing() -> None:
    """A partial sum that passes the edge-level checks but decrypts to impossible slot sums is
    refused at decryption with an error the round loop handles (the round is aborted)."""
    h = fz.CoordinatorHarness()
    assert h.partial("edge-a", round=h.cur.number, contributions=[("c1", 4, h.assign["c1"][1].weight),
                                                                   ("c2", 4, h.assign["c2"][1].weight)],
                     vec_kind="random", key="k")
    with pytest.raises(fz.FFALoraError):
        h.coord.finish_round(h.cur)
    assert h.coord.committed == 0


# -- raw bytes over a real gRPC channel ---------------------------------------------------------


@pytest.fixture(scope="module")
def edge_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    certs = make_pki(tmp_path_factory.mktemp("fuzz-pki"), edges=["edge-fuzz"], clients=["mallory", "good"])
    with fz.EdgeServerThread(certs, limits={"max_messages_per_s": 1e6}) as srv:
        srv.certs_dir = certs  # type: ignore[attr-defined]
        yield srv


def _channel(srv: fz.EdgeServerThread, cid: str) -> grpc.Channel:
    certs: Path = srv.certs_dir  # type: ignore[attr-defined]
    files = TLSFiles(ca=certs / "ca.crt", cert=certs / f"client-{cid}.crt", key=certs / f"client-{cid}.key")
    return grpc.secure_channel(srv.address, channel_credentials(files),
                               options=[pinned_name_option(role_dns_name("edge", federation="ffa-lora"))])


def _hello() -> bytes:
    return pb.ClientSessionRequest(hello=pb.ClientHello(num_samples=10)).SerializeToString()


def _structured() -> st.SearchStrategy[bytes]:
    """Well-formed protobuf with hostile field values."""
    u64 = st.one_of(st.integers(0, 8), st.just(fz.ROUND), st.integers(0, 2**64 - 1))
    begin = st.builds(lambda r, h, n: pb.ClientSessionRequest(update_begin=pb.UpdateBegin(
        header=pb.CiphertextHeader(round=r, header=h, num_ciphertexts=n))), u64, st.binary(max_size=64), u64)
    chunk = st.builds(lambda r, o, b: pb.ClientSessionRequest(update_chunk=pb.CiphertextChunk(round=r, offset=o, data=b)),
                      u64, u64, st.binary(max_size=400))
    commit = st.builds(lambda r, s, k, n, rk: pb.ClientSessionRequest(update_commit=pb.UpdateCommit(
        round=r, sha256=s, idempotency_key=k, num_samples=n, rank=rk)), u64, st.text(max_size=70),
        st.text(max_size=20), u64, st.integers(0, 2**32 - 1))
    other = st.sampled_from([pb.ClientSessionRequest(), pb.ClientSessionRequest(goodbye=pb.ClientGoodbye(reason="x")),
                             pb.ClientSessionRequest(hello=pb.ClientHello(num_samples=2**64 - 1, has_adapter=True,
                                                                          adapter_version=2**64 - 1))])
    return st.one_of(begin, chunk, commit, other).map(lambda m: m.SerializeToString())


@pytest.mark.slow  # a server on loopback
@settings(max_examples=SCALE or 60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.binary(min_size=1, max_size=300), _structured()), min_size=1, max_size=8),
       st.booleans())
def test_raw_bytes_to_the_edge_servicer(edge_server: fz.EdgeServerThread, msgs: list[bytes], hello_first: bool) -> None:
    fz.FUZZ_CASES["grpc_raw_bytes"] += 1
    before = edge_server.snapshot()
    with _channel(edge_server, "mallory") as ch:
        code, _ = fz.raw_session(ch, ([_hello()] if hello_first else []) + msgs)
    assert code in fz.RAW_ALLOWED, code
    assert edge_server.snapshot() == before, "hostile bytes changed the edge's round state"


@pytest.mark.slow  # a server on loopback
def test_oversized_message_is_refused_and_the_edge_keeps_serving(edge_server: fz.EdgeServerThread) -> None:
    before = edge_server.snapshot()
    big = pb.ClientSessionRequest(update_chunk=pb.CiphertextChunk(round=fz.ROUND, data=b"\x00" * (3 << 20)))
    with _channel(edge_server, "mallory") as ch:
        code, _ = fz.raw_session(ch, [_hello(), big.SerializeToString()])
    # gRPC enforces max_message_bytes itself, with RESOURCE_EXHAUSTED (the proto file says
    # INVALID_ARGUMENT for "larger than the configured limit").
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert edge_server.snapshot() == before


@pytest.mark.slow  # a server on loopback
def test_undecodable_bytes_end_the_session_with_a_status(edge_server: fz.EdgeServerThread) -> None:
    with _channel(edge_server, "mallory") as ch:
        code, _ = fz.raw_session(ch, [_hello(), b"\xff\xff\xff\xff\x0f"])
    assert code == grpc.StatusCode.INVALID_ARGUMENT, code  # a malformed message, not an internal error


@pytest.mark.slow  # a server on loopback
def test_a_good_client_is_counted_once_after_the_fuzz(edge_server: fz.EdgeServerThread) -> None:
    """Runs after the raw-bytes property (same module server): the edge still serves and counts."""
    pub = edge_server.pub
    rnd = fz.ROUND + 1
    edge_server.new_round(rnd)
    import time

    time.sleep(0.2)
    u = fz.make_upload(pub, edge_server.layout, seed=99, key="good:1")
    with _channel(edge_server, "good") as ch:
        acks = fz.good_session(ch, u, round=rnd, contribution=fz.sign_upload(
            u, "good", round=rnd, weight=1, base_version=0, certs=edge_server.certs_dir))  # type: ignore[attr-defined]
    assert acks and acks[0].status.code == 0, acks
    snap = edge_server.snapshot()
    assert snap[0] == rnd and snap[2] == ("good",)
    got = fz.plaintexts(edge_server.priv, edge_server.layout, list(snap[1]), fz.NUM_VALUES)
    from ffa_lora.crypto import ciphertexts_from_bytes

    want = fz.plaintexts(edge_server.priv, edge_server.layout, ciphertexts_from_bytes(u.data, public_key=pub), fz.NUM_VALUES)
    assert got == want


def test_message_rate_limit_ends_a_flooding_session(edge_server: fz.EdgeServerThread) -> None:
    """limits.max_messages_per_s: a peer that floods gets RESOURCE_EXHAUSTED; others are served."""
    certs: Path = edge_server.certs_dir  # type: ignore[attr-defined]
    with fz.EdgeServerThread(certs, limits={"max_messages_per_s": 5.0}) as slow:
        slow.certs_dir = certs  # type: ignore[attr-defined]
        before = slow.snapshot()
        with _channel(slow, "mallory") as ch:
            code, _ = fz.raw_session(ch, [_hello()] + [pb.ClientSessionRequest().SerializeToString()] * 40)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert slow.snapshot() == before
        u = fz.make_upload(slow.pub, slow.layout, seed=3, key="good:5")
        with _channel(slow, "good") as ch:
            acks = fz.good_session(ch, u, round=fz.ROUND, contribution=fz.sign_upload(
                u, "good", round=fz.ROUND, weight=1, base_version=0, certs=certs))
        assert acks and acks[0].status.code == 0

"""No single party can decrypt: the coordinator holds one share and no private key, a key holder
gives its share only for a checked round sum, and t shares decrypt a valid round.

Network-free: the holders answer in this process (ffa_lora_tools.harness.threshold) with the
same KeyHolder checks as a key-holder process. 512-bit keys: TEST-ONLY.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ffa_lora.crypto import Encryptor, PackingLayout
from ffa_lora.crypto.keys import PrivateKey
from ffa_lora.crypto.threshold import Combiner, KeyShare, decryption_share
from ffa_lora.crypto.vector import CiphertextVector
from ffa_lora.errors import ThresholdError
from ffa_lora_tools.harness.threshold import KEY_HOLDERS, LocalThreshold, local_threshold
from services.common import domain as d
from services.common.rejections import Rejection
from services.key_holder.store import DecryptionRecord, MemoryHolderStore, SQLiteHolderStore

ROUND = 7
ASSIGN = {"a": 1, "b": 2, "c": 3, "d": 1}
EDGES = {"edge-1": ["a", "b"], "edge-2": ["c", "d"]}
N = 40


@pytest.fixture()
def keys(tmp_path: Path, ceremony: Any) -> Any:
    local = local_threshold(tmp_path, federation="fed", min_clients=3, max_weight=4, ceremony=ceremony)
    yield local
    local.close()


@pytest.fixture(scope="module")
def layout() -> PackingLayout:
    return PackingLayout.derive(key_bits=512, bits=8, max_clients=16, max_weight=4)


def assignments() -> tuple[d.Assignment, ...]:
    return tuple(d.Assignment(c, 4, w, N) for c, w in sorted(ASSIGN.items()))


def codes(cid: str) -> np.ndarray:
    return np.random.default_rng(ord(cid)).integers(0, 256, N)


def updates(keys: LocalThreshold, layout: PackingLayout, clients: list[str]) -> dict[str, Any]:
    enc = Encryptor(keys.ceremony.public_key, layout, workers=0)
    by_id = {a.client_id: a for a in assignments()}
    return {c: (enc.encrypt_codes(codes(c)), by_id[c]) for c in clients}


def request(keys: LocalThreshold, layout: PackingLayout, partials: list[tuple[CiphertextVector, d.PartialEvidence]],
            **kw: Any) -> d.DecryptRequest:
    base = d.DecryptRequest(
        request_id=keys.decryption.next_request_id(), round=ROUND, phase="B", mode="sync", min_clients=3,
        min_per_partial=1, adapter_version=0, max_staleness=0, staleness_exponent=0.5,
        assignments=assignments(), layout=layout.to_bytes(), num_values=N, partials=tuple(partials))
    return dataclasses.replace(base, **kw)


def round_partials(keys: LocalThreshold, layout: PackingLayout, round: int = ROUND, **kw: Any) -> list[Any]:
    return [keys.sign_partial(e, updates(keys, layout, cs), round=round, phase="B", **kw) for e, cs in EDGES.items()]


def expected_sums(clients: list[str]) -> np.ndarray:
    return sum(ASSIGN[c] * codes(c) for c in clients)  # type: ignore[return-value]


def refusal(holder: Any, req: d.DecryptRequest) -> str:
    with pytest.raises(Rejection) as err:
        holder.approve(req)
    return err.value.reason


def holder1(keys: LocalThreshold) -> Any:
    return keys.holders["keyholder/keyholder-1"]


# -- no single party holds the key ------------------------------------------------------------


def _reachable(root: object, depth: int = 7) -> list[object]:
    seen: dict[int, object] = {}

    def walk(o: object, left: int) -> None:
        if id(o) in seen or left < 0 or isinstance(o, (str, bytes, int, float, type(None))):
            return
        seen[id(o)] = o
        children: list[object] = []
        if isinstance(o, dict):
            children = [*o.keys(), *o.values()]
        elif isinstance(o, (list, tuple, set, frozenset)):
            children = list(o)
        else:
            children = list(getattr(o, "__dict__", {}).values())
            children += [getattr(o, s) for s in getattr(type(o), "__slots__", ()) if hasattr(o, s)]
        for c in children:
            walk(c, left - 1)

    walk(root, depth)
    return list(seen.values())


def test_the_coordinator_holds_one_share_and_no_private_key(keys: LocalThreshold, layout: PackingLayout) -> None:
    own = keys.decryption.own
    objects = _reachable(own) + _reachable(keys.decryption.params)
    assert not [o for o in objects if isinstance(o, PrivateKey)]
    assert [o.holder for o in objects if isinstance(o, KeyShare)] == ["coordinator/coordinator"]
    # its share alone (and any one holder's alone) decrypts nothing: t = 2 shares are needed
    vec, _ = keys.sign_partial("edge-1", updates(keys, layout, ["a"]), round=ROUND, phase="B")
    for share in (own.share, holder1(keys).share):
        one = decryption_share(share, vec, context=b"ctx")
        with pytest.raises(ThresholdError, match="needs shares from 2 distinct key holders, got 1"):
            Combiner(keys.ceremony.params, workers=0).combine(vec, [one], context=b"ctx")


def test_t_shares_decrypt_a_valid_round(keys: LocalThreshold, layout: PackingLayout) -> None:
    sums = keys.decryption.decrypt_code_sums(request(keys, layout, round_partials(keys, layout)), layout)
    np.testing.assert_array_equal(sums, expected_sums(list(ASSIGN)))
    asked = [len(link.requests) for link in keys.links.values()]
    assert sorted(asked) == [0, 1]  # t - 1 = 1 key holder was asked, not every one


def test_a_missing_or_refusing_holder_is_replaced_and_named(keys: LocalThreshold, layout: PackingLayout) -> None:
    first, second = (keys.links[h] for h in KEY_HOLDERS)
    first.holder.policy = dataclasses.replace(first.holder.policy, min_clients=10)  # it will refuse
    sums = keys.decryption.decrypt_code_sums(request(keys, layout, round_partials(keys, layout)), layout)
    np.testing.assert_array_equal(sums, expected_sums(list(ASSIGN)))
    assert len(first.requests) == len(second.requests) == 1
    failures = {tuple(sorted(s.labels.items())): s.value for m in keys.decryption.metrics.registry.collect()
                if m.name == "ffalora_key_holder_failures" for s in m.samples if s.name.endswith("_total")}
    assert failures == {(("holder", "keyholder/keyholder-1"), ("kind", "below_min_clients"),
                         ("service", "coordinator")): 1.0}
    # with both key holders gone the coordinator's own share is not enough ...
    for name in KEY_HOLDERS:
        keys.decryption.disconnect(name, keys.links[name])
    keys.decryption.timeout_s = 0.5
    with pytest.raises(ThresholdError, match=r"1 of the 2 decryption shares needed \(too few key holders"):
        keys.decryption.decrypt_code_sums(request(keys, layout, round_partials(keys, layout, ROUND + 1),
                                                  round=ROUND + 1), layout)
    # ... and a decryption waits for a holder that (re)connects within the timeout
    keys.decryption.timeout_s = 30
    timer = threading.Timer(0.3, keys.decryption.connect, (KEY_HOLDERS[1], second))
    timer.start()
    sums = keys.decryption.decrypt_code_sums(request(keys, layout, round_partials(keys, layout, ROUND + 2),
                                                     round=ROUND + 2), layout)
    timer.join()
    np.testing.assert_array_equal(sums, expected_sums(list(ASSIGN)))


def test_a_share_that_fails_its_proof_is_named_and_another_holder_asked(
        keys: LocalThreshold, layout: PackingLayout) -> None:
    bad = keys.links[KEY_HOLDERS[0]]
    decryption = keys.decryption
    real_on_share = decryption.on_share

    def corrupt(holder: str, request_id: int, blob: bytes) -> None:
        if holder == bad.holder.holder:
            blob = blob[:-1] + bytes([blob[-1] ^ 1])  # the last value of the share altered
        real_on_share(holder, request_id, blob)

    decryption.on_share = corrupt  # type: ignore[method-assign]
    sums = decryption.decrypt_code_sums(request(keys, layout, round_partials(keys, layout)), layout)
    np.testing.assert_array_equal(sums, expected_sums(list(ASSIGN)))
    assert len(keys.links[KEY_HOLDERS[1]].requests) == 1


# -- what a holder refuses ----------------------------------------------------------------------


def test_a_lone_partial_or_a_single_client_is_refused(keys: LocalThreshold, layout: PackingLayout) -> None:
    h = holder1(keys)
    lone = round_partials(keys, layout)[:1]  # edge-1's partial alone: 2 clients
    assert refusal(h, request(keys, layout, lone)) == "below_min_clients"
    single = [keys.sign_partial("edge-1", updates(keys, layout, ["a"]), round=ROUND, phase="B")]
    assert refusal(h, request(keys, layout, single)) == "below_min_clients"
    # the coordinator asking for less does not lower the holder's own floor
    assert refusal(h, request(keys, layout, single, min_clients=1)) == "below_min_clients"
    thin = [single[0], keys.sign_partial("edge-2", updates(keys, layout, ["b", "c", "d"]), round=ROUND, phase="B")]
    assert refusal(h, request(keys, layout, thin, min_per_partial=2)) == "below_min_per_partial"
    assert h.store.records() == []


def test_one_vector_per_round_recorded_before_the_answer(keys: LocalThreshold, layout: PackingLayout) -> None:
    h = holder1(keys)
    req = request(keys, layout, round_partials(keys, layout))
    h.answer(req)
    assert [r.round for r in h.store.records()] == [ROUND]
    h.answer(req)  # the same vector again (a reconnect): answered
    other = request(keys, layout, round_partials(keys, layout))  # fresh encryptions: another vector
    assert refusal(h, other) == "second_request"
    assert refusal(h, request(keys, layout, round_partials(keys, layout)[:1] + round_partials(keys, layout)[1:])
                   ) == "second_request"


def test_tampered_forged_and_inflated_evidence_is_refused(keys: LocalThreshold, layout: PackingLayout) -> None:
    h = holder1(keys)
    good = round_partials(keys, layout)
    # a ciphertext of a partial replaced after its edge signed it
    vec, ev = good[0]
    tampered = CiphertextVector(public_key=vec.public_key, layout=vec.layout, num_values=vec.num_values,
                                values=[vec.values[1], *vec.values[1:]], weight_total=vec.weight_total)
    assert refusal(h, request(keys, layout, [(tampered, ev), good[1]])) == "tampered"
    # a client's claim left out, and one signed with another client's certificate
    missing = dataclasses.replace(ev, contributions=ev.contributions[:1])
    assert refusal(h, request(keys, layout, [(vec, missing), good[1]])) == "unsigned"
    other = keys.signer("client", "c")
    forged = dataclasses.replace(ev, contributions=(other.sign(ev.contributions[0].statement), ev.contributions[1]))
    assert refusal(h, request(keys, layout, [(vec, forged), good[1]])) == "signature"
    # an edge that weighs a client more than it signed, and a plan beyond the holder's weight policy
    heavy = keys.sign_partial("edge-1", updates(keys, layout, EDGES["edge-1"]), round=ROUND, phase="B",
                              listed={"a": 3})
    assert refusal(h, request(keys, layout, [heavy, good[1]])) == "weights"
    inflated = tuple(dataclasses.replace(a, weight=9) if a.client_id == "a" else a for a in assignments())
    assert refusal(h, request(keys, layout, good, assignments=inflated)) == "weights"
    # claims of another round
    assert refusal(h, request(keys, layout, good, round=ROUND + 1)) == "wrong_round"
    assert h.store.records() == []


# -- the durable record -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_store_keeps_the_first_vector_of_a_round(backend: str, tmp_path: Path) -> None:
    store = MemoryHolderStore() if backend == "memory" else SQLiteHolderStore(tmp_path)
    first = DecryptionRecord(3, b"x" * 32, ("a", "b"), ("e",), 3)
    assert store.record(first) == first
    assert store.record(dataclasses.replace(first, vector_digest=b"y" * 32)) == first
    if backend == "sqlite":
        store.close()
        store = SQLiteHolderStore(tmp_path)  # after a restart
        assert store.record(dataclasses.replace(first, vector_digest=b"z" * 32)) == first
    assert store.records() == [first]
    store.close()

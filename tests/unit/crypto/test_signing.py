"""Signed contributions, signed partial sums, the pinned key, and a key holder's checks."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from ffa_lora.crypto import Encryptor, PackingLayout, RunningSum
from ffa_lora.crypto.canonical import vector_digest
from ffa_lora.crypto.evidence import (
    RoundPolicy,
    SignedContribution,
    SignedPartial,
    check_decryption_evidence,
)
from ffa_lora.crypto.signing import (
    ContributionClaim,
    KeyAnnouncement,
    PartialClaim,
    contributors_of,
    sign_statement,
)
from ffa_lora.crypto.threshold import Combiner, deal, decryption_share
from ffa_lora.crypto.vector import CiphertextVector, add
from ffa_lora.errors import CryptoError, ProtocolError, SignatureError, ThresholdError

FED = "test-fed"
NOW = dt.datetime.now(dt.UTC)


def _uri(role: str, ident: str) -> str:
    return f"spiffe://{FED}/{role}/{ident}"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str = "ca"):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _issue(ca, uri: str, *, days: int = 10, key=None):
    ca_key, ca_cert = ca
    key = key or ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(uri)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


@pytest.fixture(scope="module")
def ca():
    return _ca()


@pytest.fixture(scope="module")
def threshold_key():
    return deal(holders=["coordinator", "edge-1", "edge-2"], threshold=2, bits=512,
                test_only=True, workers=0, isolate=False)  # TEST-ONLY key size


@pytest.fixture(scope="module")
def layout():
    return PackingLayout.derive(key_bits=512, bits=8, max_clients=16, max_weight=4)


# -- the pinned key ------------------------------------------------------------------------


def test_clients_accept_only_the_signed_pinned_key(ca, threshold_key) -> None:
    coord_key, coord_cert = _issue(ca, _uri("coordinator", "coord"))
    ann = KeyAnnouncement(FED, threshold_key.public_key, threshold_key.params)
    sig = sign_statement(ann.canonical_bytes(), coord_key)
    back = KeyAnnouncement.from_bytes(ann.canonical_bytes())
    assert back == ann
    kw = {"certificate": coord_cert, "ca_certificate": ca[1],
          "expected_signer_uri": _uri("coordinator", "coord"), "federation": FED}
    back.verify(sig, pinned_fingerprint=threshold_key.public_key.fingerprint, **kw)
    back.verify(sig, **kw)  # signer pinned by identity alone

    # a rogue edge substitutes its own key and signs it with its (valid) edge certificate
    rogue = deal(holders=["x", "y"], threshold=2, bits=512, test_only=True, workers=0,
                 isolate=False)
    edge_key, edge_cert = _issue(ca, _uri("edge", "edge-1"))
    fake = KeyAnnouncement(FED, rogue.public_key)
    fake_sig = sign_statement(fake.canonical_bytes(), edge_key)
    with pytest.raises(SignatureError, match="signed by spiffe://test-fed/edge/edge-1, expected"):
        fake.verify(fake_sig, **{**kw, "certificate": edge_cert})
    # ... or re-uses the coordinator's signature on a different key
    with pytest.raises(SignatureError, match="does not verify"):
        fake.verify(sig, **kw)
    # ... or presents a key the coordinator really signed, but not the pinned one
    other_sig = sign_statement(fake.canonical_bytes(), coord_key)
    with pytest.raises(SignatureError, match="configured to accept only"):
        fake.verify(other_sig, pinned_fingerprint=threshold_key.public_key.fingerprint, **kw)
    # a coordinator certificate from a foreign CA is refused
    foreign_key, foreign_cert = _issue(_ca("other"), _uri("coordinator", "coord"))
    with pytest.raises(SignatureError, match="not issued by the federation CA"):
        fake.verify(sign_statement(fake.canonical_bytes(), foreign_key),
                    **{**kw, "certificate": foreign_cert})
    with pytest.raises(SignatureError, match="federation 'other'"):
        KeyAnnouncement("other", threshold_key.public_key).verify(sig, **kw)
    with pytest.raises(SignatureError, match="malformed"):
        KeyAnnouncement.from_bytes(ann.canonical_bytes()[:-3])


def test_expired_certificate_is_refused(ca, threshold_key) -> None:
    key, cert = _issue(ca, _uri("coordinator", "coord"), days=1)
    ann = KeyAnnouncement(FED, threshold_key.public_key)
    with pytest.raises(SignatureError, match="expired"):
        ann.verify(sign_statement(ann.canonical_bytes(), key), certificate=cert,
                   ca_certificate=ca[1], expected_signer_uri=_uri("coordinator", "coord"),
                   now=NOW + dt.timedelta(days=3))


def test_ed25519_keys_sign_too(ca, threshold_key) -> None:
    key, cert = _issue(ca, _uri("coordinator", "c"), key=ed25519.Ed25519PrivateKey.generate())
    ann = KeyAnnouncement(FED, threshold_key.public_key)
    ann.verify(sign_statement(ann.canonical_bytes(), key), certificate=cert,
               ca_certificate=ca[1], expected_signer_uri=_uri("coordinator", "c"))


# -- contributions and the key holder's evidence -------------------------------------------------


@pytest.fixture(scope="module")
def round_setup(ca, threshold_key, layout):
    """Two edges; edge-1 has clients a, b, c; edge-2 has d, e; weights from the plan."""
    pub = threshold_key.public_key
    enc = Encryptor(pub, layout, workers=0)
    rng = np.random.default_rng(5)
    plan = {"a": (8, 1), "b": (8, 2), "c": (16, 1), "d": (8, 3), "e": (8, 1)}
    members = {"edge-1": ["a", "b", "c"], "edge-2": ["d", "e"]}
    certs = {cid: _issue(ca, _uri("client", cid)) for cid in plan}
    partials = []
    expected = np.zeros(100, dtype=np.int64)
    for edge, ids in members.items():
        acc = RunningSum(pub, layout, 100)
        contributions = []
        for cid in ids:
            codes = rng.integers(0, 256, 100)
            vec = enc.encrypt_codes(codes)
            rank, weight = plan[cid]
            expected += weight * codes
            acc.add_vector(vec, weight=weight)
            claim = ContributionClaim.for_vector(vec, federation=FED, client_id=cid, round=4,
                                                 phase="B", rank=rank, weight=weight)
            key, cert = certs[cid]
            contributions.append(SignedContribution(
                claim, sign_statement(claim.canonical_bytes(), key), cert))
        partial = acc.result()
        pc = PartialClaim(FED, edge, 4, "B", pub.fingerprint, vector_digest(partial),
                          partial.weight_total, contributors_of([c.claim for c in contributions]))
        ekey, ecert = _issue(ca, _uri("edge", edge))
        partials.append(SignedPartial(partial, pc, sign_statement(pc.canonical_bytes(), ekey),
                                      ecert, tuple(contributions)))
    total = partials[0].vector
    for sp in partials[1:]:
        total = add(total, sp.vector, pub)
    policy = RoundPolicy(FED, 4, "B", pub.fingerprint, min_clients=5, min_per_partial=2,
                         assignments=plan)
    return total, partials, policy, expected


def _check(total, partials, policy, ca):
    return check_decryption_evidence(total, partials, policy=policy, ca_certificate=ca[1],
                                     edge_uri=lambda e: _uri("edge", e),
                                     client_uri=lambda c: _uri("client", c))


def test_valid_round_evidence_is_accepted(round_setup, ca) -> None:
    total, partials, policy, _ = round_setup
    ev = _check(total, partials, policy, ca)
    assert ev.clients == ("a", "b", "c", "d", "e") and ev.edges == ("edge-1", "edge-2")
    assert ev.weight_total == 1 + 2 + 1 + 3 + 1 == total.weight_total
    assert ev.vector_digest == vector_digest(total)


def test_holders_check_then_decrypt_a_valid_round(round_setup, ca, threshold_key) -> None:
    total, partials, policy, expected = round_setup
    holders = threshold_key.shares[1:]  # edge-1 and edge-2 hold shares; coordinator combines
    shares = []
    for ks in holders:
        _check(total, partials, policy, ca)  # each holder checks on its own
        shares.append(decryption_share(ks, total, context=policy.context()))
    sums = Combiner(threshold_key.params, workers=0).decrypt_code_sums(
        total, shares, context=policy.context())
    assert np.array_equal(sums, expected)
    # a share made for this round does not decrypt anything under another round's context
    with pytest.raises(ThresholdError, match="another context"):
        Combiner(threshold_key.params, workers=0).combine(
            total, shares, context=dataclasses.replace(policy, round=5).context())


def test_a_lone_partial_or_too_few_clients_is_refused(round_setup, ca) -> None:
    total, partials, policy, _ = round_setup
    with pytest.raises(ProtocolError, match="not the sum"):
        _check(partials[0].vector, partials, policy, ca)  # the coordinator asks for one partial
    with pytest.raises(ProtocolError, match="fewer than min_clients"):
        _check(partials[0].vector, partials[:1], policy, ca)
    with pytest.raises(ProtocolError, match="fewer than the 3"):
        _check(total, partials, dataclasses.replace(policy, min_per_partial=3), ca)


def test_forged_contributors_weights_and_signatures_are_refused(round_setup, ca) -> None:
    total, partials, policy, _ = round_setup
    sp = partials[0]
    # the edge invents a client: no signed contribution for it
    ghost = dataclasses.replace(sp.contributions[0].claim, client_id="ghost")
    entries = contributors_of([c.claim for c in sp.contributions] + [ghost])
    edge_key, edge_cert = _issue(ca, _uri("edge", "edge-1"))

    def resign(pc):  # a consistent forgery: vector header, digest and signature all match
        v = sp.vector
        vec = CiphertextVector(public_key=v.public_key, layout=v.layout,
                               num_values=v.num_values, values=v.values,
                               weight_total=pc.weight_total)
        pc = dataclasses.replace(pc, vector_digest=vector_digest(vec))
        return dataclasses.replace(sp, vector=vec, claim=pc, certificate=edge_cert,
                                   signature=sign_statement(pc.canonical_bytes(), edge_key))

    pc = dataclasses.replace(sp.claim, contributors=entries,
                             weight_total=sum(e.weight for e in entries))
    with pytest.raises(ProtocolError, match="'ghost' without that client's signed"):
        _check(total, [resign(pc), partials[1]], policy, ca)
    # the edge inflates a client's weight
    inflated = tuple(dataclasses.replace(e, weight=e.weight + 1) if e.client_id == "a" else e
                     for e in sp.claim.contributors)
    pc = dataclasses.replace(sp.claim, contributors=inflated,
                             weight_total=sp.claim.weight_total + 1)
    with pytest.raises(ProtocolError, match="claims weight 1, its edge lists 2"):
        _check(total, [resign(pc), partials[1]], policy, ca)
    # a weight total that is not the sum of the weights cannot even be stated
    with pytest.raises(CryptoError, match="not the sum"):
        dataclasses.replace(sp.claim, weight_total=sp.claim.weight_total + 5)
    # a client's signature made by someone else
    c0 = sp.contributions[0]
    other_key, _ = _issue(ca, _uri("client", "a"))
    forged = dataclasses.replace(c0, signature=sign_statement(c0.claim.canonical_bytes(),
                                                              other_key))
    bad = dataclasses.replace(sp, contributions=(forged, *sp.contributions[1:]))
    with pytest.raises(SignatureError, match="contribution of client 'a'"):
        _check(total, [bad, partials[1]], policy, ca)
    # the same client counted by both edges
    dup = dataclasses.replace(partials[1], contributions=partials[1].contributions)
    with pytest.raises(ProtocolError, match="more than one partial: a, b, c"):
        _check(total, [partials[0], partials[0], dup], policy, ca)
    # a client that claims a weight the round plan did not give it
    plan = dict(policy.assignments)
    plan["d"] = (8, 1)
    with pytest.raises(ProtocolError, match="plan assigned rank 8 and weight 1"):
        _check(total, partials, dataclasses.replace(policy, assignments=plan), ca)
    # evidence for another round
    with pytest.raises(ProtocolError, match="another federation, round"):
        _check(total, partials, dataclasses.replace(policy, round=5), ca)


def test_contribution_digest_covers_every_field(round_setup) -> None:
    claim = round_setup[1][0].contributions[0].claim
    base = claim.canonical_bytes()
    changes = {"federation": "x", "client_id": "z", "round": 5, "phase": "A", "rank": 16,
               "weight": 4, "key_fingerprint": "0" * 64, "vector_digest": bytes(32)}
    for field, value in changes.items():
        assert dataclasses.replace(claim, **{field: value}).canonical_bytes() != base, field
    with pytest.raises(CryptoError, match="round"):
        dataclasses.replace(claim, round=-1).canonical_bytes()
    with pytest.raises(CryptoError, match="vector digest"):
        dataclasses.replace(claim, vector_digest=b"short").canonical_bytes()


def test_round_context_names_the_round(round_setup) -> None:
    policy = round_setup[2]
    ctx = policy.context()
    assert ctx != dataclasses.replace(policy, round=5).context()
    assert ctx != dataclasses.replace(policy, phase="A").context()
    assert ctx == dataclasses.replace(policy, min_clients=9).context()


def test_claims_parse_back_and_refuse_garbage() -> None:
    claim = ContributionClaim(FED, "a", 3, "B", 8, 2, "ab" * 32, b"d" * 32, base_version=2)
    assert ContributionClaim.from_bytes(claim.canonical_bytes()) == claim
    pc = PartialClaim(FED, "edge-1", 3, "B", "ab" * 32, b"v" * 32, 2, contributors_of([claim]),
                      adapter_version=2)
    assert PartialClaim.from_bytes(pc.canonical_bytes()) == pc
    with pytest.raises(SignatureError, match="not a statement of this kind"):
        ContributionClaim.from_bytes(pc.canonical_bytes())
    with pytest.raises(SignatureError, match="truncated"):
        PartialClaim.from_bytes(pc.canonical_bytes()[:-5])
    with pytest.raises(SignatureError, match="trailing"):
        ContributionClaim.from_bytes(claim.canonical_bytes() + b"x")


def test_async_weights_are_recomputed_from_the_signed_versions(ca, threshold_key, layout) -> None:
    """Async: the edge lists assignment x staleness(A - base_version); any other factor is
    refused, and claims up to max_lag rounds old count."""
    from ffa_lora.crypto.weights import staleness_weight

    pub = threshold_key.public_key
    enc = Encryptor(pub, layout, workers=0)
    versions = {"a": 5, "b": 3, "c": 1}  # trained on adapters 0, 2 and 4 versions old
    listed_ok = {c: 2 * staleness_weight(5 - v, 0.5) for c, v in versions.items()}
    assert len(set(listed_ok.values())) > 1  # the factors differ, so the check can tell

    def partial(listed: dict[str, int]) -> SignedPartial:
        acc, contributions = RunningSum(pub, layout, 10), []
        for cid, base in versions.items():
            vec = enc.encrypt_codes(np.arange(10))
            acc.add_vector(vec, weight=listed[cid])
            claim = ContributionClaim.for_vector(vec, federation=FED, client_id=cid,
                                                 round=6 - (cid == "c"), phase="B", rank=8,
                                                 weight=2, base_version=base)
            key, cert = _issue(ca, _uri("client", cid))
            contributions.append(SignedContribution(claim, sign_statement(claim.canonical_bytes(), key), cert))
        vec = acc.result()
        pc = PartialClaim(FED, "edge-1", 7, "B", pub.fingerprint, vector_digest(vec), vec.weight_total,
                          contributors_of([c.claim for c in contributions], [listed[c] for c in sorted(listed)]),
                          adapter_version=5)
        ekey, ecert = _issue(ca, _uri("edge", "edge-1"))
        return SignedPartial(vec, pc, sign_statement(pc.canonical_bytes(), ekey), ecert, tuple(contributions))

    policy = RoundPolicy(FED, 7, "B", pub.fingerprint, min_clients=3, max_lag=2,
                         staleness_exponent=0.5, adapter_version=5)
    good = partial(listed_ok)
    assert _check(good.vector, [good], policy, ca).weight_total == sum(listed_ok.values())
    inflated = partial({**listed_ok, "c": listed_ok["a"]})  # the stale client weighted as fresh
    with pytest.raises(ProtocolError, match="client 'c' claims weight 2 times its staleness factor"):
        _check(inflated.vector, [inflated], policy, ca)
    with pytest.raises(ProtocolError, match="expected rounds 6..7"):  # claim of round 5 too old
        _check(good.vector, [good], dataclasses.replace(policy, max_lag=1), ca)
    with pytest.raises(ProtocolError, match="newer than the round's 4"):
        _check(good.vector, [good], dataclasses.replace(policy, adapter_version=4), ca)

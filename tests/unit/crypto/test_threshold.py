"""Threshold Paillier: ceremony, decryption shares, proofs, combination, files.

All keys here are TEST-ONLY (512 bits, ``test_only=True``); the 2048-bit ceremony is in
``test_slow_2048.py``.
"""

from __future__ import annotations

import gc
import itertools
import math
import os
import stat

import gmpy2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ffa_lora.crypto import Decryptor, Encryptor, PackingLayout, PrivateKey, RunningSum
from ffa_lora.crypto.keys import new_fernet_key
from ffa_lora.crypto.threshold import (
    Combiner,
    DecryptionShare,
    KeyShare,
    ShareDecryptor,
    ThresholdParams,
    combine,
    deal,
    decryption_share,
    lagrange_coefficients,
    load_key_share,
    save_key_share,
    verify_decryption_share,
)
from ffa_lora.crypto.threshold import ceremony as ceremony_mod
from ffa_lora.crypto.threshold.decrypt import _combine_batch
from ffa_lora.crypto.threshold.primes import is_safe_prime, random_safe_prime
from ffa_lora.errors import (
    ConfigError,
    DecryptionShareError,
    FingerprintMismatchError,
    KeyFileError,
    ThresholdError,
)

BITS = 512  # TEST-ONLY
FIXTURES = [HealthCheck.function_scoped_fixture]
CTX = b"federation=test|round=7|phase=B"


@pytest.fixture(scope="module")
def primes() -> tuple[int, int]:
    p = random_safe_prime(BITS // 2)
    return p, random_safe_prime(BITS // 2, exclude=frozenset({p}))


@pytest.fixture(scope="module")
def ceremony_3of5(primes):
    """A 3-of-5 TEST-ONLY key dealt from known primes (so tests can look for them)."""
    it = iter(primes)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ceremony_mod, "random_safe_prime", lambda *a, **k: next(it))
        return deal(holders=["coordinator", "edge-1", "edge-2", "edge-3", "keyholder-a"],
                    threshold=3, bits=BITS, test_only=True, workers=0, isolate=False)


@pytest.fixture(scope="module")
def ceremony_2of3():
    return deal(holders=["coordinator", "edge-1", "edge-2"], threshold=2, bits=BITS,
                test_only=True, workers=0, isolate=False)


@pytest.fixture(scope="module")
def layout() -> PackingLayout:
    return PackingLayout.derive(key_bits=BITS, bits=8, max_clients=16, max_weight=4)


def _sum_vector(pub, layout, codes, weights):
    enc = Encryptor(pub, layout, workers=0)
    acc = RunningSum(pub, layout, max(c.size for c in codes))
    for c, w in zip(codes, weights):
        acc.add_vector(enc.encrypt_codes(c), weight=w)
    return acc.result()


@pytest.fixture(scope="module")
def round_vector(ceremony_3of5, layout):
    rng = np.random.default_rng(3)
    codes = [rng.integers(0, layout.levels + 1, 250) for _ in range(4)]
    weights = [1, 2, 3, 1]
    vec = _sum_vector(ceremony_3of5.public_key, layout, codes, weights)
    expected = sum(w * c.astype(np.int64) for c, w in zip(codes, weights))
    shares = [decryption_share(s, vec, context=CTX) for s in ceremony_3of5.shares]
    return vec, expected, shares


# -- the ceremony ------------------------------------------------------------------------------


def test_ceremony_makes_safe_prime_key_and_consistent_shares(ceremony_3of5, primes) -> None:
    p, q = primes
    params = ceremony_3of5.params
    assert is_safe_prime(p) and is_safe_prime(q) and p != q
    assert params.public_key.n == p * q and params.public_key.bits == BITS
    assert params.threshold == 3 and len(ceremony_3of5.shares) == 5
    assert [s.index for s in ceremony_3of5.shares] == [1, 2, 3, 4, 5]
    assert [s.holder for s in ceremony_3of5.shares] == list(params.holders)
    assert ceremony_3of5.share_for("edge-2").index == 3
    # the dealt exponent is d: d ≡ 0 (mod p'q') and d ≡ 1 (mod n), by interpolation at 0
    m, n = (p - 1) // 2 * ((q - 1) // 2), p * q
    idx = [1, 3, 5]
    lam = lagrange_coefficients(idx, params.delta)
    d_delta = sum(li * int(ceremony_3of5.shares[i - 1].secret) for li, i in zip(lam, idx)) % (n * m)
    assert d_delta % m == 0 and d_delta % n == params.delta % n
    for s in ceremony_3of5.shares:
        assert str(int(s.secret)) not in repr(s)


def test_ceremony_retains_no_part_of_the_private_key(ceremony_3of5, primes) -> None:
    p, q = primes
    n = p * q
    m = (p - 1) // 2 * ((q - 1) // 2)
    d = m * pow(m, -1, n) % (n * m)
    forbidden = {p, q, (p - 1) // 2, (q - 1) // 2, m, 2 * m, 4 * m, (p - 1) * (q - 1), d}
    ceremony_3of5.params.to_bytes()  # the encoded form is cached on the object: walk it too
    seen: set[int] = set()
    ints: list[int] = []
    blobs: list[bytes] = []
    stack: list[object] = [ceremony_3of5]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (int, type(gmpy2.mpz(0)))) and not isinstance(obj, bool):
            ints.append(int(obj))
        elif isinstance(obj, (bytes, bytearray)):
            blobs.append(bytes(obj))
        elif not isinstance(obj, (str, float, type)):
            stack.extend(gc.get_referents(obj))
    assert len(ints) > 10 and blobs  # the walk reached the shares and the encoded params
    for x in ints:
        assert x not in forbidden
        assert x == 0 or x % m != 0, "an integer divisible by p'q' would reveal the key"
        assert math.gcd(x, n) in (1, n), "an integer sharing a factor with n reveals p or q"
    for secret in (p, q, m, d):
        pattern = secret.to_bytes((secret.bit_length() + 7) // 8, "big")
        assert not any(pattern in b for b in blobs)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"bits": 512}, "test_only"),
    ({"bits": 1024}, "2048"),
    ({"threshold": 1}, "t >= 2"),
    ({"threshold": 4}, "number of holders"),
    ({"holders": ["a", "a", "b"]}, "distinct"),
    ({"holders": ["a"], "threshold": 2}, "2 to"),
    ({"holders": ["bad id"]}, "invalid"),
    ({"holders": "abc"}, "list"),
])
def test_unsafe_or_invalid_ceremonies_are_refused(kwargs, match) -> None:
    args = {"holders": ["coordinator", "edge-1", "edge-2"], "threshold": 2, "bits": 2048}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        deal(**args, workers=0, isolate=False)


def test_isolated_ceremony_in_a_child_process() -> None:
    cer = deal(holders=["a", "b"], threshold=2, bits=BITS, test_only=True, workers=1)
    assert cer.public_key.bits == BITS and cer.seconds > 0
    vec = _sum_vector(cer.public_key, PackingLayout.derive(key_bits=BITS), [np.arange(9)], [1])
    sums = Combiner(cer.params, workers=0).decrypt_code_sums(
        vec, [decryption_share(s, vec, context=CTX) for s in cer.shares], context=CTX)
    assert list(sums) == list(range(9))


# -- decryption ------------------------------------------------------------------------------


def test_any_t_of_n_shares_decrypt_exactly(ceremony_3of5, round_vector, layout) -> None:
    vec, expected, shares = round_vector
    comb = Combiner(ceremony_3of5.params, layout, workers=0)
    for subset in itertools.combinations(shares, 3):
        assert np.array_equal(comb.decrypt_code_sums(vec, subset, context=CTX), expected)
    # more than t shares: fine too
    assert np.array_equal(comb.decrypt_code_sums(vec, shares, context=CTX), expected)


def test_t_minus_one_shares_are_refused_and_determine_nothing(ceremony_3of5,
                                                              round_vector) -> None:
    vec, _, shares = round_vector
    params = ceremony_3of5.params
    with pytest.raises(ThresholdError, match="needs shares from 3 distinct"):
        combine(params, vec, shares[:2], context=CTX)
    with pytest.raises(ThresholdError, match="two decryption shares"):
        combine(params, vec, [shares[0], shares[0], shares[1]], context=CTX)
    # interpolating through only t-1 points anyway does not give the plaintexts
    for pair in itertools.combinations(range(5), 2):
        exps = [2 * lam for lam in lagrange_coefficients([i + 1 for i in pair], params.delta)]
        out = _combine_batch(params.public_key.n, params.delta, exps,
                             [shares[i].values for i in pair])
        assert all(m is None for m in out)


def test_threshold_plaintexts_equal_whole_key_crt_decryption(ceremony_3of5, primes,
                                                             round_vector, layout) -> None:
    vec, expected, shares = round_vector
    p, q = primes
    whole = PrivateKey(ceremony_3of5.public_key, p, q)  # only the test knows p and q
    crt = Decryptor(whole, layout, workers=0).decrypt_plaintexts(vec)
    assert combine(ceremony_3of5.params, vec, shares[2:], context=CTX) == crt
    assert np.array_equal(Decryptor(whole, layout, workers=0).decrypt_code_sums(vec), expected)


@settings(max_examples=12, deadline=None, suppress_health_check=FIXTURES)
@given(data=st.data(), clients=st.integers(1, 6), size=st.integers(1, 300))
def test_packed_weighted_sums_unpack_exactly(ceremony_2of3, data, clients, size) -> None:
    lay = PackingLayout.derive(key_bits=BITS, bits=data.draw(st.sampled_from([8, 16])),
                               max_clients=8, max_weight=4)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    weights = data.draw(st.lists(st.integers(1, 4), min_size=clients, max_size=clients))
    sizes = [size] + [data.draw(st.integers(1, size)) for _ in range(clients - 1)]  # ranks
    codes = [rng.integers(0, lay.levels + 1, s) for s in sizes]
    vec = _sum_vector(ceremony_2of3.public_key, lay, codes, weights)
    expected = np.zeros(size, dtype=np.int64)
    for c, w in zip(codes, weights):
        expected[: c.size] += w * c
    pair = data.draw(st.sampled_from(list(itertools.combinations(ceremony_2of3.shares, 2))))
    got = Combiner(ceremony_2of3.params, lay, workers=0).decrypt_code_sums(
        vec, [decryption_share(s, vec, context=CTX) for s in pair], context=CTX)
    assert np.array_equal(got, expected)


def test_tampered_share_is_detected_and_its_holder_named(ceremony_3of5, round_vector) -> None:
    vec, expected, shares = round_vector
    params = ceremony_3of5.params
    bad_values = list(shares[1].values)
    bad_values[3] = bad_values[3] * 5 % params.public_key.nsquare
    bad = DecryptionShare(shares[1].holder, shares[1].index, shares[1].params_fingerprint,
                          shares[1].vector_digest, shares[1].context_digest, bad_values,
                          shares[1].proof)
    with pytest.raises(DecryptionShareError, match="edge-1") as err:
        combine(params, vec, [shares[0], bad, shares[2], shares[3]], context=CTX)
    assert err.value.holders == ("edge-1",)
    with pytest.raises(DecryptionShareError):
        verify_decryption_share(params, vec, bad, context=CTX)
    verify_decryption_share(params, vec, shares[1], context=CTX)  # the honest one passes
    # without verification the wrong share is caught only as "does not combine"
    with pytest.raises(ThresholdError, match="do not combine"):
        combine(params, vec, [shares[0], bad, shares[2]], context=CTX, verify=False)
    # the combiner drops the named holder and succeeds with the others
    sums = Combiner(params, workers=0).decrypt_code_sums(
        vec, [shares[0], shares[2], shares[3]], context=CTX)
    assert np.array_equal(sums, expected)


def test_a_proof_is_bound_to_its_own_shares_holder_and_context(ceremony_3of5,
                                                                round_vector) -> None:
    vec, _, shares = round_vector
    params = ceremony_3of5.params
    a, b = shares[0], shares[1]
    stolen = DecryptionShare(b.holder, b.index, b.params_fingerprint, b.vector_digest,
                             b.context_digest, b.values, a.proof)
    unproven = decryption_share(ceremony_3of5.shares[2], vec, context=CTX, prove=False)
    with pytest.raises(DecryptionShareError) as err:
        combine(params, vec, [a, stolen, unproven, shares[3]], context=CTX)
    assert err.value.holders == ("edge-1", "edge-2")
    with pytest.raises(ThresholdError, match="another context"):
        combine(params, vec, shares[:3], context=b"federation=test|round=8|phase=B")
    other = _sum_vector(params.public_key, vec.layout, [np.arange(5)], [1])
    with pytest.raises(ThresholdError, match="another ciphertext vector"):
        combine(params, other, shares[:3], context=CTX)


def test_order_two_factors_cannot_corrupt_the_combination(ceremony_3of5, round_vector) -> None:
    # -y instead of y: squaring in the combination removes it, so no proof can be gamed with
    # it; the proof itself still binds the exact values sent.
    vec, expected, shares = round_vector
    n2 = ceremony_3of5.public_key.nsquare
    s = shares[2]
    flipped = DecryptionShare(s.holder, s.index, s.params_fingerprint, s.vector_digest,
                              s.context_digest, [n2 - y for y in s.values], s.proof)
    comb = Combiner(ceremony_3of5.params, workers=0)
    sums = comb.decrypt_code_sums(vec, [shares[0], shares[1], flipped], context=CTX,
                                  verify=False)
    assert np.array_equal(sums, expected)
    assert not comb.proof_holds(vec, flipped, context=CTX)


def test_foreign_vector_is_refused(ceremony_3of5, ceremony_2of3, layout) -> None:
    vec = _sum_vector(ceremony_2of3.public_key, layout, [np.arange(4)], [1])
    with pytest.raises(FingerprintMismatchError):
        decryption_share(ceremony_3of5.shares[0], vec, context=CTX)


def test_parallel_workers_match_in_process(ceremony_2of3, layout) -> None:
    rng = np.random.default_rng(11)
    codes = [rng.integers(0, 256, 2000) for _ in range(3)]
    vec = _sum_vector(ceremony_2of3.public_key, layout, codes, [1, 1, 1])
    with ShareDecryptor(ceremony_2of3.shares[0], workers=2) as d0, \
            ShareDecryptor(ceremony_2of3.shares[2], workers=1) as d2, \
            Combiner(ceremony_2of3.params, layout, workers=2) as comb:
        got = [d0.decryption_share(vec, context=CTX), d2.decryption_share(vec, context=CTX)]
        sums = comb.decrypt_code_sums(vec, got, context=CTX)
    assert np.array_equal(sums, sum(codes))
    assert got[0].values == decryption_share(ceremony_2of3.shares[0], vec, context=CTX).values


# -- serialization -----------------------------------------------------------------------------


def test_params_and_decryption_shares_roundtrip(ceremony_3of5, round_vector) -> None:
    vec, expected, shares = round_vector
    params = ceremony_3of5.params
    back = ThresholdParams.from_bytes(params.to_bytes())
    assert back == params and back.fingerprint == params.fingerprint
    wire = [DecryptionShare.from_bytes(s.to_bytes(params), back) for s in shares[:3]]
    assert np.array_equal(Combiner(back, workers=0).decrypt_code_sums(vec, wire, context=CTX),
                          expected)
    raw = shares[0].to_bytes(params)
    for broken in (raw[:-1], raw[:20], b"XXXXX" + raw[5:]):
        with pytest.raises(ThresholdError):
            DecryptionShare.from_bytes(broken, params)
    with pytest.raises(ThresholdError, match="other threshold parameters"):
        other = deal(holders=list(params.holders), threshold=3, bits=BITS, test_only=True,
                     workers=0, isolate=False).params
        DecryptionShare.from_bytes(raw, other)


def test_key_share_files_are_encrypted_and_checked(tmp_path, ceremony_3of5) -> None:
    share = ceremony_3of5.share_for("edge-3")
    fkey = new_fernet_key()
    path = tmp_path / "shares" / "edge-3.share"
    save_key_share(path, share, fernet_key=fkey)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    secret = int(share.secret).to_bytes((int(share.secret).bit_length() + 7) // 8, "big")
    assert secret not in path.read_bytes()
    back = load_key_share(path, fernet_key=fkey, expected_holder="edge-3")
    assert back.secret == share.secret and back.params == share.params
    with pytest.raises(KeyFileError, match="wrong Fernet key"):
        load_key_share(path, fernet_key=new_fernet_key())
    with pytest.raises(KeyFileError, match="not of 'edge-1'"):
        load_key_share(path, fernet_key=fkey, expected_holder="edge-1")
    with pytest.raises(KeyFileError, match="not an FFA-LoRA key share file"):
        (tmp_path / "x").write_bytes(b"FFAPK" + bytes(60))
        load_key_share(tmp_path / "x", fernet_key=fkey)


def test_a_share_that_does_not_match_its_verification_key_is_refused(ceremony_3of5) -> None:
    share = ceremony_3of5.shares[0]
    with pytest.raises(Exception, match="verification key"):
        KeyShare(share.params, 1, share.secret + 1)
    with pytest.raises(Exception, match="verification key"):
        KeyShare(share.params, 2, share.secret)

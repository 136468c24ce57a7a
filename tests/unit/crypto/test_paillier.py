"""Packed encryption, homomorphic sums, decryption, and the typed errors on bad input."""

from __future__ import annotations

import gmpy2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ffa_lora.crypto.paillier import Decryptor, Encryptor, ObfuscatorPool
from ffa_lora.crypto.quantize import Quantizer
from ffa_lora.crypto.vector import CiphertextVector, RunningSum, add, scale
from ffa_lora.errors import (
    CiphertextError,
    FingerprintMismatchError,
    LayoutError,
    ObfuscatorReuseError,
)

FIXTURES = [HealthCheck.function_scoped_fixture]


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURES)
@given(data=st.data(), clients=st.integers(1, 10), size=st.integers(1, 400),
       edge_weights=st.booleans())
def test_decrypted_packed_sum_equals_integer_sum(keypair, layout, data, clients, size,
                                                 edge_weights) -> None:
    pub, priv = keypair
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
    ws = data.draw(st.lists(st.integers(1, 8), min_size=clients, max_size=clients))
    codes = [rng.integers(0, layout.levels + 1, size).astype(np.uint8) for _ in ws]
    enc = Encryptor(pub, layout, workers=0)
    acc = RunningSum(pub, layout, size)
    for c, w in zip(codes, ws):
        if edge_weights:  # the edge scales the ciphertexts
            acc.add_vector(enc.encrypt_codes(c), weight=w)
        else:  # the client pre-multiplies its codes
            acc.add_vector(enc.encrypt_codes(c, weight=w))
    sums = Decryptor(priv, layout, workers=0).decrypt_code_sums(acc.result())
    assert sums.dtype == np.int64
    assert np.array_equal(sums, sum(w * c.astype(np.int64) for c, w in zip(codes, ws)))


@settings(max_examples=15, deadline=None, suppress_health_check=FIXTURES)
@given(data=st.data(), clients=st.integers(1, 6), size=st.integers(1, 200),
       clip=st.floats(0.01, 2.0))
def test_encrypted_mean_within_quantization_bound(keypair, layout, data, clients, size, clip):
    pub, priv = keypair
    q = Quantizer(clip=clip, bits=8)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32)))
    xs = [rng.normal(0, clip, size).astype(np.float32) for _ in range(clients)]
    enc = Encryptor(pub, layout, workers=0)
    vec = enc.encrypt_codes(q.quantize(xs[0], rng=rng))
    for x in xs[1:]:
        vec = add(vec, enc.encrypt_codes(q.quantize(x, rng=rng)), pub)
    mean = Decryptor(priv, layout, workers=0).decrypt_mean(vec, quantizer=q,
                                                           weight_totals=float(clients))
    exact = np.mean([np.clip(x.astype(np.float64), -clip, clip) for x in xs], axis=0)
    assert np.abs(mean - exact).max() <= q.step * (1 + 1e-5) + 1e-6


def test_extreme_all_clients_max_code_max_weight(keypair, small_layout) -> None:
    pub, priv = keypair
    lay = small_layout  # capacity 8 clients × weight 4
    enc = Encryptor(pub, lay, workers=0)
    top = np.full(3 * lay.slots_per_ciphertext + 5, lay.levels, dtype=np.uint8)
    acc = RunningSum(pub, lay, top.size)
    for i in range(lay.max_clients):
        if i % 2:
            acc.add_vector(enc.encrypt_codes(top, weight=lay.max_weight))
        else:
            acc.add_vector(enc.encrypt_codes(top), weight=lay.max_weight)
    assert acc.weight_total == lay.capacity
    sums = Decryptor(priv, lay, workers=0).decrypt_code_sums(acc.result())
    assert (sums == lay.capacity * lay.levels).all()
    assert (lay.capacity * lay.levels) < (1 << lay.slot_bits)
    # one more contribution would carry: refused, and the state is unchanged
    with pytest.raises(LayoutError, match="capacity"):
        acc.add_vector(enc.encrypt_codes(top))
    assert acc.weight_total == lay.capacity


def test_add_and_scale_refuse_overflow(keypair, small_layout) -> None:
    pub, _ = keypair
    enc = Encryptor(pub, small_layout, workers=0)
    v = enc.encrypt_codes(np.ones(10, dtype=np.uint8), weight=16)
    assert add(v, v, pub).weight_total == 32
    with pytest.raises(LayoutError):
        add(add(v, v, pub), v, pub)
    with pytest.raises(LayoutError):
        scale(v, 3, pub)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(LayoutError):
            scale(v, bad, pub)  # type: ignore[arg-type]
    with pytest.raises(LayoutError):
        enc.encrypt_codes(np.ones(3, dtype=np.uint8), weight=33)


def test_scale_multiplies_slots(keypair, layout) -> None:
    pub, priv = keypair
    enc = Encryptor(pub, layout, workers=0)
    codes = np.arange(60, dtype=np.uint8)
    out = Decryptor(priv, layout, workers=0).decrypt_code_sums(scale(enc.encrypt_codes(codes), 7, pub))
    assert np.array_equal(out, 7 * codes.astype(np.int64))


def test_heterogeneous_rank_prefix_sums(keypair, layout) -> None:
    pub, priv = keypair
    enc = Encryptor(pub, layout, workers=0)
    dec = Decryptor(priv, layout, workers=0)
    full, short = 100, 37  # a rank-r update is a prefix of the full vector
    a = np.full(full, 10, dtype=np.uint8)
    b = np.full(short, 3, dtype=np.uint8)
    expect = a.astype(np.int64)
    expect[:short] += 3
    for v in (add(enc.encrypt_codes(a), enc.encrypt_codes(b), pub),
              add(enc.encrypt_codes(b), enc.encrypt_codes(a), pub)):
        assert v.num_values == full
        assert np.array_equal(dec.decrypt_code_sums(v), expect)
    acc = RunningSum(pub, layout, full)
    acc.add_vector(enc.encrypt_codes(b))
    acc.add_vector(enc.encrypt_codes(a))
    assert np.array_equal(dec.decrypt_code_sums(acc.result()), expect)
    with pytest.raises(CiphertextError):
        RunningSum(pub, layout, short).add_vector(enc.encrypt_codes(a))


def test_running_sum_chunks_and_state(keypair, layout) -> None:
    pub, priv = keypair
    enc = Encryptor(pub, layout, workers=0)
    codes = np.arange(200) % 256
    v = enc.encrypt_codes(codes)
    acc = RunningSum(pub, layout, 200)
    acc.add_chunk(0, v.values[:3], weight=2)
    acc.add_chunk(3, v.values[3:], weight=2)
    restored = RunningSum(pub, layout, 200)
    restored.load_state_dict(acc.state_dict())
    out = Decryptor(priv, layout, workers=0).decrypt_code_sums(restored.result())
    assert np.array_equal(out, 2 * codes)
    with pytest.raises(CiphertextError):
        acc.add_chunk(len(v.values) - 1, v.values[:2])  # runs past the end
    with pytest.raises(CiphertextError):
        acc.add_chunk(-1, v.values[:1])


def test_encryption_is_randomized_and_validated(keypair, layout) -> None:
    pub, _ = keypair
    enc = Encryptor(pub, layout, workers=0)
    codes = np.zeros(50, dtype=np.uint8)
    a, b = enc.encrypt_codes(codes), enc.encrypt_codes(codes)
    assert a.values != b.values
    with pytest.raises(LayoutError):
        enc.encrypt_codes(np.array([256]))
    with pytest.raises(LayoutError):
        enc.encrypt_codes(np.array([0.5]))


# -- typed errors on bad input --------------------------------------------------------------

def _vec(pub, layout, values, num_values, **kw):
    return CiphertextVector(public_key=pub, layout=layout, num_values=num_values,
                            values=values, **kw)


def test_out_of_range_and_wrong_length(keypair, layout) -> None:
    pub, _ = keypair
    v = Encryptor(pub, layout, workers=0).encrypt_codes(np.ones(60, dtype=np.uint8))
    for bad in (0, -5, int(pub.nsquare), int(pub.nsquare) + 1):
        with pytest.raises(CiphertextError, match="out of range"):
            _vec(pub, layout, [bad] + v.values[1:], 60)
        with pytest.raises(CiphertextError, match="out of range"):
            RunningSum(pub, layout, 60).add_chunk(0, [bad])
    with pytest.raises(CiphertextError, match="wrong number"):
        _vec(pub, layout, v.values[:-1], 60)
    with pytest.raises(CiphertextError, match="wrong number"):
        _vec(pub, layout, v.values + [v.values[0]], 60)
    with pytest.raises(CiphertextError):
        _vec(pub, layout, ["abc"] + v.values[1:], 60)
    with pytest.raises(CiphertextError, match="not an integer"):
        _vec(pub, layout, [float(v.values[0])] + v.values[1:], 60)


def test_wrong_fingerprint_everywhere(keypair, other_keypair, layout) -> None:
    pub, priv = keypair
    pub2, _priv2 = other_keypair
    v = Encryptor(pub, layout, workers=0).encrypt_codes(np.ones(60, dtype=np.uint8))
    v2 = Encryptor(pub2, layout, workers=0).encrypt_codes(np.ones(60, dtype=np.uint8))
    with pytest.raises(FingerprintMismatchError):
        _vec(pub, layout, v.values, 60, fingerprint=pub2.fingerprint)
    with pytest.raises(FingerprintMismatchError):
        add(v, v2, pub)
    with pytest.raises(FingerprintMismatchError):
        scale(v2, 2, pub)
    with pytest.raises(FingerprintMismatchError):
        RunningSum(pub, layout, 60).add_vector(v2)
    with pytest.raises(FingerprintMismatchError):
        Decryptor(priv, layout, workers=0).decrypt_code_sums(v2)
    with pytest.raises(FingerprintMismatchError):
        Encryptor(pub, layout, pool=ObfuscatorPool(pub2, workers=0))


def test_layout_mismatch(keypair, layout, small_layout) -> None:
    pub, priv = keypair
    v = Encryptor(pub, layout, workers=0).encrypt_codes(np.ones(10, dtype=np.uint8))
    w = Encryptor(pub, small_layout, workers=0).encrypt_codes(np.ones(10, dtype=np.uint8))
    with pytest.raises(LayoutError):
        add(v, w, pub)
    with pytest.raises(LayoutError):
        Decryptor(priv, small_layout, workers=0).decrypt_code_sums(v)


def test_tampered_ciphertext_is_detected_on_decrypt(keypair, layout) -> None:
    pub, priv = keypair
    enc = Encryptor(pub, layout, workers=0)
    dec = Decryptor(priv, layout, workers=0)
    v = enc.encrypt_codes(np.full(100, 200, dtype=np.uint8))
    for i, bit in ((0, 0), (1, 77), (3, 300)):
        vals = list(v.values)
        vals[i] = vals[i] ^ (1 << bit)
        tampered = _vec(pub, layout, vals, 100)  # still in range: passes entry checks
        with pytest.raises(CiphertextError):
            dec.decrypt_code_sums(tampered)
    # a vector claiming less weight than it holds is caught too
    summed = add(v, v, pub)
    lying = _vec(pub, layout, summed.values, 100, weight_total=1)
    with pytest.raises(CiphertextError, match="weight"):
        dec.decrypt_code_sums(lying)


# -- obfuscator pool --------------------------------------------------------------------------

def test_obfuscators_are_single_use(keypair, layout) -> None:
    pub, priv = keypair
    pool = ObfuscatorPool(pub, workers=0, batch_size=4)
    pool.fill(10)
    assert len(pool) == 10 and pool.deposited == 10
    taken = pool.take_many(7)
    assert len(taken) == 7 and len(pool) == 3
    assert len({int(t) for t in taken}) == 7
    with pytest.raises(ObfuscatorReuseError):
        pool.add_precomputed([taken[0]])  # handed out before: can never come back
    rest = [pool.take(), pool.take(), pool.take()]
    assert pool.take() is None and pool.take_many(5) == []
    assert len({int(t) for t in taken + rest}) == 10
    with pytest.raises(ObfuscatorReuseError):
        pool.add_precomputed([rest[0]])
    fresh = pool.take_many(0)
    assert fresh == []
    dup = gmpy2.powmod(12345, pub.n_mpz, pub.nsquare)
    with pytest.raises(ObfuscatorReuseError):
        pool.add_precomputed([dup, dup])
    with pytest.raises(CiphertextError):
        pool.add_precomputed([0])
    # obfuscators really are r^n: an encryption with them decrypts correctly
    pool.fill(3)
    enc = Encryptor(pub, layout, pool=pool, workers=0)
    v = enc.encrypt_codes(np.arange(60) % 256)  # 3 ciphertexts
    assert (enc.last_pooled, enc.last_fresh) == (3, 0) and len(pool) == 0
    v2 = enc.encrypt_codes(np.arange(60) % 256)  # pool empty: fresh fallback
    assert (enc.last_pooled, enc.last_fresh) == (0, 3)
    dec = Decryptor(priv, layout, workers=0)
    assert np.array_equal(dec.decrypt_code_sums(v), dec.decrypt_code_sums(v2))
    assert pool.handed_out + len(pool) == pool.deposited


def test_pool_refuses_inconsistent_accounting(keypair) -> None:
    pub, _ = keypair
    pool = ObfuscatorPool(pub, workers=0)
    pool.fill(2)
    v = pool.take()
    pool._items.append(v)  # simulate a bug that would put a used value back
    with pytest.raises(ObfuscatorReuseError):
        pool.take_many(2)


def test_worker_processes_fill_encrypt_and_decrypt(keypair, layout) -> None:
    """Real background processes (spawn): pool fill, fresh encryption, CRT decryption."""
    pub, priv = keypair
    codes = np.arange(1000) % 256
    with ObfuscatorPool(pub, workers=1, batch_size=8, nice=5) as pool, \
            Decryptor(priv, layout, workers=2) as dec:
        pool.fill(20)
        assert pool.wait(timeout=60)
        assert len(pool) == 20
        enc = Encryptor(pub, layout, pool=pool)  # shares the pool's worker
        v = enc.encrypt_codes(codes)  # 36 ciphertexts: 20 pooled + 16 fresh in the worker
        assert (enc.last_pooled, enc.last_fresh) == (20, 16)
        assert np.array_equal(dec.decrypt_code_sums(v), codes)


def test_dropped_decryptor_stops_its_processes(keypair, layout) -> None:
    import gc
    import time

    import psutil

    _, priv = keypair
    dec = Decryptor(priv, layout, workers=1)
    dec.warm_up()
    pids = list(dec.worker_pool.executor()._processes)  # the pool's own workers
    spawned = [psutil.Process(pid) for pid in pids]
    assert spawned
    del dec
    gc.collect()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(c.is_running() and c.status() != "zombie"
                                              for c in spawned):
        time.sleep(0.1)
    assert not any(c.is_running() and c.status() != "zombie" for c in spawned)

"""The real thing: a 2048-bit key, worker processes, wire format, Fernet at rest."""

from __future__ import annotations

import numpy as np
import pytest

from ffa_lora.crypto import (
    Decryptor,
    Encryptor,
    ObfuscatorPool,
    PackingLayout,
    Quantizer,
    RunningSum,
    encode_header,
    generate_keypair,
    iter_chunks,
    load_private_key,
    new_fernet_key,
    save_private_key,
    vector_from_chunks,
)


@pytest.mark.slow
def test_end_to_end_2048(tmp_path) -> None:
    pub, priv = generate_keypair(bits=2048)
    assert pub.bits == 2048
    fkey = new_fernet_key()
    save_private_key(tmp_path / "k", priv, fernet_key=fkey)
    priv = load_private_key(tmp_path / "k", fernet_key=fkey)
    layout = PackingLayout.derive(key_bits=2048, bits=8)
    assert layout.bytes_per_value <= 4.6
    q = Quantizer(clip=0.1, bits=8)
    rng = np.random.default_rng(7)
    size, weights = 3000, [1, 3, 2]
    xs = [rng.normal(0, 0.05, size).astype(np.float32) for _ in weights]
    codes = [q.quantize(x, rng=rng) for x in xs]
    acc = RunningSum(pub, layout, size)
    with ObfuscatorPool(pub, workers=2) as pool, Decryptor(priv, layout, workers=2) as dec:
        pool.fill(layout.num_ciphertexts(size))
        pool.wait(timeout=120)
        enc = Encryptor(pub, layout, pool=pool)
        for c, w in zip(codes, weights):
            v = enc.encrypt_codes(c)
            back = vector_from_chunks(encode_header(v), iter_chunks(v, max_chunk_bytes=4096),
                                      public_key=pub)
            acc.add_vector(back, weight=w)
        sums = dec.decrypt_code_sums(acc.result())
    assert np.array_equal(sums, sum(w * c.astype(np.int64) for c, w in zip(codes, weights)))
    mean = q.dequantize_mean(sums, float(sum(weights)))
    exact = sum(w * np.clip(x, -0.1, 0.1) for x, w in zip(xs, weights)) / sum(weights)
    assert np.abs(mean - exact).max() <= q.step


@pytest.mark.slow
def test_threshold_2048_ceremony_and_decryption() -> None:
    from ffa_lora.crypto.threshold import Combiner, ShareDecryptor, deal

    cer = deal(holders=["coordinator", "holder-1", "holder-2"], threshold=2, bits=2048,
               workers=2)
    pub = cer.public_key
    assert pub.bits == 2048 and all(s.secret < pub.nsquare for s in cer.shares)
    layout = PackingLayout.derive(key_bits=2048, bits=8)
    rng = np.random.default_rng(3)
    codes = [rng.integers(0, 256, 500) for _ in range(3)]
    acc = RunningSum(pub, layout, 500)
    enc = Encryptor(pub, layout, workers=0)
    for c in codes:
        acc.add_vector(enc.encrypt_codes(c))
    vec = acc.result()
    shares = []
    for ks in cer.shares[1:]:
        with ShareDecryptor(ks, workers=2) as sd:
            shares.append(sd.decryption_share(vec, context=b"slow"))
    with Combiner(cer.params, layout, workers=2) as comb:
        sums = comb.decrypt_code_sums(vec, shares, context=b"slow")
    assert np.array_equal(sums, sum(codes))

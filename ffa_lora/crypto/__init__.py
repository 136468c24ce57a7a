"""Secure-sum core: Paillier keys, quantization, packing, packed encryption, homomorphic
sums, CRT decryption and the binary wire format.

Typical round::

    pub, priv = generate_keypair(bits=2048)                      # coordinator, once
    layout = PackingLayout.derive(key_bits=2048, bits=8)          # in the round plan
    q = Quantizer(clip=C, bits=8)
    codes = q.quantize(update, rng=rng)                           # client
    vec = Encryptor(pub, layout, pool=pool).encrypt_codes(codes)  # client
    acc = RunningSum(pub, layout, n); acc.add_vector(vec)         # edge (no key)
    sums = Decryptor(priv, layout).decrypt_code_sums(acc.result())  # coordinator
    mean = q.dequantize_mean(sums, weight_totals)

With a threshold key (:mod:`ffa_lora.crypto.threshold`) no party holds the whole private
key: t key holders each compute a proven decryption share and a ``Combiner`` turns them into
the same plaintexts; :mod:`ffa_lora.crypto.signing` signs contributions, partial sums and
the key announcement, and :mod:`ffa_lora.crypto.evidence` is what a key holder checks first.
"""

from ffa_lora.crypto.codec import ciphertexts_from_bytes, ciphertexts_to_bytes
from ffa_lora.crypto.keys import (
    PrivateKey,
    PublicKey,
    generate_keypair,
    load_fernet_key,
    load_private_key,
    new_fernet_key,
    save_private_key,
)
from ffa_lora.crypto.packing import PackingLayout
from ffa_lora.crypto.paillier import Decryptor, Encryptor, ObfuscatorPool
from ffa_lora.crypto.quantize import QuantizationError, Quantizer
from ffa_lora.crypto.vector import CiphertextVector, RunningSum, add, scale
from ffa_lora.crypto.wire import (
    VectorHeader,
    decode_header,
    encode_header,
    iter_chunks,
    read_header,
    vector_from_chunks,
)

__all__ = [
    "CiphertextVector",
    "Decryptor",
    "Encryptor",
    "ObfuscatorPool",
    "PackingLayout",
    "PrivateKey",
    "PublicKey",
    "QuantizationError",
    "Quantizer",
    "RunningSum",
    "VectorHeader",
    "add",
    "ciphertexts_from_bytes",
    "ciphertexts_to_bytes",
    "decode_header",
    "encode_header",
    "generate_keypair",
    "iter_chunks",
    "load_fernet_key",
    "load_private_key",
    "new_fernet_key",
    "read_header",
    "save_private_key",
    "scale",
    "vector_from_chunks",
]

"""t-of-n threshold Paillier decryption (Shoup; Damgård–Jurik with s = 1), dealer-based.

The public key is the ordinary :class:`~ffa_lora.crypto.keys.PublicKey` (g = n + 1):
clients encrypt, pack and edges add exactly as with a whole key. Decryption needs t of the
n key holders::

    ceremony = deal(holders=["coordinator", "edge-1", "edge-2"], threshold=2)  # offline, once
    save_key_share(path, ceremony.share_for("edge-1"), fernet_key=edge1_fernet)  # per holder
    # each holder, after checking that this vector may be decrypted:
    share = ShareDecryptor(key_share).decryption_share(vec, context=round_context)
    # anyone with the public parameters (the coordinator):
    sums = Combiner(params, layout).decrypt_code_sums(vec, [share_a, share_b],
                                                      context=round_context)

The dealer (:func:`deal`) sees the whole key while it runs and forgets it when its process
exits; see :mod:`~ffa_lora.crypto.threshold.ceremony` for what that trust means.
"""

from ffa_lora.crypto.threshold.ceremony import (
    MAX_HOLDERS,
    Ceremony,
    KeyShare,
    ThresholdParams,
    deal,
    load_key_share,
    save_key_share,
)
from ffa_lora.crypto.threshold.decrypt import (
    Combiner,
    DecryptionShare,
    ShareDecryptor,
    combine,
    decryption_share,
    lagrange_coefficients,
    verify_decryption_share,
)
from ffa_lora.crypto.threshold.proof import ShareProof

__all__ = [
    "MAX_HOLDERS",
    "Ceremony",
    "Combiner",
    "DecryptionShare",
    "KeyShare",
    "ShareDecryptor",
    "ShareProof",
    "ThresholdParams",
    "combine",
    "deal",
    "decryption_share",
    "lagrange_coefficients",
    "load_key_share",
    "save_key_share",
    "verify_decryption_share",
]

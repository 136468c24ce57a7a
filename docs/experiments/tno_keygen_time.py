"""Evaluation only, not a dependency: time TNO's distributed Paillier key generation.

Needs its own venv with ``tno.mpc.protocols.distributed_keygen[gmpy]==4.3.0``,
``tno.mpc.communication==4.12.0``, ``tno.mpc.encryption_schemes.utils<0.16``, ``phe``,
``cryptography`` and ``numpy``. Runs all parties in one process over HTTP on 127.0.0.1,
then checks that one ffa-lora packed ciphertext under the generated n decrypts and unpacks
exactly, and whether the shares combine without the last party. Prints one JSON line.

    python docs/experiments/tno_keygen_time.py BITS [PARTIES] [CORRUPTION_THRESHOLD]
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
import warnings

import numpy as np
from tno.mpc.communication import Pool
from tno.mpc.encryption_schemes.paillier import PaillierCiphertext
from tno.mpc.protocols.distributed_keygen import DistributedPaillier

sys.path.insert(0, ".")  # run from the repository root
from ffa_lora.crypto import Encryptor, PackingLayout, PublicKey


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pool(me: int, ports: list[int]) -> Pool:
    pool = Pool()
    pool.add_http_server(ports[me], addr="127.0.0.1")
    for j, port in enumerate(ports):
        if j != me:
            pool.add_http_client(f"client{port}", "127.0.0.1", port)
    return pool


async def _run(bits: int, parties: int, t: int) -> dict[str, object]:
    ports = [_free_port() for _ in range(parties)]
    pools = [_pool(i, ports) for i in range(parties)]
    t0 = time.perf_counter()
    schemes = await asyncio.gather(*[DistributedPaillier.from_security_parameter(
        p, t, bits, 2000, 40, 40, distributed=False) for p in pools])
    out: dict[str, object] = {"bits": bits, "parties": parties, "corruption_threshold": t,
                              "keygen_s": round(time.perf_counter() - t0, 1)}
    n = schemes[0].public_key.n
    out.update(n_bits=n.bit_length(), g_is_n_plus_1=schemes[0].public_key.g == n + 1,
               share_degree=schemes[0].secret_key.share.degree)
    pub = PublicKey(n)
    layout = PackingLayout.derive(key_bits=pub.bits, bits=8)
    codes = np.arange(layout.slots_per_ciphertext, dtype=np.int64) % 256
    vec = Encryptor(pub, layout, workers=0).encrypt_codes(codes)
    cts = [PaillierCiphertext(int(vec.values[0]), s) for s in schemes]
    plains = await asyncio.gather(*[s._decrypt_raw(c) for s, c in zip(schemes, cts)])
    out["packed_interop_ok"] = bool((layout.unpack([int(plains[0].value)], len(codes))
                                     == codes).all())
    parts = {s.index: s.secret_key.partial_decrypt(c) for s, c in zip(schemes, cts)}
    try:
        schemes[0].secret_key.decrypt({k: v for k, v in parts.items() if k != max(parts)})
        out["decrypt_without_last"] = "ok"
    except (KeyError, ValueError) as exc:
        out["decrypt_without_last"] = f"{type(exc).__name__}: {exc}"[:120]
    for p in pools:
        await p.shutdown()
    return out


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    args = [int(a) for a in sys.argv[1:]] + [2048, 3, 1][len(sys.argv) - 1 :]
    print(json.dumps(asyncio.run(_run(*args[:3]))), flush=True)

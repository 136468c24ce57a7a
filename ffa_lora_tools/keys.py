"""``ffa-lora keys ceremony``: deal the federation's threshold key.

The dealer (:func:`ffa_lora.crypto.threshold.deal`) makes a t-of-n threshold Paillier key in a
child process that exits afterwards: the primes and the whole secret exponent never reach this
process and are never written. What comes out is

* ``threshold.params`` — the public parameters (public key, t, holders, verification keys),
  which the coordinator loads and signs for its clients;
* one ``<role>-<id>.share`` per holder, Fernet-sealed with that holder's own key (given with
  ``--fernet-key HOLDER=FILE``, or made here as ``<role>-<id>.fernet``, mode 0600);
* the public key's fingerprint, to pin in every client's config (``client.key_fingerprint``).

Whoever runs the ceremony sees every share while it runs (trusted once, like whoever holds the
CA key): run it offline, hand each holder its share and Fernet key, and delete the copies.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ffa_lora.crypto import load_fernet_key, new_fernet_key
from ffa_lora.crypto.keys import ALLOWED_KEY_BITS
from ffa_lora.crypto.threshold import deal, save_key_share
from ffa_lora.errors import ConfigError
from ffa_lora.files import atomic_write

__all__ = ["PARAMS_NAME", "CeremonyFiles", "holder_file_stem", "main", "run_ceremony"]

PARAMS_NAME = "threshold.params"


def holder_file_stem(holder: str) -> str:
    """``keyholder/keyholder-1`` -> ``keyholder-keyholder-1`` (the holder's file names)."""
    return holder.replace("/", "-")


@dataclass(frozen=True)
class CeremonyFiles:
    """Where the ceremony wrote what."""

    params: Path
    shares: dict[str, Path]
    fernet_keys: dict[str, Path]
    public_key_fingerprint: str
    params_fingerprint: str
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {"params": str(self.params), "shares": {h: str(p) for h, p in self.shares.items()},
                "fernet_keys": {h: str(p) for h, p in self.fernet_keys.items()},
                "public_key_fingerprint": self.public_key_fingerprint,
                "params_fingerprint": self.params_fingerprint, "seconds": round(self.seconds, 2)}


def _check(holders: list[str], threshold: int, bits: int, test_only: bool) -> None:
    if threshold < 2:
        raise ConfigError(f"--threshold (t) is {threshold}: t must be at least 2, or a single holder "
                          "could decrypt alone")
    if len(holders) < threshold:
        raise ConfigError(f"--holder: {len(holders)} holder(s) for threshold t={threshold}; name at least t")
    for h in holders:
        role, _, ident = h.partition("/")
        if role not in ("coordinator", "keyholder") or not ident:
            raise ConfigError(f"--holder {h!r} must be coordinator/<id> or keyholder/<id> (the holder's "
                              "certificate role and id)")
    if sum(h.startswith("coordinator/") for h in holders) > 1:
        raise ConfigError("--holder: at most one coordinator holds a share")
    if bits < 2048 and not test_only:
        raise ConfigError(f"--bits is {bits}: keys below 2048 bits are for tests only (add --test-only); "
                          f"use one of {ALLOWED_KEY_BITS}")


def run_ceremony(out: Path, *, holders: list[str], threshold: int, bits: int = 2048,
                 fernet_keys: dict[str, Path] | None = None, test_only: bool = False,
                 workers: int | None = None, overwrite: bool = False) -> CeremonyFiles:
    """Deal the key and write the parameters and the sealed shares to ``out``."""
    _check(holders, threshold, bits, test_only)
    given = dict(fernet_keys or {})
    unknown = sorted(set(given) - set(holders))
    if unknown:
        raise ConfigError(f"--fernet-key names {', '.join(unknown)}, which is not a --holder")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params_path = out / PARAMS_NAME
    if params_path.exists() and not overwrite:
        raise ConfigError(f"{params_path} exists; a new ceremony makes a new key (pass --force to replace it, "
                          "then restart every holder with its new share)")
    ceremony = deal(holders=holders, threshold=threshold, bits=bits, test_only=test_only, workers=workers)
    shares, keys = {}, {}
    for holder in holders:
        stem = holder_file_stem(holder)
        key_path = given.get(holder)
        if key_path is None:
            key_path = out / f"{stem}.fernet"
            atomic_write(key_path, new_fernet_key(), mode=0o600)
        keys[holder] = Path(key_path)
        shares[holder] = out / f"{stem}.share"
        save_key_share(shares[holder], ceremony.share_for(holder), fernet_key=load_fernet_key(file=key_path))
    atomic_write(params_path, ceremony.params.to_bytes(), mode=0o644)
    os.sync()
    return CeremonyFiles(params_path, shares, keys, ceremony.public_key.fingerprint,
                         ceremony.params.fingerprint, ceremony.seconds)


def _parse_fernet(values: list[str] | None) -> dict[str, Path]:
    out = {}
    for v in values or []:
        holder, sep, path = v.partition("=")
        if not sep or not path:
            raise ConfigError(f"--fernet-key {v!r} must be HOLDER=FILE, e.g. keyholder/keyholder-1=kh1.fernet")
        out[holder] = Path(path)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ffa-lora keys", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("ceremony", help="deal a t-of-n threshold key: public parameters and sealed shares")
    c.add_argument("--out", required=True, type=Path, help="folder for threshold.params and the shares")
    c.add_argument("--holder", action="append", required=True,
                   help="a holder as role/id (repeat): coordinator/<id> and keyholder/<id>")
    c.add_argument("--threshold", "-t", type=int, default=2, help="shares needed to decrypt (t >= 2)")
    c.add_argument("--bits", type=int, default=2048, help="modulus size (2048 or 3072)")
    c.add_argument("--fernet-key", action="append",
                   help="HOLDER=FILE: seal that holder's share with this Fernet key (default: a new one)")
    c.add_argument("--test-only", action="store_true", help="allow keys below 2048 bits (tests only)")
    c.add_argument("--force", action="store_true", help="replace an existing threshold.params")
    a = p.parse_args(argv)
    files = run_ceremony(a.out, holders=a.holder, threshold=a.threshold, bits=a.bits,
                         fernet_keys=_parse_fernet(a.fernet_key), test_only=a.test_only, overwrite=a.force)
    print(json.dumps(files.to_dict(), indent=2))
    return 0

"""The key ceremony: a dealer makes a t-of-n threshold Paillier key, then forgets it.

Scheme (Shoup 2000, as adapted to Paillier by Damgård and Jurik 2001 with s = 1 and by
Fouque, Poupard and Stern 2000): n = p·q with safe primes p = 2p' + 1, q = 2q' + 1 and
m = p'·q'. The secret exponent d satisfies d ≡ 0 (mod m) and d ≡ 1 (mod n); it is shared
with a random polynomial f of degree t - 1 over Z_{n·m}, f(0) = d, holder i (1-based)
receiving s_i = f(i). With Δ = (number of holders)!, the public verification keys are a
random square v mod n² and v_i = v^(Δ·s_i) mod n².

The public key is the ordinary :class:`~ffa_lora.crypto.keys.PublicKey` (g = n + 1), so
clients encrypt and edges add exactly as before; only decryption changes.

Trust in the dealer: whoever runs :func:`deal` sees p, q and every share while it runs. By
default the ceremony runs in a separate process that exits when it is done, so the primes,
m, d and the polynomial die with it; the shares it returns must then be handed to their
holders (each written Fernet-encrypted with that holder's key, :func:`save_key_share`) and
deleted by the operator. No function here ever returns or stores the whole private key.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import secrets
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import gmpy2

from ffa_lora.crypto.keys import (
    ALLOWED_KEY_BITS,
    PublicKey,
    read_sealed,
    write_sealed,
)
from ffa_lora.crypto.parallel import WorkerPool
from ffa_lora.crypto.threshold.primes import random_safe_prime
from ffa_lora.errors import ConfigError, CryptoError, KeyFileError

__all__ = [
    "MAX_HOLDERS",
    "Ceremony",
    "KeyShare",
    "ThresholdParams",
    "deal",
    "load_key_share",
    "save_key_share",
]

#: Most key holders one key may have (Δ = holders! grows with every holder).
MAX_HOLDERS = 64
_TEST_ONLY_MIN_BITS = 256
_HOLDER_RE = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
_PARAMS_MAGIC = b"FFATP"
_PARAMS_VERSION = 1
_SHARE_FILE_MAGIC = b"FFATS"
_SHARE_PAYLOAD_MAGIC = b"FFASHARE1"


def _int_bytes(x: int) -> bytes:
    x = int(x)
    return x.to_bytes(max(1, (x.bit_length() + 7) // 8), "big")


def _check_holders(holders: Sequence[str]) -> tuple[str, ...]:
    if isinstance(holders, str):
        raise ConfigError("holders must be a list of holder ids, not one string")
    out = tuple(holders)
    for h in out:
        if not isinstance(h, str) or not _HOLDER_RE.fullmatch(h):
            raise ConfigError(
                f"holder id {h!r} is invalid: use 1-128 characters from letters, digits and "
                "'._:/-' (e.g. the holder's certificate identity)"
            )
    if len(set(out)) != len(out):
        raise ConfigError("holder ids must be distinct; each holder gets exactly one share")
    if not 2 <= len(out) <= MAX_HOLDERS:
        raise ConfigError(f"a threshold key needs 2 to {MAX_HOLDERS} holders, got {len(out)}")
    return out


def _check_threshold(threshold: int, holders: int) -> int:
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise ConfigError(f"threshold must be an integer, got {threshold!r}")
    if not 2 <= threshold <= holders:
        raise ConfigError(
            f"threshold t={threshold} must satisfy 2 <= t <= number of holders ({holders}): "
            "t >= 2 so that no single holder can decrypt"
        )
    return threshold


@dataclass(frozen=True, eq=False)
class ThresholdParams:
    """The public side of a threshold key: everything a combiner or verifier needs.

    Attributes:
        public_key: the Paillier public key (g = n + 1) clients encrypt with.
        threshold: t, the number of decryption shares needed.
        holders: holder ids; holder ``holders[i]`` has share index i + 1.
        verification_base: v, a random square mod n².
        verification_keys: v_i = v^(Δ·s_i) mod n², one per holder, in holder order.
    """

    public_key: PublicKey
    threshold: int
    holders: tuple[str, ...]
    verification_base: int
    verification_keys: tuple[int, ...]

    def __post_init__(self) -> None:
        holders = _check_holders(self.holders)
        object.__setattr__(self, "holders", holders)
        _check_threshold(self.threshold, len(holders))
        n2 = int(self.public_key.nsquare)
        keys = tuple(int(x) for x in self.verification_keys)
        if len(keys) != len(holders):
            raise CryptoError(
                f"{len(keys)} verification keys for {len(holders)} holders: one each is needed")
        for x in (int(self.verification_base), *keys):
            if not 0 < x < n2 or math.gcd(x, self.public_key.n) != 1:
                raise CryptoError("a verification key is not a unit mod n²")
        object.__setattr__(self, "verification_base", int(self.verification_base))
        object.__setattr__(self, "verification_keys", keys)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ThresholdParams) and other.to_bytes() == self.to_bytes()

    def __repr__(self) -> str:
        return (f"ThresholdParams(bits={self.public_key.bits}, t={self.threshold}, "
                f"holders={self.holders!r}, fingerprint={self.fingerprint[:16]}…)")

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    @property
    def delta(self) -> int:
        """Δ = (number of holders)!."""
        return math.factorial(len(self.holders))

    def index_of(self, holder: str) -> int:
        """The 1-based share index of ``holder``; :class:`CryptoError` if unknown."""
        try:
            return self.holders.index(holder) + 1
        except ValueError:
            raise CryptoError(f"'{holder}' is not a key holder of this threshold key") from None

    def to_bytes(self) -> bytes:
        """Canonical binary form (what the coordinator signs and what share files embed)::

            magic "FFATP" | version u8 | public key len u16 + PublicKey.to_bytes()
            | t u16 | holders u16 | per holder: id len u8 + utf-8 | v, v_1..v_n fixed width
        """
        return self._encoded

    @cached_property
    def _encoded(self) -> bytes:
        pk = self.public_key.to_bytes()
        width = self.public_key.ciphertext_bytes
        parts = [_PARAMS_MAGIC, struct.pack(">BH", _PARAMS_VERSION, len(pk)), pk,
                 struct.pack(">HH", self.threshold, len(self.holders))]
        for h in self.holders:
            hb = h.encode()
            parts += [struct.pack(">B", len(hb)), hb]
        parts += [x.to_bytes(width, "big")
                  for x in (self.verification_base, *self.verification_keys)]
        return b"".join(parts)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 hex digest of :meth:`to_bytes` (pins the key *and* its holders)."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes) -> ThresholdParams:
        """Parse :meth:`to_bytes`; :class:`CryptoError` naming what is malformed."""
        try:
            return cls._parse(memoryview(data))
        except (struct.error, UnicodeDecodeError, IndexError):
            raise CryptoError("threshold key parameters are truncated or malformed") from None

    @classmethod
    def _parse(cls, buf: memoryview) -> ThresholdParams:
        if bytes(buf[:5]) != _PARAMS_MAGIC:
            raise CryptoError("not serialized threshold key parameters (bad magic)")
        version, pk_len = struct.unpack_from(">BH", buf, 5)
        if version != _PARAMS_VERSION:
            raise CryptoError(f"threshold parameters version {version} is not supported "
                              f"(expected {_PARAMS_VERSION})")
        off = 8
        public_key = PublicKey.from_bytes(bytes(buf[off : off + pk_len]))
        off += pk_len
        t, count = struct.unpack_from(">HH", buf, off)
        off += 4
        holders = []
        for _ in range(count):
            (ln,) = struct.unpack_from(">B", buf, off)
            holders.append(bytes(buf[off + 1 : off + 1 + ln]).decode())
            off += 1 + ln
        width = public_key.ciphertext_bytes
        if len(buf) - off != (count + 1) * width:
            raise CryptoError("threshold key parameters are truncated or padded")
        nums = [int.from_bytes(buf[off + i * width : off + (i + 1) * width], "big")
                for i in range(count + 1)]
        return cls(public_key, t, tuple(holders), nums[0], tuple(nums[1:]))


class KeyShare:
    """One holder's secret share s_i of the decryption exponent, with the public parameters.

    Attributes:
        params: the public :class:`ThresholdParams`.
        index: the 1-based share index.
        holder: the holder id (``params.holders[index - 1]``).
        secret: s_i in [0, n·m); never printed.
    """

    __slots__ = ("holder", "index", "params", "secret")

    def __init__(self, params: ThresholdParams, index: int, secret: int) -> None:
        if isinstance(index, bool) or not 1 <= int(index) <= len(params.holders):
            raise CryptoError(f"share index {index!r} outside 1..{len(params.holders)}")
        secret = gmpy2.mpz(secret)
        if not 0 <= secret < params.public_key.nsquare:
            raise CryptoError("key share is out of range for this key")
        v, n2 = params.verification_base, params.public_key.nsquare
        if gmpy2.powmod(v, params.delta * secret, n2) != params.verification_keys[index - 1]:
            raise CryptoError(
                "key share does not match its verification key: wrong share for these "
                "parameters, or a corrupt share"
            )
        self.params = params
        self.index = int(index)
        self.holder = params.holders[self.index - 1]
        self.secret = secret

    def __repr__(self) -> str:  # never show the secret
        return (f"KeyShare(holder={self.holder!r}, index={self.index}, "
                f"t={self.params.threshold}/{len(self.params.holders)}, "
                f"key={self.params.public_key.fingerprint[:16]}…)")

    def _payload(self) -> bytes:
        pb, sb = self.params.to_bytes(), _int_bytes(int(self.secret))
        return (_SHARE_PAYLOAD_MAGIC + struct.pack(">IH", len(pb), self.index) + pb
                + struct.pack(">H", len(sb)) + sb)

    @classmethod
    def _from_payload(cls, payload: bytes) -> KeyShare:
        m = len(_SHARE_PAYLOAD_MAGIC)
        if payload[:m] != _SHARE_PAYLOAD_MAGIC:
            raise CryptoError("bad share payload magic")
        plen, index = struct.unpack_from(">IH", payload, m)
        off = m + 6
        params = ThresholdParams.from_bytes(payload[off : off + plen])
        off += plen
        (slen,) = struct.unpack_from(">H", payload, off)
        if off + 2 + slen != len(payload):
            raise CryptoError("bad share payload length")
        return cls(params, index, int.from_bytes(payload[off + 2 :], "big"))


@dataclass(frozen=True)
class Ceremony:
    """What :func:`deal` returns: public parameters and one share per holder — never the
    primes, m, d or the polynomial.

    Attributes:
        params: the public parameters (sign them and publish them).
        shares: one :class:`KeyShare` per holder, in holder order; hand each to its holder.
        seconds: wall time of the ceremony (prime search included).
    """

    params: ThresholdParams
    shares: tuple[KeyShare, ...] = field(repr=False)
    seconds: float

    @property
    def public_key(self) -> PublicKey:
        """The federation's Paillier public key."""
        return self.params.public_key

    def share_for(self, holder: str) -> KeyShare:
        """The share of ``holder``."""
        return self.shares[self.params.index_of(holder) - 1]


def _check_bits(bits: int, test_only: bool) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ConfigError(f"key bits must be an integer, got {bits!r}")
    if bits not in ALLOWED_KEY_BITS and not (test_only and bits >= _TEST_ONLY_MIN_BITS):
        raise ConfigError(
            f"key bits must be one of {ALLOWED_KEY_BITS}, got {bits}; "
            "smaller keys are for unit tests only (test_only=True)"
        )
    if bits % 2:
        raise ConfigError(f"key bits must be even, got {bits}")
    return bits


def _share_from_primes(p: int, q: int, holders: tuple[str, ...], threshold: int
                       ) -> tuple[ThresholdParams, list[int]]:
    """Deal shares for n = p·q (safe primes); returns the public parameters and the s_i.

    Only this function ever sees m and d; they go out of scope when it returns.
    """
    n = p * q
    m = ((p - 1) // 2) * ((q - 1) // 2)
    nm = n * m
    d = m * pow(m, -1, n) % nm  # d ≡ 0 (mod m), d ≡ 1 (mod n)
    coefficients = [d] + [secrets.randbelow(nm) for _ in range(threshold - 1)]
    secrets_ = []
    for i in range(1, len(holders) + 1):
        acc = 0
        for a in reversed(coefficients):  # Horner
            acc = (acc * i + a) % nm
        secrets_.append(acc)
    del d, coefficients
    public_key = PublicKey(n)
    n2 = public_key.nsquare
    while True:
        r = secrets.randbelow(n * n - 2) + 2
        if math.gcd(r, n) == 1:
            break
    v = gmpy2.powmod(r, 2, n2)
    delta = math.factorial(len(holders))
    keys = tuple(int(gmpy2.powmod(v, delta * s, n2)) for s in secrets_)
    params = ThresholdParams(public_key, threshold, holders, int(v), keys)
    return params, secrets_


def _ceremony_blob(bits: int, holders: tuple[str, ...], threshold: int,
                   workers: int | None) -> tuple[bytes, list[int]]:
    """Prime search and dealing; runs in its own process by default."""
    with WorkerPool(workers=workers) as pool:
        p = random_safe_prime(bits // 2, pool=pool)
        q = random_safe_prime(bits // 2, pool=pool, exclude=frozenset({p}))
    params, shares = _share_from_primes(p, q, holders, threshold)
    del p, q
    return params.to_bytes(), shares


def deal(*, holders: Sequence[str], threshold: int, bits: int = 2048, test_only: bool = False,
         workers: int | None = None, isolate: bool = True) -> Ceremony:
    """Run the key ceremony: safe primes, shares, verification keys.

    Args:
        holders: distinct holder ids (e.g. certificate identities), 2..64 of them.
        threshold: t, shares needed to decrypt; 2 <= t <= len(holders).
        bits: modulus size, 2048 (default) or 3072.
        test_only: allow smaller keys (>= 256 bits) for unit tests. Never in production.
        workers: processes for the prime search (None: all cores; 0: in this process).
        isolate: run the ceremony in a child process that exits afterwards, so the primes
            and d never exist in the caller's memory (default). False runs it here.

    Raises:
        ConfigError: a parameter is out of range (bits, threshold, holders).
    """
    bits = _check_bits(bits, test_only)
    holder_ids = _check_holders(holders)
    threshold = _check_threshold(threshold, len(holder_ids))
    started = time.perf_counter()
    if isolate:
        with WorkerPool(workers=1) as dealer:
            blob, secrets_ = dealer.submit(_ceremony_blob, bits, holder_ids, threshold,
                                           workers).result()
    else:
        blob, secrets_ = _ceremony_blob(bits, holder_ids, threshold, workers)
    params = ThresholdParams.from_bytes(blob)
    shares = tuple(KeyShare(params, i + 1, s) for i, s in enumerate(secrets_))
    return Ceremony(params, shares, time.perf_counter() - started)


def save_key_share(path: str | os.PathLike[str], share: KeyShare, *,
                   fernet_key: bytes) -> None:
    """Write one holder's share Fernet-encrypted (same container as the private key, its own
    magic), atomically, mode 0600. Use a Fernet key of that holder's own."""
    write_sealed(path, share._payload(), fernet_key=fernet_key, magic=_SHARE_FILE_MAGIC)


def load_key_share(path: str | os.PathLike[str], *, fernet_key: bytes,
                   expected_holder: str | None = None) -> KeyShare:
    """Read a share written by :func:`save_key_share` and check it against its verification key.

    Args:
        expected_holder: when given, refuse a share that belongs to another holder.

    Raises:
        KeyFileError: missing, unreadable, corrupt, wrong Fernet key, inconsistent share, or
            another holder's share.
    """
    where = f"key share file '{Path(path)}'"
    payload = read_sealed(path, fernet_key=fernet_key, magic=_SHARE_FILE_MAGIC,
                          what="key share")
    try:
        share = KeyShare._from_payload(payload)
    except (CryptoError, struct.error, ValueError):
        raise KeyFileError(f"{where} is corrupt: the decrypted share is malformed or does not "
                           "match its verification key") from None
    if expected_holder is not None and share.holder != expected_holder:
        raise KeyFileError(
            f"{where} holds the share of '{share.holder}', not of '{expected_holder}': "
            "each holder must load its own share"
        )
    return share

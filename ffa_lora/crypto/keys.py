"""Paillier key pairs: generation with ``phe``, public-key serialization with a fingerprint,
and the private key encrypted at rest with Fernet.

The public key travels (coordinator → edges → clients) as :meth:`PublicKey.to_bytes`; every
ciphertext vector carries the key's fingerprint (sha256 of n) so that a vector made under
another key is refused on entry. The private key never leaves the coordinator; on disk it is
a small binary container around a Fernet token::

    magic "FFAPK" | version u8 | token length u32 | sha256(token) 32 B | token

The checksum lets :func:`load_private_key` tell a corrupt or truncated file from a wrong
Fernet key (Fernet alone reports both as "invalid token"). Threshold key shares use the same
container with their own magic (:func:`write_sealed` / :func:`read_sealed`).
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import gmpy2
from cryptography.fernet import Fernet, InvalidToken
from phe import paillier

from ffa_lora.crypto.parallel import crt_decrypt
from ffa_lora.errors import ConfigError, CryptoError, KeyFileError
from ffa_lora.files import atomic_write

__all__ = [
    "ALLOWED_KEY_BITS",
    "PrivateKey",
    "PublicKey",
    "generate_keypair",
    "load_fernet_key",
    "load_private_key",
    "new_fernet_key",
    "read_sealed",
    "save_private_key",
    "write_sealed",
]

#: Key sizes accepted in production. Smaller sizes exist only for unit tests (``test_only``).
ALLOWED_KEY_BITS = (2048, 3072)
_TEST_ONLY_MIN_BITS = 256

_PUB_MAGIC = b"FFAPUB"
_PUB_VERSION = 1
_PRIV_MAGIC = b"FFAPK"
_PRIV_VERSION = 1
_PRIV_HEADER = struct.Struct(">5sBI32s")  # magic, version, token length, sha256(token)
_PRIV_PAYLOAD_MAGIC = b"FFAPRIV1"


def _int_to_bytes(x: int) -> bytes:
    return int(x).to_bytes(max(1, (int(x).bit_length() + 7) // 8), "big")


def _fingerprint(n: int) -> str:
    return hashlib.sha256(_int_to_bytes(n)).hexdigest()


@dataclass(frozen=True, eq=False)
class PublicKey:
    """A Paillier public key (g = n + 1) with its fingerprint.

    Attributes:
        n: the modulus.
        bits: bit length of ``n`` (2048 or 3072; smaller only in tests).
        fingerprint: sha256 hex digest of ``n`` as minimal big-endian bytes.
    """

    n: int
    bits: int = field(init=False)
    fingerprint: str = field(init=False)
    nsquare: gmpy2.mpz = field(init=False, repr=False)
    n_mpz: gmpy2.mpz = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = int(self.n)
        if n < 3 or n % 2 == 0:
            raise CryptoError("public key modulus n must be an odd integer > 2")
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "bits", n.bit_length())
        object.__setattr__(self, "fingerprint", _fingerprint(n))
        object.__setattr__(self, "n_mpz", gmpy2.mpz(n))
        object.__setattr__(self, "nsquare", gmpy2.mpz(n) * gmpy2.mpz(n))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.n == self.n

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    @property
    def ciphertext_bytes(self) -> int:
        """Fixed width of one ciphertext on the wire: 2·bits/8 bytes."""
        return (2 * self.bits + 7) // 8

    @property
    def phe_key(self) -> paillier.PaillierPublicKey:
        """The equivalent ``phe`` public key (for the naive baseline and interop)."""
        return paillier.PaillierPublicKey(self.n)

    @classmethod
    def from_phe(cls, key: paillier.PaillierPublicKey) -> PublicKey:
        """Wrap a ``phe`` public key."""
        return cls(int(key.n))

    def to_bytes(self) -> bytes:
        """Binary form: magic, version u8, bits u16, n as ceil(bits/8) big-endian bytes."""
        width = (self.bits + 7) // 8
        return _PUB_MAGIC + struct.pack(">BH", _PUB_VERSION, self.bits) + self.n.to_bytes(
            width, "big"
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKey:
        """Parse :meth:`to_bytes` output; :class:`CryptoError` if malformed."""
        head = len(_PUB_MAGIC) + 3
        if len(data) < head or data[: len(_PUB_MAGIC)] != _PUB_MAGIC:
            raise CryptoError("not a serialized public key (bad magic or too short)")
        version, bits = struct.unpack(">BH", data[len(_PUB_MAGIC) : head])
        if version != _PUB_VERSION:
            raise CryptoError(
                f"public key format version {version} is not supported (expected {_PUB_VERSION})"
            )
        body = data[head:]
        if len(body) != (bits + 7) // 8:
            raise CryptoError(
                f"public key is truncated or padded: {len(body)} modulus bytes for {bits} bits"
            )
        key = cls(int.from_bytes(body, "big"))
        if key.bits != bits:
            raise CryptoError("public key header bit length does not match the modulus")
        return key


class PrivateKey:
    """A Paillier private key: the primes p < q and the CRT precomputation.

    Attributes:
        public_key: the matching :class:`PublicKey`.
        p, q: the primes (p < q), as gmpy2 integers.
        psquare, qsquare: p², q².
        hp, hq: h(p) = L_p(g^(p-1) mod p²)^-1 mod p, same for q.
        q_inverse: q^-1 mod p (for recombination by CRT).
    """

    __slots__ = ("hp", "hq", "p", "psquare", "public_key", "q", "q_inverse", "qsquare")

    def __init__(self, public_key: PublicKey, p: int, q: int) -> None:
        p_, q_ = sorted((gmpy2.mpz(p), gmpy2.mpz(q)))
        if p_ == q_ or p_ * q_ != public_key.n:
            raise CryptoError("private key primes do not match the public key modulus")
        self.public_key = public_key
        self.p, self.q = p_, q_
        self.psquare, self.qsquare = p_ * p_, q_ * q_
        g = public_key.n_mpz + 1
        self.hp = gmpy2.invert((gmpy2.powmod(g, p_ - 1, self.psquare) - 1) // p_, p_)
        self.hq = gmpy2.invert((gmpy2.powmod(g, q_ - 1, self.qsquare) - 1) // q_, q_)
        self.q_inverse = gmpy2.invert(q_, p_)

    def __repr__(self) -> str:  # never show the primes
        return f"PrivateKey(bits={self.public_key.bits}, fingerprint={self.public_key.fingerprint[:16]}…)"

    @property
    def phe_key(self) -> paillier.PaillierPrivateKey:
        """The equivalent ``phe`` private key (for the naive baseline and interop)."""
        return paillier.PaillierPrivateKey(self.public_key.phe_key, int(self.p), int(self.q))

    @classmethod
    def from_phe(cls, key: paillier.PaillierPrivateKey) -> PrivateKey:
        """Wrap a ``phe`` private key."""
        return cls(PublicKey.from_phe(key.public_key), int(key.p), int(key.q))

    def raw_decrypt(self, ciphertext: int) -> int:
        """Decrypt one ciphertext with CRT (single value; bulk work goes through Decryptor)."""
        return int(crt_decrypt(gmpy2.mpz(ciphertext), self.p, self.q, self.psquare,
                               self.qsquare, self.hp, self.hq, self.q_inverse))

    def _payload(self) -> bytes:
        pb, qb = _int_to_bytes(int(self.p)), _int_to_bytes(int(self.q))
        return _PRIV_PAYLOAD_MAGIC + struct.pack(">H", len(pb)) + pb + struct.pack(">H", len(qb)) + qb


def generate_keypair(*, bits: int = 2048, test_only: bool = False) -> tuple[PublicKey, PrivateKey]:
    """Generate a Paillier key pair with ``phe.generate_paillier_keypair``.

    Args:
        bits: modulus size, 2048 (default) or 3072.
        test_only: allow smaller keys (≥ 256 bits) for unit tests. Never use in production.
    """
    bits = int(bits)
    if bits not in ALLOWED_KEY_BITS and not (test_only and bits >= _TEST_ONLY_MIN_BITS):
        raise ConfigError(
            f"key bits must be one of {ALLOWED_KEY_BITS}, got {bits}; "
            "smaller keys are for unit tests only (test_only=True)"
        )
    if bits % 2:
        raise ConfigError(f"key bits must be even, got {bits}")
    pub, priv = paillier.generate_paillier_keypair(n_length=bits)
    public_key = PublicKey.from_phe(pub)
    return public_key, PrivateKey(public_key, int(priv.p), int(priv.q))


def new_fernet_key() -> bytes:
    """A fresh Fernet key (url-safe base64, 32 random bytes) for encrypting the private key."""
    return Fernet.generate_key()


def load_fernet_key(*, file: str | os.PathLike[str] | None = None,
                    env_value: str | None = None) -> bytes:
    """Read the Fernet key from a file or from an environment variable's value.

    The core never reads the environment: the caller passes ``os.environ.get(NAME)`` as
    ``env_value``. Exactly one source must be given.

    Raises:
        ConfigError: no source or both sources given.
        KeyFileError: the file is missing/unreadable, or the key is not a valid Fernet key.
    """
    if (file is None) == (env_value is None):
        raise ConfigError(
            "give exactly one Fernet key source: a key file path or the environment "
            "variable's value (got " + ("both" if file is not None else "neither") + ")"
        )
    if file is not None:
        path = Path(file)
        source = f"Fernet key file '{path}'"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise KeyFileError(f"{source} does not exist; create one with new_fernet_key()") from None
        except OSError as exc:
            raise KeyFileError(f"{source} cannot be read: {exc.strerror}") from None
    else:
        assert env_value is not None
        source = "Fernet key from the environment variable"
        raw = env_value.encode("ascii", errors="replace")
    key = raw.strip()
    try:
        Fernet(key)
    except (ValueError, TypeError):
        raise KeyFileError(
            f"{source} is not a valid Fernet key (need 32 url-safe base64-encoded bytes, "
            "as made by new_fernet_key())"
        ) from None
    return key


def save_private_key(path: str | os.PathLike[str], key: PrivateKey, *, fernet_key: bytes) -> None:
    """Write the private key encrypted with Fernet, atomically (temp file, fsync, rename).

    The file is created with mode 0600.
    """
    write_sealed(path, key._payload(), fernet_key=fernet_key, magic=_PRIV_MAGIC)


def load_private_key(path: str | os.PathLike[str], *, fernet_key: bytes) -> PrivateKey:
    """Read and decrypt a private key written by :func:`save_private_key`.

    Raises:
        KeyFileError: naming the file and saying what is wrong: missing, unreadable, not a key
            file, truncated, corrupt (checksum or content), or wrong Fernet key.
    """
    where = f"private key file '{Path(path)}'"
    payload = read_sealed(path, fernet_key=fernet_key, magic=_PRIV_MAGIC, what="private key")
    try:
        return _parse_payload(payload)
    except (CryptoError, struct.error, ValueError, ZeroDivisionError):
        raise KeyFileError(f"{where} is corrupt: the decrypted key material is malformed") from None


def write_sealed(path: str | os.PathLike[str], payload: bytes, *, fernet_key: bytes,
                 magic: bytes) -> None:
    """Write ``payload`` Fernet-encrypted in the key-file container, atomically, mode 0600.

    The container is ``magic (5 B) | version u8 | token length u32 | sha256(token) | token``;
    :func:`read_sealed` reads it back. Private keys and threshold key shares both use it,
    each with its own magic.
    """
    path = Path(path)
    if len(magic) != len(_PRIV_MAGIC):
        raise ValueError(f"sealed-file magic must be {len(_PRIV_MAGIC)} bytes")
    try:
        fernet = Fernet(fernet_key)
    except (ValueError, TypeError):
        raise KeyFileError(f"cannot write '{path}': the Fernet key is not valid") from None
    token = fernet.encrypt(payload)
    blob = _PRIV_HEADER.pack(magic, _PRIV_VERSION, len(token),
                             hashlib.sha256(token).digest()) + token
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, blob, mode=0o600)


def read_sealed(path: str | os.PathLike[str], *, fernet_key: bytes, magic: bytes,
                what: str) -> bytes:
    """Read and decrypt a container written by :func:`write_sealed` with the same ``magic``.

    Args:
        what: what the file holds, for messages (e.g. "private key", "key share").

    Raises:
        KeyFileError: naming the file and saying what is wrong: missing, unreadable, not such
            a file, truncated, corrupt (checksum), or wrong Fernet key.
    """
    path = Path(path)
    where = f"{what} file '{path}'"
    kind = f"an FFA-LoRA {what} file"
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{where} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"{where} cannot be read: {exc.strerror}") from None
    if len(blob) < _PRIV_HEADER.size:
        if blob and not magic.startswith(blob[: len(magic)]):
            raise KeyFileError(f"{where} is not {kind} (bad magic)")
        raise KeyFileError(
            f"{where} is truncated: {len(blob)} bytes, shorter than the {_PRIV_HEADER.size}-byte header"
        )
    found, version, length, digest = _PRIV_HEADER.unpack_from(blob)
    if found != magic:
        raise KeyFileError(f"{where} is not {kind} (bad magic)")
    if version != _PRIV_VERSION:
        raise KeyFileError(f"{where} has format version {version}; this build reads {_PRIV_VERSION}")
    token = blob[_PRIV_HEADER.size :]
    if len(token) < length:
        raise KeyFileError(f"{where} is truncated: {len(token)} of {length} token bytes present")
    if len(token) > length:
        raise KeyFileError(f"{where} is corrupt: {len(token) - length} unexpected trailing bytes")
    if hashlib.sha256(token).digest() != digest:
        raise KeyFileError(f"{where} is corrupt: checksum mismatch")
    try:
        fernet = Fernet(fernet_key)
    except (ValueError, TypeError):
        raise KeyFileError(f"cannot open {where}: the Fernet key given is not a valid key") from None
    try:
        return fernet.decrypt(token)
    except InvalidToken:
        raise KeyFileError(f"cannot decrypt {where}: wrong Fernet key") from None


def _parse_payload(payload: bytes) -> PrivateKey:
    m = len(_PRIV_PAYLOAD_MAGIC)
    if payload[:m] != _PRIV_PAYLOAD_MAGIC:
        raise ValueError("bad payload magic")
    (lp,) = struct.unpack_from(">H", payload, m)
    p = int.from_bytes(payload[m + 2 : m + 2 + lp], "big")
    off = m + 2 + lp
    (lq,) = struct.unpack_from(">H", payload, off)
    q = int.from_bytes(payload[off + 2 : off + 2 + lq], "big")
    if off + 2 + lq != len(payload) or p < 3 or q < 3:
        raise ValueError("bad payload length")
    return PrivateKey(PublicKey(p * q), p, q)

"""The per-site secret and the keys derived from it.

The site secret (at least 256 bits) keys every pseudonym and surrogate, so the same
entity maps to the same token inside a site while tokens of two sites cannot be linked.
It never leaves the site: it is not in any repr, log line, error message, metric or upload,
and the objects holding keys derived from it refuse to be pickled.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from ffa_lora.deid.config import SiteSecretError

MIN_SECRET_BYTES = 32
_LABEL = b"ffa-lora/deid/v1/"


def generate_site_secret() -> bytes:
    """A fresh 256-bit site secret (store it with ``write_site_secret``)."""
    return secrets.token_bytes(MIN_SECRET_BYTES)


def write_site_secret(path: str | Path, secret: bytes | None = None) -> Path:
    """Write ``secret`` (a fresh one by default) as hex to a new file readable by the owner only."""
    data = generate_site_secret() if secret is None else secret
    validate_site_secret(data)
    target = Path(path)
    with open(target, "x", encoding="ascii", opener=_owner_only_opener) as fh:
        fh.write(data.hex() + "\n")
    return target


def _owner_only_opener(path: str, flags: int) -> int:
    import os

    return os.open(path, flags, 0o600)


def load_site_secret(path: str | Path) -> bytes:
    """Read a site secret file: hex text (as ``write_site_secret`` writes it) or raw bytes."""
    target = Path(path)
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        raise SiteSecretError(
            f"site secret file {target} does not exist; create one with "
            "ffa_lora.deid.write_site_secret(path) and keep it at the site"
        ) from None
    except OSError as exc:
        raise SiteSecretError(
            f"cannot read site secret file {target} ({exc.strerror}); check its permissions"
        ) from None
    stripped = raw.strip()
    secret = raw
    if stripped and len(stripped) % 2 == 0:
        try:
            secret = bytes.fromhex(stripped.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            secret = raw
    validate_site_secret(secret)
    return secret


def validate_site_secret(secret: object) -> None:
    """Raise ``SiteSecretError`` unless ``secret`` is bytes of at least 256 bits.

    The message states what is wrong (type, length in bits) but never the value.
    """
    if isinstance(secret, str):
        raise SiteSecretError(
            "the site secret must be bytes, not str; read the secret file in binary mode "
            "or use ffa_lora.deid.load_site_secret(path)"
        )
    if not isinstance(secret, (bytes, bytearray, memoryview)):
        raise SiteSecretError(
            f"the site secret must be bytes, got {type(secret).__name__}; "
            "use ffa_lora.deid.load_site_secret(path)"
        )
    n = len(bytes(secret))
    if n < MIN_SECRET_BYTES:
        raise SiteSecretError(
            f"the site secret has {8 * n} bits; at least {8 * MIN_SECRET_BYTES} bits "
            f"({MIN_SECRET_BYTES} bytes) are required; generate one with "
            "ffa_lora.deid.generate_site_secret()"
        )
    if len(set(bytes(secret))) < 8:
        raise SiteSecretError(
            "the site secret has fewer than 8 distinct byte values, so it is not random; "
            "generate one with ffa_lora.deid.generate_site_secret()"
        )


class SiteKeys:
    """Keys derived from the site secret; the secret itself is not kept.

    Sub-keys are HMAC-SHA256(secret, label), one per purpose, so a leaked pseudonym key
    reveals nothing about surrogate or date-shift keys.
    """

    __slots__ = ("_date_shift", "_pseudonym", "_surrogate")

    def __init__(self, secret: bytes) -> None:
        validate_site_secret(secret)
        key = bytes(secret)
        self._pseudonym = hmac.new(key, _LABEL + b"pseudonym", hashlib.sha256).digest()
        self._surrogate = hmac.new(key, _LABEL + b"surrogate", hashlib.sha256).digest()
        self._date_shift = hmac.new(key, _LABEL + b"date-shift", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "SiteKeys(<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "site keys cannot be pickled; build a Deidentifier in each worker process"
        )

    def pseudonym_digest(self, entity_type: str, normalized: str) -> bytes:
        """HMAC-SHA256 over (type, normalized value) under the pseudonym key."""
        return hmac.new(self._pseudonym, _message(entity_type, normalized), hashlib.sha256).digest()

    def date_shift_days(self, subject: str, max_days: int) -> int:
        """A keyed per-subject offset in ±[1, max_days] days (never 0)."""
        digest = hmac.new(self._date_shift, subject.encode("utf-8"), hashlib.sha256).digest()
        value = int.from_bytes(digest[:8], "big")
        magnitude = 1 + (value >> 1) % max_days
        return magnitude if value & 1 else -magnitude

    def surrogate_stream(self, entity_type: str, normalized: str) -> KeyedStream:
        """Deterministic keyed randomness for building a surrogate of one value."""
        return KeyedStream(self._surrogate, _message(entity_type, normalized))


class KeyedStream:
    """An HMAC-SHA256 counter-mode byte stream with small helpers for choices and digits."""

    __slots__ = ("_buf", "_counter", "_key", "_msg")

    def __init__(self, key: bytes, msg: bytes) -> None:
        self._key = key
        self._msg = msg
        self._counter = 0
        self._buf = b""

    def __repr__(self) -> str:
        return "KeyedStream(<redacted>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("keyed streams cannot be pickled")

    def _bytes(self) -> Iterator[int]:
        while True:
            if not self._buf:
                block = self._counter.to_bytes(8, "big")
                self._buf = hmac.new(self._key, self._msg + block, hashlib.sha256).digest()
                self._counter += 1
            b, self._buf = self._buf[0], self._buf[1:]
            yield b

    def below(self, n: int) -> int:
        """A uniform integer in [0, n) (rejection sampling, no modulo bias)."""
        if n <= 0:
            raise ValueError("n must be positive")
        nbytes = max(1, (n - 1).bit_length() // 8 + 1)
        limit = (256**nbytes // n) * n
        gen = self._bytes()
        while True:
            value = int.from_bytes(bytes(next(gen) for _ in range(nbytes)), "big")
            if value < limit:
                return value % n

    def digits(self, count: int) -> str:
        """``count`` keyed decimal digits."""
        return "".join(str(self.below(10)) for _ in range(count))

    def choice(self, options: tuple[str, ...] | list[str] | str) -> str:
        """A keyed choice among ``options``."""
        return options[self.below(len(options))]


def _message(entity_type: str, normalized: str) -> bytes:
    return entity_type.encode("ascii") + b"\x1f" + normalized.encode("utf-8")

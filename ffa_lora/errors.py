"""Error hierarchy of the core.

Every error raised on purpose by the core derives from :class:`FFALoraError`. Subsystems get
one subclass each; the services translate these into gRPC status codes with a safe public
message (``services/common/errors.py``). Messages must never contain plaintext values, key
material or personal data: they say what was wrong and how to fix it.
"""

from __future__ import annotations


class FFALoraError(Exception):
    """Root of all deliberate errors of the FFA-LoRA core."""


class ConfigError(FFALoraError):
    """A configuration value is invalid; the message names the field and the fix."""


class DataError(FFALoraError):
    """A data file is missing, unreadable or has the wrong columns."""


class StateError(FFALoraError):
    """Persistent state (store, checkpoint) is missing, corrupt or from another federation."""


class CryptoError(FFALoraError):
    """Base class of the secure-sum core's errors."""


class KeyFileError(CryptoError):
    """A key file is missing, truncated, corrupt, or the decryption key for it is wrong."""


class FingerprintMismatchError(CryptoError):
    """Ciphertexts were made under a different public key than the one expected."""


class CiphertextError(CryptoError):
    """A ciphertext vector is malformed: value out of range, wrong length, bad encoding."""


class LayoutError(CryptoError):
    """A packing layout is impossible (no slot fits) or does not match the data."""


class ObfuscatorReuseError(CryptoError):
    """An obfuscator r^n would have been used twice (breaks semantic security)."""


class ThresholdError(CryptoError):
    """Threshold decryption cannot proceed: too few or foreign shares, or shares that do not
    combine to a valid plaintext."""


class DecryptionShareError(ThresholdError):
    """One or more decryption shares failed their proof of correctness.

    Attributes:
        holders: ids of the key holders whose shares are wrong (the combiner may retry
            without them).
    """

    def __init__(self, message: str, *, holders: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.holders = tuple(holders)


class SignatureError(CryptoError):
    """A signature, the certificate behind it, or a pinned key fingerprint did not verify."""


class PrivacyError(FFALoraError):
    """Base class of the differential-privacy subsystem's errors."""


class BudgetExhaustedError(PrivacyError):
    """The next round would exceed the configured (epsilon, delta) budget."""


class DeidError(FFALoraError):
    """De-identification failed or is misconfigured."""


class RankError(FFALoraError):
    """A rank assignment or rank reduction is invalid."""


class ProtocolError(FFALoraError):
    """A peer broke the federation protocol (wrong round, duplicate, replay, bad sizes)."""

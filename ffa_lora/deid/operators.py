"""Replacement operators: type tag, keyed pseudonym, format-preserving surrogate.

All three share one interface (``replace(entity_type, value, context)``) and a small
registry. Pseudonyms are HMAC-SHA256 over (type, normalized value) under a key derived from
the site secret, so ``138 1234 5678`` and ``+86 13812345678`` get the same token within a
site and tokens from two sites cannot be linked without both secrets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from ffa_lora.deid import config as C
from ffa_lora.deid import surrogates
from ffa_lora.deid.dates import iso_key
from ffa_lora.deid.keys import SiteKeys
from ffa_lora.deid.normalize import normalize_value

_SEPARATORS = re.compile(r"[\s\-.()（）/]")
_WS = re.compile(r"\s+")
_DIGIT_TYPES = frozenset(
    {C.CN_RESIDENT_ID, C.BANK_CARD, C.US_SSN, C.US_ITIN, C.MEDICAL_RECORD_NUMBER, C.IBAN_CODE}
)


@dataclass(frozen=True)
class RecordContext:
    """Per-record facts an operator may need: the patient's date offset in days."""

    date_shift_days: int = 0


def normalize(entity_type: str, value: str) -> str:
    """Canonical form of a value, so that formatting differences do not change its token."""
    text = normalize_value(value).strip()
    if entity_type in _DIGIT_TYPES:
        return _SEPARATORS.sub("", text).upper()
    if entity_type == C.PHONE_NUMBER:
        main = re.split(r"(?i)x|ext|转", text, maxsplit=1)[0]
        digits = "".join(ch for ch in main if ch.isdigit())
        if main.startswith(("+86", "0086")):
            digits = digits[2:] if main.startswith("+") else digits[4:]
        elif main.startswith(("+1", "001")):
            digits = digits[1:] if main.startswith("+") else digits[3:]
        return digits
    if entity_type == C.EMAIL_ADDRESS:
        return text.lower()
    if entity_type == C.DATE_TIME:
        return iso_key(value) or _WS.sub(" ", text).casefold()
    if entity_type == C.PERSON and any("\u3400" <= ch <= "\u9fff" for ch in text):
        return _WS.sub("", text)
    return _WS.sub(" ", text).casefold()


class Operator(Protocol):
    """Turns one found entity into its replacement text."""

    name: str

    def replace(self, entity_type: str, value: str, context: RecordContext) -> str:
        """The replacement for ``value`` of type ``entity_type`` in this record."""
        ...


class TagOperator:
    """``<PERSON>``: only the type is left."""

    name = "tag"

    def __init__(self, keys: SiteKeys | None, config: C.DeidConfig) -> None:
        del keys, config

    def replace(self, entity_type: str, value: str, context: RecordContext) -> str:
        return f"<{entity_type}>"


class PseudonymOperator:
    """``<PERSON_3f9a2c1d7b4e>``: a keyed token, stable for one entity inside a site."""

    name = "pseudonym"

    def __init__(self, keys: SiteKeys | None, config: C.DeidConfig) -> None:
        if keys is None:
            raise C.SiteSecretError("the pseudonym operator needs a site secret")
        self._keys = keys
        self._hex = config.token_hex_chars

    def __repr__(self) -> str:
        return f"PseudonymOperator(hex_chars={self._hex})"

    def replace(self, entity_type: str, value: str, context: RecordContext) -> str:
        digest = self._keys.pseudonym_digest(entity_type, normalize(entity_type, value))
        return f"<{entity_type}_{digest.hex()[: self._hex]}>"


class SurrogateOperator:
    """A fake value of the same format; pseudonym for types without a surrogate builder."""

    name = "surrogate"

    def __init__(self, keys: SiteKeys | None, config: C.DeidConfig) -> None:
        if keys is None:
            raise C.SiteSecretError("the surrogate operator needs a site secret")
        self._keys = keys
        self._fallback = PseudonymOperator(keys, config)

    def __repr__(self) -> str:
        return "SurrogateOperator()"

    def replace(self, entity_type: str, value: str, context: RecordContext) -> str:
        builder = surrogates.BUILDERS.get(entity_type)
        if builder is not None:
            stream = self._keys.surrogate_stream(entity_type, normalize(entity_type, value))
            out = builder(value, stream, context.date_shift_days)
            if out is not None:
                return out
        return self._fallback.replace(entity_type, value, context)


#: Operator registry: ``DeidConfig.operator`` → class.
OPERATOR_REGISTRY: dict[str, type[TagOperator | PseudonymOperator | SurrogateOperator]] = {
    "tag": TagOperator,
    "pseudonym": PseudonymOperator,
    "surrogate": SurrogateOperator,
}

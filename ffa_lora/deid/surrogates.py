"""Format-preserving surrogates: fake values of the same shape, keyed by the site secret.

Each builder takes the original value and a ``KeyedStream`` seeded by (type, normalized
value), so the same entity always gets the same surrogate inside a site. Surrogates keep
what is useful and not identifying (the province of a resident ID, the issuer prefix of a
card, the area code of a phone, a person's sex digit) and are valid where a check exists
(GB 11643 check character, Luhn). A builder returns None when the value does not have the
expected shape; the caller then falls back to a pseudonym.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable

from ffa_lora.deid import config as C
from ffa_lora.deid._names import EN_FIRST, EN_LAST, ZH_GIVEN, ZH_SURNAMES
from ffa_lora.deid.checksums import birth_date_of, gb11643_check_char, luhn_check_digit
from ffa_lora.deid.dates import shift_date_text
from ffa_lora.deid.keys import KeyedStream
from ffa_lora.deid.recognizer_base import CJK_RE

_DIGIT = re.compile(r"\d")


def _refill_digits(template: str, digits: str) -> str:
    """Write ``digits`` into the digit positions of ``template`` (separators stay put)."""
    it = iter(digits)
    return _DIGIT.sub(lambda _: next(it), template)


def resident_id(value: str, stream: KeyedStream, shift_days: int) -> str | None:
    """A valid resident ID: same province, keyed region, birth date moved with the patient's
    dates, keyed sequence with the same sex digit parity, correct check character."""
    if len(value) == 18 and value[:17].isdigit():
        born = birth_date_of(value)
        if born is None:
            return None
        new_born = born + _dt.timedelta(days=shift_days)
        parity = int(value[16]) % 2
        seq = stream.digits(2) + str(2 * stream.below(5) + parity)
        body = value[:2] + f"{1 + stream.below(9999):04d}" + new_born.strftime("%Y%m%d") + seq
        check = gb11643_check_char(body)
        return body + (check.lower() if value[17] == "x" else check)
    if len(value) == 15 and value.isdigit():
        try:
            born = _dt.date(1900 + int(value[6:8]), int(value[8:10]), int(value[10:12]))
        except ValueError:
            return None
        new_born = born + _dt.timedelta(days=shift_days)
        parity = int(value[14]) % 2
        seq = stream.digits(2) + str(2 * stream.below(5) + parity)
        return value[:2] + f"{1 + stream.below(9999):04d}" + new_born.strftime("%y%m%d") + seq
    return None


def bank_card(value: str, stream: KeyedStream) -> str | None:
    """A Luhn-valid card number with the same length, issuer prefix (6 digits) and grouping."""
    digits = "".join(_DIGIT.findall(value))
    if not 12 <= len(digits) <= 19:
        return None
    body = digits[:6] + stream.digits(len(digits) - 7)
    return _refill_digits(value, body + luhn_check_digit(body))


def phone(value: str, stream: KeyedStream) -> str | None:
    """Same layout, country code and area/carrier prefix; the subscriber digits are keyed."""
    digits = "".join(_DIGIT.findall(value))
    stripped = value.lstrip()
    cc = 0
    if stripped.startswith(("+86", "0086")):
        cc = 2 if stripped.startswith("+") else 4
    elif stripped.startswith(("+1", "001")):
        cc = 1 if stripped.startswith("+") else 3
    elif stripped.startswith("+"):
        cc = min(3, max(1, len(digits) - 9))
    national = digits[cc:]
    if len(national) < 7:
        return None
    lead_2_9 = False
    if national.startswith("1") and len(national) >= 11 and national[1] in "3456789":
        keep = 3  # mainland mobile: carrier prefix
    elif national.startswith("0") or cc in (2, 4):
        area = 3 if national.lstrip("0")[:1] in ("1", "2") else 4
        keep = area - (0 if national.startswith("0") else 1)
        lead_2_9 = True
    elif cc in (1, 3) or len(national) >= 10:
        keep = 3  # North American area code
        lead_2_9 = True
    else:
        keep = min(3, len(national) // 3)
    rest = len(national) - keep
    new = str(2 + stream.below(8)) + stream.digits(rest - 1) if lead_2_9 else stream.digits(rest)
    return _refill_digits(value, digits[: cc + keep] + new)


def us_ssn(value: str, stream: KeyedStream) -> str | None:
    """A well-formed SSN (area 001–899 without 666, group 01–99, serial 0001–9999)."""
    if len(_DIGIT.findall(value)) != 9:
        return None
    area = 1 + stream.below(898)
    if area >= 666:
        area += 1
    digits = f"{area:03d}{1 + stream.below(99):02d}{1 + stream.below(9999):04d}"
    return _refill_digits(value, digits)


def keyed_digits(value: str, stream: KeyedStream) -> str | None:
    """Every digit replaced by a keyed digit; letters and separators kept (record numbers)."""
    count = len(_DIGIT.findall(value))
    if count == 0:
        return None
    return _refill_digits(value, stream.digits(count))


def email(value: str, stream: KeyedStream) -> str | None:
    """A keyed mailbox at the reserved ``example.com`` domain (RFC 2606)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    local = stream.choice(alphabet[:26]) + "".join(stream.choice(alphabet) for _ in range(7))
    return f"{local}@example.com"


def person(value: str, stream: KeyedStream) -> str | None:
    """A keyed name of the same script and length (Chinese) or number of words (English)."""
    if CJK_RE.search(value):
        n = max(2, min(4, len(value.strip())))
        return stream.choice(ZH_SURNAMES) + "".join(stream.choice(ZH_GIVEN) for _ in range(n - 1))
    words = value.split()
    if not words:
        return None
    firsts = [stream.choice(EN_FIRST) for _ in words[:-1]]
    return " ".join([*firsts, stream.choice(EN_LAST)])


def date(value: str, shift_days: int) -> str | None:
    """The date moved by the patient's offset, written in its original layout."""
    return shift_date_text(value, shift_days)


Builder = Callable[[str, KeyedStream, int], "str | None"]

#: Surrogate builders by entity type; types not listed fall back to pseudonyms.
BUILDERS: dict[str, Builder] = {
    C.CN_RESIDENT_ID: resident_id,
    C.BANK_CARD: lambda v, s, d: bank_card(v, s),
    C.PHONE_NUMBER: lambda v, s, d: phone(v, s),
    C.US_SSN: lambda v, s, d: us_ssn(v, s),
    C.MEDICAL_RECORD_NUMBER: lambda v, s, d: keyed_digits(v, s),
    C.EMAIL_ADDRESS: lambda v, s, d: email(v, s),
    C.PERSON: lambda v, s, d: person(v, s),
    C.DATE_TIME: lambda v, s, d: date(v, d),
}

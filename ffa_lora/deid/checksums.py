"""Check characters of the identifiers we recognize and forge.

- GB 11643-1999 (Chinese resident identity number): 17 digits weighted by 2^(17-i) mod 11,
  check character ``"10X98765432"[sum mod 11]``.
- Luhn (ISO/IEC 7812-1) for payment cards, UnionPay's 19-digit cards included.
"""

from __future__ import annotations

import datetime as _dt

_GB11643_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
_GB11643_CHECK = "10X98765432"


def gb11643_check_char(first17: str) -> str:
    """Return the check character for the first 17 digits of a resident ID."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("a resident ID body is exactly 17 ASCII digits")
    total = sum(int(d) * w for d, w in zip(first17, _GB11643_WEIGHTS))
    return _GB11643_CHECK[total % 11]


def is_valid_cn_resident_id(value: str) -> bool:
    """True for an 18-character resident ID with a real birth date and a valid check char."""
    if len(value) != 18:
        return False
    body, check = value[:17], value[17].upper()
    if not body.isascii() or not body.isdigit():
        return False
    if gb11643_check_char(body) != check:
        return False
    return birth_date_of(value) is not None


def birth_date_of(value: str) -> _dt.date | None:
    """The birth date encoded in an 18-digit resident ID, or None if it is not a date."""
    try:
        born = _dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return None
    if born.year < 1880:
        return None
    return born


def luhn_checksum(digits: str) -> int:
    """Luhn sum mod 10 of a digit string (0 for a valid number)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10


def is_luhn_valid(digits: str) -> bool:
    """True when ``digits`` (ASCII digits only) passes the Luhn check."""
    return bool(digits) and digits.isascii() and digits.isdigit() and luhn_checksum(digits) == 0


def luhn_check_digit(payload: str) -> str:
    """The digit to append to ``payload`` so that the whole number is Luhn-valid."""
    return str((10 - luhn_checksum(payload + "0")) % 10)

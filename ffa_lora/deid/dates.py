"""Date patterns (Chinese and English) used both to find dates and to shift them.

Each pattern names its parts (``y``, ``m``, ``d``, ``mon``, ``ord``). The date-shift
surrogate re-parses a found date with the same patterns, moves it by a per-patient number of
days and writes the new parts back into the same spans, so separators, zero padding,
Chinese numerals, month-name style and any time of day are kept.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

_A = r"(?<![0-9A-Za-z])"  # ASCII word boundary on the left (works next to CJK characters)
_Z = r"(?![0-9A-Za-z])"
_Y4 = r"(?:1[89]|2[01])\d{2}"
_M = r"1[0-2]|0?[1-9]"
_D = r"3[01]|[12]\d|0?[1-9]"
_CN_DIGITS = "〇零○一二三四五六七八九"
_CN_Y = rf"[{_CN_DIGITS}]{{4}}"
_CN_M = r"十[一二]?|[一二三四五六七八九]"
_CN_D = r"三十一?|二十[一二三四五六七八九]?|十[一二三四五六七八九]?|[一二三四五六七八九]"
_ZH_TIME = (
    r"(?:\s*(?:上午|下午|晚上|凌晨|中午|早上)?\s*\d{1,2}\s*[:：时点]\s*\d{1,2}\s*分?"
    r"(?:\s*[:：]?\s*\d{1,2}\s*秒?)?)?"
)
_ISO_TIME = r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"

_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)
_MONTH_INDEX = {name[:3].lower(): i + 1 for i, name in enumerate(_MONTHS)}


def _month_alternatives() -> str:
    forms: list[str] = []
    for name in _MONTHS:
        for form in (name, name[:3], "Sept" if name == "September" else ""):
            if form:
                forms.extend([form, form.upper()])
    forms = sorted(set(forms), key=len, reverse=True)
    return "|".join(forms)


_MON = rf"(?P<mon>{_month_alternatives()})"
_ORD = r"(?P<ord>st|nd|rd|th)?"


@dataclass(frozen=True)
class DatePattern:
    """One date layout: its regex, base confidence and default part order."""

    name: str
    regex: re.Pattern[str]
    score: float


def _p(name: str, pattern: str, score: float) -> DatePattern:
    return DatePattern(name, re.compile(pattern), score)


DATE_PATTERNS: tuple[DatePattern, ...] = (
    _p("zh_ymd", rf"(?<![0-9])(?P<y>{_Y4})\s*年\s*(?P<m>{_M})\s*月\s*(?P<d>{_D})\s*[日号]{_ZH_TIME}", 0.9),
    _p("zh_cn_ymd", rf"(?P<y>{_CN_Y})\s*年\s*(?P<m>{_CN_M})\s*月\s*(?P<d>{_CN_D})\s*[日号]", 0.9),
    _p("zh_ym", rf"(?<![0-9])(?P<y>{_Y4})\s*年\s*(?P<m>{_M})\s*(?:月份|月)(?!\s*\d)", 0.6),
    _p("zh_cn_ym", rf"(?P<y>{_CN_Y})\s*年\s*(?P<m>{_CN_M})\s*月(?![一二三四五六七八九十])", 0.6),
    _p("zh_md", rf"(?<![0-9年])(?P<m>{_M})\s*月\s*(?P<d>{_D})\s*[日号]{_ZH_TIME}", 0.6),
    _p("zh_cn_md", rf"(?<![{_CN_DIGITS}年])(?P<m>{_CN_M})月(?P<d>{_CN_D})[日号]", 0.6),
    _p("ymd", rf"{_A}(?P<y>{_Y4})(?P<s>[-/.])(?P<m>{_M})(?P=s)(?P<d>{_D})(?![0-9]){_ISO_TIME}", 0.8),
    _p("mdy", rf"{_A}(?P<m>{_M})(?P<s>[/-])(?P<d>{_D})(?P=s)(?P<y>{_Y4}|\d{{2}})(?![0-9]){_ISO_TIME}", 0.6),
    _p("dmy", rf"{_A}(?P<d>{_D})(?P<s>[/.-])(?P<m>{_M})(?P=s)(?P<y>{_Y4})(?![0-9]){_ISO_TIME}", 0.6),
    _p("mon_d_y", rf"{_A}{_MON}\.?\s+(?P<d>{_D}){_ORD},?\s+(?P<y>{_Y4}){_Z}", 0.85),
    _p("d_mon_y", rf"{_A}(?P<d>{_D}){_ORD}\s+(?:of\s+)?{_MON}\.?,?\s+(?P<y>{_Y4}){_Z}", 0.85),
    _p("d-mon-y", rf"{_A}(?P<d>{_D})-{_MON}-(?P<y>{_Y4}|\d{{2}}){_Z}", 0.8),
    _p("mon_y", rf"{_A}{_MON}\.?,?\s+(?P<y>{_Y4}){_Z}", 0.5),
    _p("mon_d", rf"{_A}{_MON}\.?\s+(?P<d>{_D}){_ORD}{_Z}(?!,?\s*\d)", 0.45),
)

#: Order in which ``parse_date`` tries layouts for an already found span (US first for m/d/y).
_PARSE_ORDER = (
    "zh_ymd", "zh_cn_ymd", "zh_ym", "zh_cn_ym", "zh_md", "zh_cn_md", "ymd",
    "mon_d_y", "d_mon_y", "d-mon-y", "mon_y", "mon_d", "mdy", "dmy",
)
_BY_NAME = {p.name: p for p in DATE_PATTERNS}


def cn_numeral_to_int(text: str) -> int:
    """Value of a Chinese numeral month/day (一 … 三十一) or digit-by-digit year (二〇二三)."""
    digits = {c: i for i, c in enumerate("〇一二三四五六七八九")}
    digits.update({"零": 0, "○": 0})
    if "十" not in text:
        value = 0
        for c in text:
            value = value * 10 + digits[c]
        return value
    tens, _, units = text.partition("十")
    return (digits[tens] if tens else 1) * 10 + (digits[units] if units else 0)


def int_to_cn_numeral(value: int) -> str:
    """1..31 as a Chinese numeral (十二, 二十一)."""
    names = "〇一二三四五六七八九"
    if value < 10:
        return names[value]
    tens, units = divmod(value, 10)
    return ("" if tens == 1 else names[tens]) + "十" + (names[units] if units else "")


@dataclass(frozen=True)
class ParsedDate:
    """A date found in text: its value and how to write a moved value back."""

    pattern: str
    date: _dt.date
    has_year: bool
    has_day: bool
    match: re.Match[str]


def parse_date(text: str) -> ParsedDate | None:
    """Parse a date span as found by ``DATE_PATTERNS``; None when no layout fits."""
    for name in _PARSE_ORDER:
        m = _BY_NAME[name].regex.fullmatch(text)
        if m is None:
            continue
        parts = m.groupdict()
        try:
            month = _month_value(parts)
            day_text = parts.get("d")
            day = _part_int(day_text) if day_text else 15
            year = _year_value(parts.get("y"))
            date = _dt.date(year if year is not None else 2000, month, day)
        except (ValueError, KeyError):
            continue
        return ParsedDate(name, date, year is not None, parts.get("d") is not None, m)
    return None


def iso_key(text: str) -> str | None:
    """A canonical string for a date span (for pseudonyms), or None if it does not parse."""
    parsed = parse_date(text)
    if parsed is None:
        return None
    d = parsed.date
    return (f"{d.year:04d}" if parsed.has_year else "----") + f"-{d.month:02d}" + (
        f"-{d.day:02d}" if parsed.has_day else ""
    )


def shift_date_text(text: str, days: int) -> str | None:
    """``text`` with its date moved by ``days``, written in the same layout; None if unparsable."""
    parsed = parse_date(text)
    if parsed is None:
        return None
    new = parsed.date + _dt.timedelta(days=days)
    if not parsed.has_year and (new.month, new.day) == (2, 29):
        new += _dt.timedelta(days=1)
    m = parsed.match
    parts = m.groupdict()
    numeric = [v for k in ("m", "d") if (v := parts.get(k)) is not None and v.isdigit()]
    pad = bool(numeric) and (
        all(len(v) == 2 for v in numeric) or any(v.startswith("0") for v in numeric)
    )
    replacements: dict[str, str] = {}
    if parts.get("y") is not None:
        replacements["y"] = _render_year(parts["y"], new.year)
    if parts.get("m") is not None:
        replacements["m"] = _render_small(parts["m"], new.month, pad)
    if parts.get("mon") is not None:
        replacements["mon"] = _render_month_name(parts["mon"], new.month)
    if parts.get("d") is not None:
        replacements["d"] = _render_small(parts["d"], new.day, pad)
    if parts.get("ord") is not None:
        suffix = _ordinal_suffix(new.day)
        replacements["ord"] = suffix.upper() if parts["ord"].isupper() else suffix
    out = []
    pos = 0
    spans = sorted((m.span(k), v) for k, v in replacements.items())
    for (start, end), value in spans:
        out.append(text[pos:start])
        out.append(value)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _part_int(value: str) -> int:
    return int(value) if value.isdigit() else cn_numeral_to_int(value)


def _month_value(parts: dict[str, str | None]) -> int:
    if parts.get("mon"):
        return _MONTH_INDEX[parts["mon"][:3].lower()]  # type: ignore[index]
    return _part_int(parts["m"])  # type: ignore[arg-type]


def _year_value(value: str | None) -> int | None:
    if value is None:
        return None
    year = _part_int(value)
    if len(value) == 2:
        year += 2000 if year <= 30 else 1900
    return year


def _render_year(original: str, year: int) -> str:
    if original.isdigit():
        return f"{year % 100:02d}" if len(original) == 2 else f"{year:04d}"
    zero = next((c for c in original if c in "〇零○"), "〇")
    names = zero + "一二三四五六七八九"
    return "".join(names[int(c)] for c in f"{year:04d}")


def _render_small(original: str, value: int, pad: bool) -> str:
    if not original.isdigit():
        return int_to_cn_numeral(value)
    return f"{value:02d}" if pad else str(value)


def _render_month_name(original: str, month: int) -> str:
    full = _MONTHS[month - 1]
    is_full = original.lower() in {n.lower() for n in _MONTHS}
    name = full if is_full else full[:3]
    return name.upper() if original.isupper() and len(original) > 1 else name


def _ordinal_suffix(day: int) -> str:
    if 11 <= day % 100 <= 13:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")

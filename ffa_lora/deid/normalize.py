"""Unicode normalization before recognition, with a map back to the original offsets.

Identifiers can be written so that no pattern sees them: full-width digits
(``１３８１２３４５６７８``), zero-width spaces inside an e-mail address, a soft hyphen or a
word joiner between the digits of an ID, Unicode dashes (``‐ – —``) between phone groups,
mathematical or circled digits. The recognizers run on a normalized copy of the text:

1. NFKC compatibility folding (full-width and other compatibility forms become ASCII;
   ``ﬁ`` becomes ``fi``), applied per base character with its combining marks;
2. characters that render as nothing are removed: format characters (category ``Cf``:
   zero-width space/joiners, word joiner, soft hyphen, bidirectional controls, BOM, tag
   characters), variation selectors, the combining grapheme joiner and Hangul fillers;
3. dashes and minus signs (``‐ ‑ ‒ – — ― − ﹣``) become ``-``;
4. combining marks stacked on an ASCII digit are dropped (``1̸`` is read as ``1``).

Chinese punctuation that NFKC would fold to ASCII (，：；！？) is kept: the Chinese
recognizers and the LAC name model expect it, and it never carries identifier content.

Replacements are applied to the **original** text: a span found in the normalized text is
mapped back to the original characters it came from (including any invisible characters
inside it), so the output keeps the caller's text everywhere else, and the removed
characters of an identifier are replaced together with it. Operators receive the
normalized value, so ``１３８…`` and ``138…`` get the same pseudonym.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

_KEEP = frozenset("，：；！？")
_DASHES = frozenset("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d")
_INVISIBLE_EXTRA = frozenset(
    "\u034f\u115f\u1160\u3164\uffa0\u180b\u180c\u180d\u180f"
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))
)


def _invisible(ch: str) -> bool:
    if ch in _INVISIBLE_EXTRA:
        return True
    code = ord(ch)
    if 0xE0100 <= code <= 0xE01EF:  # variation selectors supplement
        return True
    return unicodedata.category(ch) == "Cf"


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch) in ("Mn", "Me", "Mc")


@dataclass(frozen=True)
class NormalizedText:
    """The normalized text and, when it differs, where each of its characters came from.

    ``origin[i]`` is the start in the original text of the segment that produced normalized
    character ``i``; ``origin_end[i]`` its end. Both are ``None`` when nothing changed.
    """

    original: str
    text: str
    origin: tuple[int, ...] | None = None
    origin_end: tuple[int, ...] | None = None

    @property
    def changed(self) -> bool:
        """Whether the normalized text differs from the original."""
        return self.origin is not None

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """The original span that normalized ``[start, end)`` came from.

        The span is widened over removed characters that sit between its characters, never
        over those before its first or after its last character.
        """
        if self.origin is None or self.origin_end is None:
            return start, end
        if start >= end:
            pos = self.origin[start] if start < len(self.origin) else len(self.original)
            return pos, pos
        return self.origin[start], self.origin_end[end - 1]


def _needs_work(text: str) -> bool:
    if text.isascii():
        return False
    if not unicodedata.is_normalized("NFKC", text):
        return True
    return any(_invisible(ch) or ch in _DASHES or _is_mark(ch) for ch in text)


def normalize_text(text: str) -> NormalizedText:
    """Normalize ``text`` for recognition (see the module docstring)."""
    if not _needs_work(text):
        return NormalizedText(text, text)
    out: list[str] = []
    origin: list[int] = []
    origin_end: list[int] = []
    i, n = 0, len(text)
    while i < n:
        j = i + 1
        while j < n and _is_mark(text[j]) and not _invisible(text[j]):
            j += 1
        piece = _normalize_segment(text[i:j])
        out.append(piece)
        origin.extend([i] * len(piece))
        origin_end.extend([j] * len(piece))
        i = j
    normalized = "".join(out)
    if normalized == text:
        return NormalizedText(text, text)
    return NormalizedText(text, normalized, tuple(origin), tuple(origin_end))


def _normalize_segment(segment: str) -> str:
    base = segment[0]
    if _invisible(base):
        return ""
    if base in _KEEP:
        return segment
    if base in _DASHES:
        return "-"
    folded = unicodedata.normalize("NFKC", segment)
    folded = "".join(ch for ch in folded if not _invisible(ch))
    if folded[:1].isascii() and folded[:1].isdigit():
        folded = "".join(ch for ch in folded if not _is_mark(ch))
    return "".join("-" if ch in _DASHES else ch for ch in folded)


def normalize_value(value: str) -> str:
    """The normalized form of one value (for keys and pseudonyms)."""
    return normalize_text(value).text

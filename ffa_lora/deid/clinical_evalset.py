"""More annotated clinical notes from the few real ones: the same note text with fresh PHI.

Five annotated notes are too few to measure recall to a percentage point, and a de-identifier
tuned on them may have learned their particular values. ``resurrogate`` keeps a real note's
text and layout and replaces every annotated PHI mention with a new value *of the same
shape*: a name keeps its number of words, its case, comma and initials (``OROZCO,KYLE`` →
``HAYNES,TRAVIS``), a date keeps its layout (``2/03`` → ``11/27``, ``2080-02-18`` →
``2091-07-04``, ``November`` → ``March``), an ID or phone number keeps its letters, digits
and separators (``XW277/90683`` → ``KQ514/20871``). The new annotations are computed, so
the result is programmatically labelled, not human-annotated; it tests values, not contexts
(the sentences around the PHI are still the five notes').

Names come from Faker's ``en_US`` lists, which overlap the first-name list the name
recognizer uses; recall on first-name-only evidence is therefore optimistic here.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from collections.abc import Sequence
from pathlib import Path

from ffa_lora.deid.i2b2 import ClinicalNote, PhiMention

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_PLACE_WORDS = ("Silver", "Ridge", "Oak", "Harbor", "Valley", "Cedar", "Maple", "Lake", "Grove",
                "Summit", "River", "Pine", "Fair", "Brook", "Stone", "Haven", "Bay", "Hill")


def _shape(value: str, rng: random.Random) -> str:
    """Same characters classes: digits → digits, letters → letters of the same case."""
    out = []
    for ch in value:
        if ch.isdigit():
            out.append(str(rng.randrange(10)))
        elif ch.isupper():
            out.append(chr(rng.randrange(26) + 65))
        elif ch.islower():
            out.append(chr(rng.randrange(26) + 97))
        else:
            out.append(ch)
    return "".join(out)


def _case_like(word: str, template: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template.islower():
        return word.lower()
    return word


class _Names:
    def __init__(self, seed: int) -> None:
        from faker import Faker

        fake = Faker("en_US")
        fake.seed_instance(seed)
        self.first = [fake.first_name() for _ in range(400)]
        self.last = [fake.last_name() for _ in range(400)]


def _name(value: str, rng: random.Random, names: _Names) -> str:
    parts = re.split(r"([^A-Za-z'’-]+)", value)
    words = [i for i, p in enumerate(parts) if re.fullmatch(r"[A-Za-z'’-]+", p)]
    full = [i for i in words if len(parts[i]) > 1]
    comma = "," in value
    for rank, i in enumerate(words):
        word = parts[i]
        if len(word) == 1:
            parts[i] = _case_like(chr(rng.randrange(26) + 65), word)
            continue
        # "Last, First": the first full word is a surname; "First Last": the last one is.
        is_last = (rank == 0) if comma else (i == full[-1] and len(full) > 1)
        pool = names.last if is_last or len(full) == 1 else names.first
        parts[i] = _case_like(rng.choice(pool), word)
    return "".join(parts)


def _date(value: str, rng: random.Random) -> str:
    month, day = rng.randrange(1, 13), rng.randrange(1, 29)
    year = rng.randrange(2060, 2100)
    v = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
        return f"{year}-{month:02d}-{day:02d}"
    m = re.fullmatch(r"(\d{1,2})([/-])(\d{1,2})\2(\d{2,4})", v)
    if m:
        mm = f"{month:02d}" if len(m.group(1)) == 2 else str(month)
        dd = f"{day:02d}" if len(m.group(3)) == 2 else str(day)
        yy = str(year) if len(m.group(4)) == 4 else f"{year % 100:02d}"
        return f"{mm}{m.group(2)}{dd}{m.group(2)}{yy}"
    m = re.fullmatch(r"(\d{1,2})/(\d{2})", v)
    if m:  # m/dd or m/yy: keep the second part's two digits
        second = f"{day:02d}" if rng.random() < 0.5 else f"{year % 100:02d}"
        return f"{month}/{second}" if len(m.group(1)) == 1 else f"{month:02d}/{second}"
    if v.capitalize() in _MONTHS or v[:3].capitalize() in {x[:3] for x in _MONTHS}:
        name = rng.choice(_MONTHS)
        return _case_like(name if len(v) > 3 else name[:3], v)
    return _shape(value, rng)


def _place(value: str, rng: random.Random) -> str:
    words = re.split(r"(\s+)", value)
    return "".join(w if not w.strip() else _case_like(rng.choice(_PLACE_WORDS), w) for w in words)


def surrogate_value(mention: PhiMention, value: str, rng: random.Random, names: _Names) -> str:
    """A new value of the same category and shape as ``value``."""
    if mention.category == "NAME" and mention.subtype in ("PATIENT", "DOCTOR"):
        return _name(value, rng, names)
    if mention.category == "DATE":
        return _date(value, rng)
    if mention.category == "LOCATION" and mention.subtype in ("HOSPITAL", "ORGANIZATION", "CITY"):
        return _place(value, rng)
    return _shape(value, rng)


def resurrogate(
    notes: Sequence[ClinicalNote], *, copies: int, seed: int = 0
) -> list[ClinicalNote]:
    """``copies`` versions of each note, every PHI mention replaced by a same-shape value."""
    rng = random.Random(seed)
    names = _Names(seed)
    out = []
    for copy in range(copies):
        for note in notes:
            out.append(_resurrogate_one(note, rng, names, f"{note.name}#{copy}"))
    return out


def _resurrogate_one(
    note: ClinicalNote, rng: random.Random, names: _Names, name: str
) -> ClinicalNote:
    pieces: list[str] = []
    mentions: list[PhiMention] = []
    pos = 0
    length = 0
    for m in sorted(note.phi, key=lambda x: x.start):
        if m.start < pos:  # overlapping annotations: keep the first
            continue
        before = note.text[pos : m.start]
        pieces.append(before)
        length += len(before)
        value = surrogate_value(m, note.text[m.start : m.end], rng, names)
        mentions.append(PhiMention(m.category, m.subtype, length, length + len(value)))
        pieces.append(value)
        length += len(value)
        pos = m.end
    pieces.append(note.text[pos:])
    return ClinicalNote(name=name, text="".join(pieces), phi=tuple(mentions))


#: The package whose labelled synthetic notes ``safe_harbor_notes`` reads (located, never
#: imported).
SAFE_HARBOR_PACKAGE = "deidgate"


def safe_harbor_notes() -> list[ClinicalNote] | None:
    """The 15 synthetic notes of ``deidgate`` (MIT), or None when it is not installed.

    Short English notes written to break de-identifiers (identifiers in prose, reformatted
    digits, an age over 89, hyphenated names, vehicle and device numbers …), each with its
    identifier *values* and HIPAA Safe Harbor category. Every occurrence of a value is
    annotated; ``N-year-old`` is annotated as an ``AGE`` on its digits, as i2b2 does.
    """
    spec = importlib.util.find_spec(SAFE_HARBOR_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "safeharbor_seed.jsonl"
    notes = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        notes.append(_safe_harbor_note(record["id"], record["text"], record["phi"]))
    return notes


def _safe_harbor_note(name: str, text: str, phi: list[dict[str, str]]) -> ClinicalNote:
    mentions: list[PhiMention] = []
    for item in phi:
        value, category = item["value"], item["category"].upper()
        for m in re.finditer(re.escape(value), text):
            start, end = m.span()
            age = re.fullmatch(r"(\d+)-year-old", value)
            if age:
                category, end = "AGE", start + len(age.group(1))
            if not any(start < x.end and x.start < end for x in mentions):
                mentions.append(PhiMention(category, category, start, end))
    return ClinicalNote(name, text, tuple(sorted(mentions, key=lambda x: x.start)))

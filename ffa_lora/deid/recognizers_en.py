"""Pattern recognizers for English records: Presidio's US SSN and ITIN recognizers (made
usable next to CJK text), North American phone numbers, medical record numbers after
their cue words, street addresses, and person names (``names_en``).

English person names without a cue or a known first name need an NER model; see
``ner.SpacyPersonRecognizer`` (opt-in through ``DeidConfig.en_ner_model``). The recognizers
for clinical notes are in ``recognizers_clinical``."""

from __future__ import annotations

import re

from presidio_analyzer import EntityRecognizer
from presidio_analyzer.predefined_recognizers import UsItinRecognizer, UsSsnRecognizer

from ffa_lora.deid import config as C
from ffa_lora.deid.names_en import en_name_recognizer
from ffa_lora.deid.recognizer_base import RegexRecognizer, RegexSpec, cjk_ready

_L = r"(?<![0-9A-Za-z])"
_R = r"(?![0-9A-Za-z])"


def nanp_phone_recognizer() -> RegexRecognizer:
    """US/Canada numbers: (AAA) EEE-NNNN, AAA-EEE-NNNN, AAA.EEE.NNNN, +1/001 prefixes and
    x/ext extensions; bare 10-digit numbers only with a cue word before them."""
    ext = r"(?:\s?(?:x|ext\.?|extension)\s?\d{1,6})?"
    cc = r"(?:(?:\+1|001)[\s.-]?)"
    specs = [
        RegexSpec(
            "nanp formatted",
            re.compile(rf"{_L}{cc}?(?:\([2-9]\d{{2}}\)\s?|[2-9]\d{{2}}[\s.-])[2-9]\d{{2}}[\s.-]\d{{4}}{ext}(?![0-9])"),
            0.5,
        ),
        RegexSpec(
            "nanp bare", re.compile(rf"{_L}(?:\+1)?[2-9]\d{{2}}[2-9]\d{{6}}{ext}(?![0-9])"), 0.3
        ),
    ]
    return RegexRecognizer(
        entity=C.PHONE_NUMBER,
        specs=specs,
        context=["phone", "tel", "call", "cell", "mobile", "fax", "contact", "reach", "number",
                 "电话", "手机", "联系"],
        name="NanpPhoneRecognizer",
    )


def medical_record_recognizer_en() -> RegexRecognizer:
    """Numbers after MRN / medical record number / patient ID / chart number …"""
    cues = (
        r"MRN|MR#|medical record (?:number|no\.?|#)|med(?:ical)? rec(?:ord)? (?:no\.?|#)"
        r"|patient (?:id|no\.?|number|#)|chart (?:number|no\.?|#)|hospital (?:number|no\.?)"
        r"|encounter (?:id|number|no\.?)|admission (?:number|no\.?)"
    )
    regex = re.compile(
        rf"(?<![A-Za-z])(?i:{cues})\s*(?:[:#]|is)?\s*(?P<v>[A-Za-z]{{0,4}}-?\d{{4,14}}[A-Za-z]?){_R}"
    )
    return RegexRecognizer(
        entity=C.MEDICAL_RECORD_NUMBER,
        specs=[RegexSpec("mrn en", regex, 0.9, group="v")],
        name="EnMedicalRecordRecognizer",
    )


_SUFFIXES = (
    "Alley|Annex|Arcade|Avenue|Ave|Bayou|Beach|Bend|Bluffs?|Bottom|Boulevard|Blvd|Branch|Bridge"
    "|Brooks?|Burgs?|Bypass|Camp|Canyon|Cape|Causeway|Centers?|Circles?|Cir|Cliffs?|Club|Commons?"
    "|Corners?|Course|Courts?|Ct|Coves?|Creek|Crescent|Crest|Crossing|Crossroad|Curve|Dale|Dam"
    "|Divide|Drives?|Dr|Estates?|Expressway|Extensions?|Falls?|Ferry|Fields?|Flats?|Fords?"
    "|Forest|Forges?|Forks?|Fort|Freeway|Gardens?|Gateway|Glens?|Greens?|Groves?|Harbors?"
    "|Haven|Heights|Highway|Hwy|Hills?|Hollow|Inlet|Islands?|Isle|Junctions?|Keys?|Knolls?"
    "|Lakes?|Land|Landing|Lane|Ln|Lights?|Loaf|Locks?|Lodge|Loop|Mall|Manors?|Meadows?|Mews"
    "|Mills?|Mission|Motorway|Mount|Mountains?|Neck|Orchard|Oval|Overpass|Parks?|Parkways?"
    "|Pass|Passage|Path|Pike|Pines?|Place|Pl|Plains?|Plaza|Points?|Ports?|Prairie|Radial|Ramp"
    "|Ranch|Rapids?|Rest|Ridges?|River|Roads?|Rd|Route|Row|Rue|Run|Shoals?|Shores?|Skyway"
    "|Springs?|Spurs?|Squares?|Sq|Station|Stravenue|Stream|Streets?|St|Summit|Terrace|Ter"
    "|Throughway|Trace|Track|Trafficway|Trail|Trailer|Tunnel|Turnpike|Underpass|Unions?"
    "|Valleys?|Via|Viaduct|Views?|Villages?|Ville|Vista|Walks?|Wall|Ways?|Wells?"
)
_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH"
    "|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|AA|AE|AP|AS|GU|MP|PR|VI|PW|MH|FM"
)


def address_recognizer_en() -> RegexRecognizer:
    """US street addresses: number, name, USPS suffix, unit, and city/state/ZIP when present."""
    word = r"[A-Z][A-Za-z'-]+"
    street = rf"\d{{1,6}}\s+(?:{word}\s+){{1,3}}(?:{_SUFFIXES})\.?"
    unit = r"(?:,?\s+(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|#)(?![a-z])\s*[A-Za-z0-9-]+)?"
    city = rf"(?:,?\s+(?:{word}\s+){{0,2}}{word},?\s+(?:{_STATES})\s+\d{{5}}(?:-\d{{4}})?)?"
    regex = re.compile(rf"{_L}{street}(?![A-Za-z]){unit}{city}(?![0-9])")
    return RegexRecognizer(
        entity=C.ADDRESS,
        specs=[RegexSpec("us street", regex, 0.5)],
        context=["address", "lives", "live at", "resides", "street"],
        name="UsAddressRecognizer",
    )


def en_recognizers(config: C.DeidConfig) -> list[EntityRecognizer]:
    """The English pattern recognizers for ``config``."""
    return [
        cjk_ready(UsSsnRecognizer, supported_entity=C.US_SSN),
        cjk_ready(UsItinRecognizer, supported_entity=C.US_ITIN),
        nanp_phone_recognizer(),
        medical_record_recognizer_en(),
        address_recognizer_en(),
        en_name_recognizer(clinical=config.clinical),
    ]

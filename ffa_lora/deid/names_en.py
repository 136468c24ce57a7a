"""English person names without an NER model, in ordinary and all-caps writing.

Found after a title (``Dr. Smith``, ``MR. VILLEGAS``), after a cue word (``Attending:
YBARRA``, ``Patient: Jane Roe``, ``Dictated by``), before a credential (``FILBERT BRIGHT,
M.D.``, ``Owen M Gallagher, MD``), as ``LAST, FIRST`` at the start of a line
(``OROZCO,KYLE``), in transcription signatures (``JS/ab``, ``XGT:holmes``) and, in clinical
mode, as a known first name followed by a capitalized word (``Gilbert Perez``; the first
names are Faker's ``en_US`` list less those that are also common English words).

Name words are separated by single spaces (columns of a table are not one name), names
never run across a line break, and words that are section headings, clinical
abbreviations or function words (``HPI``, ``CODE``, ``The``) are trimmed from either end
of a candidate rather than taken as names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from presidio_analyzer import AnalysisExplanation, LocalRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from ffa_lora.deid import config as C
from ffa_lora.deid.recognizer_base import ANALYSIS_LANGUAGE

_CAP = r"(?:Mc|Mac|O['’]|D['’])?[A-Z][a-z'’]+(?:-[A-Z][a-z'’]+)?"
_CAPS = r"(?:O['’]|D['’])?[A-Z]{2,}(?:[-'’][A-Z]{2,})?"
WORD = rf"(?:{_CAP}|{_CAPS})"
#: One to three name words, with middle initials (``Xzavian G. Tavares``, ``J. Smith``).
NAME_SEQ = rf"(?:[A-Z]\. ?)?{WORD}(?: (?:[A-Z]\.? )?{WORD}){{0,2}}"
#: ``Villegas, Yosef`` / ``OROZCO,KYLE`` / ``Smith, John A.``
NAME_LF = rf"{WORD}, ?{WORD}(?: [A-Z]\.?(?![A-Za-z]))?"

_FUNCTION_WORDS = (
    "a an the this that these those his her him he she they them their we our you your it its "
    "and or but nor of on in at to for from by with without as is are was were be been being "
    "has have had do does did not no none yes unknown all any each every some per via vs "
    "mr mrs ms miss dr md do rn np pa phd dds "
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec "
    "monday tuesday wednesday thursday friday saturday sunday today yesterday tomorrow"
)
_CLINICAL_WORDS = (
    "patient pt pts name date phone mrn mr dob doa dod ssn id acct acc dd dt dv age sex "
    " tel fax email address street avenue road city state zip "
    "department dept hospital clinic center centre medical emergency room unit general service "
    "team floor icu ccu micu sicu ed er or pacu "
    "hpi cc ros pmh psh fh sh meds medications medication allergies allergy history exam "
    "examination plan assessment impression diagnosis diagnoses problem problems code full "
    "status male female man woman boy girl admission admitted discharge discharged note notes "
    "visit reason follow followup up chief complaint review systems vital vitals signs labs lab "
    "data results physical social family surgical past present illness heent neck chest lungs "
    "lung heart cardiac cor abdomen abd extremities ext extr neuro skin psych pulmonary renal gi "
    "gu cv pain left right bilateral normal negative positive denies reports states presents "
    "am pm dictated signed transcribed attending resident fellow pcp primary care provider "
    "physician doctor nurse cardiology oncology neurology radiology surgery medicine internal "
    "pediatrics obstetrics gynecology orthopedics urology psychiatry dermatology therapy "
    "mg ml mcg po iv im sc qd bid tid qid prn hs qhs stat ekg ecg cxr ct mri echo cath bp hr rr "
    "temp sat spo wbc hgb hct plt bun cr na cl inr ptt ast alt ldl hdl tsh dm htn cad chf copd "
    "ckd esrd mi cva tia dvt pe uti nkda nka dnr dni asa hctz nsaid nsaids "
    "final disposition consultations consultation condition operating procedure procedures "
    "indication indications findings finding technique comparison conclusion summary "
    "impression recommendations recommendation addendum approved reviewed attending "
    "presenting complaint instructions instruction warm dry soft clear alert oriented "
    "well regular supple nontender obese awake stable"
)
STOP_WORDS = frozenset((_FUNCTION_WORDS + " " + _CLINICAL_WORDS).split())
#: Stop words that are also given names or surnames, taken as names next to another name
#: word (Kathleen May, April Rivera).
_LATER_OK = frozenset(["may", "june", "april", "august", "march", "will", "grace", "hope"])

#: First names that are also common English words (never taken as names on their own).
_AMBIGUOUS_FIRST = frozenset(
    ["bill", "mark", "joy", "grace", "faith", "chase", "rose", "april", "summer", "dawn", "guy", "don", "ray", "max", "jack", "angel", "sandy", "penny", "crystal", "amber", "holly", "daisy", "heather", "hunter", "mason", "tanner", "taylor", "parker", "christian", "frank", "drew", "grant", "lance", "lee", "ross", "dale", "glen", "blake", "dean", "cole", "troy", "gene", "norman", "destiny", "will", "may", "june", "hope", "art", "pat", "page", "ivy", "lily", "august", "miles", "wade", "young", "white", "brown", "gray", "reed", "brooks", "lane", "cliff", "king", "case", "bishop", "church", "marshall", "noble", "sterling", "justice", "carter", "cooper", "porter", "jade", "ruby", "iris", "violet", "willow", "river", "forest", "autumn", "dusty", "rusty", "sunny", "misty", "stormy", "brandy", "ginger", "candy", "cherry", "olive", "hazel", "pearl", "jewel", "star", "sky"]
)


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """Lower-cased first names for the first-name + surname recognizer."""
    from faker.providers.person.en_US import Provider

    names = {n.lower() for n in Provider.first_names}
    return frozenset(n for n in names if len(n) >= 3 and n not in _AMBIGUOUS_FIRST)


def _is_initial(word: str) -> bool:
    return len(word.rstrip(".")) == 1


_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'’.-]*")


def trim_name(text: str, start: int, end: int) -> tuple[int, int, int]:
    """Drop stop words (and stray initials) from both ends of ``text[start:end]``.

    Returns the trimmed span and how many name words (not initials) it keeps.
    """
    words = [(m.start() + start, m.end() + start) for m in _WORD_RE.finditer(text[start:end])]

    def stop(i: int) -> bool:
        w = text[words[i][0] : words[i][1]].rstrip(".,").lower().replace("’", "'")
        if len(w) == 1 and text[words[i][0]].isupper():
            return False  # an initial
        if len(words) > 1 and w in _LATER_OK and text[words[i][0]].isupper():
            return False
        return w in STOP_WORDS or w.removesuffix("'s") in STOP_WORDS

    while words and (stop(0) or (_is_initial(text[words[0][0] : words[0][1]]) and len(words) == 1)):
        words.pop(0)
    while words and (stop(-1) or _is_initial(text[words[-1][0] : words[-1][1]])):
        words.pop()
    if not words or any(stop(i) for i in range(len(words))):
        return start, start, 0
    # A double-barrelled surname (Reyes-Villalobos) is as specific as two names.
    count = sum(
        0 if _is_initial(text[s:e]) else 2 if re.fullmatch(r"[A-Z][a-z]+-[A-Z][a-z]+", text[s:e])
        else 1
        for s, e in words
    )
    return words[0][0], words[-1][1], count


@dataclass(frozen=True)
class NameSpec:
    """One name pattern: its ``v`` group is the candidate, trimmed, kept with ``min_words``."""

    name: str
    regex: re.Pattern[str]
    score: float
    min_words: int = 1
    first_name_gazetteer: bool = False
    trim: bool = True


class EnNameRecognizer(LocalRecognizer):
    """English person names from ``NameSpec`` patterns (see the module docstring)."""

    def __init__(self, specs: Sequence[NameSpec], *, name: str = "EnNameRecognizer") -> None:
        self._specs = tuple(specs)
        self._label = name
        super().__init__(
            supported_entities=[C.PERSON], supported_language=ANALYSIS_LANGUAGE, name=name
        )

    def load(self) -> None:
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """One result per accepted, trimmed candidate of any spec."""
        results = []
        for spec in self._specs:
            for m in spec.regex.finditer(text):
                start, end = m.span("v")
                if spec.first_name_gazetteer and m.group("f").lower() not in first_names():
                    continue
                if spec.trim:
                    start, end, count = trim_name(text, start, end)
                    if count < spec.min_words:
                        continue
                if start < end:
                    results.append(self._result(start, end, spec))
        return results

    def _result(self, start: int, end: int, spec: NameSpec) -> RecognizerResult:
        return RecognizerResult(
            entity_type=C.PERSON, start=start, end=end, score=spec.score,
            analysis_explanation=AnalysisExplanation(
                recognizer=self._label, original_score=spec.score, pattern_name=spec.name
            ),
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self._label,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )


_TITLES = r"(?:(?:Mr|Mrs|Ms|Mx|Dr|Prof|Rev)\.?|Miss|Sir|Dame|Doctor|(?:MR|MRS|MS|DR|PROF)\.)"
_CREDENTIALS = (
    r"(?:M\.D\.|MD|D\.O\.|DO|R\.N\.|RN|NP|PA-C|PA|Ph\.D\.|PhD|MBBS|FACC|FACS|FACP|DDS|DMD"
    r"|PharmD|CNM|CRNA|LPN|LCSW|MSW|APRN|ANP|FNP|ACNP|CNP|MSN|BSN)"
)
_STRONG_CUES = (
    r"attending(?: physician)?|pcp|primary care(?: physician| provider| doctor)?|resident|fellow"
    r"|intern|surgeon|anesthesiologist|cardiologist|oncologist|neurologist|nephrologist"
    r"|endocrinologist|psychiatrist|consultant|referring(?: physician| provider| md| doctor)?"
    r"|(?:referred|seen|dictated|transcribed|typed|signed|electronically signed|e-signed"
    r"|authenticated|co-?signed|reviewed|approved|attested|verified|performed|ordered"
    r"|reported|read|interpreted|examined|discussed with|accompanied) by|seen with"
    r"|physician|provider|doctor|nurse|(?:patient|pt|member|client) name|name(?: of patient)?"
    r"|guardian|emergency contact|contact person|next of kin|nok|spouse|husband|wife|mother"
    r"|father|son|daughter|brother|sister|dear|signed|cc|c\.c\."
)
_WEAK_CUES = (
    r"patient|pt\.?|customer|client|contact|applicant|insured|beneficiary|employee|subscriber"
    r"|member|account holder|cardholder"
)
_SEP = r"[ \t]*(?:[:#=-]+|\bis\b|\bwas\b)?[ \t]*"


def _c(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def name_specs(*, clinical: bool) -> list[NameSpec]:
    """The name patterns; ``clinical`` adds the line-layout and first-name patterns."""
    specs = [
        NameSpec("after title", _c(rf"(?<![A-Za-z]){_TITLES}[ \t]+(?P<v>{NAME_SEQ})"), 0.6),
        NameSpec(
            "after strong cue",
            _c(rf"(?<![A-Za-z])(?i:{_STRONG_CUES}){_SEP}(?P<v>{NAME_LF}|{NAME_SEQ})"), 0.55,
        ),
        NameSpec(
            "after cue",
            _c(rf"(?<![A-Za-z])(?i:{_WEAK_CUES}){_SEP}(?P<v>{NAME_LF}|{NAME_SEQ})"), 0.55,
            min_words=2,
        ),
        NameSpec(
            "before credential",
            _c(rf"(?P<v>{NAME_LF}|{NAME_SEQ})[ \t]*,?[ \t]+{_CREDENTIALS}(?![A-Za-z])"), 0.6,
        ),
    ]
    if clinical:
        specs += [
            NameSpec(
                "before identifier cue",
                _c(rf"(?P<v>{NAME_LF}|{NAME_SEQ})[ \t]*[,(][ \t]*(?=(?:MRN|MR#|MR:|DOB|D\.O\.B"
                   rf"|SSN|Unit No|U#|age[ :]+\d|\d{{1,3}}[ -]?(?:yo|y/o|y\.o\.|years?[ -]old)))"),
                0.55, min_words=2,
            ),
            NameSpec(
                "LAST,FIRST line",
                _c(rf"(?m)^[ \t]*(?P<v>{_CAPS},[ \t]?{_CAPS}(?:[ \t]+[A-Z]\.?)?)(?=[ \t]|$)"),
                0.55, min_words=2,
            ),
            NameSpec(
                "Last, First line",
                _c(rf"(?m)^[ \t]*(?P<v>{_CAP},[ \t]?{_CAP}(?:[ \t]+[A-Z]\.?)?)(?=[ \t]{{2,}}|\t|[ \t]*$)"),
                0.5, min_words=2,
            ),
            NameSpec(
                "signature initials",
                _c(r"(?m)^[ \t]*(?P<v>[A-Z]{2,4}(?:[:/][a-z]{2,15}){1,3})[ \t]*$"),
                0.5, trim=False,
            ),
            NameSpec(
                "first name + surname",
                _c(rf"(?<![A-Za-z'’.-])(?P<v>(?P<f>[A-Z][a-z]+|[A-Z]{{3,}})(?: [A-Z]\.?)? {WORD})(?![A-Za-z])"),
                0.5, min_words=2, first_name_gazetteer=True,
            ),
        ]
    return specs


def en_name_recognizer(*, clinical: bool) -> EnNameRecognizer:
    """The English name recognizer (see ``name_specs``)."""
    return EnNameRecognizer(name_specs(clinical=clinical))

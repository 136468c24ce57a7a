"""The de-identifier: Presidio's analyzer (no NLP model) wired to the recognizers and
operators of this package.

Recognizers run on the Unicode-normalized text (``normalize.py``: NFKC, invisible
characters removed, dashes unified); found spans are mapped back to the original text and
replaced there, with the replacement computed from the normalized value.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry
from presidio_analyzer import RecognizerResult as AnalyzerResult
from presidio_analyzer.nlp_engine import NoOpNlpEngine

from ffa_lora.deid import config as C
from ffa_lora.deid.keys import SiteKeys
from ffa_lora.deid.ner import MODEL_RECOGNIZERS, name_recognizers
from ffa_lora.deid.normalize import NormalizedText, normalize_text
from ffa_lora.deid.operators import OPERATOR_REGISTRY, RecordContext, normalize
from ffa_lora.deid.recognizer_base import ANALYSIS_LANGUAGE, WindowContextEnhancer
from ffa_lora.deid.recognizers_clinical import clinical_recognizers
from ffa_lora.deid.recognizers_common import common_recognizers
from ffa_lora.deid.recognizers_en import en_recognizers
from ffa_lora.deid.recognizers_zh import zh_recognizers

#: Types whose value identifies the patient a record is about, best first; the first one
#: found keys the per-patient date shift when the caller gives no subject.
_SUBJECT_TYPES = (C.MEDICAL_RECORD_NUMBER, C.CN_RESIDENT_ID, C.US_SSN, C.PERSON)


@dataclass(frozen=True)
class Span:
    """One entity found in a text (positions and type only; never the value)."""

    entity_type: str
    start: int
    end: int
    score: float


def build_recognizers(config: C.DeidConfig) -> list[EntityRecognizer]:
    """Every recognizer ``config`` selects, restricted to its entity types."""
    recognizers: list[EntityRecognizer] = list(common_recognizers(config))
    if "zh" in config.languages:
        recognizers += zh_recognizers(config)
    if "en" in config.languages:
        recognizers += en_recognizers(config)
        if config.clinical:
            recognizers += clinical_recognizers(config)
    active = set(config.active_entities)
    if C.PERSON in active:
        recognizers += name_recognizers(config)
    return [r for r in recognizers if set(r.supported_entities) & active]


def resolve_overlaps(results: list[AnalyzerResult], order: tuple[str, ...]) -> list[Span]:
    """Non-overlapping spans covering every character any recognizer claimed.

    Candidates are ranked: checksum-validated first, then pattern matches before
    model-based names (NER is least reliable on number-like strings), then longer, then
    higher score, then the type listed first in ``order``. A candidate that overlaps spans already kept is not
    dropped but merged into them (the union keeps the best-ranked type), so that no part of
    a detected entity is left in clear: a name found inside an address widens nothing, a
    name crossing an address boundary widens the address.
    """
    rank = {t: i for i, t in enumerate(order)}
    ranked = sorted(
        results,
        key=lambda r: (
            r.score < 0.99,
            (r.recognition_metadata or {}).get(AnalyzerResult.RECOGNIZER_NAME_KEY) in MODEL_RECOGNIZERS,
            -(r.end - r.start),
            -r.score,
            rank.get(r.entity_type, 99),
        ),
    )
    kept: list[Span] = []
    for r in ranked:
        hits = [k for k in kept if r.start < k.end and k.start < r.end]
        if not hits:
            kept.append(Span(r.entity_type, r.start, r.end, r.score))
            continue
        best = hits[0]  # earliest kept = best ranked
        start = min(r.start, *(k.start for k in hits))
        end = max(r.end, *(k.end for k in hits))
        merged = Span(best.entity_type, start, end, max(k.score for k in hits))
        kept = [merged if k is best else k for k in kept if k is best or k not in hits]
    kept.sort(key=lambda s: s.start)
    return kept


class Deidentifier:
    """Scrubs identifiers from text before it is tokenized.

    Fully offline: Presidio runs with its no-op NLP engine (no spaCy model), the e-mail
    check uses the public-suffix snapshot inside ``tldextract``, and LAC's model ships in
    its wheel. ``counts`` accumulates how many entities of each type were replaced (counts
    only, safe to export as metrics); the site secret is held only as derived keys and never
    appears in a repr, log line or error.
    """

    def __init__(self, config: C.DeidConfig | None = None, *, site_secret: bytes | None) -> None:
        self.config = config if config is not None else C.DeidConfig()
        needs_secret = self.config.enabled and self.config.operator != "tag"
        if needs_secret and site_secret is None:
            raise C.SiteSecretError(
                f"the {self.config.operator!r} operator needs a site secret of at least 256 "
                "bits; pass site_secret=load_site_secret(path), or use operator='tag'"
            )
        keys = SiteKeys(site_secret) if site_secret is not None else None
        self._keys = keys
        operator = self.config.operator if needs_secret or keys is not None else "tag"
        self._operator = OPERATOR_REGISTRY[operator](keys, self.config)
        self._entities = list(self.config.active_entities)
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        if not self.config.enabled:
            return
        nlp = NoOpNlpEngine(models=[{"lang_code": ANALYSIS_LANGUAGE, "model_name": "none"}])
        nlp.load()
        registry = RecognizerRegistry(supported_languages=[ANALYSIS_LANGUAGE])
        recognizers = build_recognizers(self.config)
        for recognizer in recognizers:
            registry.add_recognizer(recognizer)
        # Ask only for types some recognizer supports (Presidio warns on every call otherwise).
        supported = {e for r in recognizers for e in r.supported_entities}
        self._entities = [e for e in self._entities if e in supported]
        if not self._entities:
            raise C.DeidConfigError(
                f"no recognizer finds deid.entities {self.config.entities} in languages "
                f"{self.config.languages}; add the language or choose other entity types"
            )
        self._analyzer = AnalyzerEngine(
            registry=registry,
            nlp_engine=nlp,
            supported_languages=[ANALYSIS_LANGUAGE],
            default_score_threshold=self.config.score_threshold,
            context_aware_enhancer=WindowContextEnhancer(window=self.config.context_window),
        )

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Deidentifier(enabled={c.enabled}, operator={c.operator!r}, "
            f"languages={c.languages}, entities={len(self._entities)} types)"
        )

    def analyze(self, text: str) -> list[Span]:
        """The entities found in ``text``, non-overlapping, in text order (offsets into
        ``text`` itself, also when it had to be normalized)."""
        norm, spans = self._analyze_normalized(text)
        return [_to_original(norm, s) for s in spans]

    def _analyze_normalized(self, text: str) -> tuple[NormalizedText, list[Span]]:
        _check_text(text)
        norm = normalize_text(text)
        if not self.config.enabled or not norm.text.strip():
            return norm, []
        results = self._analyzer.analyze(
            text=norm.text, language=ANALYSIS_LANGUAGE, entities=self._entities
        )
        return norm, resolve_overlaps(results, C.ALL_ENTITIES)

    def scrub(self, text: str, *, subject: str | None = None) -> str:
        """``text`` with every found entity replaced by the configured operator."""
        return self.scrub_with_counts(text, subject=subject)[0]

    def scrub_with_counts(
        self, text: str, *, subject: str | None = None
    ) -> tuple[str, Counter[str]]:
        """Scrubbed text and how many entities of each type were replaced in it.

        ``subject`` keys the per-patient date shift of the surrogate operator (for example a
        patient ID column); without it the first record number, resident ID, SSN or name
        found in the text is used, and records with none of them share a site-wide shift.
        """
        norm, spans = self._analyze_normalized(text)
        counts: Counter[str] = Counter(s.entity_type for s in spans)
        if not spans:
            return text, counts
        context = RecordContext(date_shift_days=self._date_shift(norm.text, spans, subject))
        out: list[str] = []
        pos = 0
        for span in spans:
            start, end = norm.to_original(span.start, span.end)
            value = norm.text[span.start : span.end]
            out.append(text[pos:start])
            out.append(self._operator.replace(span.entity_type, value, context))
            pos = end
        out.append(text[pos:])
        with self._lock:
            self.counts.update(counts)
        return "".join(out), counts

    def reset_counts(self) -> Counter[str]:
        """Return the cumulative counts and start again from zero (for periodic export)."""
        with self._lock:
            counts, self.counts = self.counts, Counter()
        return counts

    def _date_shift(self, text: str, spans: list[Span], subject: str | None) -> int:
        if self.config.operator != "surrogate" or self._keys is None:
            return 0
        if subject is None:
            subject = ""
            for etype in _SUBJECT_TYPES:
                found = next((s for s in spans if s.entity_type == etype), None)
                if found is not None:
                    subject = f"{etype}:{normalize(etype, text[found.start:found.end])}"
                    break
        return self._keys.date_shift_days(subject, self.config.date_shift_max_days)


def _to_original(norm: NormalizedText, span: Span) -> Span:
    if not norm.changed:
        return span
    start, end = norm.to_original(span.start, span.end)
    return Span(span.entity_type, start, end, span.score)


def _check_text(text: object) -> None:
    if not isinstance(text, str):
        raise C.DeidError(f"text to scrub must be str, got {type(text).__name__}")

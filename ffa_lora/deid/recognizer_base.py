"""Building blocks shared by the recognizers: a regex recognizer that works next to CJK
characters, a character-window context enhancer that needs no NLP model, and a helper that
makes Presidio's own ``\\b``-anchored patterns usable in Chinese text.

Presidio's patterns anchor on ``\\b``; in Unicode regexes CJK characters are word
characters, so ``身份证号110101…`` or ``邮箱zhang@x.cn`` have no word boundary before the
digits or letters and the patterns miss them. Everything here anchors on ASCII
letters/digits instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from presidio_analyzer import (
    AnalysisExplanation,
    EntityRecognizer,
    LocalRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerResult,
)
from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
from presidio_analyzer.nlp_engine import NlpArtifacts

#: The language code every recognizer is registered under: all selected recognizers scan
#: every text, whatever its language (see ``DeidConfig.languages``).
ANALYSIS_LANGUAGE = "xx"

_ASCII_BOUNDARY = r"(?:(?<=[0-9A-Za-z_])(?![0-9A-Za-z_])|(?<![0-9A-Za-z_])(?=[0-9A-Za-z_]))"
CJK_RE = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_CLAUSE_BREAK = re.compile(r"[，。；;！？!?\n]|,\s")

Validator = Callable[[str], bool | None]


def ascii_boundaries(regex: str) -> str:
    """Rewrite a Presidio pattern so that its word boundaries are ASCII-only."""
    out = re.sub(r"(?<!\\)\\b", lambda _: _ASCII_BOUNDARY, regex)
    return out.replace(r"[\w:]", "[0-9A-Za-z_:]")


def cjk_ready(recognizer_cls: type[PatternRecognizer], **kwargs: Any) -> PatternRecognizer:
    """Instantiate a Presidio pattern recognizer with ASCII-boundary versions of its patterns."""
    patterns = [
        Pattern(p.name, ascii_boundaries(p.regex), p.score)
        for p in recognizer_cls.PATTERNS  # type: ignore[attr-defined]
    ]
    return recognizer_cls(  # type: ignore[call-arg]
        patterns=patterns, supported_language=ANALYSIS_LANGUAGE, **kwargs
    )


@dataclass(frozen=True)
class RegexSpec:
    """One pattern of a ``RegexRecognizer``.

    ``group`` names the part of the match that is the entity (cue words before it are not
    replaced); ``None`` means the whole match. ``accept``, if given, sees the whole text and
    the match and may drop the candidate (for conditions a regex cannot say cheaply, such
    as a word list or the text around the match).
    """

    name: str
    regex: re.Pattern[str]
    score: float
    group: str | None = None
    accept: Callable[[str, re.Match[str]], bool] | None = None


class RegexRecognizer(LocalRecognizer):
    """Recognizer over precompiled regexes with an optional checksum validator.

    The validator returns True (valid: confidence 1.0), False (drop the candidate) or None
    (keep the pattern's confidence).
    """

    def __init__(
        self,
        *,
        entity: str,
        specs: Sequence[RegexSpec],
        context: Sequence[str] = (),
        validator: Validator | None = None,
        name: str | None = None,
    ) -> None:
        self._specs = tuple(specs)
        self._validator = validator
        self._label: str = name or f"{entity.title().replace('_', '')}Recognizer"
        super().__init__(
            supported_entities=[entity],
            supported_language=ANALYSIS_LANGUAGE,
            context=list(context),
            name=self._label,
        )

    def load(self) -> None:
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Return one result per validated match of any spec."""
        entity = self.supported_entities[0]
        results: list[RecognizerResult] = []
        for spec in self._specs:
            for m in spec.regex.finditer(text):
                start, end = m.span(spec.group) if spec.group else m.span()
                if start == end or (spec.accept is not None and not spec.accept(text, m)):
                    continue
                score = spec.score
                if self._validator is not None:
                    verdict = self._validator(text[start:end])
                    if verdict is False:
                        continue
                    if verdict is True:
                        score = EntityRecognizer.MAX_SCORE
                results.append(self._result(entity, start, end, score, spec.name))
        return results

    def _result(
        self, entity: str, start: int, end: int, score: float, pattern: str
    ) -> RecognizerResult:
        return RecognizerResult(
            entity_type=entity,
            start=start,
            end=end,
            score=score,
            analysis_explanation=AnalysisExplanation(
                recognizer=self._label, original_score=score, pattern_name=pattern
            ),
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self._label,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )


class WindowContextEnhancer(ContextAwareEnhancer):
    """Raise a candidate's confidence when a cue word occurs shortly before it.

    Presidio's default enhancer needs lemmas from an NLP model; this one looks at the
    ``window`` characters before the span, cut at the last clause break (，。；, …) so that
    ``手机138…，订单号9742206610`` does not lend the phone cue to the order number. It works
    for Chinese cue words (电话, 身份证) as well as English ones and loads nothing.
    """

    def __init__(self, *, window: int, boost: float = 0.35, floor: float = 0.4) -> None:
        super().__init__(
            context_similarity_factor=boost,
            min_score_with_context_similarity=floor,
            context_prefix_count=0,
            context_suffix_count=0,
        )
        self.window = window

    def enhance_using_context(
        self,
        text: str,
        raw_results: list[RecognizerResult],
        nlp_artifacts: NlpArtifacts | None,
        recognizers: list[EntityRecognizer],
        context: list[str] | None = None,
    ) -> list[RecognizerResult]:
        """Boost results whose recognizer lists a cue word found before them."""
        if self.window == 0 or not raw_results:
            return raw_results
        cues = {r.id: [c.lower() for c in r.context] for r in recognizers if r.context}
        extra = [c.lower() for c in context or []]
        lowered: str | None = None
        for result in raw_results:
            if result.score >= self.MAX_SCORE:
                continue
            meta = result.recognition_metadata or {}
            words = cues.get(meta.get(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY), []) + extra
            if not words:
                continue
            if lowered is None:
                lowered = text.lower()
            window = lowered[max(0, result.start - self.window) : result.start]
            window = _CLAUSE_BREAK.split(window)[-1]
            if any(w in window for w in words):
                result.score = min(
                    self.MAX_SCORE,
                    max(
                        result.score + self.context_similarity_factor,
                        self.min_score_with_context_similarity,
                    ),
                )
        return raw_results

"""PHI recall and precision of a de-identifier on annotated clinical notes (i2b2 2014 format).

Type-blind, because what matters for privacy is whether a mention is left in clear, not
which tag replaced it:

- **Entity level**: a gold mention is *recalled* when predicted spans (of any type) cover
  every letter and digit of it; it is *leaked* when none of them is covered. A predicted
  span is correct when it overlaps a gold mention.
- **Token level** (the unit Philter reports): tokens are maximal runs of letters and digits.
  A gold token is recalled when it is covered entirely; a token counts as predicted when a
  span covers any of its characters, and is correct when it lies in a gold mention.

Categories are ``CATEGORY:TYPE`` as in the annotation (``NAME:DOCTOR``, ``ID:MEDICALRECORD``,
``CONTACT:PHONE`` …). Not scored, because HIPAA Safe Harbor does not require removing them
(they are counted under ``not_scored`` and predictions on them are not false positives):
professions, states and countries, and ages of 89 or less.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ffa_lora.deid.clinical_evalset import resurrogate, safe_harbor_notes
from ffa_lora.deid.i2b2 import ClinicalNote, PhiMention, builtin_notes

_TOKEN = re.compile(r"[^\W_]+")
_NOT_SCORED_TYPES = frozenset({"PROFESSION", "LOCATION:STATE", "LOCATION:COUNTRY"})
_AGE_LIMIT = 89


class _SpanLike(Protocol):
    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...


def category_of(mention: PhiMention) -> str:
    """``CATEGORY:TYPE`` of a mention (``NAME:PATIENT``)."""
    return f"{mention.category}:{mention.subtype}"


def is_scored(mention: PhiMention, text: str) -> bool:
    """Whether HIPAA Safe Harbor requires removing this mention (see the module docstring)."""
    key = category_of(mention)
    if mention.category in _NOT_SCORED_TYPES or key in _NOT_SCORED_TYPES:
        return False
    if mention.category == "AGE":
        digits = re.sub(r"\D", "", text[mention.start : mention.end])
        return not digits or int(digits) > _AGE_LIMIT
    return True


@dataclass
class CategoryScore:
    """Recall counts of one PHI category."""

    support: int = 0
    recalled: int = 0
    leaked: int = 0
    tokens: int = 0
    tokens_recalled: int = 0

    @property
    def recall(self) -> float:
        """Recalled mentions / mentions (1.0 when there are none)."""
        return self.recalled / self.support if self.support else 1.0

    @property
    def token_recall(self) -> float:
        """Recalled tokens / tokens (1.0 when there are none)."""
        return self.tokens_recalled / self.tokens if self.tokens else 1.0

    def add(self, other: CategoryScore) -> None:
        """Add another score's counts to this one."""
        self.support += other.support
        self.recalled += other.recalled
        self.leaked += other.leaked
        self.tokens += other.tokens
        self.tokens_recalled += other.tokens_recalled

    def as_dict(self) -> dict[str, float | int]:
        """JSON-friendly summary."""
        return {
            "support": self.support, "recall": round(self.recall, 4), "leaked": self.leaked,
            "tokens": self.tokens, "token_recall": round(self.token_recall, 4),
        }


@dataclass
class ClinicalReport:
    """Scores over a set of notes: per category, overall, and precision."""

    per_category: dict[str, CategoryScore] = field(default_factory=dict)
    notes: int = 0
    not_scored: int = 0
    predicted_spans: int = 0
    correct_spans: int = 0
    predicted_tokens: int = 0
    correct_tokens: int = 0
    misses: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def total(self) -> CategoryScore:
        """All scored categories together."""
        out = CategoryScore()
        for score in self.per_category.values():
            out.add(score)
        return out

    @property
    def precision(self) -> float:
        """Predicted spans that overlap a gold mention / predicted spans."""
        return self.correct_spans / self.predicted_spans if self.predicted_spans else 1.0

    @property
    def token_precision(self) -> float:
        """Predicted tokens inside gold mentions / predicted tokens."""
        return self.correct_tokens / self.predicted_tokens if self.predicted_tokens else 1.0

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly summary (counts and rates only, never note text)."""
        total = self.total
        return {
            "notes": self.notes,
            "phi_mentions": total.support,
            "recall": round(total.recall, 4),
            "token_recall": round(total.token_recall, 4),
            "precision": round(self.precision, 4),
            "token_precision": round(self.token_precision, 4),
            "leaked": total.leaked,
            "not_scored": self.not_scored,
            "per_category": {k: v.as_dict() for k, v in sorted(self.per_category.items())},
        }


def _covered_mask(length: int, spans: Iterable[tuple[int, int]]) -> bytearray:
    mask = bytearray(length)
    for start, end in spans:
        mask[max(0, start) : max(0, min(end, length))] = b"\x01" * (
            max(0, min(end, length)) - max(0, start)
        )
    return mask


def score_note(
    note: ClinicalNote, spans: Sequence[tuple[int, int]], report: ClinicalReport,
    *, keep_misses: bool = False,
) -> None:
    """Add one note's gold mentions and predicted ``(start, end)`` spans to ``report``."""
    text = note.text
    covered = _covered_mask(len(text), spans)
    gold = _covered_mask(len(text), ((m.start, m.end) for m in note.phi))
    report.notes += 1
    for mention in note.phi:
        if not is_scored(mention, text):
            report.not_scored += 1
            continue
        score = report.per_category.setdefault(category_of(mention), CategoryScore())
        toks = [
            (mention.start + m.start(), mention.start + m.end())
            for m in _TOKEN.finditer(text[mention.start : mention.end])
        ]
        hit = [all(covered[s:e]) for s, e in toks]
        score.support += 1
        score.tokens += len(toks)
        score.tokens_recalled += sum(hit)
        ok = all(hit)
        score.recalled += ok
        score.leaked += not any(any(covered[s:e]) for s, e in toks)
        if keep_misses and not ok:
            report.misses.append((note.name, category_of(mention), text[mention.start : mention.end]))
    for start, end in spans:
        report.predicted_spans += 1
        report.correct_spans += any(gold[start:end])
    for m in _TOKEN.finditer(text):
        if any(covered[m.start() : m.end()]):
            report.predicted_tokens += 1
            report.correct_tokens += any(gold[m.start() : m.end()])


def evaluate_notes(
    analyze: Callable[[str], Iterable[_SpanLike]], notes: Iterable[ClinicalNote],
    *, keep_misses: bool = False,
) -> ClinicalReport:
    """Score ``analyze`` (e.g. ``Deidentifier.analyze``) on annotated ``notes``.

    ``keep_misses`` records (note, category, mention text) of every mention not recalled,
    for inspecting a test set; never export it from real data.
    """
    report = ClinicalReport()
    for note in notes:
        spans = [(s.start, s.end) for s in analyze(note.text)]
        score_note(note, spans, report, keep_misses=keep_misses)
    return report


def clinical_evaluation(
    analyze: Callable[[str], Iterable[_SpanLike]], *, copies: int = 20, seed: int = 0,
    notes: Sequence[ClinicalNote] | None = None,
) -> dict[str, object]:
    """Scores on the annotated i2b2 notes (``notes``, default the five shipped with
    philter-lite), on ``copies`` re-surrogated versions of each (see
    ``clinical_evalset.resurrogate``) and, when the package is installed, on deidgate's
    synthetic Safe Harbor notes (``clinical_evalset.safe_harbor_notes``), as one
    JSON-friendly dict."""
    real = list(notes) if notes is not None else builtin_notes()
    out: dict[str, object] = {
        "i2b2_notes": evaluate_notes(analyze, real).as_dict(),
    }
    if copies > 0:
        fresh = resurrogate(real, copies=copies, seed=seed)
        out["i2b2_resurrogated"] = evaluate_notes(analyze, fresh).as_dict()
    safe_harbor = safe_harbor_notes()
    if safe_harbor is not None:
        out["deidgate_safe_harbor"] = evaluate_notes(analyze, safe_harbor).as_dict()
    return out

"""UCSF Philter (``philter-lite``) as a comparison engine for clinical notes.

Philter is a clinical de-identifier built on the i2b2 notes: regular expressions and name
lists mark PHI, a large whitelist marks safe words, and every other word is removed. This
module runs it with its default configuration (``philter_delta.toml``) so that ``bench
deid --philter`` can score it against, and together with, this package's recognizers on
the same notes. It is not part of the scrubbing pipeline.

Offline: Philter tags parts of speech with NLTK's perceptron tagger, whose data NLTK
downloads at run time (it is in no package on the index). When that data is not installed,
a stand-in tags capitalized words ``NNP``, words with digits ``CD`` and the rest ``NN``;
Philter uses the tags only to restrict its name lists to proper nouns and to keep numbers
not matched elsewhere, so this is close to, not the same as, Philter as published. The
result says which tagger ran. Requires ``nltk`` (``pip install nltk``) besides the
``philter-lite`` package already installed for its notes.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ffa_lora.deid.config import DeidConfigError
from ffa_lora.deid.engine import Span

_TOKEN = re.compile(r"[^\W_]+")


def philter_available() -> bool:
    """Whether ``philter_lite`` and ``nltk`` can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in ("philter_lite", "nltk"))


def _stand_in_pos_tag(tokens: Sequence[str]) -> list[tuple[str, str]]:
    tags = []
    for token in tokens:
        if token.isspace():
            tags.append((token, "SP"))
        elif any(c.isdigit() for c in token):
            tags.append((token, "CD"))
        elif token[:1].isupper():
            tags.append((token, "NNP"))
        else:
            tags.append((token, "NN"))
    return tags


class PhilterAnalyzer:
    """``analyze(text)``: the words Philter would remove, as ``Span``s of type ``PHI``."""

    def __init__(self) -> None:
        if not philter_available():
            raise DeidConfigError(
                "the Philter comparison needs the packages philter-lite and nltk; install "
                "them with `pip install philter-lite==0.6.0 nltk`"
            )
        import nltk
        import philter_lite
        from philter_lite import philter as philter_module

        try:
            nltk.data.find("taggers/averaged_perceptron_tagger_eng")
            self.tagger = "nltk averaged perceptron"
        except LookupError:
            philter_module.nltk = _NltkWithStandInTagger(nltk)  # type: ignore[attr-defined]
            self.tagger = "stand-in (capitalized=NNP, digits=CD, else NN)"
        config = Path(philter_lite.__file__).parent / "configs" / "philter_delta.toml"
        self._filters = philter_lite.load_filters(str(config))
        self._detect: Callable[..., Any] = philter_lite.detect_phi

    def analyze(self, text: str) -> list[Span]:
        """Every letter/digit token that Philter does not keep."""
        include_map, _, _ = self._detect(text, self._filters)
        safe = bytearray(len(text))
        for start, stop in include_map.filecoords():
            safe[start:stop] = b"\x01" * (stop - start)
        return [
            Span("PHI", m.start(), m.end(), 1.0)
            for m in _TOKEN.finditer(text)
            if not all(safe[m.start() : m.end()])
        ]


class _NltkWithStandInTagger:
    """The ``nltk`` module as Philter sees it, with ``pos_tag`` replaced."""

    def __init__(self, nltk: Any) -> None:
        self._nltk = nltk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nltk, name)

    @staticmethod
    def pos_tag(tokens: Sequence[str]) -> list[tuple[str, str]]:
        return _stand_in_pos_tag(tokens)


def union(*analyzers: Callable[[str], Iterable[Span]]) -> Callable[[str], list[Span]]:
    """An analyzer whose spans are those of all ``analyzers`` together."""

    def analyze(text: str) -> list[Span]:
        return [s for a in analyzers for s in a(text)]

    return analyze


def compare_clinical_engines(
    pattern_analyze: Callable[[str], Iterable[Span]], *, copies: int, seed: int = 0
) -> dict[str, object]:
    """Clinical scores and speed of this package's recognizers, of Philter, and of both
    together (the union of their spans), on the same notes."""
    import time

    from ffa_lora.deid.clinical_evalset import resurrogate
    from ffa_lora.deid.evaluate import clinical_evaluation
    from ffa_lora.deid.i2b2 import builtin_notes

    philter = PhilterAnalyzer()
    notes = builtin_notes()
    texts = [n.text for n in notes + resurrogate(notes, copies=copies, seed=seed)]
    engines: dict[str, Callable[[str], Iterable[Span]]] = {
        "pattern": pattern_analyze,
        "philter": philter.analyze,
        "pattern+philter": union(pattern_analyze, philter.analyze),
    }
    out: dict[str, object] = {"philter_pos_tagger": philter.tagger}
    for name, analyze in engines.items():
        cpu0 = time.process_time()
        for text in texts:
            list(analyze(text))
        cpu = time.process_time() - cpu0
        out[name] = {
            "notes_per_cpu_s": round(len(texts) / cpu, 1) if cpu > 0 else None,
            **clinical_evaluation(analyze, copies=copies, seed=seed, notes=notes),
        }
    return out

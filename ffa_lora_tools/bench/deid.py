"""``ffa-lora bench deid``: entity-level precision/recall per type on a Faker-generated
labelled set, and scrubbing throughput (sentences per second, per core), for pattern-only
mode and with Baidu LAC (optionally jieba and an English spaCy NER model); and PHI recall
and precision on annotated clinical notes in i2b2 2014 format (``clinical`` per mode, see
``ffa_lora.deid.evaluate``; ``--clinical-copies 0`` scores only the real notes).

Prints one JSON object on stdout; progress goes to stderr. Throughput is measured in one
process with ONNX Runtime limited to one thread, so ``sentences_per_cpu_s`` (records over
process CPU seconds) is the per-core rate even on a busy machine; ``sentences_per_s`` is
the wall-clock rate of that one process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from ffa_lora.deid import DeidConfig, Deidentifier, generate_site_secret
from ffa_lora.deid.config import PERSON, STRUCTURED_ENTITIES
from ffa_lora.deid.evalset import Example, evaluate, generate_examples, summary_counts
from ffa_lora.deid.evaluate import clinical_evaluation
from ffa_lora_tools.jsonsafe import dumps

TARGETS = {
    "structured_recall": 0.99,
    "zh_person_recall": 0.95,
    "pattern_sentences_per_s_per_core": 500,
    "clinical_phi_recall": 0.95,
}

MODES: dict[str, dict[str, object]] = {
    "pattern": {"use_lac": False, "name_fallback": "none"},
    "lac": {"use_lac": True},
    "jieba": {"use_lac": False, "name_fallback": "jieba"},
}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_mode(
    name: str, overrides: dict[str, object], texts: list[str], examples: list[Example], *,
    operator: str, secret: bytes, en_ner_model: str | None, clinical_copies: int | None = None,
) -> dict[str, Any]:
    """Build one de-identifier, time scrubbing ``texts`` and score it on ``examples``."""
    config = DeidConfig(operator=operator, en_ner_model=en_ner_model, **overrides)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    deid = Deidentifier(config, site_secret=secret)
    build_s = time.perf_counter() - t0
    for text in texts[:20]:
        deid.scrub(text)
    _log(f"[{name}] scrubbing {len(texts)} records")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for text in texts:
        deid.scrub(text)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    _log(f"[{name}] scoring")
    report = evaluate(deid.analyze, examples)
    structured = {t: report.score(t).recall for t in STRUCTURED_ENTITIES if report.score(t).support}
    return {
        "config": {"use_lac": config.use_lac, "name_fallback": config.name_fallback,
                   "en_ner_model": config.en_ner_model, "operator": operator},
        "build_s": round(build_s, 3),
        "sentences_per_s": round(len(texts) / wall, 1),
        "sentences_per_cpu_s": round(len(texts) / cpu, 1) if cpu > 0 else None,
        "structured_recall_min": round(min(structured.values()), 4) if structured else None,
        "zh_person_recall": round(report.score(PERSON, "zh").recall, 4),
        "en_person_recall": round(report.score(PERSON, "en").recall, 4),
        **report.as_dict(),
        **({} if clinical_copies is None else
           {"clinical": clinical_evaluation(deid.analyze, copies=clinical_copies)}),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its JSON report."""
    parser = argparse.ArgumentParser(prog="ffa-lora bench deid", description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="records in the generated set")
    parser.add_argument("--seed", type=int, default=0, help="Faker/random seed")
    parser.add_argument("--modes", default="pattern,lac",
                        help=f"comma-separated, from {','.join(MODES)}")
    parser.add_argument("--operator", default="pseudonym",
                        choices=("tag", "pseudonym", "surrogate"))
    parser.add_argument("--clinical-copies", type=int, default=20,
                        help="re-surrogated copies of each i2b2 note to score (0: real notes only)")
    parser.add_argument("--no-clinical", action="store_true",
                        help="skip the clinical-note evaluation")
    parser.add_argument("--philter", action="store_true",
                        help="also score UCSF Philter (needs nltk) alone and with the patterns")
    parser.add_argument("--en-ner-model", default=None,
                        help="installed spaCy pipeline package for English names (optional)")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or args.n < 1:
        parser.error(f"unknown modes {unknown}" if unknown else "--n must be positive")

    _log(f"generating {args.n} labelled records (seed {args.seed})")
    examples = generate_examples(args.n, seed=args.seed)
    texts = [ex.text for ex in examples]
    secret = generate_site_secret()  # a throwaway secret: only timing and counts are reported
    results = {
        mode: run_mode(mode, MODES[mode], texts, examples, operator=args.operator,
                       secret=secret, en_ner_model=args.en_ner_model,
                       clinical_copies=None if args.no_clinical else args.clinical_copies)
        for mode in modes
    }
    meets: dict[str, bool] = {}
    if results:
        meets["structured_recall"] = all(
            (r["structured_recall_min"] or 0) >= TARGETS["structured_recall"]
            for r in results.values()
        )
    if "lac" in results:
        meets["zh_person_recall"] = results["lac"]["zh_person_recall"] >= TARGETS["zh_person_recall"]
    clinical = [r["clinical"]["i2b2_notes"]["recall"] for r in results.values() if "clinical" in r]
    if clinical:
        meets["clinical_phi_recall"] = min(clinical) >= TARGETS["clinical_phi_recall"]
    if "pattern" in results:
        rate = results["pattern"]["sentences_per_cpu_s"] or 0
        meets["pattern_sentences_per_s_per_core"] = rate >= TARGETS["pattern_sentences_per_s_per_core"]
    engines = None
    if args.philter:
        from ffa_lora.deid.philter_engine import compare_clinical_engines

        pattern = Deidentifier(DeidConfig(operator="tag", **MODES["pattern"]),  # type: ignore[arg-type]
                               site_secret=None)
        engines = compare_clinical_engines(pattern.analyze, copies=args.clinical_copies)
    out = {
        "bench": "deid",
        "n_sentences": len(texts),
        "seed": args.seed,
        "mean_chars_per_sentence": round(sum(map(len, texts)) / len(texts), 1),
        "languages": {"zh": sum(e.language == "zh" for e in examples),
                      "en": sum(e.language == "en" for e in examples)},
        "gold_entities": dict(sorted(summary_counts(examples).items())),
        "cpu_count": os.cpu_count(),
        "targets": TARGETS,
        "meets_targets": meets,
        "modes": results,
        **({"clinical_engines": engines} if engines is not None else {}),
    }
    print(dumps(out, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

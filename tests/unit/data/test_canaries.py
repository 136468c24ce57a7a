"""Canaries: drawn from a seed, distinct, balanced labels, planted k times without disturbing
the site's records, saved and read back."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from ffa_lora.data import Dataset, normalize_text
from ffa_lora.data.canaries import load_canaries, make_canaries, plant_canaries, save_canaries
from ffa_lora.errors import ConfigError, DataError

NAMES = ("negative", "neutral", "positive")


def _site(n: int = 50) -> Dataset:
    return Dataset(texts=[f"record {i}" for i in range(n)], labels=[i % 3 for i in range(n)],
                   label_names=NAMES, groups=["united"] * n)


def test_canaries_are_a_function_of_the_seed() -> None:
    a = make_canaries(n_planted=10, n_unseen=30, label_names=NAMES, copies=2, seed=5)
    b = make_canaries(n_planted=10, n_unseen=30, label_names=NAMES, copies=2, seed=5)
    c = make_canaries(n_planted=10, n_unseen=30, label_names=NAMES, copies=2, seed=6)
    assert a == b
    assert a.planted.texts != c.planted.texts


def test_canaries_are_distinct_random_words_with_balanced_labels() -> None:
    cs = make_canaries(n_planted=31, n_unseen=200, label_names=NAMES, copies=3, seed=1,
                       words=4, word_length=(2, 6))
    texts = cs.planted.texts + cs.unseen.texts
    assert len({normalize_text(t) for t in texts}) == len(texts)
    for t in texts:
        words = t.split(" ")
        assert len(words) == 4 and all(w.isalpha() and w.islower() and 2 <= len(w) <= 6 for w in words)
    for part in (cs.planted, cs.unseen):
        counts = Counter(part.labels).values()
        assert len(counts) == 3 and max(counts) - min(counts) <= 1


@pytest.mark.parametrize("kw, match", [
    ({"n_planted": 0}, "n_planted"),
    ({"copies": 0}, "copies"),
    ({"word_length": (5, 2)}, "word_length"),
    ({"label_names": ("only",)}, "two classes"),
])
def test_bad_canary_parameters_are_named(kw: dict, match: str) -> None:  # type: ignore[type-arg]
    args = {"n_planted": 5, "n_unseen": 5, "label_names": NAMES, "copies": 2, "seed": 0, **kw}
    with pytest.raises(ConfigError, match=match):
        make_canaries(**args)


def test_planting_inserts_k_copies_and_keeps_the_records_in_order() -> None:
    site = _site()
    cs = make_canaries(n_planted=6, n_unseen=10, label_names=NAMES, copies=4, seed=2)
    planted = plant_canaries(site, cs, seed=3)
    assert len(planted) == len(site) + 6 * 4
    pairs = Counter(zip(planted.texts, planted.labels))
    for t, y in zip(cs.planted.texts, cs.planted.labels):
        assert pairs[(t, y)] == 4
    assert not set(cs.unseen.texts) & set(planted.texts)
    originals = [t for t in planted.texts if t.startswith("record ")]
    assert originals == site.texts
    assert planted.groups == ["united"] * len(planted)
    # The copies are spread out, not appended at the end.
    first = min(i for i, t in enumerate(planted.texts) if not t.startswith("record "))
    assert first < len(site)


def test_planting_refuses_canaries_of_other_classes() -> None:
    cs = make_canaries(n_planted=2, n_unseen=2, label_names=("a", "b"), copies=1, seed=0)
    with pytest.raises(DataError, match="classes"):
        plant_canaries(_site(), cs)


def test_canary_file_round_trip(tmp_path: Path) -> None:
    cs = make_canaries(n_planted=5, n_unseen=7, label_names=NAMES, copies=3, seed=9)
    path = save_canaries(cs, tmp_path / "run" / "canaries.json")
    assert load_canaries(path) == cs


@pytest.mark.parametrize("content, match", [
    (None, "not found"),
    ("{not json", "not a readable"),
    (json.dumps({"format": "other"}), "not a canary file"),
    (json.dumps({"format": "ffa-lora-canaries/1", "label_names": ["a", "b"], "copies": 1, "seed": 0,
                 "planted": [{"text": "x", "label": "zzz"}], "unseen": []}), "malformed"),
])
def test_bad_canary_files_are_rejected(tmp_path: Path, content: str | None, match: str) -> None:
    path = tmp_path / "c.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=match):
        load_canaries(path)
